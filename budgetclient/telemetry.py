"""Optional OpenTelemetry export: a span per call and per task, and GenAI token-usage metrics.

Turned on by ``bc.configure(otel=True)`` or ``budgetclient.telemetry.enable()``; needs
``budgetclient[otel]`` (``opentelemetry-api``, plus an SDK and exporter of your choice). Nothing
here imports ``opentelemetry`` until export is enabled, so the dependency stays optional.

Names follow the GenAI semantic conventions: span attributes ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.operation.name`` and ``gen_ai.usage.*`` (from
`Usage.otel_attributes`), the histogram ``gen_ai.client.token.usage`` by ``gen_ai.token.type``
(``input`` cache-inclusive, ``output`` reasoning-inclusive) and ``gen_ai.client.operation.duration``.
Money goes under ``budgetclient.cost.*`` (USD, as float: OpenTelemetry has no decimal type), with
the counter ``budgetclient.cost``. Spans are emitted when a call or task ends, with its real start
and end times, as children of whatever span is current then (e.g. your agent's own span).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import config
from ._log import log
from .errors import ConfigurationError
from .usage import CallRecord, CostBreakdown, TaskRecord

__all__ = [
    "TOKEN_BUCKETS",
    "call_attributes",
    "disable",
    "enable",
    "install",
    "is_enabled",
    "provider_name",
    "task_attributes",
]


AttributeValue = str | bool | int | float

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""Bucket boundaries the GenAI semantic conventions recommend for ``gen_ai.client.token.usage``."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

_PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "google": "gcp.gen_ai"}
_OPERATIONS = {
    "messages": "chat",
    "chat.completions": "chat",
    "responses": "chat",
    "generate_content": "generate_content",
    "batch": "chat",
}


def provider_name(provider: str) -> str:
    """The semantic-convention ``gen_ai.provider.name`` for a budgetclient provider id."""
    return _PROVIDERS.get(provider, provider)


def _operation(record: CallRecord) -> str:
    op = record.operation
    if op in _OPERATIONS:
        return _OPERATIONS[op]
    if "generate" in op:
        return "generate_content"
    if "embed" in op:
        return "embeddings"
    return op


def _cost_attributes(cost: Any, breakdown: CostBreakdown | None) -> dict[str, AttributeValue]:
    if cost is None:
        return {"budgetclient.cost.unpriced": True}
    attributes: dict[str, AttributeValue] = {"budgetclient.cost.total": float(cost)}
    if breakdown is not None:
        attributes.update({f"budgetclient.cost.{k}": float(v) for k, v in breakdown.as_dict().items()})
    return attributes


def call_attributes(record: CallRecord) -> dict[str, AttributeValue]:
    """Span attributes for one call record (no prompt text, ever)."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": _operation(record),
        "gen_ai.provider.name": provider_name(record.provider),
        "gen_ai.request.model": record.model,
        "gen_ai.response.model": record.model,
        **record.usage.otel_attributes(),
        "budgetclient.call.status": record.status,
        "budgetclient.call.stream": record.stream,
        "budgetclient.call.batch": record.batch,
        "budgetclient.call.attempt": record.attempt,
        "budgetclient.usage.cache_write_long.input_tokens": record.usage.cache_write_long_tokens,
        **_cost_attributes(record.cost, record.cost_breakdown),
    }
    optional: Mapping[str, AttributeValue | None] = {
        "gen_ai.response.id": record.response_id,
        "budgetclient.task.name": record.task_name,
        "budgetclient.task.id": record.task_id,
        "budgetclient.conversation": record.conversation,
        "budgetclient.prefix_hash": record.prefix_hash,
        "http.response.status_code": record.http_status,
        "budgetclient.drift.segment": record.drift.segment if record.drift else None,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    if record.status == "error":
        attributes["error.type"] = str(record.http_status or record.error or "error")
    return attributes


def task_attributes(record: TaskRecord) -> dict[str, AttributeValue]:
    """Span attributes for one finished task."""
    attributes: dict[str, AttributeValue] = {
        "budgetclient.task.name": record.name,
        "budgetclient.task.id": record.id,
        "budgetclient.task.outcome": record.outcome,
        "budgetclient.task.calls": record.calls,
        "budgetclient.task.cache_hit_rate": record.cache_hit_rate,
        **record.usage.otel_attributes(),
        "budgetclient.usage.requests": record.usage.requests,
        **_cost_attributes(record.cost, record.cost_breakdown),
    }
    if record.parent_id:
        attributes["budgetclient.task.parent_id"] = record.parent_id
    if record.budget_usd is not None:
        attributes["budgetclient.task.budget_usd"] = float(record.budget_usd)
    return attributes


def _ns(record_start: Any) -> int:
    return int(record_start.timestamp() * 1_000_000_000)


class _Exporter:
    """Holds the tracer and instruments; its hooks never raise into the record path."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        version = getattr(sys.modules.get(__package__ or "budgetclient"), "__version__", None)
        tracer_provider = tracer_provider or trace.get_tracer_provider()
        meter_provider = meter_provider or metrics.get_meter_provider()
        self.trace = trace
        self.tracer = tracer_provider.get_tracer("budgetclient", version)
        meter = meter_provider.get_meter("budgetclient", version)
        self.token_usage = _histogram(
            meter, "gen_ai.client.token.usage", "{token}", "Tokens used by model requests", TOKEN_BUCKETS
        )
        self.duration = _histogram(
            meter, "gen_ai.client.operation.duration", "s", "Duration of model requests", DURATION_BUCKETS
        )
        self.cost = meter.create_counter(
            "budgetclient.cost", unit="USD", description="Cost of model requests"
        )

    def on_call(self, record: CallRecord) -> None:
        attributes = call_attributes(record)
        start = _ns(record.started_at)
        name = f"{attributes['gen_ai.operation.name']} {record.model}"
        span = self.tracer.start_span(
            name, kind=self.trace.SpanKind.CLIENT, attributes=attributes, start_time=start
        )
        if record.status == "error":
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, record.error or "request failed"))
        span.end(end_time=start + int(max(record.duration_s, 0.0) * 1_000_000_000))
        if record.operation == "cache.storage":
            return
        metric_attributes = {
            "gen_ai.operation.name": attributes["gen_ai.operation.name"],
            "gen_ai.provider.name": attributes["gen_ai.provider.name"],
            "gen_ai.request.model": record.model,
        }
        if record.status == "error":
            metric_attributes["error.type"] = attributes["error.type"]
        if record.status != "error" or record.usage.input_tokens or record.usage.output_tokens:
            self.token_usage.record(
                record.usage.input_tokens, {**metric_attributes, "gen_ai.token.type": "input"}
            )
            self.token_usage.record(
                record.usage.output_tokens, {**metric_attributes, "gen_ai.token.type": "output"}
            )
        self.duration.record(max(record.duration_s, 0.0), metric_attributes)
        if record.cost is not None:
            self.cost.add(float(record.cost), metric_attributes)

    def on_task_end(self, record: TaskRecord) -> None:
        span = self.tracer.start_span(
            f"task {record.name}", attributes=task_attributes(record), start_time=_ns(record.started_at)
        )
        if record.outcome == "failure":
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, record.error or "task failed"))
        span.end(end_time=_ns(record.ended_at))


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: tuple[float, ...]) -> Any:
    try:
        return meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(buckets)
        )
    except TypeError:  # opentelemetry-api older than 1.23 has no bucket advice
        return meter.create_histogram(name, unit=unit, description=description)


_lock = threading.Lock()
_exporter: _Exporter | None = None
_removers: list[Callable[[], None]] = []
_installed = False


def _safe(hook: Callable[[Any], None], kind: str) -> Callable[[Any], None]:
    def run(record: Any) -> None:
        try:
            hook(record)
        except Exception as exc:
            log.error("otel.export_failed", record=kind, error=type(exc).__name__, detail=str(exc)[:200])

    return run


def enable(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Export every call and task from now on (global providers unless given); replaces an earlier export.

    Raises ConfigurationError when ``opentelemetry-api`` is not installed.
    """
    global _exporter
    try:
        exporter = _Exporter(tracer_provider, meter_provider)
    except ImportError as exc:
        raise ConfigurationError(
            f"OpenTelemetry export needs opentelemetry-api ({exc}); install it with "
            "pip install 'budgetclient[otel]', or leave otel=False"
        ) from None
    from .metering import add_call_hook
    from .tasks import add_task_end_hook

    disable()
    with _lock:
        _exporter = exporter
        _removers.append(add_call_hook(_safe(exporter.on_call, "call")))
        _removers.append(add_task_end_hook(_safe(exporter.on_task_end, "task")))


def disable() -> None:
    """Stop exporting (spans already ended stay with the SDK's processors)."""
    global _exporter
    with _lock:
        removers, _removers[:] = list(_removers), []
        _exporter = None
    for remove in removers:
        remove()


def is_enabled() -> bool:
    return _exporter is not None


def _on_settings_change(old: config.Settings, new: config.Settings) -> None:
    if new.otel and not old.otel and not is_enabled():
        enable()
    elif old.otel and not new.otel:
        disable()


def install() -> None:
    """Follow ``configure(otel=...)`` from now on (idempotent; imports nothing from OpenTelemetry)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    config.on_settings_change(_on_settings_change)
    if config.get_settings().otel and not is_enabled():
        enable()
