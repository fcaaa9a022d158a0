"""The record path's fast internals behave exactly like the plain code they replace."""

from __future__ import annotations

import enum
import json
import logging
import os
import pickle
import random
import uuid
from dataclasses import FrozenInstanceError, fields
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import structlog

import budgetclient as bc
from budgetclient import metering, pricing
from budgetclient._log import _disabled, log
from budgetclient.providers._sse import SSEParser, _loads, loads
from budgetclient.usage import (
    CallRecord,
    CostBreakdown,
    Usage,
    _new_breakdown,
    _new_call_record,
    _trusted_usage,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _record_values() -> dict[str, object]:
    return {
        "id": "a" * 32,
        "provider": "anthropic",
        "model": "claude-sonnet-4-6",
        "operation": "messages",
        "started_at": NOW,
        "duration_s": 0.25,
        "usage": Usage(
            input_tokens=10,
            cache_read_tokens=2,
            cache_write_tokens=3,
            cache_write_long_tokens=1,
            output_tokens=4,
            reasoning_tokens=1,
            requests=1,
        ),
        "cost": Decimal("0.001"),
        "cost_breakdown": CostBreakdown(
            uncached_input=Decimal("0.0001"), cache_read=Decimal("0.0002"), cache_write=Decimal("0.0003")
        ),
        "status": "incomplete",
        "http_status": 200,
        "error": "ReadError",
        "task_id": "t1",
        "task_name": "triage",
        "conversation": "c1",
        "stream": True,
        "batch": False,
        "attempt": 2,
        "request_bytes": 1234,
        "prefix_hash": "p",
        "response_id": "msg_1",
        "service_tier": "standard",
        "drift": None,
        "metadata": {"breakpoints": [1, 2]},
    }


_USAGE_NAMES = [f.name for f in fields(Usage)]
_BUCKETS = [f.name for f in fields(CostBreakdown)]


@pytest.mark.parametrize(
    ("fast", "plain", "values"),
    [
        (_trusted_usage, Usage, dict(zip(_USAGE_NAMES, (10, 2, 3, 1, 4, 1, 1), strict=True))),
        (_new_breakdown, CostBreakdown, {b: Decimal(n) / 7 for n, b in enumerate(_BUCKETS, 1)}),
        (_new_call_record, CallRecord, _record_values()),
    ],
)
def test_fast_constructors_build_ordinary_frozen_records(
    fast: object, plain: type, values: dict[str, object]
) -> None:
    made = fast(**values)  # type: ignore[operator]
    expected = plain(**values)
    assert type(made) is plain
    assert made == expected and hash(made) == hash(expected) if plain is not CallRecord else made == expected
    assert {f.name: getattr(made, f.name) for f in fields(plain)} == values
    assert pickle.loads(pickle.dumps(made)) == expected
    with pytest.raises(FrozenInstanceError):
        made.__setattr__(fields(plain)[0].name, values[fields(plain)[0].name])


def test_fast_constructors_take_keywords_and_defaults() -> None:
    assert _trusted_usage(input_tokens=5, requests=1) == Usage(input_tokens=5, requests=1)
    values = _record_values()
    minimal = {k: values[k] for k in list(values)[:9]}
    assert _new_call_record(**minimal) == CallRecord(**minimal)  # type: ignore[arg-type]
    assert _new_call_record(**minimal).metadata == {}


class _Count(enum.IntEnum):
    ONE = 1


def test_usage_validation_is_unchanged() -> None:
    for bad in (-1, 1.0, True, "1", None):
        with pytest.raises(ValueError, match="reasoning_tokens"):
            Usage(reasoning_tokens=bad)  # type: ignore[arg-type]
    assert Usage(input_tokens=_Count.ONE).input_tokens == 1  # int subclasses other than bool pass
    first = Usage(
        input_tokens=5,
        cache_read_tokens=1,
        cache_write_tokens=3,
        cache_write_long_tokens=1,
        output_tokens=2,
        reasoning_tokens=1,
        requests=1,
    )
    second = Usage(input_tokens=1, output_tokens=1, requests=1)
    assert first + second == Usage(
        input_tokens=6,
        cache_read_tokens=1,
        cache_write_tokens=3,
        cache_write_long_tokens=1,
        output_tokens=3,
        reasoning_tokens=1,
        requests=2,
    )


def test_usage_derived_counts_never_negative() -> None:
    odd = Usage(input_tokens=1, cache_read_tokens=5, cache_write_tokens=2, cache_write_long_tokens=3)
    assert odd.uncached_input_tokens == 0
    assert odd.cache_write_short_tokens == 0


def test_call_ids_are_uuid4_hex_and_unique() -> None:
    ids = [metering._new_id() for _ in range(3 * metering._ID_BATCH + 7)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_reuse_parent_ids() -> None:
    metering._new_id()  # the pool is filled
    pending = set(metering._ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(write, metering._new_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert len(child_id) == 32 and child_id not in pending


def _reference_events(raw: bytes) -> list[tuple[str | None, str]]:
    """The SSE grammar budgetclient implements, line by line, with ``close()``'s end-of-body rule."""
    events: list[tuple[str | None, str]] = []
    event: str | None = None
    data: list[str] = []

    def line_of(line: str) -> None:
        nonlocal event, data
        line = line.rstrip("\r")
        if not line:
            if data or event is not None:
                events.append((event, "\n".join(data)))
            event, data = None, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)

    *complete, rest = raw.decode("utf-8", errors="replace").split("\n")
    for line in complete:
        line_of(line)
    if rest:  # an unterminated last line ends the last event
        line_of(rest)
        line_of("")
    elif data:
        events.append((event, "\n".join(data)))
    return events


_PIECES = [
    "event: message_start\n", "event:delta\n", "data: x\n", "data:y\n", 'data: {"k": "v:w"}\n', "\n", "\n",
    ": comment\n", "id: 3\n", "retry: 10\n", "\r\n", "data: z\r\n", "event: é\n", "data: ü😀\n", "data:\n",
    "event:\n", "weird\n", "data:  two\n", "data: message_y\n",
]


def _feed(parser: SSEParser, chunks: list[bytes]) -> list[tuple[str | None, str]]:
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.close()


def test_sse_parser_matches_the_line_grammar_at_any_chunking() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        raw = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 20))).encode()
        if rng.random() < 0.1:
            raw = raw.replace(b"\xc3", b"\xff")  # invalid UTF-8 is replaced, as before
        cuts = sorted(rng.sample(range(len(raw) + 1), min(len(raw), rng.randint(0, 6))))
        chunks = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        assert _feed(SSEParser(), chunks) == _reference_events(raw), chunks
        marked = _feed(SSEParser(b"message_"), chunks)
        wanted = [e for e in _reference_events(raw) if "message_" in f"{e[0]}{e[1]}"]
        assert [e for e in marked if "message_" in f"{e[0]}{e[1]}"] == wanted, chunks


