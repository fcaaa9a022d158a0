"""Traces a backend can sum: one trace per task, each call's usage on exactly one span.

Driven through the real SDK clients over a mocked wire, with the OpenTelemetry SDK's in-memory
exporters; with the anthropic SDK's own ``anthropic.messages.create`` spans on and off, streams,
retries and errors, sync and async. Expected numbers come from the wire's usage fields.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import budgetclient as bc
from budgetclient import telemetry
from budgetclient.errors import ConfigurationError
from tests.providers.openai_wire import USAGE as OPENAI_USAGE
from tests.providers.openai_wire import chat_reply
from tests.providers.wire import (
    Wire,
    anthropic_error,
    anthropic_message,
    anthropic_stream_events,
    anthropic_usage,
    json_response,
    sse_response,
)

CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4o"
RATES = {
    "input": Decimal(3), "cache_read": Decimal("0.3"), "cache_write": Decimal("3.75"), "output": Decimal(15),
}  # fmt: skip
UNCACHED, READ, WRITE, OUT = 100, 1000, 50, 20
WIRE_USAGE = anthropic_usage(UNCACHED, OUT, read=READ, write_5m=WRITE)
INPUT = UNCACHED + READ + WRITE
"""OpenTelemetry's input_tokens include the cached ones; Anthropic reports them apart."""
COST = (UNCACHED * RATES["input"] + READ * RATES["cache_read"] + WRITE * RATES["cache_write"]
        + OUT * RATES["output"]) / 1_000_000  # fmt: skip
PROMPT: list[Any] = [{"role": "user", "content": "hi"}]


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def task_span(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.finished() if s.name == f"task {name}"]
        return span

    def metric_sum(self, name: str, **match: str) -> tuple[float, int]:
        data = self.reader.get_metrics_data()
        points = [
            p
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for p in metric.data.data_points
            if all(p.attributes.get(k) == v for k, v in match.items())
        ]
        return sum(p.sum for p in points), sum(p.count for p in points)


def make_otel(mode: str) -> Otel:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry.enable(tracer_provider, MeterProvider(metric_readers=[reader]), mode=mode)
    bc.configure(prices={CLAUDE: {k: str(v) for k, v in RATES.items()}})
    return Otel(spans, reader, tracer_provider)


@pytest.fixture
def otel() -> Iterator[Otel]:
    yield make_otel("auto")
    telemetry.disable()


def usage_spans(otel: Otel) -> list[ReadableSpan]:
    return [s for s in otel.finished() if "gen_ai.usage.input_tokens" in (s.attributes or {})]


def assert_one_trace(otel: Otel, task: str) -> ReadableSpan:
    """Every span is in the task's trace, and the task span is its root."""
    root = otel.task_span(task)
    assert root.parent is None
    assert {s.context.trace_id for s in otel.finished()} == {root.context.trace_id}
    return root


def assert_usage_counted_once(otel: Otel, t: bc.Task) -> None:
    total = sum(int((s.attributes or {})["gen_ai.usage.input_tokens"]) for s in usage_spans(otel))
    assert total == t.usage.input_tokens
    tokens, _ = otel.metric_sum("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    assert tokens == t.usage.input_tokens


def ancestors(otel: Otel, span: ReadableSpan) -> list[str]:
    by_id = {s.context.span_id: s for s in otel.finished()}
    names = []
    while span.parent is not None:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def anthropic_client(wire: Wire, otel: Otel, sdk_spans: bool, *, aio: bool = False) -> Any:
    option: Any = {"tracer_provider": otel.tracer_provider} if sdk_spans else False
    if aio:
        return bc.AsyncAnthropic(api_key="k", http_client=wire.async_client(), open_telemetry=option)
    return bc.Anthropic(api_key="k", http_client=wire.client(), open_telemetry=option)


def the_wire() -> Wire:
    """Four calls: a plain reply, a 529 retried into a reply, a full stream, and a 400."""
    return Wire(
        responders=[
            lambda r: json_response(anthropic_message(WIRE_USAGE)),
            lambda r: anthropic_error(529, "overloaded_error"),
            lambda r: json_response(anthropic_message(WIRE_USAGE, msg_id="msg_02")),
            lambda r: sse_response(anthropic_stream_events(WIRE_USAGE)),
            lambda r: anthropic_error(400, "invalid_request_error"),
        ]
    )


def check_run(otel: Otel, t: bc.Task, sdk_spans: bool) -> None:
    assert t.usage.input_tokens == 3 * INPUT and t.usage.output_tokens == 3 * OUT
    root = assert_one_trace(otel, t.name)
    assert_usage_counted_once(otel, t)
    carriers = usage_spans(otel)
    assert len(carriers) == 3  # one per billed call, none for the failed attempt or the 400
    for span in carriers:
        a = span.attributes or {}
        assert span.kind == SpanKind.CLIENT
        assert a["budgetclient.cost.total"] == pytest.approx(float(COST))
        assert a["gen_ai.usage.cache_read.input_tokens"] == READ
        assert a["gen_ai.usage.cache_creation.input_tokens"] == WRITE
        assert a["budgetclient.task.id"] == t.id
        assert ancestors(otel, span)[-1] == root.name
    scopes = {s.instrumentation_scope.name for s in carriers if s.instrumentation_scope}
    assert scopes == ({"com.anthropic.sdk.python"} if sdk_spans else {"budgetclient"})
    if sdk_spans:  # the attempts the SDK retried or that failed are events on its span, not spans
        assert {s.name for s in otel.finished()} == {"anthropic.messages.create", f"task {t.name}"}
        failed = [e for s in otel.finished() for e in s.events if e.name == "budgetclient.attempt_failed"]
        assert sorted(e.attributes["http.response.status_code"] for e in failed) == [400, 529]
    else:
        errors = [s for s in otel.finished() if s.status.status_code == StatusCode.ERROR]
        assert sorted((s.attributes or {})["http.response.status_code"] for s in errors) == [400, 529]
    _, durations = otel.metric_sum("gen_ai.client.operation.duration")
    assert durations == 5  # once per attempt budgetclient metered
    ta = root.attributes or {}
    assert not [k for k in ta if k.startswith("gen_ai.usage.")]
    assert ta["budgetclient.task.usage.input_tokens"] == 3 * INPUT
    assert ta["budgetclient.task.cost.total"] == pytest.approx(float(3 * COST))
    assert ta["budgetclient.task.budget_usd"] == 1.0 and ta["budgetclient.task.outcome"] == "success"


@pytest.mark.parametrize("sdk_spans", [True, False], ids=["sdk-spans", "no-sdk-spans"])
def test_sync_calls_streams_and_errors_make_one_trace_with_usage_once(otel: Otel, sdk_spans: bool) -> None:
    client = anthropic_client(the_wire(), otel, sdk_spans)
    with bc.task("sync", budget_usd=1) as t:
        client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        for _ in client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT, stream=True):
            pass
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
    check_run(otel, t, sdk_spans)


