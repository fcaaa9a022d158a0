"""OpenTelemetry export: spans per call and task with GenAI attributes, token-usage metrics, and
no opentelemetry import unless export is enabled."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient import metering, telemetry
from budgetclient.errors import ConfigurationError
from budgetclient.usage import CallRecord, CostBreakdown, Usage

MODEL = "otel-model"
RATES = {
    "input": Decimal(3),
    "cache_read": Decimal("0.3"),
    "cache_write": Decimal("3.75"),
    "output": Decimal(15),
}
USAGE = Usage(
    input_tokens=5000,
    cache_read_tokens=3000,
    cache_write_tokens=1000,
    output_tokens=400,
    reasoning_tokens=100,
    requests=1,
)


def expected_cost(u: Usage) -> Decimal:
    million = Decimal(1_000_000)
    uncached = u.input_tokens - u.cache_read_tokens - u.cache_write_tokens
    return (
        uncached * RATES["input"]
        + u.cache_read_tokens * RATES["cache_read"]
        + u.cache_write_tokens * RATES["cache_write"]
        + u.output_tokens * RATES["output"]
    ) / million


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry.enable(tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]))
    bc.configure(prices={MODEL: {k: str(v) for k, v in RATES.items()}})
    yield spans, reader
    telemetry.disable()


def metered_call(usage: Usage = USAGE, **finish: Any) -> None:
    ctx = metering.begin_call("anthropic", MODEL, "messages")
    metering.finish_call(ctx, usage, response_id="msg_1", **finish)


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_call_and_task_spans_carry_usage_and_cost(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    spans, _ = otel
    with bc.task("triage") as t:
        metered_call()
        metered_call()
    finished = spans.get_finished_spans()
    calls = [s for s in finished if s.name == f"chat {MODEL}"]
    tasks = [s for s in finished if s.name == "task triage"]
    assert len(calls) == 2 and len(tasks) == 1
    a = calls[0].attributes or {}
    assert calls[0].kind == SpanKind.CLIENT
    assert a["gen_ai.provider.name"] == "anthropic" and a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.response.id"] == "msg_1"
    assert a["gen_ai.usage.input_tokens"] == 5000
    assert a["gen_ai.usage.cache_read.input_tokens"] == 3000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 1000
    assert a["gen_ai.usage.output_tokens"] == 400
    assert a["gen_ai.usage.reasoning.output_tokens"] == 100
    assert a["budgetclient.cost.total"] == pytest.approx(float(expected_cost(USAGE)))
    assert a["budgetclient.cost.cache_read"] == pytest.approx(3000 * 0.3 / 1e6)
    assert a["budgetclient.task.name"] == "triage" and a["budgetclient.task.id"] == t.id
    assert calls[0].start_time is not None and calls[0].end_time is not None
    assert calls[0].end_time >= calls[0].start_time
    ta = tasks[0].attributes or {}
    assert not [k for k in ta if k.startswith("gen_ai.usage.")]  # the calls' spans carry usage
    assert ta["budgetclient.task.usage.input_tokens"] == 10_000
    assert ta["budgetclient.task.usage.output_tokens"] == 800
    assert ta["budgetclient.task.outcome"] == "success" and ta["budgetclient.task.calls"] == 2
    assert ta["budgetclient.task.cost.total"] == pytest.approx(float(2 * expected_cost(USAGE)))


def test_token_usage_histogram_by_token_type(otel: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    _, reader = otel
    metered_call()
    metered_call(Usage(input_tokens=200, output_tokens=50, requests=1))
    points = metric_points(reader, "gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in points}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == 5200 and by_type["input"].count == 2
    assert by_type["output"].sum == 450 and by_type["output"].count == 2
    assert by_type["input"].attributes["gen_ai.provider.name"] == "anthropic"
    assert by_type["input"].attributes["gen_ai.request.model"] == MODEL
    assert list(by_type["input"].explicit_bounds) == [float(b) for b in telemetry.TOKEN_BUCKETS]
    cost = metric_points(reader, "budgetclient.cost")
    assert sum(p.value for p in cost) == pytest.approx(
        float(expected_cost(USAGE) + Decimal(200 * 3 + 50 * 15) / 10**6)
    )


def test_failed_calls_and_tasks_are_marked_as_errors(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    spans, _ = otel
    with pytest.raises(RuntimeError), bc.task("doomed"):
        metered_call(Usage(), status="error", http_status=529, error="overloaded")
        raise RuntimeError("give up")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    call_span, task_span = by_name[f"chat {MODEL}"], by_name["task doomed"]
    assert call_span.status.status_code == StatusCode.ERROR
    assert (call_span.attributes or {})["error.type"] == "529"
    assert task_span.status.status_code == StatusCode.ERROR
    assert (task_span.attributes or {})["budgetclient.task.outcome"] == "failure"


def test_unpriced_calls_say_so_instead_of_zero() -> None:
    record = CallRecord(
        id="c",
        provider="google",
        model="mystery",
        operation="generate_content",
        started_at=datetime.now(UTC),
        duration_s=0.1,
        usage=Usage(input_tokens=10, output_tokens=2, requests=1),
        cost=None,
        cost_breakdown=None,
    )
    attributes = telemetry.call_attributes(record)
    assert attributes["budgetclient.cost.unpriced"] is True and "budgetclient.cost.total" not in attributes
    assert attributes["gen_ai.provider.name"] == "gcp.gen_ai"
    assert attributes["gen_ai.operation.name"] == "generate_content"
    assert all(isinstance(v, str | bool | int | float) for v in attributes.values())


def test_priced_attributes_cover_every_bucket() -> None:
    breakdown = CostBreakdown(uncached_input=Decimal("0.1"), output=Decimal("0.2"), storage=Decimal("0.05"))
    record = CallRecord(
        id="c",
        provider="openai",
        model="gpt-x",
        operation="responses",
        started_at=datetime.now(UTC),
        duration_s=0.1,
        usage=Usage(input_tokens=10, requests=1),
        cost=breakdown.total,
        cost_breakdown=breakdown,
    )
    attributes = telemetry.call_attributes(record)
    assert attributes["budgetclient.cost.total"] == pytest.approx(0.35)
    assert attributes["budgetclient.cost.storage"] == pytest.approx(0.05)
    assert {k for k in attributes if k.startswith("budgetclient.cost.")} == {
        "budgetclient.cost.total", "budgetclient.cost.uncached_input", "budgetclient.cost.cache_read",
        "budgetclient.cost.cache_write", "budgetclient.cost.output", "budgetclient.cost.storage",
    }  # fmt: skip


def test_disable_stops_export(otel: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    spans, _ = otel
    telemetry.disable()
    assert not telemetry.is_enabled()
    with bc.task("quiet"):
        metered_call()
    assert spans.get_finished_spans() == ()


def test_an_exporter_fault_never_reaches_the_caller() -> None:
    class BrokenTracer:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("collector down")

    class BrokenProvider:
        def get_tracer(self, *args: Any, **kwargs: Any) -> BrokenTracer:
            return BrokenTracer()

    telemetry.enable(tracer_provider=BrokenProvider(), meter_provider=MeterProvider())
    bc.configure(prices={MODEL: {"input": 3, "output": 15}})
    try:
        with capture_logs() as logs, bc.task("resilient") as t:
            metered_call()
    finally:
        telemetry.disable()
    assert t.calls == 1 and t.outcome == "success"
    # the task's span failed to start and to end, the call's once: each logged, none raised
    assert [e["record"] for e in logs if e["event"] == "otel.export_failed"] == ["task", "call", "task"]


def test_configure_otel_turns_export_on_and_off() -> None:
    telemetry.install()
    try:
        bc.configure(otel=True)
        assert telemetry.is_enabled()
        bc.configure(otel=False)
        assert not telemetry.is_enabled()
    finally:
        telemetry.disable()


def test_missing_opentelemetry_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # makes "import opentelemetry" fail
    with pytest.raises(ConfigurationError, match=r"budgetclient\[otel\]"):
        telemetry.enable()
    assert not telemetry.is_enabled()


def test_nothing_imports_opentelemetry_unless_enabled(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import sys
        import budgetclient as bc
        from budgetclient import metering, signals, telemetry
        from budgetclient.usage import Usage

        telemetry.install()
        signals.install()
        bc.configure(ledger="memory://otel-check", prices={"m": {"input": 1, "output": 1}})
        with bc.task("t"):
            ctx = metering.begin_call("anthropic", "m", "messages")
            metering.finish_call(ctx, Usage(input_tokens=1, output_tokens=1, requests=1))
        bc.flush(5)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print("LOADED", loaded)
        """
    )
    # logfire, where installed, is a pydantic plugin that imports opentelemetry with genai-prices
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
