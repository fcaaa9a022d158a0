"""What a ledger is (a protocol) and which URLs name one; `opening` turns a URL into a ledger."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from .._redact import mask_secrets
from ..errors import LedgerError
from ..usage import CallRecord, TaskRecord
from ._alert import AlertRecord

__all__ = [
    "ACCEPTED_URLS",
    "AlertRecord",
    "Ledger",
    "LedgerFactory",
    "mask_secrets",
    "mask_url",
    "sqlite_path_from_url",
]

ACCEPTED_URLS = (
    "sqlite:///path/to/ledger.db (four slashes for an absolute path, three for one relative to the "
    "working directory) or a plain path ending in .db; memory:// or memory://name (tests); "
    "postgresql://user:password@host/dbname (needs budgetclient[postgres])"
)

_PLAIN_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


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


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for errors and logs (`mask_secrets`)."""
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
