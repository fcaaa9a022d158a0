"""Fault injection: whatever breaks, the user's call behaves exactly as the raw SDK's would.

Every test sends the same request through the raw SDK and through budgetclient on identical
wires (same canned responses, same faults) and compares the outcomes: the same returned object,
or the same exception (class, message, status). Then it checks that every call record is kept,
or recovered once the fault clears. Token figures come from the usage put on the wire, costs from
the rates configured here.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as gtypes

import budgetclient as bc
from budgetclient import metering, pricing
from budgetclient.ledger import open_ledger
from budgetclient.ledger.memory import MemoryLedger
from budgetclient.ledger.opening import register_ledger_scheme
from budgetclient.ledger.writer import get_writer
from budgetclient.usage import CallRecord
from tests.providers.wire import (
    Wire,
    anthropic_error,
    anthropic_message,
    anthropic_stream_events,
    anthropic_usage,
    json_response,
    sse_response,
)

MODEL = "claude-sonnet-4-6"
KEY = "sk-ant-api03-faultinjection-0123456789"
MTOK = Decimal(1_000_000)
RATES = {
    "input": Decimal(3),
    "output": Decimal(15),
    "cache_read": Decimal("0.30"),
    "cache_write": Decimal("3.75"),
}
Responder = Callable[[httpx2.Request], httpx2.Response]


@pytest.fixture(autouse=True)
def _rates(monkeypatch: pytest.MonkeyPatch) -> None:
    bc.configure(prices={MODEL: {k: str(v) for k, v in RATES.items()}})
    # no back-off sleeps between retries (for the raw SDK and budgetclient alike): a fast suite
    monkeypatch.setattr(anthropic._base_client.BaseClient, "_calculate_retry_timeout", lambda *a, **k: 0.0)


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * RATES["input"] + output_tokens * RATES["output"]) / MTOK


def clients(
    responders: Callable[[], list[Responder]], *, max_retries: int = 0, **options: Any
) -> tuple[anthropic.Anthropic, bc.Anthropic, Wire, Wire]:
    """A raw and a budgetclient Anthropic client, each on its own wire with the same script."""
    raw_wire, bc_wire = Wire(responders()), Wire(responders())
    common: dict[str, Any] = {"api_key": KEY, "base_url": "http://anthropic.test", "max_retries": max_retries}
    raw = anthropic.Anthropic(http_client=raw_wire.client(), **common)
    ours = bc.Anthropic(http_client=bc_wire.client(), **common, **options)
    return raw, ours, raw_wire, bc_wire


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What the user sees: the returned value (dumped) or the exception (class, message, status)."""
    try:
        value = fn()
    except Exception as exc:
        return ("raised", type(exc), str(exc), getattr(exc, "status_code", None))
    if isinstance(value, list):
        return ("returned", [v.model_dump() if hasattr(v, "model_dump") else v for v in value])
    return ("returned", type(value), value.model_dump() if hasattr(value, "model_dump") else value)


def create(client: Any, **kw: Any) -> Callable[[], Any]:
    return lambda: client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}], **kw
    )


def stream_all(client: Any) -> Callable[[], Any]:
    def run() -> list[Any]:
        with client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}], stream=True
        ) as events:
            return list(events)

    return run


def calls(url: str) -> list[CallRecord]:
    assert bc.flush(10)
    return open_ledger(url).read_calls()


# -- the ledger ------------------------------------------------------------------------------------


class FlakyLedger:
    """A memory ledger that fails like a full disk, or refuses to open, while ``down`` is set."""

    def __init__(self, url: str) -> None:
        self.inner = MemoryLedger(url.replace("flaky://", "memory://", 1))
        self.down = threading.Event()
        self.refuse_open = threading.Event()
        self.failed_writes = 0
        self.failed_opens = 0

    def open(self, url: str) -> FlakyLedger:
        if self.refuse_open.is_set():
            self.failed_opens += 1
            raise sqlite3.OperationalError("unable to open database file")
        return self

    def write(self, calls: Any = (), tasks: Any = (), alerts: Any = ()) -> None:
        if self.down.is_set():
            self.failed_writes += 1
            raise sqlite3.OperationalError("database or disk is full")
        self.inner.write(calls=calls, tasks=tasks, alerts=alerts)

    def read_calls(self, **kw: Any) -> list[CallRecord]:
        return self.inner.read_calls(**kw)

    def close(self) -> None:
        pass