@pytest.mark.parametrize("sdk_spans", [True, False], ids=["sdk-spans", "no-sdk-spans"])
async def test_async_calls_streams_and_errors_make_one_trace_with_usage_once(
    otel: Otel, sdk_spans: bool
) -> None:
    client = anthropic_client(the_wire(), otel, sdk_spans, aio=True)
    async with bc.task("async", budget_usd=1) as t:
        await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        stream = await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT, stream=True)
        async for _ in stream:
            pass
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
    check_run(otel, t, sdk_spans)


@pytest.mark.parametrize("sdk_spans", [True, False], ids=["sdk-spans", "no-sdk-spans"])
def test_a_stream_closed_early_still_counts_once(otel: Otel, sdk_spans: bool) -> None:
    wire = Wire(responders=[lambda r: sse_response(anthropic_stream_events(WIRE_USAGE))])
    client = anthropic_client(wire, otel, sdk_spans)
    with bc.task("early") as t:
        stream = client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT, stream=True)
        next(iter(stream))  # message_start: the input usage is known, the output is not
        stream.close()
    assert t.usage.input_tokens == INPUT
    assert_one_trace(otel, "early")
    assert_usage_counted_once(otel, t)
    assert len(usage_spans(otel)) == 1


def test_nested_tasks_threads_and_user_spans_nest(otel: Otel) -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(WIRE_USAGE)))
    client = anthropic_client(wire, otel, sdk_spans=False)
    tracer = otel.tracer_provider.get_tracer("user-app")

    def job() -> None:
        client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)

    with bc.task("outer") as t:
        with tracer.start_as_current_span("plan step"), bc.task("inner"):
            job()
        with bc.task_executor(2) as pool:
            list(pool.map(lambda _: job(), range(2)))
    assert t.calls == 3
    assert_one_trace(otel, "outer")
    assert_usage_counted_once(otel, t)
    chains = sorted(ancestors(otel, s) for s in usage_spans(otel))
    assert chains == [["task inner", "plan step", "task outer"], ["task outer"], ["task outer"]]
    inner = otel.task_span("inner")
    assert (inner.attributes or {})["budgetclient.task.parent_id"] == t.id


async def test_concurrent_asyncio_tasks_are_sibling_children(otel: Otel) -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(WIRE_USAGE)))
    client = anthropic_client(wire, otel, sdk_spans=True, aio=True)

    async def child(name: str) -> bc.Task:
        async with bc.task(name) as t:
            await asyncio.sleep(0)
            await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
            return t

    async with bc.task("parent") as parent:
        a, b = await asyncio.gather(child("a"), child("b"))
    assert_one_trace(otel, "parent")
    assert_usage_counted_once(otel, parent)
    root = otel.task_span("parent")
    for t in (a, b):
        span = otel.task_span(t.name)
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        (call,) = [s for s in usage_spans(otel) if (s.attributes or {})["budgetclient.task.id"] == t.id]
        assert call.parent is not None and call.parent.span_id == span.context.span_id


def openai_wire() -> Wire:
    def answer(request: httpx2.Request) -> httpx2.Response:
        content_type, body = chat_reply(json.loads(request.content))
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    return Wire(default=answer)


