"""Records to flat rows of SQL-friendly values and back; shared by every ledger backend.

Money is stored as decimal text (exact round trip, NULL when unknown), times as UTC ISO-8601
text with microseconds (fixed width, so text order is time order), nested values as JSON text.
Encoding never fails on odd metadata: values JSON cannot hold are stored as text, because a record
the ledger refuses would be retried forever.

SQLite stores calls in a compact row instead (`call_to_compact_row`): id, time, task and the numbers
as columns, every text and money field in one JSON array. Python's ``sqlite3`` takes ~0.26 us to
bind a string and ~1 us to bind None (against ~0.08 us for an int), so 34 columns per call, most of
them text or None, cost more than SQLite's own work; the text fields mostly repeat from call to
call, so their JSON is cached by value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import Any, Protocol, cast

from ..drift import EXCERPT_FIELDS, PrefixDrift
from ..usage import CallRecord, CallStatus, CostBreakdown, Outcome, TaskRecord, Usage
from ._alert import AlertRecord

__all__ = [
    "ALERT_COLUMNS",
    "BUCKET_COLUMNS",
    "CALL_COLUMNS",
    "CALL_KIND_COLUMNS",
    "COMPACT_CALL_COLUMNS",
    "MONEY_COLUMNS",
    "COMPACT_RECORD_FIELDS",
    "TASK_COLUMNS",
    "USAGE_COLUMNS",
    "WRITE_CALL_COLUMNS",
    "alert_from_row",
    "alert_to_row",
    "call_from_compact_row",
    "call_from_row",
    "call_to_compact_row",
    "call_to_row",
    "fixed_money",
    "money_columns",
    "money_from_fixed",
    "task_from_row",
    "task_to_row",
    "time_from_us",
    "time_text",
    "time_us",
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def time_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch; naive datetimes are taken as UTC. Exact, and several times
    cheaper to compute than ISO text."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def time_from_us(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def time_text(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds; naive datetimes are taken as UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _time(value: str | datetime) -> datetime:
    """Stored text, or a database's own timestamp (PostgreSQL's, in its session time zone) as UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else datetime.fromisoformat(value)


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _decimal(value: str | Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _json(value: Any, *, ensure_ascii: bool = False) -> str:
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=ensure_ascii, separators=(",", ":"))
    except (TypeError, ValueError):  # circular references, non-string keys of odd types
        return json.dumps({"unserialisable": repr(value)[:2000]}, ensure_ascii=ensure_ascii)


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
    return CostBreakdown(**{b: Decimal(0 if v is None else v) for b, v in zip(_BUCKETS, values, strict=True)})


def _stored_drift(drift: PrefixDrift) -> dict[str, Any]:
    """What a ledger keeps of a drift: where, why, lengths, hashes, cost; never the excerpts."""
    return {k: v for k, v in asdict(drift).items() if k not in EXCERPT_FIELDS}


def _drift_text(drift: PrefixDrift | None) -> str | None:
    return None if drift is None else _json(_stored_drift(drift))


def _drift(text: str | None) -> PrefixDrift | None:
    return None if text is None else drift_from(json.loads(text))


_DRIFT_FIELDS = frozenset(f.name for f in fields(PrefixDrift))


def drift_from(data: dict[str, Any]) -> PrefixDrift:
    """A stored drift; tolerant of fields a newer writer added and of the excerpts an older one
    stored (dropped: prompt text never leaves a ledger either)."""
    values = {k: v for k, v in data.items() if k in _DRIFT_FIELDS and k not in EXCERPT_FIELDS}
    values["est_extra_cost"] = _decimal(values.get("est_extra_cost"))
    return PrefixDrift(**values, before="", after="")


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


# -- SQLite's compact calls row (its schema version 2) ----------------------------------------------

COMPACT_CALL_COLUMNS: tuple[str, ...] = (
    "id", "started_at", "task_id", "task_name", "duration_s", *USAGE_COLUMNS, "request_bytes", "record",
)  # fmt: skip
"""SQLite's ``calls`` columns: ``started_at`` is microseconds since the Unix epoch (UTC); numbers are
bound natively (cheaper than formatting them); ``record`` is a JSON array of the remaining fields."""
MONEY_COLUMNS: tuple[str, ...] = (
    "m_cost", "m_uncached_input", "m_cache_read", "m_cache_write", "m_output", "m_storage", "m_from_record",
)  # fmt: skip
"""SQLite's exact money columns (schema version 3), so SQL sums money without decoding ``record``: each
amount as ``pico-USD x 16 + decimal places`` (`fixed_money`; NULL when the amount is unknown).
``SUM(m >> 4)`` is the exact sum in pico-USD and ``MAX(m & 15)`` the decimal places a Python `Decimal`
sum shows. The writer does not fill them (its hot path stays as it is): a row arrives with
``m_from_record = 1`` and the next report fills it from ``record`` (`money_columns`), once. A row
whose amounts have more than 12 decimal places keeps ``m_from_record = 2`` and is summed from
``record``."""