@pytest.fixture
def flaky(ledger_url: str) -> Iterator[FlakyLedger]:
    name = ledger_url.removeprefix("memory://")
    ledger = FlakyLedger(f"flaky://{name}")
    register_ledger_scheme("flaky", ledger.open)
    bc.configure(ledger=f"flaky://{name}")
    yield ledger
    ledger.down.clear()  # a failed assertion must not leave a writer retrying forever
    ledger.refuse_open.clear()


@pytest.mark.parametrize("fault", ["disk full", "database down"])
def test_ledger_fault_keeps_every_record_until_it_recovers(flaky: FlakyLedger, fault: str) -> None:
    usage = anthropic_usage(120, 30)
    raw, ours, _, _ = clients(lambda: [lambda r: json_response(anthropic_message(usage))] * 5)
    if fault == "disk full":
        flaky.down.set()
    else:
        flaky.refuse_open.set()
    with bc.task("ledger-fault") as t:
        for _ in range(5):
            assert outcome(create(ours)) == outcome(create(raw))
    assert t.calls == 5
    assert t.cost == 5 * cost(120, 30)
    writer = get_writer()
    assert not writer.flush(0.3)  # the ledger is failing: records stay queued
    assert writer.pending == 6  # five calls and the task's record
    assert flaky.failed_writes + flaky.failed_opens >= 1
    flaky.down.clear()
    flaky.refuse_open.clear()
    assert writer.flush(10)
    records = flaky.read_calls()
    assert len(records) == 5 and len({r.id for r in records}) == 5
    assert all(r.usage.input_tokens == 120 and r.usage.output_tokens == 30 for r in records)
    assert sum((r.cost or Decimal(0)) for r in records) == 5 * cost(120, 30)
    (task_record,) = flaky.inner.read_tasks()
    assert task_record.calls == 5 and task_record.cost == 5 * cost(120, 30)


