"""Next to the OpenTelemetry instrumentor packages (opentelemetry-instrumentation-anthropic/-openai,
OpenLLMetry): their span carries each call's usage, budgetclient enriches it, and the
``gen_ai.client.*`` metrics are theirs alone. Skipped where the packages are not installed (they
are not dev dependencies: they patch the SDK classes process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import budgetclient as bc
from budgetclient import telemetry
from tests.providers.openai_wire import USAGE as OPENAI_USAGE
from tests.test_telemetry_traces import (
    CLAUDE,
    GPT,
    INPUT,
    PROMPT,
    WIRE_USAGE,
    Otel,
    Wire,
    anthropic_client,
    anthropic_message,
    anthropic_stream_events,
    assert_one_trace,
    json_response,
    make_otel,
    openai_wire,
    sse_response,
    usage_spans,
)


def instrumented(module: str) -> Iterator[tuple[Otel, str]]:
    package = pytest.importorskip(module)
    otel = make_otel("auto")
    (name,) = [n for n in dir(package) if n.endswith("Instrumentor") and n != "BaseInstrumentor"]
    instrumentor = getattr(package, name)()
    assert telemetry._exporter is not None
    meter_provider = telemetry._exporter.meter_provider  # theirs and ours on one reader
    instrumentor.instrument(tracer_provider=otel.tracer_provider, meter_provider=meter_provider)
    try:
        yield otel, module
    finally:
        instrumentor.uninstrument()
        _unwrap_sdk_methods()
        telemetry.disable()


def _unwrap_sdk_methods() -> None:
    """Undo what ``uninstrument()`` leaves wrapped (opentelemetry-instrumentation-openai 0.62.4
    unwraps ``openai.resources.chat.completions.Completions``, an alias, not the class it wrapped),
    so the other tests meet the SDK as it ships."""
    for name, module in list(sys.modules.items()):
        if not name.startswith(("openai.resources", "anthropic.resources")):
            continue
        for cls in [c for c in vars(module).values() if isinstance(c, type)]:
            for attribute, value in list(vars(cls).items()):
                if type(value).__name__.endswith("FunctionWrapper") and hasattr(value, "__wrapped__"):
                    setattr(cls, attribute, value.__wrapped__)


@pytest.fixture
def anthropic_instrumented() -> Iterator[tuple[Otel, str]]:
    yield from instrumented("opentelemetry.instrumentation.anthropic")


@pytest.fixture
def openai_instrumented() -> Iterator[tuple[Otel, str]]:
    yield from instrumented("opentelemetry.instrumentation.openai")


def check(otel: Otel, scope: str, t: bc.Task, calls: int) -> None:
    assert_one_trace(otel, t.name)
    carriers = usage_spans(otel)
    assert len(carriers) == calls
    scopes = {s.instrumentation_scope.name for s in carriers if s.instrumentation_scope}
    assert {name.removesuffix(".v1") for name in scopes} == {scope}
    total = sum(int((s.attributes or {})["gen_ai.usage.input_tokens"]) for s in carriers)
    assert total == t.usage.input_tokens
    assert all("budgetclient.cost.total" in (s.attributes or {}) for s in carriers)
    tokens, _ = otel.metric_sum("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    assert tokens == t.usage.input_tokens  # theirs only: budgetclient records none next to them


def test_anthropic_instrumentor_span_is_enriched(anthropic_instrumented: tuple[Otel, str]) -> None:
    otel, scope = anthropic_instrumented
    wire = Wire(
        responders=[
            lambda r: json_response(anthropic_message(WIRE_USAGE)),
            lambda r: sse_response(anthropic_stream_events(WIRE_USAGE)),
        ]
    )
    client = anthropic_client(wire, otel, sdk_spans=False)
    with bc.task("instrumented") as t:
        client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        for _ in client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT, stream=True):
            pass
    assert t.usage.input_tokens == 2 * INPUT
    check(otel, scope, t, 2)


def test_openai_instrumentor_span_is_enriched(openai_instrumented: tuple[Otel, str]) -> None:
    otel, scope = openai_instrumented
    client = bc.OpenAI(api_key="k", http_client=openai_wire().client())
    with bc.task("instrumented") as t:
        client.chat.completions.create(model=GPT, messages=PROMPT)
        list(client.chat.completions.create(model=GPT, messages=PROMPT, stream=True,
                                            stream_options={"include_usage": True}))  # fmt: skip
    assert t.usage.input_tokens == 2 * OPENAI_USAGE["prompt_tokens"]
    check(otel, scope, t, 2)



LOGFIRE_RUN = """
import json, sys
import httpx2, logfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import budgetclient as bc
from budgetclient import telemetry
from tests.providers.openai_wire import chat_reply
from tests.test_telemetry_traces import (
    CLAUDE, GPT, PROMPT, WIRE_USAGE, Wire, anthropic_message, anthropic_stream_events, json_response,
    sse_response,
)