COMPACT_RECORD_FIELDS: tuple[str, ...] = (
    "provider", "model", "operation", "status", "http_status", "error", "conversation", "prefix_hash",
    "service_tier", "stream", "batch", "attempt", "cost", "cost_breakdown", "response_id", "drift",
    "metadata",
)  # fmt: skip
"""Positions in ``record``. Money is decimal text (exact); ``cost_breakdown`` is null or the five
bucket amounts in `BUCKET_COLUMNS` order; ``stream``/``batch`` are 0/1. Fields are only ever appended,
so an older reader ignores what a newer writer adds."""

CALL_KIND_COLUMNS: tuple[str, ...] = ("model", "operation", "drifted")
"""Written beside the compact row since SQLite schema 4 (NULL in older rows until a report fills
them), so a report groups calls by model and finds drifted ones without parsing ``record``: ASCII
model and operation (else NULL: read from ``record``), and whether the call carries a drift."""
WRITE_CALL_COLUMNS: tuple[str, ...] = (*COMPACT_CALL_COLUMNS, *CALL_KIND_COLUMNS)
"""What `call_to_compact_row` gives, in order; reads select `COMPACT_CALL_COLUMNS`."""
CompactCallRow = tuple[
    str, int, str | None, str | None, float, int, int, int, int, int, int, int, int, str,  # the v2 row
    str | None, str | None, int,  # CALL_KIND_COLUMNS
]  # fmt: skip

MONEY_PLACES = 12
"""Decimal places the SQL money columns hold exactly (pico-USD)."""
_PLACES_SCALE = tuple(10 ** (MONEY_PLACES - places) for places in range(MONEY_PLACES + 1))
_FIXED_SCALE = tuple(16 * scale for scale in _PLACES_SCALE)
_FIXED_MAX = 2**63


def fixed_money(text: str) -> int | None:
    """``str(amount)`` as ``pico-USD x 16 + decimal places``, or None when that is not exact or too big.

    Parsed from the text the record stores (several times cheaper than `Decimal` arithmetic; a fill
    runs it six times a call); scientific notation (``3E-7``) takes the exact slow path."""
    head, _, tail = text.partition(".")
    places = len(tail)
    if places > MONEY_PLACES or "E" in text:
        return _fixed_decimal(text)
    try:
        fixed = int(head + tail) * _FIXED_SCALE[places] + places
    except ValueError:  # NaN, Infinity
        return None
    return fixed if -_FIXED_MAX <= fixed < _FIXED_MAX else None


def _fixed_decimal(text: str) -> int | None:
    try:
        amount = Decimal(text)
    except ArithmeticError:
        return None
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -MONEY_PLACES:
        return None
    places = -exponent if exponent < 0 else 0
    fixed = int(amount.scaleb(MONEY_PLACES)) * 16 + places
    return fixed if -_FIXED_MAX <= fixed < _FIXED_MAX else None


