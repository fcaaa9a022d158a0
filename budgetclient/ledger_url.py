"""Which URLs name a ledger: the grammar, checked without opening anything.

Apart from the `ledger` package because `config` checks a URL at ``configure(ledger=...)`` and the
ledger package reads `config`: this module imports neither.
"""

from __future__ import annotations

import os

from ._redact import mask_secrets
from .errors import ConfigurationError, LedgerError

__all__ = [
    "ACCEPTED_URLS",
    "InvalidLedgerURL",
    "add_scheme",
    "check_url",
    "mask_url",
    "scheme_of",
    "sqlite_path_from_url",
]

ACCEPTED_URLS = (
    "sqlite:///path/to/ledger.db (four slashes for an absolute path, three for one relative to the "
    "working directory) or a plain path ending in .db; memory:// or memory://name (tests); "
    "postgresql://user:password@host/dbname (needs budgetclient[postgres])"
)

_PLAIN_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SCHEMES = {"sqlite", "memory", "postgresql", "postgres"}
"""Schemes a backend is registered for (`ledger.register_ledger_scheme` adds to it)."""


class InvalidLedgerURL(ConfigurationError, LedgerError):
    """A ledger URL no backend can use (unknown scheme, no path, unparseable): a mistake to fix, not
    an outage to wait out, so it is never retried."""


def add_scheme(scheme: str) -> None:
    """Accept ``scheme://...`` URLs (a backend registered for it)."""
    _SCHEMES.add(scheme.lower())


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for errors and logs (`mask_secrets`)."""
    return mask_secrets(str(url))


def scheme_of(url: str) -> str:
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


def check_url(url: object) -> str:
    """``url`` if a backend could use it; raises `InvalidLedgerURL` (password masked) otherwise.

    Checks the form only (no connection), so `configure` can refuse a typo at once instead of the
    writer retrying it as if the database were down.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidLedgerURL(
            f"ledger URL must be a non-empty string, got {url!r}. Accepted: {ACCEPTED_URLS}"
        )
    scheme = scheme_of(url)
    if scheme not in _SCHEMES:
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
