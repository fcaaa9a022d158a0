"""bc.Anthropic over a mocked wire: every call path, sync and async, usage and cost exact."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message

import budgetclient as bc
from budgetclient.ledger import open_ledger

from .._fake_costs import anthropic_cost
from .._sdk import assert_same_outcome, drain
from .wire import (
    Wire,
    anthropic_error,
    anthropic_message,
    anthropic_stream_events,
    anthropic_usage,
    json_response,
    sse_response,
)

MODEL = "claude-sonnet-4-6"
MTOK = Decimal(1_000_000)
# Published Claude Sonnet 4.6 rates (USD per million tokens): standard and batch.
STANDARD = {
    "input": Decimal("3"),
    "output": Decimal("15"),
    "read": Decimal("0.30"),
    "write_5m": Decimal("3.75"),
    "write_1h": Decimal("6"),
}
BATCH = {k: v / 2 for k, v in STANDARD.items()}

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Hi there"}]


def cost_of(usage: dict[str, Any], rates: dict[str, Decimal] = STANDARD) -> Decimal:
    """Expected cost from Anthropic's own usage fields (input_tokens excludes cache tokens)."""
    return anthropic_cost(usage, rates)


def expected_usage(usage: dict[str, Any]) -> bc.Usage:
    creation = usage.get("cache_creation") or {}
    read = usage.get("cache_read_input_tokens", 0)
    write = usage.get("cache_creation_input_tokens", 0)
    return bc.Usage(
        input_tokens=usage["input_tokens"] + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_long_tokens=creation.get("ephemeral_1h_input_tokens", 0),
        output_tokens=usage["output_tokens"],
        reasoning_tokens=(usage.get("output_tokens_details") or {}).get("thinking_tokens", 0),
        requests=1,
    )


USAGE = anthropic_usage(21, 34, read=1800, write_5m=300, write_1h=200, thinking=12)


def sync_client(wire: Wire, **options: Any) -> bc.Anthropic:
    return bc.Anthropic(
        api_key="sk-ant-test-key",
        base_url="http://anthropic.test",
        http_client=wire.client(),
        max_retries=options.pop("max_retries", 0),
        **options,
    )


def async_client(wire: Wire, **options: Any) -> bc.AsyncAnthropic:
    return bc.AsyncAnthropic(
        api_key="sk-ant-test-key",
        base_url="http://anthropic.test",
        http_client=wire.async_client(),
        max_retries=options.pop("max_retries", 0),
        **options,
    )


def json_wire(usage: dict[str, Any] = USAGE, **kw: Any) -> Wire:
    return Wire(default=lambda r: json_response(anthropic_message(usage), **kw))


def sse_wire(usage: dict[str, Any] = USAGE, **kw: Any) -> Wire:
    return Wire(default=lambda r: sse_response(anthropic_stream_events(usage, **kw)))


def assert_one_call(t: bc.Task, usage: dict[str, Any] = USAGE, *, stream: bool = False) -> None:
    assert t.calls == 1
    assert t.usage == expected_usage(usage)
    assert t.cost == cost_of(usage)
    (record,) = t.records
    assert record.provider == "anthropic" and record.model == MODEL and record.status == "ok"
    assert record.stream is stream


# -- construction ------------------------------------------------------------------------------


def test_is_the_sdk_class_and_copies_stay_instrumented() -> None:
    c = sync_client(json_wire())
    assert isinstance(c, anthropic.Anthropic)
    assert isinstance(bc.AsyncAnthropic(api_key="k"), anthropic.AsyncAnthropic)
    copy = c.with_options(timeout=30)
    assert type(copy) is bc.Anthropic
    assert copy.budget_options == c.budget_options
    assert sum(type(m).__name__ == "BudgetMiddleware" for m in copy._middleware) == 1


def test_options_are_validated() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword|unknown"):
        bc.Anthropic(api_key="k", cahce="auto")
    with pytest.raises(bc.ConfigurationError, match="cache_ttl='2h'"):
        bc.Anthropic(api_key="k", cache_ttl="2h")
    with pytest.raises(TypeError, match="unknown budgetclient option"):
        bc.wrap(anthropic.Anthropic(api_key="k"), drfit="warn")


def test_wrap_returns_same_class_and_leaves_original_untouched() -> None:
    wire = json_wire()
    original = anthropic.Anthropic(
        api_key="k", base_url="http://anthropic.test", http_client=wire.client(), max_retries=0
    )
    wrapped = bc.wrap(original, drift="off")
    assert type(wrapped) is anthropic.Anthropic
    assert original._middleware == ()
    with bc.task("t") as t:
        original.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        assert t.calls == 0
        wrapped.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert_one_call(t)