@pytest.mark.parametrize(
    "text", ['{"a": 1}', ' {"a": 1}', '{"a": 1} ', '{"a": 1} x', "", "[1, 2]", "\ufeff{}", '{"a": }', "3"]
)
def test_loads_is_json_loads(text: str) -> None:
    for ours, given in ((loads, text), (_loads, text.encode()), (_loads, text.encode("utf-16"))):
        try:
            expected: object = json.loads(given)
        except ValueError as exc:
            expected = type(exc)
        try:
            got: object = ours(given)  # type: ignore[arg-type]
        except ValueError as exc:
            got = type(exc)
        assert got == expected, (ours, given)


def test_rates_for_today_is_the_rates_for_now() -> None:
    bc.configure(prices={"fast-model": {"input": "1", "output": "2"}})
    today = pricing.rates_for("fast-model")
    assert today is pricing.rates_for("fast-model", at=datetime.now(UTC))
    bc.configure(prices={"fast-model": {"input": "3", "output": "2"}})
    assert pricing.rates_for("fast-model") is not today  # settings changes still invalidate
    assert pricing.rates_for("fast-model").input.base == Decimal("3")  # type: ignore[union-attr]


def test_warn_threshold_follows_budget_changes() -> None:
    bc.configure(prices={"warn-model": {"input": "1000000", "output": "0"}})
    with bc.task("t", budget_usd=100, warn_at=0.5) as t:
        ctx = metering.begin_call("anthropic", "warn-model", "messages")
        metering.finish_call(ctx, Usage(input_tokens=10, requests=1))  # $10: under $50
        t.budget_usd = Decimal(20)  # now $10 is at the 0.5 mark
        ctx = metering.begin_call("anthropic", "warn-model", "messages")
        with pytest.warns(bc.BudgetWarning):
            metering.finish_call(ctx, Usage(input_tokens=1, requests=1))