@pytest.mark.parametrize("foreign", [True, False], ids=["instrumented", "plain"])
def test_openai_calls_enrich_a_current_genai_span_or_get_their_own(otel: Otel, foreign: bool) -> None:
    """An instrumentation that makes its span current (logfire, pydantic-ai, the OpenTelemetry
    openai instrumentor) is recognised by the span's own GenAI attributes."""
    client = bc.OpenAI(api_key="k", http_client=openai_wire().client())
    tracer = otel.tracer_provider.get_tracer("some.instrumentation")

    def call(**extra: Any) -> Callable[[], Any]:
        return lambda: client.chat.completions.create(model=GPT, messages=PROMPT, **extra)

    with bc.task("openai") as t:
        for run in (call(), call(stream=True, stream_options={"include_usage": True})):
            if foreign:
                attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": GPT}
                with tracer.start_as_current_span(f"chat {GPT}", kind=SpanKind.CLIENT, attributes=attributes):
                    result = run()
            else:
                result = run()
            if isinstance(result, Iterator):
                list(result)
    assert t.usage.input_tokens == 2 * OPENAI_USAGE["prompt_tokens"]
    assert_one_trace(otel, "openai")
    assert_usage_counted_once(otel, t)
    scopes = {s.instrumentation_scope.name for s in usage_spans(otel) if s.instrumentation_scope}
    assert scopes == {"some.instrumentation" if foreign else "budgetclient"}
    assert len(usage_spans(otel)) == 2


def test_modes_own_and_enrich() -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(WIRE_USAGE)))
    otel = make_otel("own")
    try:
        client = anthropic_client(wire, otel, sdk_spans=True)
        with bc.task("own"):
            client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        ours = [s for s in otel.finished() if s.name == f"chat {CLAUDE}"]
        assert len(ours) == 1 and ancestors(otel, ours[0])[0] == "anthropic.messages.create"
        assert (ours[0].attributes or {})["gen_ai.usage.input_tokens"] == INPUT
    finally:
        telemetry.disable()
    otel = make_otel("enrich")
    try:
        client = anthropic_client(wire, otel, sdk_spans=False)
        with bc.task("enrich") as t:
            client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        assert [s.name for s in otel.finished()] == ["task enrich"]  # nothing to enrich, no span made
        assert otel.metric_sum("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})[0] == INPUT
        assert t.usage.input_tokens == INPUT
    finally:
        telemetry.disable()


def test_configure_otel_modes() -> None:
    telemetry.install()
    try:
        assert bc.configure(otel=True).otel_mode == "auto" and telemetry.is_enabled()
        settings = bc.configure(otel="own")
        assert settings.otel and settings.otel_mode == "own"
        assert telemetry._exporter is not None and telemetry._exporter.mode == "own"
        with pytest.raises(ConfigurationError, match="'auto', 'enrich', 'own'"):
            bc.configure(otel="both")
        assert not bc.configure(otel=False).otel and not telemetry.is_enabled()
    finally:
        telemetry.disable()


def test_a_span_from_an_unrelated_operation_is_not_enriched(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("agent-framework")
    agent = {"gen_ai.operation.name": "invoke_agent"}
    with tracer.start_as_current_span("invoke_agent helper", attributes=agent):
        assert not telemetry.is_genai_call_span(_current_span())
    with tracer.start_as_current_span("chat x", attributes={"gen_ai.operation.name": "chat"}):
        assert telemetry.is_genai_call_span(_current_span())
    with bc.task("t"):
        assert not telemetry.is_genai_call_span(_current_span())  # our own task span


def _current_span() -> Any:
    from opentelemetry import trace

    return trace.get_current_span()


def test_a_scope_exited_in_another_context_still_ends_its_span(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """As when an async generator holding ``bc.task`` is finalised by another task: the OpenTelemetry
    context is restored there as tasks.py restores the task, without "Failed to detach context"."""
    scope = bc.task("moved")
    with bc.task("holder"):
        scope.__enter__()
        contextvars.copy_context().run(scope.__exit__, None, None, None)
    assert not [r for r in caplog.records if "detach" in r.getMessage()]
    moved, holder = otel.task_span("moved"), otel.task_span("holder")
    assert moved.parent is not None and moved.parent.span_id == holder.context.span_id
    assert (moved.attributes or {})["budgetclient.task.outcome"] == "success"


def test_switching_mode_mid_task_keeps_the_task_span(otel: Otel) -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(WIRE_USAGE)))
    client = anthropic_client(wire, otel, sdk_spans=True)
    exporter = telemetry._exporter
    assert exporter is not None
    with bc.task("switch") as t:
        client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        telemetry.enable(otel.tracer_provider, exporter.meter_provider, mode="own")
        client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
    assert_one_trace(otel, "switch")
    scopes = sorted(s.instrumentation_scope.name for s in usage_spans(otel) if s.instrumentation_scope)
    assert scopes == ["budgetclient", "com.anthropic.sdk.python", "com.anthropic.sdk.python"]
    assert (otel.task_span("switch").attributes or {})["budgetclient.task.calls"] == t.calls == 2
