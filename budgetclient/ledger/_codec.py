"""Records to flat rows of SQL-friendly values and back; shared by every ledger backend.

Money is stored as decimal text (exact round trip, NULL when unknown), times as UTC ISO-8601
text with microseconds (fixed width, so text order is time order), nested values as JSON text.
Encoding never fails on odd metadata: values JSON cannot hold are stored as text, because a record
the ledger refuses would be retried forever.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol, cast

from ..drift import PrefixDrift
from ..usage import CallRecord, CallStatus, CostBreakdown, Outcome, TaskRecord, Usage
from .base import AlertRecord

__all__ = [
    "ALERT_COLUMNS",
    "BUCKET_COLUMNS",
    "CALL_COLUMNS",
    "TASK_COLUMNS",
    "USAGE_COLUMNS",
    "alert_from_row",
    "alert_to_row",
    "call_from_row",
    "call_to_row",
    "task_from_row",
    "task_to_row",
    "time_text",
]

Row = tuple[Any, ...]


class RowLike(Protocol):
    """A stored row read by column name (``sqlite3.Row``, a dict, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


USAGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_BUCKETS = ("uncached_input", "cache_read", "cache_write", "output", "storage")
BUCKET_COLUMNS: tuple[str, ...] = tuple(f"cost_{b}" for b in _BUCKETS)

CALL_COLUMNS: tuple[str, ...] = (
    "id", "started_at", "duration_s", "task_id", "task_name", "provider", "model", "operation",
    "status", "http_status", "error", *USAGE_COLUMNS, "cost", *BUCKET_COLUMNS, "conversation",
    "prefix_hash", "response_id", "request_bytes", "stream", "batch", "attempt", "service_tier",
    "drift", "metadata",
)  # fmt: skip
TASK_COLUMNS: tuple[str, ...] = (
    "id", "name", "parent_id", "outcome", "started_at", "ended_at", "duration_s", *USAGE_COLUMNS,
    "cost", *BUCKET_COLUMNS, "calls", "budget_usd", "error", "metadata",
)  # fmt: skip
ALERT_COLUMNS: tuple[str, ...] = (
    "id", "kind", "task_name", "task_id", "created_at", "message", "value", "threshold", "details",
)  # fmt: skip


def time_text(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds; naive datetimes are taken as UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):  # circular references, non-string keys of odd types
        return json.dumps({"unserialisable": repr(value)[:2000]}, ensure_ascii=False)


def _usage_values(usage: Usage) -> Row:
    return tuple(getattr(usage, name) for name in USAGE_COLUMNS)


def _usage(row: RowLike) -> Usage:
    return Usage(**{name: int(row[name]) for name in USAGE_COLUMNS})


def _bucket_values(breakdown: CostBreakdown | None) -> Row:
    if breakdown is None:
        return (None,) * len(_BUCKETS)
    return tuple(str(getattr(breakdown, b)) for b in _BUCKETS)


def _breakdown(row: RowLike) -> CostBreakdown | None:
    values = [row[c] for c in BUCKET_COLUMNS]
    if all(v is None for v in values):
        return None
    return CostBreakdown(**{b: Decimal(v or "0") for b, v in zip(_BUCKETS, values, strict=True)})


def _drift_text(drift: PrefixDrift | None) -> str | None:
    return None if drift is None else _json(asdict(drift))


def _drift(text: str | None) -> PrefixDrift | None:
    if text is None:
        return None
    data = json.loads(text)
    known = {f.name for f in fields(PrefixDrift)}
    values = {k: v for k, v in data.items() if k in known}  # newer writers may add fields
    values["est_extra_cost"] = _decimal(values.get("est_extra_cost"))
    return PrefixDrift(**values)


def _metadata(text: str | None) -> dict[str, Any]:
    return {} if not text else cast(dict[str, Any], json.loads(text))


def call_to_row(r: CallRecord) -> Row:
    return (
        r.id, time_text(r.started_at), float(r.duration_s), r.task_id, r.task_name, r.provider, r.model,
        r.operation, r.status, r.http_status, r.error, *_usage_values(r.usage), _money(r.cost),
        *_bucket_values(r.cost_breakdown), r.conversation, r.prefix_hash, r.response_id,
        int(r.request_bytes), int(bool(r.stream)), int(bool(r.batch)), int(r.attempt), r.service_tier,
        _drift_text(r.drift), _json(r.metadata or {}),
    )  # fmt: skip


def call_from_row(row: RowLike) -> CallRecord:
    return CallRecord(
        id=row["id"],
        provider=row["provider"],
        model=row["model"],
        operation=row["operation"],
        started_at=_time(row["started_at"]),
        duration_s=float(row["duration_s"]),
        usage=_usage(row),
        cost=_decimal(row["cost"]),
        cost_breakdown=_breakdown(row),
        status=cast(CallStatus, row["status"]),
        http_status=row["http_status"],
        error=row["error"],
        task_id=row["task_id"],
        task_name=row["task_name"],
        conversation=row["conversation"],
        stream=bool(row["stream"]),
        batch=bool(row["batch"]),
        attempt=int(row["attempt"]),
        request_bytes=int(row["request_bytes"]),
        prefix_hash=row["prefix_hash"],
        response_id=row["response_id"],
        service_tier=row["service_tier"],
        drift=_drift(row["drift"]),
        metadata=_metadata(row["metadata"]),
    )


def task_to_row(r: TaskRecord) -> Row:
    return (
        r.id, r.name, r.parent_id, r.outcome, time_text(r.started_at), time_text(r.ended_at),
        float(r.duration_s), *_usage_values(r.usage), _money(r.cost), *_bucket_values(r.cost_breakdown),
        int(r.calls), _money(r.budget_usd), r.error, _json(r.metadata or {}),
    )  # fmt: skip


def task_from_row(row: RowLike) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        name=row["name"],
        parent_id=row["parent_id"],
        outcome=cast(Outcome, row["outcome"]),
        started_at=_time(row["started_at"]),
        ended_at=_time(row["ended_at"]),
        usage=_usage(row),
        cost=_decimal(row["cost"]),
        cost_breakdown=_breakdown(row) or CostBreakdown(),
        calls=int(row["calls"]),
        budget_usd=_decimal(row["budget_usd"]),
        error=row["error"],
        metadata=_metadata(row["metadata"]),
    )


