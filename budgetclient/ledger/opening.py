"""How a URL becomes an open ledger.

Backends register a factory per URL scheme, so PostgreSQL (``ledger/postgres.py``, installed with
``budgetclient[postgres]``) plugs in without touching the writer or the readers. Apart from
`base` (which the backends import) so the protocol module never imports its implementations.
"""

from __future__ import annotations

import importlib

from ..errors import LedgerError
from .base import ACCEPTED_URLS, Ledger, LedgerFactory, _scheme, mask_url

__all__ = ["open_ledger", "register_ledger_scheme"]


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


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names; raises `LedgerError` (password masked) for a URL it cannot use."""
    if not isinstance(url, str) or not url.strip():
        raise LedgerError(f"ledger URL must be a non-empty string, got {url!r}. Accepted: {ACCEPTED_URLS}")
    factory = _FACTORIES.get(_scheme(url))
    if factory is None:
        raise LedgerError(f"unsupported ledger URL {mask_url(url)!r}. Accepted: {ACCEPTED_URLS}")
    return factory(url)