# -- every call path, sync ---------------------------------------------------------------------


def test_create() -> None:
    c = sync_client(json_wire())
    with bc.task("t") as t:
        msg = c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert type(msg) is Message
    assert msg.usage.input_tokens == 21
    assert_one_call(t)
    assert t.records[0].response_id == "msg_01"


def test_create_gzip_body_read_lazily() -> None:
    c = sync_client(json_wire(gzip_body=True))
    with bc.task("t") as t:
        c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert_one_call(t)


def test_create_stream_true() -> None:
    c = sync_client(sse_wire())
    with bc.task("t") as t:
        events = list(c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True))
    assert events[0].type == "message_start"
    assert_one_call(t, stream=True)


def test_stream_helper_uses_cumulative_delta_not_sum() -> None:
    usage = anthropic_usage(50, 34, read=0, write_5m=0)
    c = sync_client(Wire(default=lambda r: sse_response(anthropic_stream_events(usage, deltas=(10, 34)))))
    with bc.task("t") as t, c.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 34
    assert_one_call(t, usage, stream=True)  # 34 output tokens, not 44


def test_with_raw_response() -> None:
    c = sync_client(json_wire())
    with bc.task("t") as t:
        raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        assert raw.headers["request-id"] == "req_test"
        assert raw.parse().usage.output_tokens == 34
    assert_one_call(t)


def test_with_streaming_response() -> None:
    c = sync_client(json_wire())
    with bc.task("t") as t:
        with c.messages.with_streaming_response.create(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as resp:
            assert t.calls == 0  # body not read yet
            body = b"".join(resp.iter_bytes())
        assert json.loads(body)["usage"]["output_tokens"] == 34
    assert_one_call(t)


def test_with_options_and_copy_and_beta() -> None:
    c = sync_client(json_wire())
    with bc.task("t") as t:
        c.with_options(max_retries=0).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        c.copy(timeout=20).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        beta = c.beta.messages.create(
            model=MODEL, max_tokens=10, messages=MESSAGES, betas=["context-1m-2025-08-07"]
        )
    assert beta.usage.input_tokens == 21
    assert t.calls == 3
    assert t.usage == expected_usage(USAGE) + expected_usage(USAGE) + expected_usage(USAGE)
    assert t.cost == 3 * cost_of(USAGE)


def test_tool_runner_meters_every_hop() -> None:
    from anthropic import beta_tool

    @beta_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    first = anthropic_usage(400, 30, read=0, write_5m=0)
    second = anthropic_usage(450, 12, read=0, write_5m=0)
    tool_use = [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]
    wire = Wire(
        responders=[
            lambda r: json_response(
                anthropic_message(first, content=tool_use, stop_reason="tool_use", msg_id="m1")
            ),
            lambda r: json_response(anthropic_message(second, msg_id="m2")),
        ]
    )
    c = sync_client(wire, drift="raise")
    with bc.task("agent") as t:
        runner = c.beta.messages.tool_runner(
            model=MODEL, max_tokens=100, tools=[get_weather], messages=MESSAGES
        )
        final = runner.until_done()  # a server-side thread continuation is not prefix drift
    assert final.id == "m2"
    assert t.calls == 2
    assert t.usage == expected_usage(first) + expected_usage(second)
    assert t.cost == cost_of(first) + cost_of(second)


def test_batch_results_priced_at_batch_rates() -> None:
    u1 = anthropic_usage(1000, 200, read=0, write_5m=0)
    u2 = anthropic_usage(2000, 100, read=500, write_5m=0)
    lines = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": anthropic_message(u1, msg_id="m1")}},
        {"custom_id": "b", "result": {"type": "succeeded", "message": anthropic_message(u2, msg_id="m2")}},
        {
            "custom_id": "c",
            "result": {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            },
        },
    ]
    jsonl = "\n".join(json.dumps(x) for x in lines).encode()
    batch = {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0},
        "ended_at": "2026-11-29T00:00:00Z",
        "created_at": "2026-11-29T00:00:00Z",
        "expires_at": "2026-11-30T00:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": "http://anthropic.test/v1/messages/batches/msgbatch_1/results",
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/results"):
            from .wire import ChunkStream

            return httpx2.Response(
                200,
                headers={"content-type": "application/binary"},
                stream=ChunkStream([jsonl[:50], jsonl[50:]]),
            )
        return httpx2.Response(200, json=batch)

    c = sync_client(Wire(default=handler))
    with bc.task("batch") as t:
        c.messages.batches.create(
            requests=[{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}}]
        )
        assert t.calls == 0  # creating a batch bills nothing
        results = list(c.messages.batches.results("msgbatch_1"))
        list(c.messages.batches.results("msgbatch_1"))  # read twice, billed once
    assert len(results) == 3
    assert t.calls == 2
    assert all(r.batch and r.operation == "batch" for r in t.records)
    assert t.usage == expected_usage(u1) + expected_usage(u2)
    assert t.cost == cost_of(u1, BATCH) + cost_of(u2, BATCH)