def alert_to_row(r: AlertRecord) -> Row:
    return (
        r.id, r.kind, r.task_name, r.task_id, time_text(r.created_at), r.message,
        None if r.value is None else float(r.value), None if r.threshold is None else float(r.threshold),
        _json(r.details or {}),
    )  # fmt: skip


def alert_from_row(row: RowLike) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        kind=row["kind"],
        task_name=row["task_name"],
        task_id=row["task_id"],
        created_at=_time(row["created_at"]),
        message=row["message"],
        value=row["value"],
        threshold=row["threshold"],
        details=_metadata(row["details"]),
    )


class RowReads:
    """``read_calls`` / ``read_tasks`` / ``read_alerts`` for SQL ledgers, over one ``_read`` query.

    A ledger provides ``_read(table, columns, time_column, since, **equal)`` returning rows that
    map column names to stored values, oldest first.
    """

    def _read(
        self,
        table: str,
        columns: tuple[str, ...],
        time_column: str,
        since: datetime | None,
        **equal: str | None,
    ) -> Sequence[RowLike]:
        raise NotImplementedError

    def read_calls(
        self, *, since: datetime | None = None, task_name: str | None = None, task_id: str | None = None
    ) -> list[CallRecord]:
        rows = self._read("calls", CALL_COLUMNS, "started_at", since, task_name=task_name, task_id=task_id)
        return [call_from_row(row) for row in rows]

    def read_tasks(self, *, since: datetime | None = None, name: str | None = None) -> list[TaskRecord]:
        rows = self._read("tasks", TASK_COLUMNS, "started_at", since, name=name)
        return [task_from_row(row) for row in rows]

    def read_alerts(
        self, *, since: datetime | None = None, task_name: str | None = None
    ) -> list[AlertRecord]:
        rows = self._read("alerts", ALERT_COLUMNS, "created_at", since, task_name=task_name)
        return [alert_from_row(row) for row in rows]