@pytest.mark.parametrize("batch", [False, True])
def test_finish_call_puts_each_argument_in_its_place(batch: bool) -> None:
    """`finish_call` builds its `_Finished` positionally: every argument reaches its own field."""
    drift = bc.PrefixDrift(
        segment="system", offset=3, before="a", after="b", cause="content", tokens_at_risk=7,
        est_extra_cost=None,
    )  # fmt: skip
    ctx = metering.begin_call("anthropic", "unpriced-placed-model", "messages")
    ctx.metadata = {"a": 1}
    usage = Usage(input_tokens=5, output_tokens=2, requests=1)
    record = metering.finish_call(
        ctx, usage, status="incomplete", model="unpriced-billed-model", http_status=203, error="ReadError",
        response_id="msg_place", service_tier="priority", batch=batch, drift=drift, operation="count",
        metadata={"b": 2},
    )  # fmt: skip
    assert record is not None  # unpriced: made at once
    assert (record.usage, record.status, record.model, record.http_status, record.error) == (
        usage, "incomplete", "unpriced-billed-model", 203, "ReadError"
    )
    assert (record.response_id, record.service_tier, record.batch, record.drift, record.operation) == (
        "msg_place", "priority", batch, drift, "count"
    )
    assert record.metadata == {"a": 1, "b": 2} and record.duration_s >= 0


def test_pending_mark_follows_budget_and_warn_at_changes() -> None:
    """`Task._leave_pending` keeps its float mark and spent amount cached: the same answers as
    computing ``float(budget) * warn_at`` and ``float(spent)`` each time."""
    bc.configure(prices={"mark-model": {"input": "1000000", "output": "0"}})
    with bc.task("t", budget_usd=100, warn_at=0.5) as t:
        ctx = metering.begin_call("anthropic", "mark-model", "messages")
        metering.finish_call(ctx, Usage(input_tokens=10, requests=1))  # $10
        assert t.cost == 10 and t._priced_float == float(t._priced_cost) == 10.0
        assert t._leave_pending(39.0)  # $10 + $39 < $50
        t._settle_pending(39.0)
        assert not t._leave_pending(40.0)  # $10 + $40 reaches the 0.5 mark
        t.budget_usd = Decimal(200)  # mark $100
        assert t._leave_pending(89.0)
        t._settle_pending(89.0)
        t.warn_at = 0.25  # mark $50
        assert not t._leave_pending(40.0)
        assert t._leave_pending(39.0)
        t._settle_pending(39.0)


def test_structlog_filtered_levels_are_disabled_and_others_log() -> None:
    previous = structlog.get_config()
    try:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        assert log.info is _disabled
        assert log.warning is not _disabled
        with structlog.testing.capture_logs() as logs:
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
            ctx = metering.begin_call("anthropic", "claude-sonnet-4-6", "messages")
            metering.finish_call(ctx, Usage(input_tokens=10, output_tokens=2, requests=1))
        assert [e["event"] for e in logs].count("llm.call") == 1
    finally:
        structlog.configure(**previous)
