"""How a URL becomes an open ledger.

Backends register a factory per URL scheme, so PostgreSQL (``ledger/postgres.py``, installed with
``budgetclient[postgres]``) plugs in without touching the writer or the readers. Apart from
`base` (which the backends import) so the protocol module never imports its implementations.
"""

from __future__ import annotations

import importlib

from ..errors import LedgerError
from ..ledger_url import add_scheme, check_url, mask_url, scheme_of
from .base import Ledger, LedgerFactory

__all__ = ["check_url", "open_ledger", "register_ledger_scheme"]



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
    add_scheme(scheme)




def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names; raises `InvalidLedgerURL` (a `LedgerError` and a
    `ConfigurationError`, password masked) for a URL it cannot use."""
    check_url(url)
    return _FACTORIES[scheme_of(url)](url)