spans = InMemorySpanExporter()
logfire.configure(
    send_to_logfire=False, console=False, additional_span_processors=[SimpleSpanProcessor(spans)]
)
telemetry.enable()
wire = Wire(responders=[lambda r: json_response(anthropic_message(WIRE_USAGE)),
                        lambda r: sse_response(anthropic_stream_events(WIRE_USAGE))])
claude = bc.Anthropic(api_key="k", http_client=wire.client(), open_telemetry=False)
logfire.instrument_anthropic(claude)

def answer(request):
    content_type, body = chat_reply(json.loads(request.content))
    return httpx2.Response(200, headers={"content-type": content_type}, content=body)

gpt = bc.OpenAI(api_key="k", http_client=Wire(default=answer).client())
logfire.instrument_openai(gpt)
with bc.task("logfire") as t:
    claude.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
    for _ in claude.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT, stream=True):
        pass
    gpt.chat.completions.create(model=GPT, messages=PROMPT)
    usage = {"include_usage": True}
    list(gpt.chat.completions.create(model=GPT, messages=PROMPT, stream=True, stream_options=usage))
json.dump({
    "task_input_tokens": t.usage.input_tokens,
    "spans": [{"name": s.name, "scope": s.instrumentation_scope.name, "trace": s.context.trace_id,
               "input_tokens": (s.attributes or {}).get("gen_ai.usage.input_tokens"),
               "cost": (s.attributes or {}).get("budgetclient.cost.total")}
              for s in spans.get_finished_spans()],
}, sys.stdout)
"""


def test_logfire_spans_carry_usage_once(tmp_path: Any) -> None:
    """logfire's ``instrument_anthropic``/``instrument_openai`` (run apart: logfire.configure sets the
    process's global tracer provider). A stream's usage is on logfire's "streaming response" span,
    so budgetclient puts none on the request span."""
    pytest.importorskip("logfire")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", LOGFIRE_RUN], capture_output=True, text=True, timeout=120, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "BUDGETCLIENT_LEDGER": "memory://logfire"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    spans = run["spans"]
    assert len({s["trace"] for s in spans}) == 1
    assert sum(s["input_tokens"] or 0 for s in spans) == run["task_input_tokens"] == 2 * INPUT + 2 * 1337
    assert {s["scope"] for s in spans if s["input_tokens"]} == {"logfire.anthropic", "logfire.openai"}
    assert len([s for s in spans if s["cost"] is not None]) == 4  # each call's cost on one span


async def test_anthropic_instrumentor_span_is_enriched_async(
    anthropic_instrumented: tuple[Otel, str],
) -> None:
    """Its span is never current: found as the GenAI span started last in the caller's context."""
    otel, scope = anthropic_instrumented
    wire = Wire(
        responders=[
            lambda r: json_response(anthropic_message(WIRE_USAGE)),
            lambda r: sse_response(anthropic_stream_events(WIRE_USAGE)),
        ]
    )
    client = anthropic_client(wire, otel, sdk_spans=False, aio=True)
    async with bc.task("instrumented") as t:
        await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT)
        stream = await client.messages.create(model=CLAUDE, max_tokens=10, messages=PROMPT, stream=True)
        async for _ in stream:
            pass
    assert t.usage.input_tokens == 2 * INPUT
    check(otel, scope, t, 2)
