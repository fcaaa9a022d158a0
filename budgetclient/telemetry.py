"""Optional OpenTelemetry export: one trace per task, each call's usage on exactly one span, GenAI metrics.

Turned on by ``bc.configure(otel=True)`` (or ``otel="auto" | "enrich" | "own"``) or
``budgetclient.telemetry.enable()``; needs ``budgetclient[otel]`` (``opentelemetry-api``, plus an
SDK and exporter of your choice). Nothing here imports ``opentelemetry`` until export is enabled.

- A ``task {name}`` span starts when a ``bc.task(...)`` scope is entered and is the current span
  inside it (OpenTelemetry's context is a contextvar: asyncio tasks, ``bc.task_executor()`` threads
  and nested tasks nest under it); outcome, budget, spend and cache hit rate are set as it ends.
- Backends sum ``gen_ai.usage.*`` over a trace's spans, so a call's usage goes on exactly one span.
  When another instrumentation opened a GenAI span for the call (the anthropic SDK's own
  ``anthropic.messages.create``, an OpenTelemetry instrumentor, logfire), budgetclient *enriches*
  it (cost, cache breakpoints, drift, and any usage key it lacks); otherwise it emits its own
  ``chat {model}`` span. ``"own"`` always emits its own (turn the others off then); ``"enrich"``
  never does. The task span carries totals under ``budgetclient.task.*`` only.
- ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration`` once per call: skipped
  when the enriched span's instrumentation records them itself (the OpenTelemetry instrumentor
  packages; the anthropic SDK and logfire record none). Money is ``budgetclient.cost.*`` (USD as float:
  OpenTelemetry has no decimal type), with the counter ``budgetclient.cost``.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import config
from ._fork_locks import renew_after_fork
from ._guard import guarded
from .errors import ConfigurationError
from .usage import CallRecord, CostBreakdown, TaskRecord, Usage

if TYPE_CHECKING:
    from .tasks import Task

__all__ = [
    "MODES",
    "TOKEN_BUCKETS",
    "call_attributes",
    "disable",
    "enable",
    "install",
    "is_enabled",
    "is_genai_call_span",
    "provider_name",
    "task_attributes",
]


AttributeValue = str | bool | int | float | Sequence[str]

MODES = config.OTEL_MODES
"""``auto``: enrich another instrumentation's span for the call, else emit one; ``enrich``: only
enrich; ``own``: always emit budgetclient's own call span."""

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""Bucket boundaries the GenAI semantic conventions recommend for ``gen_ai.client.token.usage``."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

SCOPE = "budgetclient"
_PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "google": "gcp.gen_ai"}
_OPERATIONS = {
    "messages": "chat",
    "chat.completions": "chat",
    "responses": "chat",
    "generate_content": "generate_content",
    "batch": "chat",
}
_CALL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
"""``gen_ai.operation.name`` values of one model request (not ``invoke_agent`` or ``execute_tool``)."""
_GENAI_SCOPES = (
    "com.anthropic.sdk.python",
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.instrumentation.openai",
    "opentelemetry.instrumentation.google_genai",
    "logfire",
)
"""Instrumentation scopes whose spans with a ``gen_ai.request.model`` but no operation name are calls.
OpenInference is not one: its spans count ``llm.token_count.*``, which a ``gen_ai.usage.*`` span
beside them does not double."""
_METRIC_SCOPES = ("opentelemetry.instrumentation.",)
"""Instrumentations that record ``gen_ai.client.*`` metrics themselves (the anthropic SDK and logfire
5 do not)."""
_STREAM_USAGE_ELSEWHERE = ("logfire",)
"""Instrumentations that put a stream's usage on a span of its own, logged as the stream ends
(logfire's "streaming response from ..."), not on the request's span."""
_CALL_ID = "budgetclient.call.id"
"""Set on a span that carries a budgetclient call's usage: a second call under it gets its own span."""


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


def _cost_attributes(cost: Any, breakdown: CostBreakdown | None, prefix: str) -> dict[str, AttributeValue]:
    if cost is None:
        return {f"{prefix}.unpriced": True}
    attributes: dict[str, AttributeValue] = {f"{prefix}.total": float(cost)}
    if breakdown is not None:
        attributes.update({f"{prefix}.{k}": float(v) for k, v in breakdown.as_dict().items()})
    return attributes


