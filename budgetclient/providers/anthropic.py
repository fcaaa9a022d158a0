"""Anthropic: hook (SDK middleware), request preparation, and usage from responses and streams.

anthropic 2.x runs client middleware once per HTTP attempt for every call style (create,
stream helpers, raw/streaming responses, beta, batches, tool runners, ``with_options`` copies),
which is the seam used here: no monkey-patching, and the caller gets the SDK's own objects.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anthropic
import httpx2
from anthropic import APIRequest, Middleware

from .. import metering
from .._log import log
from ..config import get_settings
from ..errors import PrefixDriftError
from ..lineage import LineageRegistry, LineageState, current_conversation, lineage_key
from ..metering import CallContext
from ..options import ClientOptions, split_client_options
from ..pricing import is_bedrock_id
from ..tasks import current_task
from ..tokens import TokenEstimate, estimate_request
from ..usage import CallStatus, Usage, _trusted_usage
from ._anthropic_cache import (
    PreparedRequest,
    estimate_input,
    observe_response,
    prepare_request,
    request_shape_of,
)
from ._drift_report import announce_drift, drift_fields
from ._sse import BodyObserver, loads, tap_response

__all__ = ["Anthropic", "AsyncAnthropic", "BudgetMiddleware", "usage_from_anthropic", "wrap_anthropic"]


PROVIDER = "anthropic"
_MESSAGES_PATH = "/v1/messages"
_BATCHES_PREFIX = "/v1/messages/batches/"


def _int(value: Any) -> int:
    if type(value) is int:  # what JSON gives: skip the slower checks
        return value if value > 0 else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)  # an ABC check costs ~0.5 µs


def usage_from_anthropic(usage: Mapping[str, Any] | None) -> Usage:
    """Normalise an Anthropic ``usage`` object: its ``input_tokens`` excludes cache tokens."""
    if not usage:
        return Usage(requests=1)
    get = usage.get
    read = _int(get("cache_read_input_tokens"))
    write = _int(get("cache_creation_input_tokens"))
    creation = get("cache_creation")
    long_write = 0
    if creation is not None and _is_mapping(creation):
        long_write = _int(creation.get("ephemeral_1h_input_tokens"))
        if not write:
            write = long_write + _int(creation.get("ephemeral_5m_input_tokens"))
    details = get("output_tokens_details")
    thinking = _int(details.get("thinking_tokens")) if details is not None and _is_mapping(details) else 0
    output = _int(get("output_tokens"))
    # every count went through _int (non-negative ints): skip Usage's validation
    return _trusted_usage(
        _int(get("input_tokens")) + read + write,  # input_tokens
        read,  # cache_read_tokens
        write,  # cache_write_tokens
        min(long_write, write),  # cache_write_long_tokens
        output,  # output_tokens
        min(thinking, output),  # reasoning_tokens
        1,  # requests
    )


def _fold_stream_usage(current: dict[str, Any], delta: Mapping[str, Any]) -> None:
    """``message_delta`` usage is cumulative: present fields overwrite (never add)."""
    for key, value in delta.items():
        if value is not None:
            current[key] = value


@dataclass(slots=True)
class _Plan:
    """One attempt in flight: what was sent and the metering context it belongs to."""

    request: APIRequest
    ctx: CallContext
    prepared: PreparedRequest | None
    state: LineageState | None


class _MessageObserver(BodyObserver):
    """Folds a Messages response (JSON or SSE) into one call record."""

    sse_marker = b"message_"  # message_start, message_delta, message_stop: content deltas are skipped

    def __init__(self, middleware: BudgetMiddleware, plan: _Plan, http_status: int, mode: str) -> None:
        self.mode = mode
        self._mw = middleware
        self._plan = plan
        self._http_status = http_status
        self._usage: dict[str, Any] = {}
        self._message: Mapping[str, Any] = {}
        self._stopped = False
        self._unfinished = [True]
        """Popped by the first ``_finish`` (``list.pop`` is atomic): a record is made exactly once."""

    def on_event(self, event: str | None, data: str) -> None:
        # the other events (content deltas: most of a stream) are not parsed at all
        if event == "message_start":
            message = loads(data).get("message") or {}
            self._message = message  # parsed here, so nobody else holds it: no copy
            _fold_stream_usage(self._usage, message.get("usage") or {})
        elif event == "message_delta":
            _fold_stream_usage(self._usage, loads(data).get("usage") or {})
        elif event == "message_stop":
            self._stopped = True
            self._finish(True)

    def on_json(self, document: Any) -> None:
        if _is_mapping(document):
            self._message = document  # parsed by the tap for this observer alone: no copy
            usage = document.get("usage")
            self._usage = usage if type(usage) is dict else dict(usage or {})
            self._stopped = True

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        self._finish(complete and self._stopped, error)

    def _finish(self, complete: bool, error: BaseException | None = None) -> None:
        try:
            self._unfinished.pop()
        except IndexError:
            return  # already recorded (message_stop, then the body's end or close)
        self._mw._record(self._plan, self._usage, self._message, complete, self._http_status, error)


class BudgetMiddleware(Middleware):
    """The budgetclient middleware: placement, drift check, budget, and metering per attempt."""

    def __init__(
        self,
        options: ClientOptions | None = None,
        *,
        diagnostics: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or ClientOptions()
        self.diagnostics = diagnostics
        self.clock = clock
        """Wall clock used for TTL decisions (gaps between calls); a fake clock in simulations."""
        self.client_key = f"{id(self):x}"
        self.lineages = LineageRegistry()
        self._seen_batch_results: set[tuple[str, str]] = set()
        self._seen_lock = threading.Lock()

    # -- the middleware protocol -------------------------------------------------------------
    def handle(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        plan = self._before(request)
        if plan is None:
            return call_next(request)
        try:
            response = call_next(plan.request)
        except BaseException as exc:
            self._failed(plan, exc)
            raise
        self._after(plan, response)
        return response

    async def handle_async(
        self, request: APIRequest, call_next: Callable[[APIRequest], Awaitable[Any]]
    ) -> Any:
        plan = self._before(request)
        if plan is None:
            return await call_next(request)
        try:
            response = await call_next(plan.request)
        except BaseException as exc:
            self._failed(plan, exc)
            raise
        self._after(plan, response)
        return response

    # -- before sending ----------------------------------------------------------------------
    def _before(self, request: APIRequest) -> _Plan | None:
        path = _path(request.url)
        method = request.method.lower()
        if method == "get" and path.startswith(_BATCHES_PREFIX) and path.endswith("/results"):
            ctx = metering.begin_call(PROVIDER, "", "batch", attempt=request.retries_taken)
            return _Plan(request=request, ctx=ctx, prepared=None, state=None)
        if method != "post" or path != _MESSAGES_PATH or not isinstance(request.json, Mapping):
            return None
        body: Mapping[str, Any] = request.json
        model = str(body.get("model") or "")
        t = current_task()
        state: LineageState | None = None
        prepared: PreparedRequest | None = None
        try:
            if _server_side_thread(body):
                # the server holds the conversation: the body carries only the new turn, so there
                # is no client-side prefix to place markers in or to compare
                raise _SkipPlacement
            key = lineage_key(
                self.client_key, PROVIDER, model, t.id if t else None, current_conversation(),
                request_shape_of(body),
            )  # fmt: skip
            state = self.lineages.get(key)
            prepared = prepare_request(
                body,
                cache=self.options.cache,
                cache_ttl=self.options.cache_ttl,
                drift=self.options.drift,
                state=state,
                now=self.clock(),
                diagnostics=self.diagnostics,
            )
        except _SkipPlacement:
            prepared = None
        except Exception as exc:  # placement must never cost the user a request
            log.error("cache.prepare_failed", model=model, error=type(exc).__name__, detail=str(exc)[:200])
            prepared = None
        drift = prepared.drift if prepared is not None else None
        if drift is not None and self.options.drift == "raise":
            log.warning("cache.drift", provider=PROVIDER, model=model, action="raised", **drift_fields(drift))
            raise PrefixDriftError(drift)
        send_body: Mapping[str, Any] = prepared.body if prepared is not None else body
        ctx = metering.begin_call(
            PROVIDER,
            model,
            "messages",
            estimated_input_tokens=lambda: _estimate_tokens(send_body, prepared),
            stream=bool(body.get("stream")) or request.stream,
            attempt=request.retries_taken,
            conversation=(state.key if state is not None else None),
        )
        if prepared is not None:
            ctx.prefix_hash = prepared.prefix_hash
            ctx.drift = drift
            if prepared.breakpoints:
                ctx.metadata["breakpoints"] = list(prepared.breakpoints)
        if drift is not None and self.options.drift == "warn" and request.retries_taken == 0:
            announce_drift(drift, provider=PROVIDER, model=model)
        targets = get_settings().allocation_check
        if targets is not None:
            from ..plan import check_allocation

            check_allocation(PROVIDER, send_body, targets, model=model)
        if prepared is not None and prepared.body is not body:
            request = _with_body(request, prepared.body)
        return _Plan(request=request, ctx=ctx, prepared=prepared, state=state)

    # -- after the attempt -------------------------------------------------------------------
    def _failed(self, plan: _Plan, exc: BaseException) -> None:
        if plan.ctx.operation == "batch":
            return  # reading results failed: nothing was billed by this request
        status: CallStatus = "incomplete" if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) else "error"
        metering.finish_call(plan.ctx, Usage(), status=status, error=type(exc).__name__)

    def _after(self, plan: _Plan, response: Any) -> None:
        try:
            http_response: httpx2.Response = response.http_response
        except AttributeError:  # another middleware short-circuited with a model
            metering.finish_call(plan.ctx, Usage(), status="ok", error="no-http-response")
            return
        status = http_response.status_code
        if status >= 400:
            if plan.ctx.operation == "batch":
                return
            metering.finish_call(
                plan.ctx, Usage(), status="error", http_status=status, error=f"HTTP {status}"
            )
            return
        try:
            if plan.ctx.operation == "batch":
                batch_id = _path(plan.request.url)[len(_BATCHES_PREFIX) :].split("/", 1)[0]
                tap_response(http_response, _JSONLBatchObserver(self, batch_id, plan.ctx))
                return
            # only a request that asked to stream gets events (a header lookup costs microseconds)
            mode = _stream_mode(http_response) if plan.ctx.stream else "json"
            tap_response(http_response, _MessageObserver(self, plan, status, mode))
        except Exception as exc:
            log.error("meter.failed", stage="tap", error=type(exc).__name__, detail=str(exc)[:200])
            metering.finish_call(plan.ctx, Usage(requests=1), status="incomplete", http_status=status)

    def _record(
        self,
        plan: _Plan,
        usage_fields: Mapping[str, Any],
        message: Mapping[str, Any],
        complete: bool,
        http_status: int,
        error: BaseException | None,
    ) -> None:
        try:
            usage = usage_from_anthropic(usage_fields) if usage_fields or complete else Usage(requests=1)
            drift = plan.ctx.drift
            if plan.prepared is not None and plan.state is not None and complete:
                try:
                    merged = observe_response(plan.state, plan.prepared, usage, message, now=self.clock())
                    if merged is not None and merged is not drift:
                        if drift is None and self.options.drift == "warn":
                            announce_drift(merged, provider=PROVIDER, model=plan.ctx.model)
                        drift = merged
                except Exception as exc:
                    log.error("cache.observe_failed", error=type(exc).__name__, detail=str(exc)[:200])
            tier = usage_fields.get("service_tier") if _is_mapping(usage_fields) else None
            metering.finish_call(
                plan.ctx,
                usage,
                status="ok" if complete else "incomplete",
                model=_billed_model(plan.ctx.model, message),
                http_status=http_status,
                error=None if error is None else type(error).__name__,
                response_id=message.get("id") if isinstance(message.get("id"), str) else None,
                service_tier=tier if isinstance(tier, str) else None,
                drift=drift,
            )
        except Exception as exc:
            log.error(
                "meter.failed", stage="anthropic.record", error=type(exc).__name__, detail=str(exc)[:200]
            )

    def _record_batch_results(self, batch_id: str, ctx: CallContext, results: Sequence[Any]) -> None:
        for item in results:
            try:
                if not isinstance(item, Mapping):
                    continue
                result = item.get("result") or {}
                if result.get("type") != "succeeded":
                    continue
                custom_id = str(item.get("custom_id"))
                with self._seen_lock:
                    if (batch_id, custom_id) in self._seen_batch_results:
                        continue  # results read twice are billed once
                    self._seen_batch_results.add((batch_id, custom_id))
                message = result.get("message") or {}
                one = CallContext(
                    provider=PROVIDER,
                    model=str(message.get("model") or ""),
                    operation="batch",
                    task=ctx.task,
                    started_at=ctx.started_at,
                    t0=ctx.t0,
                    attempt=ctx.attempt,
                )
                metering.finish_call(
                    one,
                    usage_from_anthropic(message.get("usage")),
                    batch=True,
                    response_id=message.get("id"),
                    metadata={"batch_id": batch_id, "custom_id": custom_id},
                )
            except Exception as exc:
                log.error("meter.failed", stage="batch", error=type(exc).__name__, detail=str(exc)[:200])


class _JSONLBatchObserver(BodyObserver):
    """JSON Lines body of ``GET /v1/messages/batches/{id}/results``."""

    mode = "lines"

    def __init__(self, middleware: BudgetMiddleware, batch_id: str, ctx: CallContext) -> None:
        self._mw = middleware
        self._batch_id = batch_id
        self._ctx = ctx

    def on_line(self, line: str) -> None:
        try:
            document = json.loads(line)
        except ValueError:
            return
        self._mw._record_batch_results(self._batch_id, self._ctx, [document])


class _SkipPlacement(Exception):
    pass


def _server_side_thread(body: Mapping[str, Any]) -> bool:
    """A beta ``thread`` continuation (tool runners): earlier turns live on the server."""
    thread = body.get("thread")
    return isinstance(thread, Mapping) and thread.get("type") == "continue"


def _billed_model(requested: str, message: Mapping[str, Any]) -> str | None:
    """The model a call is recorded and priced as: the one the response names, except a Bedrock
    model id the caller named, which AWS bills by and which a response does not repeat."""
    if is_bedrock_id(requested):
        return requested
    return str(message.get("model") or requested) or None


def _stream_mode(response: httpx2.Response) -> str:
    """How a streamed Messages body is framed: SSE, or an AWS event stream (Bedrock's
    ``invoke-with-response-stream``, the same events inside binary frames)."""
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" in content_type:
        return "sse"
    if "application/vnd.amazon.eventstream" in content_type:
        return "aws"
    return "json"


def _path(url: str) -> str:
    """The path of a request URL: logical (``/v1/messages``) or absolute (a batch ``results_url``)."""
    return urlsplit(url).path if "://" in url else url.split("?", 1)[0]


def _with_body(request: APIRequest, body: Mapping[str, Any]) -> APIRequest:
    """``request`` sending ``body``: like ``request.copy(body=...)`` without its deep copy of the old body.

    ``prepare_request`` returns a new body (the caller's objects are never mutated), so only the
    options need copying; ``copy`` would deep-copy the whole previous prompt first (milliseconds
    at 100k tokens).
    """
    try:
        options = request.options.model_copy()
        options.json_data = body
        if options.extra_json:  # small; deep-copied as copy() does
            options.extra_json = copy.deepcopy(options.extra_json)
        if options.params:
            options.params = copy.deepcopy(options.params)
        if isinstance(options.headers, Mapping):
            options.headers = dict(options.headers)
        return APIRequest(
            options=options,
            cast_to=request.cast_to,
            stream=request.stream,
            stream_cls=request.stream_cls,
            retries_taken=request.retries_taken,
        )
    except Exception:  # an SDK whose request differs: the public (slower) way
        return request.copy(body=body)


def _estimate_tokens(body: Mapping[str, Any], prepared: PreparedRequest | None) -> TokenEstimate:
    """From the blocks placement built (new blocks counted only), else from the whole body."""
    built = prepared.built if prepared is not None else None
    if built is not None and built.estimable:
        return estimate_input(built)
    return estimate_request(PROVIDER, body)


# -- clients ---------------------------------------------------------------------------------


def _with_budget_middleware(
    middleware: Sequence[Any] | None, options: ClientOptions, *, diagnostics: bool = True
) -> list[Any]:
    chain = list(middleware or ())
    if not any(isinstance(m, BudgetMiddleware) for m in chain):
        chain.append(BudgetMiddleware(options, diagnostics=diagnostics))
    return chain


class Anthropic(anthropic.Anthropic):
    """``anthropic.Anthropic`` with budgetclient's metering, placement and drift checks.

    Takes the SDK's constructor arguments plus ``cache``, ``cache_ttl`` and ``drift``.
    """

    def __init__(self, *args: Any, middleware: Sequence[Any] | None = None, **kwargs: Any) -> None:
        options, rest = split_client_options(kwargs)
        super().__init__(*args, middleware=_with_budget_middleware(middleware, options), **rest)

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_middleware(self).options


class AsyncAnthropic(anthropic.AsyncAnthropic):
    """``anthropic.AsyncAnthropic`` with budgetclient's metering, placement and drift checks."""

    def __init__(self, *args: Any, middleware: Sequence[Any] | None = None, **kwargs: Any) -> None:
        options, rest = split_client_options(kwargs)
        super().__init__(*args, middleware=_with_budget_middleware(middleware, options), **rest)

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_middleware(self).options


def _budget_middleware(client: Any) -> BudgetMiddleware:
    for m in getattr(client, "_middleware", ()):
        if isinstance(m, BudgetMiddleware):
            return m
    raise LookupError("client is not instrumented by budgetclient")


C = TypeVar("C")

# Bedrock and Vertex strip unknown body fields differently and have no cache diagnostics.
_NO_DIAGNOSTICS = ("AnthropicBedrock", "AnthropicVertex", "AnthropicBedrockMantle")


def wrap_anthropic(client: C, options: ClientOptions) -> C:
    """A copy of an Anthropic SDK client (any platform variant) with budgetclient installed."""
    existing = [m for m in getattr(client, "_middleware", ()) if not isinstance(m, BudgetMiddleware)]
    diagnostics = not any(type(client).__name__.endswith(n) for n in _NO_DIAGNOSTICS)
    chain = [*existing, BudgetMiddleware(options, diagnostics=diagnostics)]
    copy = getattr(client, "copy", None)
    if copy is None:
        raise TypeError(f"cannot instrument {type(client).__name__}: it has no copy(middleware=...)")
    try:
        return copy(middleware=chain)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise TypeError(
            f"cannot instrument {type(client).__name__}: this anthropic version does not accept "
            f"middleware on copy() ({exc}); upgrade anthropic to >= 2.10"
        ) from exc


def anthropic_wrap(client: Any, **options: Any) -> Any:
    return wrap_anthropic(client, ClientOptions.create(**options))