# -- async -------------------------------------------------------------------------------------


async def test_async_paths() -> None:
    c = async_client(json_wire())
    s = async_client(sse_wire())
    with bc.task("t") as t:
        msg = await c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        raw = await c.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        assert (await raw.parse()).usage.output_tokens == 34
        async with c.messages.with_streaming_response.create(
            model=MODEL, max_tokens=10, messages=MESSAGES
        ) as r:
            await r.read()
        stream = await s.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        async with s.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as helper:
            final = await helper.get_final_message()
        await c.with_options(timeout=9).beta.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert type(msg) is Message and final.usage.output_tokens == 34
    assert t.calls == 6
    assert t.usage == sum([expected_usage(USAGE)] * 6, bc.Usage())
    assert t.cost == 6 * cost_of(USAGE)
    assert [r.stream for r in t.records] == [False, False, False, True, True, False]


async def test_async_task_scope_follows_asyncio_tasks() -> None:
    import asyncio

    c = async_client(json_wire())

    async def one(i: int) -> bc.Task:
        async with bc.task(f"job{i}") as t:
            await c.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        return t

    tasks = await asyncio.gather(*(one(i) for i in range(20)))
    for t in tasks:
        assert_one_call(t)


# -- failures, interruptions, budgets ----------------------------------------------------------


def test_interrupted_stream_records_what_arrived_flagged_incomplete() -> None:
    usage = anthropic_usage(70, 5, read=100, write_5m=0)
    wire = Wire(default=lambda r: sse_response(anthropic_stream_events(usage), cut_after=4))
    raw = anthropic.Anthropic(api_key="sk-ant-test-key", base_url="http://anthropic.test",
                              http_client=wire.client(), max_retries=0)  # fmt: skip
    c = sync_client(wire)

    def create(client: Any) -> Any:
        return client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)

    expected = drain(lambda: create(raw))
    with bc.task("t") as t:
        got = drain(lambda: create(c))
    assert isinstance(expected.transport_error, httpx2.ReadError)
    assert_same_outcome(got, expected)  # whatever the installed SDK raises mid-stream, after the same events
    assert got.items[0].type == "message_start"  # so the input and cache figures arrived
    (record,) = t.records
    assert (record.status, record.error) == ("incomplete", "ReadError")  # the wire's fault, on every release
    # message_start arrived: input and cache figures are known, output so far is 1
    assert record.usage == bc.Usage(input_tokens=170, cache_read_tokens=100, output_tokens=1, requests=1)


def test_early_close_of_stream_is_incomplete() -> None:
    c = sync_client(sse_wire())
    with bc.task("t") as t, c.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        for _event in stream:
            break
    (record,) = t.records
    assert record.status == "incomplete"
    assert record.usage.input_tokens == expected_usage(USAGE).input_tokens


def test_retried_attempts_are_recorded_as_errors() -> None:
    wire = Wire(
        responders=[lambda r: anthropic_error(500), lambda r: anthropic_error(429, "rate_limit_error")],
        default=lambda r: json_response(anthropic_message(USAGE)),
    )
    c = sync_client(wire, max_retries=2)
    with bc.task("t") as t:
        c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert [(r.status, r.http_status, r.attempt) for r in t.records] == [
        ("error", 500, 0),
        ("error", 429, 1),
        ("ok", 200, 2),
    ]
    assert t.usage == expected_usage(USAGE)
    assert t.cost == cost_of(USAGE)


def test_client_error_raises_sdk_error_unchanged_and_is_recorded() -> None:
    c = sync_client(Wire(default=lambda r: anthropic_error(400, "invalid_request_error")))
    with pytest.raises(anthropic.BadRequestError), bc.task("t") as t:
        c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    (record,) = t.records
    assert (record.status, record.http_status, record.usage.requests, record.cost) == (
        "error",
        400,
        0,
        Decimal(0),
    )
    assert t.outcome == "failure"


def test_budget_exceeded_sends_nothing() -> None:
    wire = json_wire()
    c = sync_client(wire)
    big = [{"role": "user", "content": "word " * 40_000}]  # ~40k tokens x $3/M = ~$0.12 > $0.01
    with pytest.raises(bc.BudgetExceeded) as info, bc.task("tight", budget_usd="0.01"):
        c.messages.create(model=MODEL, max_tokens=10, messages=big)
    assert wire.requests == []
    assert info.value.budget_usd == Decimal("0.01")
    assert info.value.estimate_usd > Decimal("0.01")