def _enrichment(record: CallRecord) -> dict[str, AttributeValue]:
    """What budgetclient knows about a call beyond the GenAI conventions (no prompt text, ever)."""
    attributes: dict[str, AttributeValue] = {
        _CALL_ID: record.id,
        "budgetclient.call.status": record.status,
        "budgetclient.call.stream": record.stream,
        "budgetclient.call.batch": record.batch,
        "budgetclient.call.attempt": record.attempt,
        "budgetclient.usage.cache_write_long.input_tokens": record.usage.cache_write_long_tokens,
        **_cost_attributes(record.cost, record.cost_breakdown, "budgetclient.cost"),
    }
    drift = record.drift
    optional: Mapping[str, AttributeValue | None] = {
        "budgetclient.task.name": record.task_name,
        "budgetclient.task.id": record.task_id,
        "budgetclient.conversation": record.conversation,
        "budgetclient.prefix_hash": record.prefix_hash,
        "budgetclient.drift.segment": drift.segment if drift else None,
        "budgetclient.drift.cause": drift.cause if drift else None,
        "budgetclient.drift.tokens_at_risk": drift.tokens_at_risk if drift else None,
        "budgetclient.drift.est_extra_cost": (
            float(drift.est_extra_cost) if drift and drift.est_extra_cost is not None else None
        ),
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    breakpoints = record.metadata.get("breakpoints") if record.metadata else None
    if isinstance(breakpoints, list | tuple):
        attributes["budgetclient.cache.breakpoints"] = [str(b) for b in breakpoints]
    return attributes


def call_attributes(record: CallRecord) -> dict[str, AttributeValue]:
    """Span attributes of budgetclient's own span for one call."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": _operation(record),
        "gen_ai.provider.name": provider_name(record.provider),
        "gen_ai.request.model": record.model,
        "gen_ai.response.model": record.model,
        **record.usage.otel_attributes(),
        **_enrichment(record),
    }
    if record.response_id is not None:
        attributes["gen_ai.response.id"] = record.response_id
    if record.http_status is not None:
        attributes["http.response.status_code"] = record.http_status
    if record.status == "error":
        attributes["error.type"] = str(record.http_status or record.error or "error")
    return attributes


def _task_usage_attributes(usage: Usage) -> dict[str, AttributeValue]:
    """A task's totals, not under ``gen_ai.usage.*``: its calls' spans already carry those."""
    return {
        "budgetclient.task.usage.input_tokens": usage.input_tokens,
        "budgetclient.task.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "budgetclient.task.usage.cache_creation.input_tokens": usage.cache_write_tokens,
        "budgetclient.task.usage.output_tokens": usage.output_tokens,
        "budgetclient.task.usage.reasoning.output_tokens": usage.reasoning_tokens,
        "budgetclient.task.usage.requests": usage.requests,
    }


def task_attributes(record: TaskRecord) -> dict[str, AttributeValue]:
    """Span attributes for one finished task (totals under ``budgetclient.task.*``)."""
    attributes: dict[str, AttributeValue] = {
        "budgetclient.task.name": record.name,
        "budgetclient.task.id": record.id,
        "budgetclient.task.outcome": record.outcome,
        "budgetclient.task.calls": record.calls,
        "budgetclient.task.cache_hit_rate": record.cache_hit_rate,
        **_task_usage_attributes(record.usage),
        **_cost_attributes(record.cost, record.cost_breakdown, "budgetclient.task.cost"),
    }
    if record.parent_id:
        attributes["budgetclient.task.parent_id"] = record.parent_id
    if record.budget_usd is not None:
        attributes["budgetclient.task.budget_usd"] = float(record.budget_usd)
    return attributes


def _scope_name(span: Any) -> str:
    return str(getattr(getattr(span, "instrumentation_scope", None), "name", None) or "")


def is_genai_call_span(span: Any) -> bool:
    """Whether ``span`` is another instrumentation's recording span for one model request.

    Read from the span itself: ``gen_ai.operation.name`` of a request (``chat``,
    ``generate_content``...), or a known GenAI instrumentation scope with ``gen_ai.request.model``.
    An API-only span (no SDK installed) is never one: it records nothing.
    """
    try:
        if not span.is_recording() or _scope_name(span) == SCOPE:
            return False
        attributes = getattr(span, "attributes", None) or {}
        operation = attributes.get("gen_ai.operation.name")
        if operation is not None:
            return operation in _CALL_OPERATIONS
        return _scope_name(span).startswith(_GENAI_SCOPES) and "gen_ai.request.model" in attributes
    except Exception:  # plain: another library's span, probed on every span end; not ours to log
        return False


def _ns(moment: Any) -> int:
    return int(moment.timestamp() * 1_000_000_000)


_started_genai_span: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "budgetclient_started_genai_span", default=None
)
"""The last GenAI call span started in this context (by `_SpanWatcher`): instrumentors that do not
make their span current (opentelemetry-instrumentation-anthropic) are found through it."""


def _span_watcher() -> Any:
    """A span processor noting GenAI call spans as they start; None without the OpenTelemetry SDK."""
    try:
        from opentelemetry.sdk.trace import SpanProcessor
    except ImportError:
        return None

    class _SpanWatcher(SpanProcessor):  # type: ignore[misc]
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if _exporter is not None and is_genai_call_span(span):
                _started_genai_span.set(span)

    return _SpanWatcher()


class _Exporter:
    """Holds the tracer and instruments; its hooks never raise into the record path."""

    def __init__(self, tracer_provider: Any, meter_provider: Any, mode: str) -> None:
        from opentelemetry import context, metrics, trace

        if mode not in MODES:
            raise ConfigurationError(f"otel mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        version = getattr(sys.modules.get(__package__ or "budgetclient"), "__version__", None)
        tracer_provider = tracer_provider or trace.get_tracer_provider()
        meter_provider = meter_provider or metrics.get_meter_provider()
        self.mode = mode
        self.trace = trace
        self.context = context
        self.tracer = tracer_provider.get_tracer(SCOPE, version)
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        meter = meter_provider.get_meter(SCOPE, version)
        self.token_usage = _histogram(
            meter, "gen_ai.client.token.usage", "{token}", "Tokens used by model requests", TOKEN_BUCKETS
        )
        self.duration = _histogram(
            meter, "gen_ai.client.operation.duration", "s", "Duration of model requests", DURATION_BUCKETS
        )
        self.cost = meter.create_counter(
            "budgetclient.cost", unit="USD", description="Cost of model requests"
        )
        self._task_spans: dict[str, Any] = {}

    # -- tasks --------------------------------------------------------------------------------
    def on_task_start(self, task: Task) -> Callable[[bool], None]:
        """Start the task's span and make it current for the scope; returns the scope-exit step."""
        attributes: dict[str, AttributeValue] = {
            "budgetclient.task.name": task.name,
            "budgetclient.task.id": task.id,
        }
        if task.parent is not None:
            attributes["budgetclient.task.parent_id"] = task.parent.id
        if task.budget_usd is not None:
            attributes["budgetclient.task.budget_usd"] = float(task.budget_usd)
        span = self.tracer.start_span(
            f"task {task.name}", attributes=attributes, start_time=_ns(task.started_at)
        )
        self._task_spans[task.id] = span
        previous = self.context.get_current()
        token = self.context.attach(self.trace.set_span_in_context(span))

        def exit_scope(same_context: bool) -> None:
            if same_context:
                self.context.detach(token)
            else:  # as tasks.py does: the token belongs to another context, restore what was current
                self.context.attach(previous)

        return exit_scope

    def on_task_end(self, record: TaskRecord) -> None:
        span = self._task_spans.pop(record.id, None)
        if span is None:  # a task that ran before export began, or without a scope: a span after the fact
            span = self.tracer.start_span(f"task {record.name}", start_time=_ns(record.started_at))
        span.set_attributes(task_attributes(record))
        if record.outcome == "failure":
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, record.error or "task failed"))
        span.end(end_time=_ns(record.ended_at))

    # -- calls --------------------------------------------------------------------------------
    def on_call_start(self) -> Callable[[CallRecord], None]:
        """Note where the call is made (the parent of its span) and whose GenAI span it is in."""
        parent = self.context.get_current()
        foreign = None
        if self.mode != "own":
            current = self.trace.get_current_span(parent)
            foreign = current if is_genai_call_span(current) else self._started_sibling(current)
        return functools.partial(_safe(self._on_call_end, "call"), parent, foreign)

    def _started_sibling(self, current: Any) -> Any:
        """A GenAI span started, not made current, by an instrumentor wrapping this very call."""
        sibling = _started_genai_span.get()
        if sibling is None or not sibling.is_recording():
            return None
        parent = getattr(sibling, "parent", None)
        if (parent.span_id if parent else 0) != current.get_span_context().span_id:
            return None
        _started_genai_span.set(None)  # one call per span: a later call in this context is not in it
        return sibling

    def _on_call_end(self, parent: Any, foreign: Any, record: CallRecord) -> None:
        billed = record.status != "error" or bool(record.usage.input_tokens or record.usage.output_tokens)
        if record.operation == "cache.storage" or foreign is None:
            if self.mode != "enrich" or record.operation == "cache.storage":
                self._own_span(record, parent, usage=billed)  # a failed attempt has none to report
            if record.operation != "cache.storage":
                self._metrics(record)
            return
        attributes = getattr(foreign, "attributes", None) or {}
        scope = _scope_name(foreign)
        theirs = record.stream and scope.startswith(_STREAM_USAGE_ELSEWHERE)  # usage on another span
        if not billed:
            if foreign.is_recording():
                foreign.add_event("budgetclient.attempt_failed", _attempt_event(record))
        elif foreign.is_recording() and _CALL_ID not in attributes:
            foreign.set_attributes(_enrichment(record))
            if not theirs:
                usage = record.usage.otel_attributes()
                foreign.set_attributes({k: v for k, v in usage.items() if k not in attributes})
        elif self.mode == "auto":
            # the span ended first (a stream closed early) or already holds another call's usage:
            # a span of our own under it, with the usage only if nobody else reports it
            counted = theirs or ("gen_ai.usage.input_tokens" in attributes and _CALL_ID not in attributes)
            self._own_span(record, parent, usage=not counted)
        if not scope.startswith(_METRIC_SCOPES):
            self._metrics(record)

    def _own_span(self, record: CallRecord, parent: Any, *, usage: bool) -> None:
        attributes = call_attributes(record)
        if not usage:
            attributes = {k: v for k, v in attributes.items() if not k.startswith("gen_ai.usage.")}
        start = _ns(record.started_at)
        span = self.tracer.start_span(
            f"{attributes['gen_ai.operation.name']} {record.model}",
            context=parent,
            kind=self.trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if record.status == "error":
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, record.error or "request failed"))
        span.end(end_time=start + int(max(record.duration_s, 0.0) * 1_000_000_000))

    def _metrics(self, record: CallRecord) -> None:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": _operation(record),
            "gen_ai.provider.name": provider_name(record.provider),
            "gen_ai.request.model": record.model,
        }
        if record.status == "error":
            attributes["error.type"] = str(record.http_status or record.error or "error")
        if record.status != "error" or record.usage.input_tokens or record.usage.output_tokens:
            self.token_usage.record(record.usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.token_usage.record(record.usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
        self.duration.record(max(record.duration_s, 0.0), attributes)
        if record.cost is not None:
            self.cost.add(float(record.cost), attributes)


def _attempt_event(record: CallRecord) -> dict[str, AttributeValue]:
    event: dict[str, AttributeValue] = {
        "budgetclient.call.attempt": record.attempt,
        "error.type": str(record.http_status or record.error or "error"),
    }
    if record.http_status is not None:
        event["http.response.status_code"] = record.http_status
    return event


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: tuple[float, ...]) -> Any:
    try:
        return meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(buckets)
        )
    except TypeError:  # opentelemetry-api older than 1.23 has no bucket advice
        return meter.create_histogram(name, unit=unit, description=description)


