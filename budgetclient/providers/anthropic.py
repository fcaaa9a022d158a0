"""Anthropic: hook (SDK middleware), request preparation, and usage from responses and streams.

anthropic 2.x runs client middleware once per HTTP attempt for every call style (create,
stream helpers, raw/streaming responses, beta, batches, tool runners, ``with_options`` copies),
which is the seam used here: no monkey-patching, and the caller gets the SDK's own objects. When
budgetclient's middleware is a client's only one, the same per-attempt work runs from the client's
own ``_attempt_request`` instead (`_install_attempt_hook`: the chain's per-attempt copies skipped).
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MethodType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack, cast
from urllib.parse import urlsplit

import anthropic
import httpx2
from anthropic import APIRequest, Middleware

from .. import metering
from .._construct import fast_constructor
from .._guard import guarded, report_fault
from ..admission import Admission, admit, failed, output_limit, sending
from ..blocks import Ttl
from ..estimate import TokenEstimate, estimate_request
from ..formats.anthropic.blocks import Print, conversation_head, prefix_shape, request_shape_of, tools_print
from ..formats.anthropic.estimate import estimate_input
from ..formats.anthropic.prepare import PreparedRequest, observe_response, prepare_request
from ..lineage import LineageRegistry, LineageState, current_conversation, lineage_key
from ..metering import CallContext
from ..options import ClientOptions, pop_option_overrides, split_client_options
from ..pricing import is_bedrock_id
from ..run_history import STABLE_PREFIX, run_history
from ..tasks import Task, current_task
from ..usage import Usage, _trusted_usage
from ._drift_report import announce_drift
from ._hooks import hook_unavailable
from ._signature import COPY_PARAMETERS, combined, show_sdk_signatures
from ._sse import BodyObserver, body_read, loads, read_json, tap_response

__all__ = ["Anthropic", "AsyncAnthropic", "BudgetMiddleware", "usage_from_anthropic", "wrap_anthropic"]


PROVIDER = "anthropic"
_new_admission = fast_constructor(Admission)
"""``Admission(...)`` at a third of the cost (one per attempt)."""
_MESSAGES_PATH = "/v1/messages"
_BATCHES_PREFIX = "/v1/messages/batches/"


def _int(value: Any) -> int:
    if type(value) is int:  # what JSON gives: skip the slower checks
        return value if value > 0 else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)  # an ABC check costs ~0.5 µs


_COUNTS = ("cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens", "input_tokens")


def usage_from_anthropic(usage: Mapping[str, Any] | None) -> Usage:
    """Normalise an Anthropic ``usage`` object: its ``input_tokens`` excludes cache tokens."""
    if not usage:
        return Usage(requests=1)
    get: Callable[[str], Any] = usage.get
    read, write, output, given = map(get, _COUNTS)
    plain = type(read) is type(write) is type(output) is type(given) is int  # as JSON gives them
    if not plain or (read | write | output | given) < 0:  # else `_int` of each is each: no calls
        read, write, output, given = _int(read), _int(write), _int(output), _int(given)
    creation = get("cache_creation")
    long_write = 0
    if creation is not None and _is_mapping(creation):
        long_write = _int(creation.get("ephemeral_1h_input_tokens"))
        if not write:
            write = long_write + _int(creation.get("ephemeral_5m_input_tokens"))
    details = get("output_tokens_details")
    thinking = _int(details.get("thinking_tokens")) if details is not None and _is_mapping(details) else 0
    # every count is a non-negative int: skip Usage's validation
    return _trusted_usage(
        input_tokens=given + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_long_tokens=long_write if long_write < write else write,
        output_tokens=output,
        reasoning_tokens=thinking if thinking < output else output,
        requests=1,
    )


def _fold_stream_usage(current: dict[str, Any], delta: Mapping[str, Any]) -> None:
    """``message_delta`` usage is cumulative: present fields overwrite (never add)."""
    for key, value in delta.items():
        if value is not None:
            current[key] = value


_METERED_BY_MIDDLEWARE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "budgetclient_anthropic_middleware", default=False
)
"""Set while `BudgetMiddleware.handle` runs an attempt: the attempt hook then only forwards."""


@dataclass(slots=True)
class _AnthropicAttempt:
    """One attempt in flight: what was sent and the metering context it belongs to."""

    request: APIRequest | None
    """The middleware's request (what it sends); ``None`` from the attempt hook, which sends the
    SDK's options as they are (the body to send set on them)."""
    url: str
    ctx: CallContext
    prepared: PreparedRequest | None
    state: LineageState | None



