"""What a ledger is (a protocol), which URLs name one, and how a URL becomes an open ledger.

Backends register a factory per URL scheme, so PostgreSQL (``ledger/postgres.py``, installed with
``budgetclient[postgres]``) plugs in without touching the writer or the readers.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError, LedgerError
from ..usage import CallRecord, TaskRecord

__all__ = [
    "ACCEPTED_URLS",
    "AlertRecord",
    "InvalidLedgerURL",
    "Ledger",
    "LedgerFactory",
    "mask_secrets",
    "mask_url",
    "RecordRefused",
    "check_url",
    "open_ledger",
    "register_ledger_scheme",
    "sqlite_path_from_url",
]

ACCEPTED_URLS = (
    "sqlite:///path/to/ledger.db (four slashes for an absolute path, three for one relative to the "
    "working directory) or a plain path ending in .db; memory:// or memory://name (tests); "
    "postgresql://user:password@host/dbname (needs budgetclient[postgres])"
)

_PLAIN_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class InvalidLedgerURL(ConfigurationError, LedgerError):
    """A ledger URL no backend can use (unknown scheme, no path, unparseable): a mistake to fix, not
    an outage to wait out, so it is never retried."""


class RecordRefused(LedgerError):
    """The database refused a record's values (out of range, unencodable, too long for an index).

    Retrying cannot help: the writer bisects the batch and quarantines the refused record, so the
    records around it are written. Connection and lock errors are plain `LedgerError` (retried).
    """


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A warning signal that fired (cost drift, low cache hit rate, failure cost...), as stored."""

    id: str
    kind: str
    """What fired, e.g. ``"cost_per_task"``, ``"cache_hit_rate"``, ``"failure_cost"``."""
    task_name: str | None
    task_id: str | None
    created_at: datetime
    message: str
    """One line for a person: what was seen, against what threshold."""
    value: float | None = None
    """The observed value that crossed ``threshold``."""
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Extra JSON-serialisable facts (baseline, window, counts)."""


@runtime_checkable
class Ledger(Protocol):
    """Durable store of call, task and alert records; one ``write`` is one transaction.

    Writes are idempotent on record ``id`` (a retried batch never duplicates). Reads return records
    ordered by time, oldest first. Implementations are safe to share between threads.
    """

    url: str

    def write(
        self,
        calls: Sequence[CallRecord] = (),
        tasks: Sequence[TaskRecord] = (),
        alerts: Sequence[AlertRecord] = (),
    ) -> None:
        """Store every record in one transaction, or none of them and raise `LedgerError`."""
        ...

    def read_calls(
        self, *, since: datetime | None = None, task_name: str | None = None, task_id: str | None = None
    ) -> list[CallRecord]: ...

    def read_tasks(self, *, since: datetime | None = None, name: str | None = None) -> list[TaskRecord]: ...

    def read_alerts(
        self, *, since: datetime | None = None, task_name: str | None = None
    ) -> list[AlertRecord]: ...

    def close(self) -> None: ...


LedgerFactory = Callable[[str], Ledger]

# The password runs to the LAST "@" before the path: libpq and urllib take a raw "@" in it that way.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^\s/?#]*)@")
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^&\s;]*)", re.IGNORECASE
)


def mask_secrets(text: str) -> str:
    """Replace passwords in any URLs (``user:secret@host``, a raw ``@`` in the secret included) or
    ``password=...`` / ``sslpassword=...`` settings in ``text``."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", text)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for errors and logs."""
    return mask_secrets(str(url))


def _scheme(url: str) -> str:
    if "://" in url:
        return url.split("://", 1)[0].lower()
    if url.lower().endswith(_PLAIN_SQLITE_SUFFIXES):
        return "sqlite"
    return ""


def sqlite_path_from_url(url: str) -> str:
    """Filesystem path named by ``sqlite:///...`` or a plain ``*.db`` path (``~`` is expanded).

    Follows the SQLAlchemy convention: ``sqlite:///ledger.db`` is relative to the working
    directory and ``sqlite:////var/lib/ledger.db`` is absolute.
    """
    if "://" not in url:
        path = url
    else:
        rest = url.split("://", 1)[1]
        if not rest.startswith("/"):
            raise LedgerError(
                f"ledger URL {mask_url(url)!r} has a host part; SQLite URLs take a path after three slashes, "
                f"e.g. sqlite:///ledger.db or sqlite:////abs/path/ledger.db. Accepted: {ACCEPTED_URLS}"
            )
        path = rest[1:]
    if not path or path.endswith(("/", os.sep)):
        raise LedgerError(
            f"ledger URL {mask_url(url)!r} names no database file; use e.g. "
            f"sqlite:////home/me/.local/share/budgetclient/ledger.db. Accepted: {ACCEPTED_URLS}"
        )
    return os.path.expanduser(path)


def _open_sqlite(url: str) -> Ledger:
    from .sqlite import SQLiteLedger

    return SQLiteLedger(url)


def _open_memory(url: str) -> Ledger:
    from .memory import MemoryLedger

    return MemoryLedger(url)


def _open_postgres(url: str) -> Ledger:
    try:
        module = importlib.import_module(f"{__package__}.postgres")
    except ModuleNotFoundError as exc:
        raise LedgerError(
            f"cannot open ledger {mask_url(url)!r}: PostgreSQL support arrives with budgetclient[postgres] "
            f"({exc.name} is not available). Install it with: pip install 'budgetclient[postgres]', "
            "or use a SQLite ledger (sqlite:///path/to/ledger.db)."
        ) from None
    opener: LedgerFactory = module.open_postgres_ledger
    return opener(url)


_FACTORIES: dict[str, LedgerFactory] = {
    "sqlite": _open_sqlite,
    "memory": _open_memory,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}


def register_ledger_scheme(scheme: str, factory: LedgerFactory) -> None:
    """Make ``open_ledger`` hand URLs of ``scheme://...`` to ``factory(url)``."""
    _FACTORIES[scheme.lower()] = factory


def check_url(url: object) -> str:
    """``url`` if a backend could use it; raises `InvalidLedgerURL` (password masked) otherwise.

    Checks the form only (no connection), so `configure` can refuse a typo at once instead of the
    writer retrying it as if the database were down.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidLedgerURL(
            f"ledger URL must be a non-empty string, got {url!r}. Accepted: {ACCEPTED_URLS}"
        )
    scheme = _scheme(url)
    if scheme not in _FACTORIES:
        raise InvalidLedgerURL(f"unsupported ledger URL {mask_url(url)!r}. Accepted: {ACCEPTED_URLS}")
    if scheme == "sqlite":
        try:
            sqlite_path_from_url(url)
        except LedgerError as exc:
            raise InvalidLedgerURL(str(exc)) from None
    elif scheme in {"postgresql", "postgres"}:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise InvalidLedgerURL(
                f"ledger URL {mask_url(url)!r} cannot be parsed ({mask_secrets(str(exc))}); expected "
                "postgresql://user:password@host:5432/dbname (percent-encode special characters)"
            ) from None
    return url


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names; raises `InvalidLedgerURL` (a `LedgerError` and a
    `ConfigurationError`, password masked) for a URL it cannot use."""
    check_url(url)
    return _FACTORIES[_scheme(url)](url)