def test_ledger_that_raises_a_bug_never_reaches_the_user(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = anthropic_usage(10, 5)
    raw, ours, _, _ = clients(lambda: [lambda r: json_response(anthropic_message(usage))])

    def broken_submit(record: Any) -> None:
        raise RuntimeError("queue exploded")

    monkeypatch.setattr(get_writer(), "submit_call", broken_submit)
    with bc.task("submit-fault") as t:
        assert outcome(create(ours)) == outcome(create(raw))
    assert t.calls == 1 and t.usage.input_tokens == 10  # the task still counts it


# -- prices ----------------------------------------------------------------------------------------


def test_price_lookup_failing_keeps_tokens_and_the_call(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = anthropic_usage(200, 40, read=100)
    raw, ours, _, _ = clients(lambda: [lambda r: json_response(anthropic_message(usage))])

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OSError("price table unreadable")

    monkeypatch.setattr(pricing, "price_call", down)
    monkeypatch.setattr(pricing, "estimate_input_cost", down)
    with bc.task("no-prices", budget_usd=1):  # the budget check needs a price estimate too
        assert outcome(create(ours)) == outcome(create(raw))
    (record,) = calls(ledger_url)
    assert record.cost is None and record.status == "ok"
    assert (record.usage.input_tokens, record.usage.cache_read_tokens, record.usage.output_tokens) == (
        300,
        100,
        40,
    )


# -- malformed and missing usage ---------------------------------------------------------------------


def _without_usage(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "usage"}


MALFORMED: dict[str, Callable[[], httpx2.Response]] = {
    "no usage": lambda: json_response(_without_usage(anthropic_message(anthropic_usage(1, 1)))),
    "usage null": lambda: json_response({**anthropic_message(anthropic_usage(1, 1)), "usage": None}),
    "usage of strings": lambda: json_response(
        anthropic_message({"input_tokens": "many", "output_tokens": -4, "cache_creation": "x"})
    ),
    "usage a list": lambda: json_response({**anthropic_message(anthropic_usage(1, 1)), "usage": [1, 2]}),
    "body not json": lambda: httpx2.Response(
        200, headers={"content-type": "application/json"}, content=b"{oops"
    ),
    "body a list": lambda: json_response([1, 2, 3]),  # type: ignore[arg-type]
    "empty body": lambda: httpx2.Response(200, headers={"content-type": "application/json"}, content=b""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_or_missing_usage_gives_what_the_sdk_gives(ledger_url: str, case: str) -> None:
    make = MALFORMED[case]
    raw, ours, _, _ = clients(lambda: [lambda r: make()])
    with bc.task("malformed") as t:
        assert outcome(create(ours)) == outcome(create(raw))
    (record,) = calls(ledger_url)
    assert record.usage.input_tokens == 0 and record.usage.output_tokens == 0
    assert t.calls == 1


def test_stream_with_garbage_usage_events(ledger_url: str) -> None:
    def events() -> httpx2.Response:
        evs = anthropic_stream_events(anthropic_usage(50, 9))
        evs[0][1]["message"]["usage"] = {"input_tokens": None, "output_tokens": "x"}
        evs[-2][1]["usage"] = "nonsense"
        return sse_response(evs)

    raw, ours, _, _ = clients(lambda: [lambda r: events()])
    assert outcome(stream_all(ours)) == outcome(stream_all(raw))
    (record,) = calls(ledger_url)
    assert record.usage.output_tokens == 0 and record.usage.input_tokens == 0


def _openai_completion(usage: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
    if usage != "absent":
        body["usage"] = usage
    return body


@pytest.mark.parametrize(
    "usage",
    ["absent", None, {"prompt_tokens": "x", "completion_tokens": -1}, {"prompt_tokens_details": 5}, [1]],
    ids=["absent", "null", "strings", "details-int", "list"],
)
def test_openai_malformed_usage_gives_what_the_sdk_gives(ledger_url: str, usage: Any) -> None:
    def run(client_cls: type[Any]) -> tuple[Any, ...]:
        wire = Wire([lambda r: json_response(_openai_completion(usage))])
        client = client_cls(
            api_key="sk-test-0123456789",
            base_url="http://openai.test/v1",
            http_client=wire.client(),
            max_retries=0,
        )
        return outcome(
            lambda: client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        )

    assert run(bc.OpenAI) == run(openai.OpenAI)
    (record,) = calls(ledger_url)
    assert record.usage.input_tokens == 0 and record.usage.output_tokens == 0


@pytest.mark.parametrize("meta", ["absent", None, {"promptTokenCount": "x"}, {"candidatesTokenCount": -3}])
def test_gemini_malformed_usage_gives_what_the_sdk_gives(ledger_url: str, meta: Any) -> None:
    doc: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "modelVersion": "gemini-2.5-flash",
    }
    if meta != "absent":
        doc["usageMetadata"] = meta

    def run(wrapped: bool) -> tuple[Any, ...]:
        transport = httpx2.MockTransport(lambda r: json_response(doc))
        client = genai.Client(
            api_key="AIza-test-key-0123456789",
            http_options=gtypes.HttpOptions(client_args={"transport": transport}),
        )
        if wrapped:
            client = bc.wrap(client)
        return outcome(lambda: client.models.generate_content(model="gemini-2.5-flash", contents="hi"))

    assert run(True) == run(False)
    records = calls(ledger_url)
    assert len(records) == 1
    assert records[0].usage.output_tokens == 0 or meta == {"promptTokenCount": "x"}


# -- streams cut mid-way -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut_after", [1, 3, 5])
def test_stream_cut_mid_way_raises_as_the_sdk_does(ledger_url: str, cut_after: int) -> None:
    usage = anthropic_usage(400, 25)
    raw, ours, _, _ = clients(
        lambda: [lambda r: sse_response(anthropic_stream_events(usage), cut_after=cut_after)]
    )
    got = outcome(stream_all(ours))
    assert got == outcome(stream_all(raw))
    assert got[0] == "raised"
    (record,) = calls(ledger_url)
    assert record.status == "incomplete"
    # message_start (the first event) carries the input usage: kept when it arrived
    assert record.usage.input_tokens == (400 if cut_after >= 1 else 0)
    assert record.usage.output_tokens == 1  # message_start's count; the final delta never came


def test_openai_stream_cut_mid_way(ledger_url: str) -> None:
    chunks = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": f"part{i}"}}],
        }
        for i in range(4)
    ]

    def run(client_cls: type[Any]) -> tuple[Any, ...]:
        wire = Wire([lambda r: sse_response([(None, c) for c in chunks], cut_after=2)])
        client = client_cls(
            api_key="sk-test-0123456789",
            base_url="http://openai.test/v1",
            http_client=wire.client(),
            max_retries=0,
        )

        def consume() -> list[Any]:
            stream = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return list(stream)

        return outcome(consume)

    got = run(bc.OpenAI)
    assert got == run(openai.OpenAI)
    assert got[0] == "raised"
    (record,) = calls(ledger_url)
    assert record.status == "incomplete"


# -- provider errors and retries ---------------------------------------------------------------------


def test_429_then_500_then_success_with_retries(ledger_url: str) -> None:
    usage = anthropic_usage(90, 12)
    script = lambda: [  # noqa: E731
        lambda r: anthropic_error(429, "rate_limit_error"),
        lambda r: anthropic_error(500),
        lambda r: json_response(anthropic_message(usage)),
    ]
    raw, ours, raw_wire, bc_wire = clients(script, max_retries=2)
    with bc.task("retries") as t:
        assert outcome(create(ours)) == outcome(create(raw))
    assert len(bc_wire.requests) == len(raw_wire.requests) == 3
    records = sorted(calls(ledger_url), key=lambda r: r.attempt)
    assert [(r.attempt, r.status, r.http_status) for r in records] == [
        (0, "error", 429),
        (1, "error", 500),
        (2, "ok", 200),
    ]
    assert t.cost == cost(90, 12)  # failed attempts bill nothing
    assert t.usage.input_tokens == 90


@pytest.mark.parametrize("status", [429, 500, 529])
def test_retries_exhausted_raise_the_same_error(ledger_url: str, status: int) -> None:
    raw, ours, raw_wire, bc_wire = clients(lambda: [lambda r: anthropic_error(status)] * 3, max_retries=2)
    got = outcome(create(ours))
    assert got == outcome(create(raw))
    assert got[0] == "raised" and got[3] == status
    assert len(bc_wire.requests) == len(raw_wire.requests) == 3
    records = calls(ledger_url)
    assert [r.http_status for r in sorted(records, key=lambda r: r.attempt)] == [status] * 3
    assert all(r.status == "error" and (r.cost or 0) == 0 for r in records)


def test_connection_error_is_the_sdks(ledger_url: str) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    raw, ours, _, _ = clients(lambda: [refuse, refuse], max_retries=1)
    got = outcome(create(ours))
    assert got == outcome(create(raw))
    assert got[0] == "raised" and issubclass(got[1], anthropic.AnthropicError)  # the SDK's own error
    assert [r.status for r in calls(ledger_url)] == ["error", "error"]


# -- cancellation ----------------------------------------------------------------------------------------


async def _cancelled_call(client_cls: type[Any], budget: Decimal | None) -> tuple[Any, bc.Task]:
    started = asyncio.Event()

    async def hang(request: httpx2.Request) -> httpx2.Response:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(hang))
    client = client_cls(api_key=KEY, base_url="http://anthropic.test", http_client=http, max_retries=0)
    with bc.task("cancel-me", budget_usd=budget) as t:
        job = asyncio.ensure_future(
            client.messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "x " * 2000}]
            )
        )
        await started.wait()
        reserved_during = t._reserved
        job.cancel()
        try:
            await job
        except asyncio.CancelledError as exc:
            result: Any = ("cancelled", type(exc))
        else:
            result = ("returned",)
    return (result, reserved_during), t