class _MessageObserver(BodyObserver):
    """Folds a Messages response (JSON or SSE) into one call record."""

    sse_marker = b"message_"  # message_start, message_delta, message_stop: content deltas are skipped

    def __init__(
        self, middleware: BudgetMiddleware, attempt: _AnthropicAttempt, http_status: int, mode: str
    ) -> None:
        self.mode = mode
        self._mw = middleware
        self._attempt = attempt
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
            self._usage = _usage_fields(document)
            self._stopped = True

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        self._finish(complete and self._stopped, error)

    def _finish(self, complete: bool, error: BaseException | None = None) -> None:
        try:
            self._unfinished.pop()
        except IndexError:
            return  # already recorded (message_stop, then the body's end or close)
        self._mw._record(self._attempt, self._usage, self._message, complete, self._http_status, error)


def _usage_fields(message: Mapping[str, Any]) -> dict[str, Any]:
    usage = message.get("usage")
    return usage if type(usage) is dict else dict(usage or {})


class BudgetMiddleware(Middleware):
    """The budgetclient middleware: placement, drift check, budget, and metering per attempt."""

    def __init__(
        self,
        options: ClientOptions | None = None,
        *,
        diagnostics: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.options = options or ClientOptions()
        self.diagnostics = diagnostics
        self.clock = clock
        """Wall clock for TTL decisions (gaps between calls); a fake clock in simulations. ``None``:
        ``time.time`` looked up at each call, so frozen or moved time in a test steers it."""
        self.client_key = f"{id(self):x}"
        self.lineages = LineageRegistry()
        self._seen_batch_results: set[tuple[str, str]] = set()
        self._seen_lock = threading.Lock()

    def now(self) -> float:
        return time.time() if self.clock is None else self.clock()

    def with_options(self, options: ClientOptions) -> BudgetMiddleware:
        """This middleware with other options, sharing its conversation state (lineages, client
        key, batch results seen): ``client.with_options(cache="off")`` continues the same
        conversations."""
        derived = copy.copy(self)
        derived.options = options
        return derived

    # -- the middleware protocol -------------------------------------------------------------
    def handle(self, request: APIRequest, call_next: Callable[[APIRequest], Any]) -> Any:
        token = _METERED_BY_MIDDLEWARE.set(True)  # the attempt hook below passes this one through
        try:
            attempt = self._before(
                request, None, request.url, request.method, request.json, request.stream,
                request.retries_taken,
            )  # fmt: skip
            if attempt is None:
                return _error_status_response(request, call_next(request), anthropic.APIResponse)
            with sending(attempt.ctx if attempt.ctx.operation != "batch" else None):
                response = call_next(cast(APIRequest, attempt.request))
            self._after(attempt, response)
            return _error_status_response(request, response, anthropic.APIResponse)
        finally:
            _METERED_BY_MIDDLEWARE.reset(token)

    async def handle_async(
        self, request: APIRequest, call_next: Callable[[APIRequest], Awaitable[Any]]
    ) -> Any:
        token = _METERED_BY_MIDDLEWARE.set(True)
        try:
            attempt = self._before(
                request, None, request.url, request.method, request.json, request.stream,
                request.retries_taken,
            )  # fmt: skip
            if attempt is None:
                return _error_status_response(request, await call_next(request), anthropic.AsyncAPIResponse)
            # reading batch results bills nothing by itself: a failed read is no record
            with sending(attempt.ctx if attempt.ctx.operation != "batch" else None):
                response = await call_next(cast(APIRequest, attempt.request))
            self._after(attempt, response)
            return _error_status_response(request, response, anthropic.AsyncAPIResponse)
        finally:
            _METERED_BY_MIDDLEWARE.reset(token)

    # -- the attempt hook (the fast seam, `_install_attempt_hook`) ----------------------------
    def attempt(
        self, send: Callable[..., Any], options: Any, stream: bool, retries_taken: int, call: Any
    ) -> Any:
        """One HTTP attempt through the SDK's ``_attempt_request`` (``send``), metered."""
        # ``FinalRequestOptions`` read as an ``APIRequest`` shows them
        attempt = self._before(
            None, options, options.url, options.method, options.json_data, stream, retries_taken
        )
        if attempt is None:
            return send(options, stream=stream, retries_taken=retries_taken, call=call)
        try:  # `sending`, written out (a context manager costs three calls on every attempt)
            response, prepared = send(options, stream=stream, retries_taken=retries_taken, call=call)
        except BaseException as exc:
            failed(attempt.ctx if attempt.ctx.operation != "batch" else None, exc)
            raise
        self._after(attempt, response)
        return response, prepared

    async def attempt_async(
        self, send: Callable[..., Awaitable[Any]], options: Any, stream: bool, retries_taken: int, call: Any
    ) -> Any:
        attempt = self._before(
            None, options, options.url, options.method, options.json_data, stream, retries_taken
        )
        if attempt is None:
            return await send(options, stream=stream, retries_taken=retries_taken, call=call)
        try:  # `sending`, written out
            response, prepared = await send(options, stream=stream, retries_taken=retries_taken, call=call)
        except BaseException as exc:
            failed(attempt.ctx if attempt.ctx.operation != "batch" else None, exc)
            raise
        self._after(attempt, response)
        return response, prepared

    # -- before sending ----------------------------------------------------------------------
    def _before(
        self,
        request: APIRequest | None,
        options: Any,
        url: str,
        method: str,
        json_body: Any,
        stream: bool,
        retries: int,
    ) -> _AnthropicAttempt | None:
        """Admit one attempt: the middleware's ``request``, or the attempt hook's ``options`` (then
        ``request`` is ``None``), read as fields (a view object's properties cost a call each)."""
        path = url if url == _MESSAGES_PATH else _path(url)
        method = method.lower()
        if method == "get" and path.startswith(_BATCHES_PREFIX) and path.endswith("/results"):
            ctx = metering.begin_call(PROVIDER, "", "batch", attempt=retries)
            return _AnthropicAttempt(request=request, url=url, ctx=ctx, prepared=None, state=None)
        if method != "post" or path != _MESSAGES_PATH:
            return None
        # a dict is told from a `Mapping` without the ABC's check (a Python call per request)
        if type(json_body) is not dict and not isinstance(json_body, Mapping):
            return None
        body: Mapping[str, Any] = cast("Mapping[str, Any]", json_body)
        model = str(body.get("model") or "")
        t = current_task()
        state: LineageState | None = None
        prepared: PreparedRequest | None = None
        stable: str | None = None
        # placement must never cost the user a request: a fault sends the body as given (`guarded`,
        # without a context manager's three calls on every request)
        try:
            # a beta ``thread`` continuation: the server holds the conversation, and the body carries
            # only the new turn, so there is no client-side prefix to place markers in or compare
            if body.get("thread") is None or not _server_side_thread(body):
                tools = tools_print(body)  # printed once for both
                state, stable = self._lineage(body, model, t, tools)
                prepared = self._place(body, state, tools)
        except Exception as exc:
            report_fault("cache.prepare_failed", exc, model=model)
        send_body: Mapping[str, Any] = prepared.body if prepared is not None else body
        # made only if a budget asks: from the blocks placement built (new blocks counted only),
        # else from the whole body
        built = prepared.built if prepared is not None else None
        estimate: Callable[[], TokenEstimate] = (
            (lambda: estimate_input(built))  # type: ignore[arg-type]
            if built is not None and built.estimable
            else (lambda: estimate_request(PROVIDER, send_body))
        )
        ctx = admit(
            _new_admission(
                provider=PROVIDER,
                model=model,
                operation="messages",
                body=send_body,
                drift=prepared.drift if prepared is not None else None,
                drift_mode=self.options.drift,
                announce=lambda drift: announce_drift(drift, provider=PROVIDER, model=model, stacklevel=5),
                estimate=estimate,
                max_output_tokens=output_limit(body.get("max_tokens")),
                cache_write_ttl=_cache_write_ttl(prepared, self.options.cache_ttl),
                stream=stream or bool(body.get("stream")),
                attempt=retries,
                conversation=(state.key if state is not None else None),
                prefix_hash=prepared.prefix_hash if prepared is not None else None,
                metadata=_metadata(prepared, stable),
            )
        )
        if prepared is not None and prepared.body is not body:
            try:  # `holding`, written out: a fault gives the call's hold back
                if request is None:
                    options.json_data = prepared.body  # the SDK's copy for this attempt alone
                else:
                    request = _with_body(request, prepared.body)
            except BaseException:
                metering.abandon_call(ctx)
                raise
        return _AnthropicAttempt(request=request, url=url, ctx=ctx, prepared=prepared, state=state)

    def _lineage(
        self, body: Mapping[str, Any], model: str, t: Task | None, tools: Print = None
    ) -> tuple[LineageState, str]:
        """The conversation ``body`` belongs to, and its stable prefix's fingerprint."""
        named = current_conversation()
        key = lineage_key(
            self.client_key, PROVIDER, model, t.id if t else None, named, request_shape_of(body),
        )  # fmt: skip
        # bc.conversation names it; otherwise matched by content among the scope's conversations
        head = conversation_head(body, tools=tools)
        if named is not None:
            state = self.lineages.get(key)
        else:
            state = self.lineages.match(key, head, lambda: prefix_shape(body))
        if state.prior_gaps is None and t is not None and self.options.cache_ttl == "auto":
            # read when the task started (run_history), per task name; filtered by prefix here
            state.prior_gaps = run_history.gaps(t.name, t.id, model, head.fingerprint)
        return state, head.fingerprint

    def _place(self, body: Mapping[str, Any], state: LineageState, tools: Print = None) -> PreparedRequest:
        """The body to send, markers placed, and what placement concluded about its prefix."""
        return prepare_request(
            body,
            cache=self.options.cache,
            cache_ttl=self.options.cache_ttl,
            drift=self.options.drift,
            state=state,
            now=self.now(),
            diagnostics=self.diagnostics,
            tools=tools,
        )

    # -- after the attempt -------------------------------------------------------------------
    def _after(self, attempt: _AnthropicAttempt, response: Any) -> None:
        if isinstance(response, httpx2.Response):  # cast_to=httpx2.Response: the SDK hands it bare
            http_response = response
        else:
            try:
                http_response = response.http_response
            except AttributeError:  # another middleware short-circuited with a model
                metering.finish_call(attempt.ctx, Usage(), status="ok", error="no-http-response")
                return
        status = http_response.status_code
        ctx = attempt.ctx
        if status >= 400:
            if ctx.operation == "batch":
                return
            metering.finish_call(ctx, Usage(), status="error", http_status=status, error=f"HTTP {status}")
            return
        try:  # `guarded`, written out: this runs on every call
            if ctx.operation == "batch":
                batch_id = _path(attempt.url)[len(_BATCHES_PREFIX) :].split("/", 1)[0]
                tap_response(http_response, _JSONLBatchObserver(self, batch_id, ctx))
                return
            # only a request that asked to stream gets events (a header lookup costs microseconds)
            mode = _stream_mode(http_response) if ctx.stream else "json"
            if mode == "json" and body_read(http_response):
                self._record_json(attempt, http_response, status)  # every call not streamed
            else:
                tap_response(http_response, _MessageObserver(self, attempt, status, mode))
            return
        except Exception as exc:
            report_fault("meter.failed", exc, stage="tap")
        # the response could not be observed: recorded as incomplete, its hold given back
        metering.finish_call(ctx, Usage(requests=1), status="incomplete", http_status=status)

    def _record_json(self, attempt: _AnthropicAttempt, response: httpx2.Response, status: int) -> None:
        """A JSON body the SDK has read: parsed once for the record and the SDK (`read_json`), and
        recorded as `_MessageObserver` records it through a tap, without the tap."""
        message: Mapping[str, Any] = {}
        try:
            document = read_json(response)
            if type(document) is not dict and not _is_mapping(document):  # blank, or not an object
                self._record(attempt, {}, message, False, status, None)
                return
            message = document
            usage_fields = _usage_fields(document)
        except Exception as exc:  # unreadable or not JSON: incomplete, with the error
            self._record(attempt, {}, message, False, status, exc)
            return
        self._record(attempt, usage_fields, message, True, status, None)

    def _record(
        self,
        attempt: _AnthropicAttempt,
        usage_fields: Mapping[str, Any],
        message: Mapping[str, Any],
        complete: bool,
        http_status: int,
        error: BaseException | None,
    ) -> None:
        """The call's record from its response (made now or off the call path: `finish_call`), after
        what must be done before the SDK returns: the lineage learns from the response (the next
        call's placement reads it) and a drift the API diagnosed is warned about in this thread."""
        ctx = attempt.ctx
        try:  # `guarded`, written out (this runs on every call): never break the call
            usage = usage_from_anthropic(usage_fields) if usage_fields or complete else Usage(requests=1)
            drift = ctx.drift
            prepared = attempt.prepared
            if complete and prepared is not None and attempt.state is not None:
                try:
                    merged = observe_response(attempt.state, prepared, usage, message)
                except Exception as exc:
                    report_fault("cache.observe_failed", exc)
                else:
                    if merged is not None and merged is not drift:
                        if drift is None and self.options.drift == "warn":
                            announce_drift(merged, provider=PROVIDER, model=ctx.model)
                        drift = merged
            tier = usage_fields.get("service_tier")
            response_id = message.get("id")
            metering.finish_call(
                ctx,
                usage,
                status="ok" if complete else "incomplete",
                model=_billed_model(ctx.model, message),
                http_status=http_status,
                error=None if error is None else type(error).__name__,
                response_id=response_id if type(response_id) is str else None,
                service_tier=tier if type(tier) is str else None,
                drift=drift,
            )
        except Exception as exc:
            report_fault("meter.failed", exc, stage="anthropic.record")
        if not ctx.finished:  # a fault above must neither keep the call's hold nor lose its record
            metering.finish_call(ctx, Usage(requests=1), status="incomplete", http_status=http_status)

    def _record_batch_results(self, batch_id: str, ctx: CallContext, results: Sequence[Any]) -> None:
        for item in results:
            with guarded("meter.failed", stage="batch"):
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


def _server_side_thread(body: Mapping[str, Any]) -> bool:
    """A beta ``thread`` continuation (tool runners): earlier turns live on the server."""
    thread = body.get("thread")
    return thread is not None and isinstance(thread, Mapping) and thread.get("type") == "continue"


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
    except Exception as exc:  # an SDK whose request differs: the public (slower) way
        _hook_unavailable("APIRequest.options.model_copy()/json_data/extra_json/params", exc)
        return request.copy(body=body)


def _error_status_response(request: APIRequest, response: Any, response_cls: type[Any]) -> Any:
    """An error ``httpx2.Response`` handed back bare (``cast_to=httpx2.Response``) as the SDK's
    response wrapper, so the SDK's loop retries and raises it as for a client without middleware.

    anthropic's middleware branch (``_base_client._request``) treats a chain result that is not an
    ``APIResponse`` as success, and ``cast_to=httpx2.Response`` (how its low-level ``get``/``post``
    reach an undocumented endpoint) makes the chain return the bare response: with any middleware
    installed, a 4xx/5xx would be returned unretried. The wrapper is only read for its
    ``http_response`` (the loop raises or retries from there), hence no client.
    """
    if not isinstance(response, httpx2.Response) or response.is_success:
        return response
    try:
        return response_cls(
            raw=response,
            cast_to=request.cast_to,
            client=cast(Any, None),
            stream=request.stream,
            stream_cls=request.stream_cls,
            options=request.options,
            retries_taken=request.retries_taken,
        )
    except Exception as exc:  # a changed wrapper: the SDK's own (returned, unraised) behaviour
        _hook_unavailable("anthropic.APIResponse(raw=..., options=...) for a bare error response", exc)
        return response


def _cache_write_ttl(prepared: PreparedRequest | None, option: str) -> Ttl | None:
    """The TTL a request's cache writes may be billed at, for its worst case: what placement
    chose; a caller's own markers at the client's TTL option (``"1h"`` only when asked for)."""
    if prepared is not None:
        if prepared.ttl is not None:
            return prepared.ttl
        if not prepared.cache_points:
            return None  # no marker: Anthropic writes no cache
    return "1h" if option == "1h" else "5m"


# -- clients ---------------------------------------------------------------------------------
#
# anthropic runs its credential chain (profiles, ANTHROPIC_PROFILE, workload identity) and lets
# copy() inherit a credentials provider only when ``type(self) in (Anthropic, AsyncAnthropic)``
# (``anthropic._client._is_base_client``): a subclass silently loses both. So our classes run the
# SDK's ``__init__`` and ``copy`` as the SDK's own class: ``__init__`` on the brand-new object with
# its class set to the SDK's for the call (no other thread can see it yet), ``copy`` on a
# throwaway view of the client of the SDK's class (``self`` is shared, so its class never changes).

_UNSET: Any = object()


def _hook_unavailable(hook: str, exc: BaseException) -> None:
    """One warning per hook and process: budgetclient took the public path instead."""
    hook_unavailable(
        PROVIDER,
        anthropic.__version__,
        hook,
        problem=f"{type(exc).__name__}: {str(exc)[:200]}",
        fallback="the SDK's public path (see the hook's contract test)",
    )


def _chain(client: Any) -> tuple[Any, ...]:
    """A client's whole middleware chain, outermost first: ``_middleware`` (our classes' public
    ``middleware`` leaves budgetclient's out), else the SDK's public ``middleware``."""
    chain = getattr(client, "_middleware", None)
    if not isinstance(chain, tuple):
        chain = getattr(client, "middleware", ())
    return tuple(chain or ())


def _find_budget(client: Any) -> BudgetMiddleware | None:
    return next((m for m in _chain(client) if isinstance(m, BudgetMiddleware)), None)


def _arrange(middleware: Iterable[Any] | None, current: BudgetMiddleware) -> list[Any]:
    """``middleware`` with one BudgetMiddleware, innermost (last): one the caller added, else ``current``.

    The SDK nests middleware in list order (first = outermost). Innermost, budgetclient meters
    every HTTP attempt, also each of several that an outer middleware (a fallback or hedging
    one) sends for one call; and a copy keeps ``current``: its options and conversation state.
    """
    given = list(middleware or ())
    explicit = [m for m in given if isinstance(m, BudgetMiddleware) and m is not current]
    ours = explicit[-1] if explicit else current
    return [*(m for m in given if not isinstance(m, BudgetMiddleware)), ours]


def _init_client(client: Any, sdk_cls: Any, kwargs: dict[str, Any]) -> None:
    """``sdk_cls.__init__`` with budgetclient's middleware, run as ``sdk_cls`` itself for our classes."""
    options, rest = split_client_options(kwargs)
    given = list(rest.pop("middleware", None) or ())
    current = next((m for m in given if isinstance(m, BudgetMiddleware)), None) or BudgetMiddleware(options)
    rest["middleware"] = _arrange(given, current)
    cls = type(client)
    if cls not in _OURS:  # a user's subclass of ours: treated by the SDK as any subclass of its own
        sdk_cls.__init__(client, **rest)
    else:
        try:
            client.__class__ = sdk_cls
        except TypeError as exc:
            _hook_unavailable("client.__class__ = anthropic.Anthropic (credential chain)", exc)
            sdk_cls.__init__(client, **rest)
        else:
            try:
                sdk_cls.__init__(client, **rest)
            finally:
                client.__class__ = cls
    _install_attempt_hook(client)


def _install_attempt_hook(client: Any) -> None:
    """The fast seam: meter each HTTP attempt in the SDK's per-attempt ``_attempt_request`` (our
    classes override it, `_hook_class`; an SDK-class client from ``wrap`` gets one on the
    instance) and send without the SDK's middleware chain, when
    budgetclient's middleware is the client's only one.

    The middleware chain costs an ``APIRequest``, its headers built twice and an options copy per
    attempt. The middleware stays in ``_middleware`` (copies and ``with_options`` keep it), and
    wherever the SDK still runs the chain (an OpenTelemetry-traced call builds its own) it meters
    and the hook only forwards. Without the hook (another SDK version) the middleware meters, as
    before; `tests/providers/test_anthropic_contract.py` names what is used here.
    """
    if _only_budget_middleware(client) is None:
        return  # the caller's middleware as well: budgetclient's stays in the chain, innermost
    try:
        attributes = vars(client)
        if "_middleware_chain" not in attributes:
            raise AttributeError("_middleware_chain")
        if not _class_hooked(type(client)):  # an SDK-class client (``wrap``): on the instance
            hook = _attempt_hook(_sdk_attempt_request(type(client)))
            attributes["_attempt_request"] = MethodType(hook, client)
        attributes["_middleware_chain"] = None
    except Exception as exc:  # the middleware chain, untouched, meters every attempt
        _hook_unavailable("client._attempt_request / client._middleware_chain (attempt hook)", exc)


def _only_budget_middleware(client: Any) -> BudgetMiddleware | None:
    """budgetclient's middleware when it is the client's only one (the attempt hook then meters)."""
    chain = getattr(client, "_middleware", None)
    if type(chain) is tuple and len(chain) == 1 and isinstance(chain[0], BudgetMiddleware):
        return chain[0]
    return None


def _sdk_attempt_request(cls: type) -> Callable[..., Any]:
    """The SDK's ``_attempt_request`` as a plain function (a coroutine function for async clients);
    raises AttributeError when the installed SDK has none (the chain meters then)."""
    send = inspect.getattr_static(cls, "_attempt_request", None)
    if not inspect.isfunction(send):
        raise AttributeError(f"{cls.__name__}._attempt_request is {type(send).__name__}, not a method")
    return send


_HOOK_MARK = "_budgetclient_attempt_hook"


def _attempt_hook(send: Callable[..., Any]) -> Callable[..., Any]:
    """``_attempt_request(self, options, ...)`` around the SDK's ``send``: metered here when
    budgetclient's middleware is the client's only one, forwarded when the chain metered it."""
    hooked: Callable[..., Any]
    if inspect.iscoroutinefunction(send):

        async def hooked_async(
            self: Any, options: Any, *, stream: bool = False, retries_taken: int = 0, call: Any = None
        ) -> Any:
            bound = send.__get__(self)
            middleware = _only_budget_middleware(self)
            if middleware is None or _METERED_BY_MIDDLEWARE.get():
                return await bound(options, stream=stream, retries_taken=retries_taken, call=call)
            return await middleware.attempt_async(bound, options, stream, retries_taken, call)

        hooked = hooked_async
    else:

        def hooked_sync(
            self: Any, options: Any, *, stream: bool = False, retries_taken: int = 0, call: Any = None
        ) -> Any:
            bound = send.__get__(self)
            chain = getattr(self, "_middleware", None)  # `_only_budget_middleware`, written out
            if (
                type(chain) is not tuple
                or len(chain) != 1
                or not isinstance(middleware := chain[0], BudgetMiddleware)
                or _METERED_BY_MIDDLEWARE.get()
            ):
                return bound(options, stream=stream, retries_taken=retries_taken, call=call)
            return middleware.attempt(bound, options, stream, retries_taken, call)

        hooked = hooked_sync
    setattr(hooked, _HOOK_MARK, True)
    return hooked


def _class_hooked(cls: type) -> bool:
    """Whether ``cls`` (ours, or a subclass of ours) meters attempts in its own ``_attempt_request``."""
    return bool(getattr(inspect.getattr_static(cls, "_attempt_request", None), _HOOK_MARK, False))


def _hook_class(cls: type, sdk_cls: type) -> None:
    """Our client classes meter each attempt in a ``_attempt_request`` of the class, not one set
    on each instance: a client's state stays what the SDK's own class holds (``vars()`` of a copy
    equals the original's, as the SDK's copy tests check)."""
    try:
        cls._attempt_request = _attempt_hook(_sdk_attempt_request(sdk_cls))  # type: ignore[attr-defined]
    except AttributeError as exc:
        _hook_unavailable(f"{sdk_cls.__name__}._attempt_request (attempt hook)", exc)


def _arrange_copy(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``copy()`` keywords for the SDK: ``middleware`` with budgetclient's innermost, the client's
    own or, given ``cache``/``cache_ttl``/``drift`` (a copy takes every constructor argument),
    one with those options and the same conversation state."""
    overrides = pop_option_overrides(kwargs)
    own = _find_budget(client)
    if own is None:
        return {**kwargs, **overrides}  # not instrumented: the SDK's own answer to unknown arguments
    requested = kwargs.get("middleware", _UNSET)
    chain = list(_chain(client) if requested is _UNSET else requested or ())
    current = own
    if overrides:
        current = own.with_options(own.options.updated(overrides))
        chain = [m for m in chain if m is not own]
    kwargs["middleware"] = _arrange(chain, current)
    return kwargs


def _copy_client(client: Any, sdk_cls: Any, kwargs: dict[str, Any]) -> Any:
    """``sdk_cls.copy`` of our ``client``: budgetclient's middleware kept innermost, credentials
    inherited as by the SDK's own class."""
    kwargs = _arrange_copy(client, kwargs)
    cls = type(client)
    if cls not in _OURS:
        return sdk_cls.copy(client, **kwargs)
    try:
        view: Any = object.__new__(sdk_cls)
        view.__dict__.update(vars(client))
    except TypeError as exc:
        _hook_unavailable("object.__new__(anthropic.Anthropic) view (copy credentials)", exc)
        return sdk_cls.copy(client, **kwargs)
    copied = sdk_cls.copy(view, **kwargs)
    try:
        copied.__class__ = cls
    except TypeError as exc:  # still instrumented (its middleware), but of the SDK's class
        _hook_unavailable("copy().__class__ = budgetclient class", exc)
    _install_attempt_hook(copied)
    return copied


class _ArrangedCopy:
    """``copy`` / ``with_options`` of a client ``wrap()`` returned (the SDK's class, which cannot be
    changed): copies, ``with_middleware()`` ones included, keep budgetclient's middleware
    innermost and are hooked in turn."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def __signature__(self) -> inspect.Signature:
        """The SDK's ``copy`` signature, for ``inspect.signature`` / ``help()``."""
        bound = inspect.signature(type(self.client).copy.__get__(self.client))
        return combined(bound, COPY_PARAMETERS) if _find_budget(self.client) is not None else bound

    def __call__(self, **kwargs: Any) -> Any:
        client = self.client
        copied = type(client).copy(client, **_arrange_copy(client, kwargs))
        _hook_copies(copied)
        _install_attempt_hook(copied)
        return copied


def _hook_copies(client: Any) -> None:
    """Set `_ArrangedCopy` on an SDK-class client's instance (the SDK's ``with_middleware`` calls
    ``self.copy``); our own classes override ``copy`` already."""
    if type(client) in _OURS or not callable(getattr(type(client), "copy", None)):
        return
    try:
        attributes = vars(client)
    except TypeError as exc:
        _hook_unavailable("client.__dict__ (copy hook)", exc)
        return
    attributes["copy"] = attributes["with_options"] = _ArrangedCopy(client)


if TYPE_CHECKING:
    from anthropic import (
        AccessTokenProvider,
        AsyncAccessTokenProvider,
        MiddlewareInput,
        NotGiven,
        OpenTelemetryClientOption,
        Timeout,
        TokenCache,
    )

    from ..options import CacheMode, CacheTTL, DriftMode


class _ClientArguments(TypedDict, total=False):
    """The installed SDK's constructor keywords (a test checks none is missing) plus ours, for type
    checkers and IDEs; at run time every keyword goes to the SDK as given, and the signature
    shown (`_signature.show_sdk_signatures`) is built from the installed SDK's."""

    api_key: str | None
    auth_token: str | None
    config: Mapping[str, Any] | None
    profile: str | None
    webhook_key: str | None
    base_url: str | httpx2.URL | None
    timeout: float | Timeout | NotGiven | None
    max_retries: int
    default_headers: Mapping[str, str] | None
    default_query: Mapping[str, object] | None
    open_telemetry: OpenTelemetryClientOption
    middleware: Sequence[MiddlewareInput] | None
    _strict_response_validation: bool
    _token_cache: TokenCache | NotGiven | None
    cache: CacheMode
    cache_ttl: CacheTTL
    drift: DriftMode


class AnthropicArguments(_ClientArguments, total=False):
    """``bc.Anthropic``'s keyword arguments."""

    credentials: AccessTokenProvider | None
    http_client: httpx2.Client | None


class AsyncAnthropicArguments(_ClientArguments, total=False):
    """``bc.AsyncAnthropic``'s keyword arguments."""

    credentials: AccessTokenProvider | AsyncAccessTokenProvider | None
    http_client: httpx2.AsyncClient | None


# the SDK's classes as imported: a test suite may rebind ``anthropic.Anthropic`` to ours
_SDK_ANTHROPIC = anthropic.Anthropic
_SDK_ASYNC_ANTHROPIC = anthropic.AsyncAnthropic


class Anthropic(_SDK_ANTHROPIC):
    """``anthropic.Anthropic`` with budgetclient's metering, placement and drift checks.

    Takes the SDK's constructor arguments plus ``cache``, ``cache_ttl`` and ``drift``.
    """

    def __init__(self, **kwargs: Unpack[AnthropicArguments]) -> None:
        _init_client(self, _SDK_ANTHROPIC, dict(kwargs))

    if not TYPE_CHECKING:  # type checkers see the SDK's own (same signature, returns Self)

        def copy(self, **kwargs):
            return _copy_client(self, _SDK_ANTHROPIC, kwargs)

        with_options = copy

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_middleware(self).options

    @property
    def middleware(self) -> tuple[MiddlewareInput, ...]:
        """The caller's middleware, outermost first, as the SDK's client shows it: budgetclient's
        own (always innermost, kept by every copy) is not listed."""
        return _callers_middleware(self)


class AsyncAnthropic(_SDK_ASYNC_ANTHROPIC):
    """``anthropic.AsyncAnthropic`` with budgetclient's metering, placement and drift checks."""

    def __init__(self, **kwargs: Unpack[AsyncAnthropicArguments]) -> None:
        _init_client(self, _SDK_ASYNC_ANTHROPIC, dict(kwargs))

    if not TYPE_CHECKING:

        def copy(self, **kwargs):
            return _copy_client(self, _SDK_ASYNC_ANTHROPIC, kwargs)

        with_options = copy

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_middleware(self).options

    @property
    def middleware(self) -> tuple[MiddlewareInput, ...]:
        """The caller's middleware, outermost first, as the SDK's client shows it: budgetclient's
        own (always innermost, kept by every copy) is not listed."""
        return _callers_middleware(self)


_OURS: tuple[type, ...] = (Anthropic, AsyncAnthropic)

for _cls, _sdk_cls in ((Anthropic, _SDK_ANTHROPIC), (AsyncAnthropic, _SDK_ASYNC_ANTHROPIC)):
    show_sdk_signatures(_cls, _sdk_cls)
    _hook_class(_cls, _sdk_cls)


def _callers_middleware(client: Any) -> tuple[MiddlewareInput, ...]:
    return tuple(m for m in _chain(client) if not isinstance(m, BudgetMiddleware))


def _budget_middleware(client: Any) -> BudgetMiddleware:
    found = _find_budget(client)
    if found is None:
        raise LookupError("client is not instrumented by budgetclient")
    return found


C = TypeVar("C")

# Bedrock and Vertex strip unknown body fields differently and have no cache diagnostics.
_NO_DIAGNOSTICS = ("AnthropicBedrock", "AnthropicVertex", "AnthropicBedrockMantle")


def wrap_anthropic(client: C, options: ClientOptions) -> C:
    """A copy of an Anthropic SDK client (any platform variant) with budgetclient installed."""
    existing = [m for m in _chain(client) if not isinstance(m, BudgetMiddleware)]
    diagnostics = not any(type(client).__name__.endswith(n) for n in _NO_DIAGNOSTICS)
    chain = [*existing, BudgetMiddleware(options, diagnostics=diagnostics)]
    copy = getattr(client, "copy", None)
    if copy is None:
        raise TypeError(f"cannot instrument {type(client).__name__}: it has no copy(middleware=...)")
    try:
        wrapped = copy(middleware=chain)
    except TypeError as exc:
        raise TypeError(
            f"cannot instrument {type(client).__name__}: this anthropic version does not accept "
            f"middleware on copy() ({exc}); upgrade anthropic to >= 2.10"
        ) from exc
    _hook_copies(wrapped)
    _install_attempt_hook(wrapped)
    return wrapped  # type: ignore[no-any-return]


def _metadata(prepared: PreparedRequest | None, stable: str | None) -> dict[str, Any] | None:
    """The breakpoints placed, and the stable prefix's fingerprint (`run_history` learns per prefix)."""
    metadata: dict[str, Any] = {STABLE_PREFIX: stable} if stable is not None else {}
    if prepared is not None and prepared.breakpoints:
        metadata["breakpoints"] = list(prepared.breakpoints)
    return metadata or None