_lock = threading.Lock()
renew_after_fork(globals(), "_lock")
_exporter: _Exporter | None = None
_removers: list[Callable[[], None]] = []
_watched: list[Any] = []
"""Tracer providers `_SpanWatcher` was added to (an SDK provider cannot remove a processor)."""
_installed = False


def _safe(hook: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``hook`` that logs its faults instead of raising them into the user's call or task."""

    def run(*args: Any) -> Any:
        with guarded("otel.export_failed", record=kind):
            return hook(*args)
        return None

    return run


def _watch(tracer_provider: Any) -> None:
    """Let the provider's spans tell us about GenAI spans that an instrumentor does not make current."""
    add = getattr(tracer_provider, "add_span_processor", None)
    if add is None or any(p is tracer_provider for p in _watched):
        return
    watcher = _span_watcher()
    if watcher is not None:
        add(watcher)
        _watched.append(tracer_provider)


def enable(tracer_provider: Any = None, meter_provider: Any = None, *, mode: str = "auto") -> None:
    """Export every task and call from now on (global providers unless given); replaces an earlier export.

    ``mode`` says which span carries a call's usage (see `MODES`). Raises ConfigurationError when
    ``opentelemetry-api`` is not installed.
    """
    global _exporter
    try:
        exporter = _Exporter(tracer_provider, meter_provider, mode)
    except ImportError as exc:
        raise ConfigurationError(
            f"OpenTelemetry export needs opentelemetry-api ({exc}); install it with "
            "pip install 'budgetclient[otel]', or leave otel=False"
        ) from None
    from .metering import add_call_start_hook
    from .tasks import add_task_end_hook, add_task_start_hook

    previous = _exporter
    disable()
    with _lock:
        if previous is not None:  # tasks still open (a mode switch mid-task) end on the new exporter
            exporter._task_spans.update(previous._task_spans)
        _exporter = exporter
        if mode != "own":
            _watch(exporter.tracer_provider)
        _removers.append(add_task_start_hook(_safe(exporter.on_task_start, "task")))
        _removers.append(add_call_start_hook(_safe(exporter.on_call_start, "call")))
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
    exporter = _exporter
    if new.otel and not old.otel and exporter is None:
        enable(mode=new.otel_mode)
    elif new.otel and exporter is not None and exporter.mode != new.otel_mode:
        enable(exporter.tracer_provider, exporter.meter_provider, mode=new.otel_mode)
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
    settings = config.get_settings()
    if settings.otel and not is_enabled():
        enable(mode=settings.otel_mode)