async def test_task_cancelled_mid_call(ledger_url: str) -> None:
    (raw_result, _), _ = await _cancelled_call(anthropic.AsyncAnthropic, None)
    (ours, reserved_during), t = await _cancelled_call(bc.AsyncAnthropic, Decimal("0.0100"))
    assert ours == raw_result == ("cancelled", asyncio.CancelledError)
    assert reserved_during > 0  # the budget check held an estimate while the call was in flight
    assert t._reserved == 0  # ...and released it on cancellation: no leak
    (record,) = calls(ledger_url)
    assert record.status in ("incomplete", "error") and record.task_name == "cancel-me"
    assert record.error == "CancelledError"


async def test_budget_is_right_after_a_cancelled_call(ledger_url: str) -> None:
    """A leaked reservation would make the next call fail the budget check; it must not."""
    usage = anthropic_usage(100, 10)
    started = asyncio.Event()
    hang_first = [True]

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if hang_first.pop() if hang_first else False:
            started.set()
            await asyncio.sleep(3600)
        return json_response(anthropic_message(usage))

    client = bc.AsyncAnthropic(
        api_key=KEY,
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    prompt = [{"role": "user", "content": "word " * 3000}]
    with bc.task("tight") as probe:
        pass
    estimate = metering.estimate_input_cost("anthropic", MODEL, 3000)
    assert estimate is not None and probe.calls == 0
    # room for one in-flight estimate, not two
    with bc.task("tight", budget_usd=estimate * Decimal("1.6")) as t:
        job = asyncio.ensure_future(client.messages.create(model=MODEL, max_tokens=8, messages=prompt))
        await started.wait()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await client.messages.create(model=MODEL, max_tokens=8, messages=prompt)  # fits: nothing leaked
        assert t.calls == 2 and t._reserved == 0  # (reading a total settles the calls' roll-ups)
    assert t.cost == cost(100, 10)
    assert sorted(r.status for r in calls(ledger_url)) == ["incomplete", "ok"]  # cancelled: incomplete


def test_sync_stream_closed_early_is_recorded_incomplete(ledger_url: str) -> None:
    usage = anthropic_usage(70, 20)

    def first_two(client: Any) -> Callable[[], Any]:
        def run() -> list[Any]:
            with client.messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
            ) as events:
                out = []
                for event in events:
                    out.append(event)
                    if len(out) == 2:
                        break
                return out

        return run

    raw, ours, _, _ = clients(lambda: [lambda r: sse_response(anthropic_stream_events(usage))])
    assert outcome(first_two(ours)) == outcome(first_two(raw))
    (record,) = calls(ledger_url)
    assert record.status == "incomplete" and record.usage.input_tokens == 70


def test_json_encoding_of_records_never_fails_the_call(ledger_url: str) -> None:
    """Hostile metadata values (not JSON-serialisable) still reach the ledger."""
    usage = anthropic_usage(5, 5)
    raw, ours, _, _ = clients(lambda: [lambda r: json_response(anthropic_message(usage))])
    with bc.task("odd-metadata", metadata={"obj": object(), "set": {1, 2}, "nan": float("nan")}):
        assert outcome(create(ours)) == outcome(create(raw))
    (record,) = calls(ledger_url)
    assert record.usage.input_tokens == 5
    json.dumps(record.metadata, default=str)