def money_from_fixed(total: int, places: int) -> Decimal:
    """A sum of `fixed_money` values (``SUM(m >> 4)``, ``MAX(m & 15)``) as a Python `Decimal` sum."""
    return Decimal(total // _PLACES_SCALE[places]).scaleb(-places)


_UNPRICED = (None, None, None, None, None, None, 0)


def money_columns(cost: str | None, buckets: Sequence[str] | None) -> tuple[int | None, ...]:
    """`MONEY_COLUMNS` for a call's cost and bucket texts (None: unknown); ``m_from_record`` is 2 when
    an amount does not fit."""
    if cost is None and buckets is None:
        return _UNPRICED
    fixed = fixed_money(cost) if cost is not None else None
    exact = fixed is not None or cost is None
    if buckets is None:
        return (fixed, None, None, None, None, None, 0 if exact else 2)
    uncached, read, write, output, storage = map(fixed_money, buckets)
    exact = exact and None not in (uncached, read, write, output, storage)
    return (fixed, uncached, read, write, output, storage, 0 if exact else 2)


_text = encode_basestring_ascii  # a JSON string literal, ASCII only: even a lone surrogate survives
_SHAPE_FIELDS = COMPACT_RECORD_FIELDS[:12]
"""The fields that repeat from call to call (provider, model, status, conversation...)."""
_shape_of = attrgetter(*_SHAPE_FIELDS)
_shape_texts: dict[tuple[Any, ...], str] = {}
"""JSON of `_SHAPE_FIELDS` by their values, which saves most of the per-call encoding. Values that
compare equal (``1``, ``1.0``, ``True``) encode the same here. Bounded by clearing."""
_SHAPE_TEXTS_MAX = 4096


def _shape_text(shape: tuple[Any, ...]) -> str:
    provider, model, operation, status, http_status, error, conversation, prefix_hash, service_tier, \
        stream, batch, attempt = shape  # fmt: skip
    text = ",".join((
        _text(provider), _text(model), _text(operation), _text(status),
        "null" if http_status is None else str(int(http_status)),
        "null" if error is None else _text(error),
        "null" if conversation is None else _text(conversation),
        "null" if prefix_hash is None else _text(prefix_hash),
        "null" if service_tier is None else _text(service_tier),
        "1" if stream else "0", "1" if batch else "0", str(int(attempt)),
    ))  # fmt: skip
    if len(_shape_texts) >= _SHAPE_TEXTS_MAX:
        _shape_texts.clear()
    _shape_texts[shape] = text
    return text


def _check_text(*texts: str | None) -> None:
    """Raise (so the writer sets the record aside) for text SQLite cannot bind: a lone surrogate."""
    for text in texts:
        if text is not None:
            text.encode()


def call_to_compact_row(r: CallRecord) -> CompactCallRow:
    """The row SQLite stores for a call; raises for a record no ledger could store.

    Written for speed (the writer runs it for every call): f-strings, no helper calls on the
    common path, `time_us` inlined.
    """
    shape = _shape_of(r)
    usage = r.usage
    cost = r.cost
    breakdown = r.cost_breakdown
    response_id = r.response_id
    drift = r.drift
    metadata = r.metadata
    started_at = r.started_at
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    duration = float(r.duration_s)
    if duration != duration:
        raise ValueError("duration_s is NaN")  # SQLite would store NULL: refused, not changed
    record_id, task_id, task_name = r.id, r.task_id, r.task_name
    if not (
        record_id.isascii()
        and (task_id is None or task_id.isascii())
        and (task_name is None or task_name.isascii())
    ):
        _check_text(record_id, task_id, task_name)
    # str(Decimal) holds no quote or backslash, so it goes between quotes as it is
    money = "null" if cost is None else f'"{cost!s}"'
    buckets = "null" if breakdown is None else (
        f'["{breakdown.uncached_input!s}","{breakdown.cache_read!s}","{breakdown.cache_write!s}",'
        f'"{breakdown.output!s}","{breakdown.storage!s}"]'
    )  # fmt: skip
    record = (
        f"[{_shape_texts.get(shape) or _shape_text(shape)},{money},{buckets},"
        f"{'null' if response_id is None else _text(response_id)},"
        f"{'null' if drift is None else _json(_stored_drift(drift), ensure_ascii=True)},"
        f"{_json(metadata, ensure_ascii=True) if metadata else '{}'}]"
    )
    return (
        record_id, (started_at - _EPOCH) // _MICROSECOND, task_id, task_name, duration, usage.input_tokens,
        usage.cache_read_tokens, usage.cache_write_tokens, usage.cache_write_long_tokens,
        usage.output_tokens, usage.reasoning_tokens, usage.requests, int(r.request_bytes), record,
        shape[1] if shape[1].isascii() else None, shape[2] if shape[2].isascii() else None,
        0 if drift is None else 1,
    )  # fmt: skip


def call_from_compact_row(row: Sequence[Any]) -> CallRecord:
    (
        record_id, started_at, task_id, task_name, duration_s, input_tokens, cache_read_tokens,
        cache_write_tokens, cache_write_long_tokens, output_tokens, reasoning_tokens, requests,
        request_bytes, record,
    ) = row[:14]  # fmt: skip
    (
        provider, model, operation, status, http_status, error, conversation, prefix_hash, service_tier,
        stream, batch, attempt, cost, buckets, response_id, drift, metadata,
    ) = json.loads(record)[: len(COMPACT_RECORD_FIELDS)]  # fmt: skip
    breakdown = None
    if buckets is not None:
        breakdown = CostBreakdown(**{b: Decimal(v) for b, v in zip(_BUCKETS, buckets, strict=True)})
    return CallRecord(
        id=record_id,
        provider=provider,
        model=model,
        operation=operation,
        started_at=time_from_us(started_at),
        duration_s=duration_s,
        usage=Usage(
            input_tokens=input_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            cache_write_long_tokens=cache_write_long_tokens,
            output_tokens=output_tokens,
            reasoning_tokens=reasoning_tokens,
            requests=requests,
        ),
        cost=_decimal(cost),
        cost_breakdown=breakdown,
        status=status,
        http_status=http_status,
        error=error,
        task_id=task_id,
        task_name=task_name,
        conversation=conversation,
        stream=bool(stream),
        batch=bool(batch),
        attempt=attempt,
        request_bytes=request_bytes,
        prefix_hash=prefix_hash,
        response_id=response_id,
        service_tier=service_tier,
        drift=None if drift is None else drift_from(drift),
        metadata=metadata,
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
