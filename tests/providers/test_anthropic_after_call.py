"""What runs in the caller's thread after an Anthropic response, and what is handed to the record
worker (`pending`): the record equals what the wire's usage and the price sheet give, the task's
totals are exact right after the call, an API-diagnosed drift is still warned about in the caller's
thread, and a fault on either side neither breaks the call nor loses its record."""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from typing import Any

import pytest
import structlog

import budgetclient as bc
from budgetclient import _log, metering, pricing
from budgetclient.ledger import open_ledger
from budgetclient.providers import anthropic as provider
from budgetclient.providers._sse import _loads
from budgetclient.providers.anthropic import usage_from_anthropic

from .test_anthropic import (
    MESSAGES,
    MODEL,
    USAGE,
    async_client,
    cost_of,
    expected_usage,
    json_wire,
    sync_client,
)
from .wire import Wire, anthropic_message, anthropic_usage, json_response


def _call(client: Any) -> Any:
    return client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)


def _finished_off_the_call_path(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each `finish_call` left its record to the worker (it returns None then)."""
    seen: list[bool] = []
    finish = metering.finish_call

    def spy(*args: Any, **kwargs: Any) -> Any:
        made = finish(*args, **kwargs)
        seen.append(made is None)
        return made

    monkeypatch.setattr(metering, "finish_call", spy)
    return seen


# -- the record, made off the call path --------------------------------------------------------


@pytest.mark.usefixtures("nothing_observes_records")
def test_totals_are_exact_right_after_a_call_and_the_record_is_the_wires(
    monkeypatch: pytest.MonkeyPatch, ledger_url: str
) -> None:
    deferred = _finished_off_the_call_path(monkeypatch)
    client = sync_client(json_wire())
    with bc.task("t", budget_usd=100) as t:
        reply = _call(client)
        assert deferred == [True]  # the record was left to the worker...
        assert t.cost == cost_of(USAGE)  # ...and the totals read right after the call are exact
        assert t.usage == expected_usage(USAGE) and t.calls == 1 and t._reserved == 0
    assert reply.id == "msg_01" and reply.usage.input_tokens == USAGE["input_tokens"]
    (record,) = t.records
    assert (record.usage, record.cost, record.model, record.status) == (
        expected_usage(USAGE), cost_of(USAGE), MODEL, "ok"
    )
    assert (record.response_id, record.service_tier, record.http_status) == ("msg_01", "standard", 200)
    assert bc.flush(10)
    ledger = open_ledger(ledger_url)
    try:
        (row,) = ledger.read_calls()
    finally:
        ledger.close()
    assert (row.usage, row.cost, row.response_id) == (expected_usage(USAGE), cost_of(USAGE), "msg_01")


@pytest.mark.usefixtures("nothing_observes_records")
def test_an_async_call_is_exact_right_after_it() -> None:
    import asyncio

    async def run() -> bc.Task:
        client = async_client(json_wire())
        async with bc.task("t", budget_usd=100) as t:
            await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
            assert t.cost == cost_of(USAGE) and t.calls == 1 and t._reserved == 0
        return t

    t = asyncio.run(run())
    assert t.records[0].usage == expected_usage(USAGE)


@pytest.mark.usefixtures("nothing_observes_records")
def test_a_fault_while_pricing_off_the_call_path_keeps_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    deferred = _finished_off_the_call_path(monkeypatch)

    def broken(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            raise AssertionError("priced in the caller's thread")
        raise RuntimeError("price sheet unreadable")

    monkeypatch.setattr(pricing, "price_call", broken)
    client = sync_client(json_wire())
    with bc.task("t", budget_usd=100) as t:
        reply = _call(client)  # the call is answered
        assert deferred == [True]
        assert t.calls == 1 and t._reserved == 0  # recorded, its hold given back
    assert reply.id == "msg_01"
    (record,) = t.records
    assert record.usage == expected_usage(USAGE) and record.cost is None and record.status == "ok"


@pytest.mark.usefixtures("nothing_observes_records")
def test_a_fault_while_learning_from_the_response_keeps_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("lineage state")

    monkeypatch.setattr(provider, "observe_response", broken)
    client = sync_client(json_wire())
    with bc.task("t", budget_usd=100) as t:
        reply = _call(client)
        assert t.cost == cost_of(USAGE) and t.calls == 1
    assert reply.id == "msg_01" and t.records[0].usage == expected_usage(USAGE)


@pytest.mark.usefixtures("nothing_observes_records")
def test_a_fault_before_the_hand_off_records_the_call_as_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("usage")

    monkeypatch.setattr(provider, "usage_from_anthropic", broken)
    client = sync_client(json_wire())
    with bc.task("t", budget_usd=100) as t:
        reply = _call(client)
        assert t.calls == 1 and t._reserved == 0
    assert reply.id == "msg_01"
    assert t.records[0].status == "incomplete" and t.records[0].usage == bc.Usage(requests=1)


def test_a_diagnosed_drift_is_warned_in_the_callers_thread() -> None:
    """The API's ``cache_miss_reason`` for a call placement saw no drift in is warned about by the
    call itself (``pytest.warns`` in the caller's thread catches it) and recorded with the call."""
    diagnosed = {"cache_miss_reason": {"type": "tools_changed", "cache_missed_input_tokens": 1500}}
    replies = iter([
        anthropic_message(USAGE),
        {**anthropic_message(USAGE, msg_id="msg_02"), "diagnostics": diagnosed},
    ])  # fmt: skip
    wire = Wire(default=lambda r: json_response(next(replies)))
    client = sync_client(wire, drift="warn")
    with bc.task("t") as t:
        _call(client)
        with pytest.warns(bc.PrefixDriftWarning):
            _call(client)
    assert json.loads(wire.requests[1].content)["diagnostics"] == {"previous_message_id": "msg_01"}
    drift = t.records[1].drift
    assert drift is not None and drift.provider_reason == "tools_changed"
    assert drift.provider_missed_tokens == 1500 and t.records[0].drift is None


# -- usage, read in the caller's thread ---------------------------------------------------------


def _reference_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _reference_usage(usage: dict[str, Any]) -> bc.Usage:
    """Anthropic's usage fields as the API defines them, each count a non-negative int or 0."""
    read = _reference_int(usage.get("cache_read_input_tokens"))
    write = _reference_int(usage.get("cache_creation_input_tokens"))
    creation = usage.get("cache_creation")
    long_write = 0
    if isinstance(creation, dict):
        long_write = _reference_int(creation.get("ephemeral_1h_input_tokens"))
        if not write:
            write = long_write + _reference_int(creation.get("ephemeral_5m_input_tokens"))
    details = usage.get("output_tokens_details")
    thinking = _reference_int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    output = _reference_int(usage.get("output_tokens"))
    return bc.Usage(
        input_tokens=_reference_int(usage.get("input_tokens")) + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_long_tokens=min(long_write, write),
        output_tokens=output,
        reasoning_tokens=min(thinking, output),
        requests=1,
    )


def test_usage_is_read_as_the_api_defines_it_whatever_the_values() -> None:
    rng = random.Random(19)
    values: list[Any] = [0, 1, 7, 1500, 10**12, -1, -300, True, False, None, 2.5, "12", [3]]
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    for _ in range(3000):
        usage: dict[str, Any] = {k: rng.choice(values) for k in keys if rng.random() < 0.9}
        if rng.random() < 0.4:
            usage["cache_creation"] = {
                k: rng.choice(values) for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
            }
        if rng.random() < 0.3:
            usage["output_tokens_details"] = {"thinking_tokens": rng.choice(values)}
        assert usage_from_anthropic(usage) == _reference_usage(usage), usage
    assert usage_from_anthropic(anthropic_usage(21, 34, read=5, write_5m=3, write_1h=2)) == bc.Usage(
        input_tokens=31, cache_read_tokens=5, cache_write_tokens=5, cache_write_long_tokens=2,
        output_tokens=34, requests=1,
    )  # fmt: skip


# -- the parse the SDK gets ----------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down (``1 == 1.0``, but the SDK would see a float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and repr(a) == repr(b)


_NUMBERS = [
    "0", "-0", "-0.0", "1", "-1", "1.5", "1e5", "1E-7", "2.5e308", "1e400", "-1e400", "1e-400",
    "9223372036854775807", "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
    "18446744073709551616", "123456789012345678901234567890", "0.1", "0.30000000000000004",
    "1.7976931348623157e308", "5e-324", "NaN", "Infinity", "-Infinity", "12345678901234567.89",
]  # fmt: skip
_STRINGS = [
    '"plain"', '"\\u00e9\\ud83d\\ude00"', '"\\ud800"', '"tab\\there"', '"12345678901234567890123"', '""',
]  # fmt: skip


def test_a_body_parses_to_the_document_json_loads_gives() -> None:
    """`_loads` (orjson for an object body, ``json`` for what orjson reads otherwise or refuses)
    gives the SDK what ``json.loads`` would: the same values of the same types, or the same error."""
    rng = random.Random(19)
    for _ in range(3000):
        items = [f'"k{i}": {rng.choice(_NUMBERS + _STRINGS)}' for i in range(rng.randint(0, 4))]
        if rng.random() < 0.2:
            items.append('"k0": [1, {"a": null, "b": true}]')  # a repeated key: the last one wins
        body = ("{" + ", ".join(items) + "}").encode()
        if rng.random() < 0.1:
            body = body.replace(b"plain", b"pl\xffin")  # invalid UTF-8
        if rng.random() < 0.1:
            body = body.replace(b"plain", b"pl\xed\xa0\x80in")  # a surrogate, as surrogatepass decodes
        try:
            expected: Any = json.loads(body)
        except ValueError as exc:
            with pytest.raises(type(exc)):
                _loads(body)
            continue
        assert _same(_loads(body), expected), body


# -- the ``llm.call`` check ----------------------------------------------------------------------


@pytest.mark.parametrize("public", [False, True], ids=["private-config", "public-api"])
@pytest.mark.parametrize("configured", [None, logging.DEBUG, logging.INFO, logging.WARNING])
@pytest.mark.parametrize("stdlib_level", [logging.NOTSET, logging.INFO, logging.WARNING])
def test_the_info_check_answers_as_the_general_lookup(
    configured: int | None, stdlib_level: int, public: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`log.info` (read on every call to decide whether the record is made now) is what the general
    ``__getattr__`` gives, whatever structlog's and the stdlib logger's configuration, whether the
    routing reads structlog's private configuration object or (where a structlog lacks it) the
    public ``is_configured()`` / ``get_config()``; every level is dropped exactly where the
    configuration drops it."""
    if public:
        monkeypatch.setattr(_log, "_STRUCTLOG_CONFIG", _log._PublicConfig())
    previous = structlog.get_config()
    was_configured = structlog.is_configured()
    logger = logging.getLogger("budgetclient")
    level = logger.level
    try:
        # configured after the logger exists, as an application may at run time
        if configured is not None:
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(configured))
        else:
            structlog.reset_defaults()
        logger.setLevel(stdlib_level)
        fast, general = _log.log.info, _log.log.__getattr__("info")
        assert (fast is _log._disabled) is (general is _log._disabled)
        if configured == logging.WARNING or (configured is None and not logger.isEnabledFor(logging.INFO)):
            assert fast is _log._disabled
        levels = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40, "critical": 50}
        for name, number in levels.items():
            dropped = number < configured if configured is not None else not logger.isEnabledFor(number)
            assert (getattr(_log.log, name) is _log._disabled) is dropped, name
        assert _log.log.bind is not _log._disabled  # not a level: never dropped
    finally:
        logger.setLevel(level)
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**previous)