def test_pricing_fault_never_breaks_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from budgetclient import pricing

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("price db exploded")

    monkeypatch.setattr(pricing, "price_call", broken)
    c = sync_client(json_wire())
    with bc.task("t") as t:
        msg = c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert msg.usage.output_tokens == 34
    assert t.usage == expected_usage(USAGE)
    assert t.cost is None


def test_a_placement_fault_sends_the_body_as_given_and_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    from budgetclient.providers import anthropic as provider

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("placement bug sk-ant-api03-secretsecretsecret")

    monkeypatch.setattr(provider, "prepare_request", broken)
    wire = json_wire()
    c = sync_client(wire)
    with bc.task("t") as t, capture_logs() as logs:
        msg = c.messages.create(model=MODEL, max_tokens=100, system="Be brief.", messages=MESSAGES)
    assert msg.usage.output_tokens == 34
    assert t.usage == expected_usage(USAGE)
    # nothing placed: no marker, no diagnostics request, the caller's body as the SDK built it
    assert wire.bodies() == [{"model": MODEL, "max_tokens": 100, "system": "Be brief.", "messages": MESSAGES}]
    (fault,) = [e for e in logs if e["event"] == "cache.prepare_failed"]
    assert fault["error"] == "RuntimeError" and fault["model"] == MODEL
    assert "secretsecret" not in fault["detail"]


def test_unwritable_ledger_never_breaks_the_call(tmp_path: Any) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    bc.configure(ledger=f"sqlite:///{blocked}/ledger.db")
    c = sync_client(json_wire())
    with bc.task("t") as t:
        msg = c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert isinstance(msg, Message)
    assert t.cost == cost_of(USAGE)
    assert bc.flush(0.5) is False  # kept in memory and retried
    blocked.unlink()
    blocked.mkdir()  # the disk comes back: the records written late are all there
    assert bc.flush(15) is True
    ledger = open_ledger(f"sqlite:///{blocked}/ledger.db")
    assert [r.usage for r in ledger.read_calls()] == [expected_usage(USAGE)]
    assert [r.id for r in ledger.read_tasks()] == [t.id]


def test_unknown_model_cost_none_tokens_kept() -> None:
    c = sync_client(Wire(default=lambda r: json_response(anthropic_message(USAGE, model="claude-future-9"))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bc.task("t") as t:
            c.messages.create(model="claude-future-9", max_tokens=10, messages=MESSAGES)
            c.messages.create(model="claude-future-9", max_tokens=10, messages=MESSAGES)
    assert t.cost is None
    assert t.usage == expected_usage(USAGE) + expected_usage(USAGE)
    assert sum(isinstance(w.message, bc.UnknownPriceWarning) for w in caught) == 1


def test_records_reach_ledger_without_prompt_text_or_key(ledger_url: str) -> None:
    secret_prompt = "my secret prompt text 12345"
    c = sync_client(json_wire())
    c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": secret_prompt}])
    assert bc.flush(10)
    (record,) = open_ledger(ledger_url).read_calls()
    assert record.task_id is None
    assert record.usage == expected_usage(USAGE)
    dumped = repr(record)
    assert secret_prompt not in dumped and "sk-ant-test-key" not in dumped


def test_wrap_of_a_budgetclient_client_replaces_its_options() -> None:
    c = sync_client(json_wire(), drift="warn")
    again = bc.wrap(c, drift="off", cache="off")
    assert type(again) is bc.Anthropic
    assert again.budget_options == bc.ClientOptions(cache="off", drift="off")
    assert c.budget_options == bc.ClientOptions()
    assert sum(type(m).__name__ == "BudgetMiddleware" for m in again._middleware) == 1


def test_opt_in_allocation_check_logs_components_over_target() -> None:
    from structlog.testing import capture_logs

    c = sync_client(json_wire(), cache="off", drift="off")
    system = "policy " * 9_000  # far beyond 15% of a 32k window
    with capture_logs() as quiet:
        c.messages.create(model=MODEL, max_tokens=10, system=system, messages=MESSAGES)
    assert not [e for e in quiet if e["event"] == "plan.allocation_exceeded"]
    bc.configure(allocation_check=True)
    with capture_logs() as logs:
        c.messages.create(model=MODEL, max_tokens=10, system=system, messages=MESSAGES)
    exceeded = [e for e in logs if e["event"] == "plan.allocation_exceeded"]
    assert exceeded and all(e["tokens"] > e["target_tokens"] for e in exceeded)
    assert exceeded[0]["target_tokens"] == 32_000 * 15 // 100
    with pytest.raises(bc.ConfigurationError, match="allocation_check"):
        bc.configure(allocation_check="yes")
