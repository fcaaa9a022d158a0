"""Where records are persisted: the `Ledger` protocol, its backends, and the background writer.

``open_ledger(url)`` opens ``sqlite:///path.db``, ``memory://name`` or (with
``budgetclient[postgres]``) ``postgresql://...``. Library code never writes to a ledger on the
call path; it submits records to `LedgerWriter` (``get_writer()``), which batches them off-thread.
"""

from __future__ import annotations

from .base import AlertRecord, InvalidLedgerURL, Ledger, RecordRefused, mask_url
from .opening import open_ledger, register_ledger_scheme
from .writer import LedgerWriter, flush, get_ledger, get_writer, install_sigterm_flush, quarantine_path

__all__ = [
    "AlertRecord",
    "InvalidLedgerURL",
    "Ledger",
    "LedgerWriter",
    "RecordRefused",
    "flush",
    "get_ledger",
    "get_writer",
    "install_sigterm_flush",
    "mask_url",
    "open_ledger",
    "quarantine_path",
    "register_ledger_scheme",
]
