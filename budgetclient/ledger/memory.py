"""``memory://`` ledgers: process-global named stores, for tests and throwaway runs.

Every handle on ``memory://name`` sees the same store, so a test can read back what the writer
thread wrote through its own handle. Records go through the same row encoding as SQLite, so what
a test reads back is what a real ledger would return.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..errors import LedgerError
from ..usage import CallRecord, TaskRecord
from . import _codec
from .base import ACCEPTED_URLS, AlertRecord, mask_url

__all__ = ["MemoryLedger", "clear_memory_ledgers"]

T = TypeVar("T")
_Row = dict[str, Any]


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, _Row] = {}
        self.tasks: dict[str, _Row] = {}
        self.alerts: dict[str, _Row] = {}
        self.quarantine: list[dict[str, Any]] = []


_registry_lock = threading.Lock()
_stores: dict[str, _Store] = {}


def _get_store(name: str) -> _Store:
    with _registry_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _Store()
        return store


def clear_memory_ledgers() -> None:
    """Forget every ``memory://`` store in this process."""
    with _registry_lock:
        _stores.clear()


def _after_fork_in_child() -> None:
    # A lock held by another parent thread at fork time would never be released in the child.
    global _registry_lock
    _registry_lock = threading.Lock()
    for store in _stores.values():
        store.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _rows(
    columns: tuple[str, ...], encode: Callable[[T], tuple[Any, ...]], records: Sequence[T]
) -> list[_Row]:
    return [dict(zip(columns, encode(r), strict=True)) for r in records]


def _select(
    rows: Mapping[str, _Row], time_column: str, since: datetime | None, **equal: str | None
) -> list[_Row]:
    since_text = None if since is None else _codec.time_text(since)
    chosen = [
        row
        for row in rows.values()
        if (since_text is None or row[time_column] >= since_text)
        and all(value is None or row[column] == value for column, value in equal.items())
    ]
    return sorted(chosen, key=lambda row: row[time_column])  # stable: insertion order breaks ties


class MemoryLedger:
    """A handle on the process-global store named by ``memory://name`` (``memory://`` is the default)."""

    def __init__(self, url: str = "memory://") -> None:
        if not url.lower().startswith("memory://"):
            raise LedgerError(f"not a memory ledger URL: {mask_url(url)!r}. Accepted: {ACCEPTED_URLS}")
        self.url = url
        self.name = url.split("://", 1)[1]
        _get_store(self.name)

    @property
    def _store(self) -> _Store:
        # looked up each time, so a handle follows clear_memory_ledgers()
        return _get_store(self.name)

    def __repr__(self) -> str:
        return f"MemoryLedger({self.url!r})"

    def write(
        self,
        calls: Sequence[CallRecord] = (),
        tasks: Sequence[TaskRecord] = (),
        alerts: Sequence[AlertRecord] = (),
    ) -> None:
        # Encode everything before touching the store, so a failure leaves it unchanged.
        batches = (
            (_rows(_codec.CALL_COLUMNS, _codec.call_to_row, calls), "calls"),
            (_rows(_codec.TASK_COLUMNS, _codec.task_to_row, tasks), "tasks"),
            (_rows(_codec.ALERT_COLUMNS, _codec.alert_to_row, alerts), "alerts"),
        )
        store = self._store
        with store.lock:
            for rows, table in batches:
                target: dict[str, _Row] = getattr(store, table)
                for row in rows:
                    target.setdefault(row["id"], row)

    def quarantine(self, entries: Sequence[dict[str, Any]]) -> None:
        """Keep records the ledger refused (see ``writer.py``), as the SQL ledgers' table does."""
        store = self._store
        with store.lock:
            store.quarantine.extend(dict(e) for e in entries)

    def read_calls(
        self, *, since: datetime | None = None, task_name: str | None = None, task_id: str | None = None
    ) -> list[CallRecord]:
        store = self._store
        with store.lock:
            rows = _select(store.calls, "started_at", since, task_name=task_name, task_id=task_id)
        return [_codec.call_from_row(row) for row in rows]

    def read_tasks(self, *, since: datetime | None = None, name: str | None = None) -> list[TaskRecord]:
        store = self._store
        with store.lock:
            rows = _select(store.tasks, "started_at", since, name=name)
        return [_codec.task_from_row(row) for row in rows]

    def read_alerts(
        self, *, since: datetime | None = None, task_name: str | None = None
    ) -> list[AlertRecord]:
        store = self._store
        with store.lock:
            rows = _select(store.alerts, "created_at", since, task_name=task_name)
        return [_codec.alert_from_row(row) for row in rows]

    def close(self) -> None:
        """Nothing to release; the store lives as long as the process."""
