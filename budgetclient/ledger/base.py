"""What a ledger is (a protocol) and which URLs name one; `opening` turns a URL into a ledger."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from .._redact import mask_secrets
from ..errors import LedgerError
from ..ledger_url import ACCEPTED_URLS, InvalidLedgerURL, mask_url, sqlite_path_from_url
from ..usage import CallRecord, TaskRecord
from ._alert import AlertRecord

__all__ = [
    "ACCEPTED_URLS",
    "AlertRecord",
    "InvalidLedgerURL",
    "Ledger",
    "LedgerFactory",
    "mask_secrets",
    "mask_url",
    "RecordRefused",
    "sqlite_path_from_url",
]






class RecordRefused(LedgerError):
    """The database refused a record's values (out of range, unencodable, too long for an index).

    Retrying cannot help: the writer bisects the batch and quarantines the refused record, so the
    records around it are written. Connection and lock errors are plain `LedgerError` (retried).
    """


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






