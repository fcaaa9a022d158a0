"""The OpenAI meter: prepares each model request, admits it, and records what its body reports.

One ``OpenAIMeter`` belongs to one instrumented client and all of its copies. Per HTTP attempt:

1. ``prepare_options`` decides the JSON body (``include_usage``, ``prompt_cache_key``, breakpoint;
   see `formats.openai.prefix`) and checks the stable prefix for drift while the body is still the SDK's
   dict, so the SDK encodes the final body once (`_openai_hook`); a request that arrives without
   a prepared body (a raw ``content=`` body, a client whose hook could not be used) is metered exactly as
   sent, never rewritten: its bytes may be signed. ``begin`` then raises the drift
   (``PrefixDriftError`` before sending with ``drift="raise"``) and opens a metering context
   (``BudgetExceeded`` before sending);
2. ``observe`` taps the response body as the SDK reads it (plain, raw, streaming responses and
   stream helpers alike) and hides the usage-only chunk when budgetclient asked for it;
3. ``record`` turns the folded usage into a call record. Retries and failed attempts are records
   of their own; a stream cut short is recorded ``incomplete`` with what arrived.

Background responses (``background=True``) bill when they finish: the usage read by a later
``GET /responses/{id}`` goes to the task that created the response, once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai

from .. import admission, metering
from .._construct import fast_constructor
from .._guard import report_fault
from ..admission import Admission, admit, output_limit
from ..blocks import PrefixPrint, count_tokens
from ..config import get_settings
from ..drift import PrefixDrift, explain_drift
from ..formats.openai.prefix import (
    CHAT,
    COMPACT,
    COMPLETIONS,
    EMBEDDINGS,
    RESPONSES,
    PrefixMemo,
    PreparedOpenAIRequest,
    RouteSpreader,
    background_poll,
    classify,
    conversation_head,
    prefix_shape,
    prepare_request,
    prompt_cache_key_for,
    request_prints,
    request_shape_of,
)
from ..formats.openai.usage import usage_from_chat, usage_from_responses
from ..lineage import LineageRegistry, LineageState, current_conversation, lineage_key
from ..metering import CallContext
from ..options import ClientOptions
from ..tasks import Task, current_task
from ..usage import CallStatus, Usage
from ._openai_drift import announce_drift, extra_cost, merge_diagnostics
from ._openai_estimate import ChatEstimates
from ._openai_stream import hide_usage_chunk
from ._sse import BodyObserver, body_read, read_json, tap_response

__all__ = ["PROVIDER", "OpenAIMeter", "PreparedBody", "prepared_body_of"]


PROVIDER = "openai"
_MAX_PENDING = 4096
_TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
_PENDING_STATUSES = ("queued", "in_progress")
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16
"""The legacy completions endpoint's ``max_tokens`` when a request leaves it out."""


_PREPARED_BODY = "_budgetclient_prepared_body"
"""Attribute of an ``httpx2.Request`` carrying the `PreparedBody` its body was encoded from."""


@dataclass(slots=True)
class PreparedBody:
    """What budgetclient decided for one attempt's body, and what it learnt deciding it."""

    meter: OpenAIMeter
    operation: str
    body: Mapping[str, Any] | None
    """The body as sent (None when it is not a JSON object)."""
    model: str
    stream: bool
    prepared: PreparedOpenAIRequest | None = None
    lineage: LineageState | None = None
    drift: PrefixDrift | None = None


def prepared_body_of(request: httpx2.Request) -> PreparedBody | None:
    """The prepared body ``request`` was built from, if budgetclient prepared it before encoding."""
    decided = getattr(request, _PREPARED_BODY, None)
    return decided if isinstance(decided, PreparedBody) else None


def attach_prepared_body(request: httpx2.Request, decided: PreparedBody) -> None:
    setattr(request, _PREPARED_BODY, decided)


_PREPARED_OPERATIONS = (CHAT, RESPONSES, COMPLETIONS)
"""The operations whose bodies are prepared (cache key, breakpoint, drift check)."""
_OPERATIONS: dict[str, str | None] = {}
"""`classify` of a ``POST`` to each request URL the SDK built (a handful per client)."""
_OPERATIONS_MAX = 256


def _operation_of(url: str) -> str | None:
    """The operation of a ``POST`` to ``url``, classified once per URL."""
    operation = classify("POST", url.split("?", 1)[0])
    if len(_OPERATIONS) >= _OPERATIONS_MAX:
        _OPERATIONS.clear()
    _OPERATIONS[url] = operation
    return operation


_new_admission = fast_constructor(Admission)
"""``Admission(...)`` at a fifth of the cost (one per attempt)."""


@dataclass(slots=True)
class _Attempt:
    """One HTTP attempt in flight."""

    operation: str
    request: httpx2.Request
    ctx: CallContext
    prepared: PreparedOpenAIRequest | None
    lineage: LineageState | None
    started: float
    raw_estimate: int = 0
    """Uncalibrated input-token estimate made for the budget check (0 when none was needed)."""
    poll: str | None = None
    """For ``GET /responses/{id}`` of a background response: its id."""


class OpenAIMeter:
    """budgetclient's state for one OpenAI client and all its copies: options and conversations."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        self.client_key = f"{id(self):x}"
        self.lineages = LineageRegistry()
        self.routes = RouteSpreader()
        self.estimates = ChatEstimates()
        self._background: OrderedDict[str, tuple[Task | None, str]] = OrderedDict()
        """Background responses still running: id -> (task that created it, model)."""
        self._lock = threading.Lock()

    # -- before sending ------------------------------------------------------------------------
    def prepare_options(self, options: Any, headers: Mapping[str, Any] | None = None) -> PreparedBody | None:
        """Prepare one attempt from the SDK's request options, before the SDK encodes the body.

        ``options`` is the attempt's own ``FinalRequestOptions`` (the SDK copies them for every
        attempt, so each attempt is prepared once, from the caller's body); a changed body is put
        back as ``options.json_data``, merged with ``extra_json`` exactly as the SDK merges them.
        ``headers`` are the client's custom headers. None (options untouched) when the request is
        not a JSON model request; never raises.
        """
        try:  # `guarded`, written out (every request): a fault never costs the user the request
            method, url = options.method, options.url
            if type(method) is str and type(url) is str and method == "post":  # as the SDK sends
                operation = _OPERATIONS.get(url)
                if operation is None:
                    operation = _operation_of(url)
            elif not isinstance(method, str) or method.upper() != "POST" or not isinstance(url, str):
                return None
            else:
                operation = classify("POST", url.split("?", 1)[0])
            if operation is None or options.content is not None or options.files is not None:
                return None
            if _multipart(options.headers) or _multipart(headers):
                return None
            json_data, extra = options.json_data, options.extra_json
            body: Any
            if extra is None:
                body = json_data
            elif json_data is None:
                body = extra
            elif isinstance(json_data, Mapping) and isinstance(extra, Mapping):
                body = {k: v for k, v in {**json_data, **extra}.items() if not isinstance(v, openai.Omit)}
            else:
                return None
            if type(body) is not dict and not isinstance(body, Mapping):
                return None
            decided = self._prepare_body(operation, body)
            prepared = decided.prepared
            if prepared is not None and prepared.changed:
                options.json_data = prepared.body
                if extra is not None:
                    options.extra_json = None
            return decided
        except Exception as exc:
            report_fault("cache.prepare_failed", exc, provider=PROVIDER)
        return None

    def _prepare_body(self, operation: str, body: Mapping[str, Any] | None) -> PreparedBody:
        model = str(body.get("model") or "") if body is not None else ""
        stream = bool(body.get("stream")) if body is not None else False
        decided = PreparedBody(self, operation, body, model, stream)
        if body is not None and operation in _PREPARED_OPERATIONS:
            try:  # `guarded`, written out: never costs a request
                decided.prepared, decided.lineage, decided.drift = self._prepare(body, operation, model)
                decided.body = decided.prepared.body
            except Exception as exc:
                report_fault("cache.prepare_failed", exc, provider=PROVIDER, model=model)
        return decided

    def _as_sent(self, request: Any, operation: str) -> PreparedBody:
        """The prepared body of a request that reached the HTTP layer unprepared: metered exactly as sent.

        Its body is the caller's own bytes (``content=``), or bytes the SDK encoded and a client
        may already have signed (Bedrock SigV4, a signing ``_prepare_request``): rewriting it would
        break the signature, so it is read (model, stream, the budget estimate) and never changed;
        no cache key, breakpoint or drift check. Usage is read from the response as for any call.
        """
        body: Mapping[str, Any] | None = None
        try:
            content = request.content if _has_content(request) else b""
            document = json.loads(content) if content else None
            body = document if isinstance(document, Mapping) else None
        except Exception:  # a multipart or non-JSON body: metered from the response alone
            body = None
        model = str(body.get("model") or "") if body is not None else ""
        stream = bool(body.get("stream")) if body is not None else False
        return PreparedBody(self, operation, body, model, stream)

    def begin(self, request: httpx2.Request) -> _Attempt | None:
        """Admit one attempt; None when the request is not a model request.

        Raises only ``BudgetExceeded`` and (with ``drift="raise"``) ``PrefixDriftError``.
        """
        decided = getattr(request, _PREPARED_BODY, None)  # `prepared_body_of`, inline
        if not isinstance(decided, PreparedBody) or decided.meter is not self:
            operation = classify(request.method, request.url.path)
            if operation is None:
                return self._poll(request)
            decided = self._as_sent(request, operation)
        model, prepared, lineage = decided.model, decided.prepared, decided.lineage
        operation, send_body = decided.operation, decided.body
        raw_estimate = [0]

        def estimate() -> int:
            assert send_body is not None
            result = self.estimates.estimate(
                lineage.key if lineage is not None and operation == CHAT else None,
                send_body,
                model,
                prepared.tools_print if prepared is not None else None,
            )
            raw_estimate[0] = result.raw_tokens
            return result.tokens

        metadata: dict[str, Any] = {}
        if prepared is not None:
            if prepared.breakpoints:
                metadata["breakpoints"] = list(prepared.breakpoints)
            if prepared.prompt_cache_key is not None:
                metadata["prompt_cache_key"] = prepared.prompt_cache_key
        try:  # `_has_content`, inline: an unread streaming body raises RequestNotRead
            request_bytes = len(request.content)
        except Exception:
            request_bytes = 0
        ctx = admit(
            _new_admission(
                provider=PROVIDER,
                model=model,
                operation=operation,
                body=send_body if operation in (CHAT, RESPONSES) else None,
                drift=decided.drift if prepared is not None else None,
                drift_mode=self.options.drift,
                announce=lambda drift: announce_drift(drift, model),
                estimate=estimate if send_body is not None else None,
                max_output_tokens=_output_limit(operation, send_body),
                stream=decided.stream,
                attempt=_retries_taken(request),
                request_bytes=request_bytes,
                conversation=lineage.key if lineage is not None else None,
                prefix_hash=prepared.prefix_hash if prepared is not None else None,
                metadata=metadata,
            )
        )
        return _Attempt(operation, request, ctx, prepared, lineage, time.time(), raw_estimate[0])

    def _poll(self, request: httpx2.Request) -> _Attempt | None:
        """A retrieve of a background response: its usage belongs to the task that created it."""
        response_id = background_poll(request.method, request.url.path)
        if response_id is None:
            return None
        with self._lock:
            pending = self._background.get(response_id)
        if pending is None:
            return None
        task, model = pending
        ctx = CallContext(
            provider=PROVIDER,
            model=model,
            operation=RESPONSES,
            task=task,
            started_at=datetime.now(UTC),
            t0=time.monotonic(),
            stream=request.url.params.get("stream") == "true",
            metadata={"background": True},
        )
        return _Attempt(RESPONSES, request, ctx, None, None, time.time(), poll=response_id)

    def _prepare(
        self, body: Mapping[str, Any], operation: str, model: str
    ) -> tuple[PreparedOpenAIRequest, LineageState, PrefixDrift | None]:
        task = current_task()
        conversation = current_conversation()
        # Chat Completions and Responses keep separate conversations, even for one model and task
        client_key = f"{self.client_key}/{operation}"
        task_id = task.id if task else None
        shape = request_shape_of(body, operation)
        scope = lineage_key(client_key, PROVIDER, model, task_id, conversation, shape)
        # bc.conversation names it; otherwise matched by content among the scope's conversations
        prints = request_prints(body, operation)  # printed once: the head and the prefix read them
        if conversation is not None:
            state = self.lineages.get(scope)
        else:
            state = self.lineages.match(
                scope, conversation_head(body, operation, prints), lambda: prefix_shape(body, operation)
            )
        lineage = state.key
        with state.lock:
            previous, previous_response = state.prefix, state.response_id
            gap = time.time() - state.last_call_at if state.last_call_at is not None else None
            built = state.built
        memo = state.token_memo

        def count_block(digest: bytes, text: str) -> int:
            tokens = memo.get(digest)
            if tokens is None:
                tokens = memo[digest] = count_tokens(text, model)
            return tokens

        prepared = prepare_request(
            body,
            operation,
            self.options,
            cache_key=prompt_cache_key_for(model, task.name if task else None, conversation),
            route_key=lambda key: self.routes.key_for(key, lineage, time.time()),
            previous_response_id=previous_response,
            gap_s=gap,
            count_block=count_block,
            previous=built if isinstance(built, PrefixMemo) else None,
            prints=prints,
        )
        drift = None
        # the previous call's own blocks (a memo hit) with the same parameters cannot have drifted
        if (
            self.options.drift != "off"
            and previous is not None
            and not (previous.blocks is prepared.prefix and previous.params == prepared.params)
        ):
            drift = explain_drift(
                previous.blocks,
                prepared.prefix,
                previous_params=previous.params,
                current_params=prepared.params,
                extra_cost=lambda tokens: extra_cost(tokens, model),
                excerpts=get_settings().drift_excerpts,
            )
        return prepared, state, drift

    # -- after the attempt ---------------------------------------------------------------------
    def failed(self, attempt: _Attempt, exc: BaseException) -> None:
        """The attempt raised before a response arrived (connection error, timeout, cancel)."""
        if attempt.poll is not None:
            return  # a failed poll bills nothing; the response stays pending
        admission.failed(attempt.ctx, exc)

    def observe(self, attempt: _Attempt, response: httpx2.Response, *, is_async: bool) -> None:
        """Record the attempt once its body has been read; never raises."""
        status = response.status_code
        try:  # `guarded`, written out: this runs on every call
            if status >= 400 and attempt.poll is not None:
                return
            if status >= 400:
                metering.finish_call(
                    attempt.ctx, Usage(), status="error", http_status=status, error=f"HTTP {status}"
                )
                return
            content_type = _header(response.headers, b"content-type", "content-type", "")
            # the SDK reads a stream it asked for as SSE whatever the content type (a mocked wire
            # often sends none); a JSON body there is an error document
            sse = "text/event-stream" in content_type or (attempt.ctx.stream and "json" not in content_type)
            if not sse and body_read(response):
                self._record_read(attempt, response, status)
            else:
                tap_response(response, _UsageObserver(self, attempt, status, sse))
            if sse and attempt.prepared is not None and attempt.prepared.hide_usage_chunk:
                hide_usage_chunk(response, is_async=is_async)
            return
        except Exception as exc:
            report_fault("meter.failed", exc, stage="openai.tap")
        metering.finish_call(attempt.ctx, Usage(requests=1), status="incomplete", http_status=status)

    def _record_read(self, attempt: _Attempt, response: httpx2.Response, status: int) -> None:
        """A JSON body the SDK has read already: parsed once, for the record and for the SDK's own
        ``response.json()`` (`read_json`), and recorded as `_UsageObserver` records a tapped one."""
        message: dict[str, Any] = {}
        try:
            document = read_json(response)
            usage = None
            if type(document) is dict or isinstance(document, Mapping):
                usage = _take(document, message, None)
        except Exception as exc:  # as a tap reports a body it could not read or parse
            error = type(exc).__name__
            self.record(attempt, None, message, status="incomplete", http_status=status, error=error)
            return
        self.record(attempt, usage, message, status="ok", http_status=status, error=None)

    def record(
        self,
        attempt: _Attempt,
        usage_fields: Mapping[str, Any] | None,
        message: Mapping[str, Any],
        *,
        status: CallStatus,
        http_status: int,
        error: str | None,
    ) -> None:
        """Turn what the body said into a call record; a successful call updates its lineage."""
        try:  # `guarded`, written out: this runs on every call
            response_id = message.get("id")
            response_status = message.get("status")
            # only a Responses call or a poll can be a background response
            if (attempt.poll is not None or attempt.operation == RESPONSES) and not self._settle_background(
                attempt, response_id, response_status, status
            ):
                return
            if attempt.operation in (RESPONSES, COMPACT):
                usage = usage_from_responses(usage_fields)
            else:
                usage = usage_from_chat(usage_fields)
            if usage_fields is None and response_status in _PENDING_STATUSES:
                usage = Usage()  # a background response bills when it finishes (see ``_poll``)
            drift = attempt.ctx.drift
            diagnostics = message.get("prompt_cache_diagnostics")
            if drift is not None and isinstance(diagnostics, Mapping):
                drift = merge_diagnostics(drift, diagnostics)
            if status == "ok" and attempt.lineage is not None and attempt.prepared is not None:
                self._commit(attempt.lineage, attempt.prepared, message, attempt.started)
            model = str(message.get("model") or attempt.ctx.model) or None
            if status == "ok" and attempt.raw_estimate and usage.input_tokens:
                _calibrate_with_record(attempt, model, usage.input_tokens)
            tier = message.get("service_tier")
            metering.finish_call(
                attempt.ctx,
                usage,
                status=status,
                model=model,
                http_status=http_status,
                error=error,
                response_id=response_id if isinstance(response_id, str) else None,
                service_tier=tier if isinstance(tier, str) else None,
                drift=drift,
                metadata={"response_status": response_status} if isinstance(response_status, str) else None,
            )
        except Exception as exc:
            report_fault("meter.failed", exc, stage="openai.record")
        if attempt.poll is None and not attempt.ctx.finished:  # a fault above must neither keep
            # the hold nor lose the record
            metering.finish_call(attempt.ctx, Usage(requests=1), status="incomplete", http_status=http_status)

    def _settle_background(
        self, attempt: _Attempt, response_id: Any, response_status: Any, status: str
    ) -> bool:
        """Track background responses; False when this body must not be recorded.

        Not recorded: a failed poll, a poll of a response still running, or of one already recorded.
        """
        if attempt.poll is not None:
            if status != "ok" or response_status in _PENDING_STATUSES:
                return False
            with self._lock:
                return self._background.pop(attempt.poll, None) is not None
        queued = isinstance(response_id, str) and response_status in _PENDING_STATUSES
        if attempt.operation == RESPONSES and queued:
            with self._lock:
                self._background[response_id] = (attempt.ctx.task, attempt.ctx.model)
                while len(self._background) > _MAX_PENDING:
                    self._background.popitem(last=False)
        return True

    def _commit(
        self, state: LineageState, prepared: PreparedOpenAIRequest, message: Mapping[str, Any], at: float
    ) -> None:
        with state.lock:
            state.record_gap(at)
            memo, known = prepared.memo, state.prefix
            repeated = (
                memo is not None
                and state.built is memo
                and known is not None
                and known.blocks is prepared.prefix
                and known.params == prepared.params
            )
            if not repeated:  # a memo hit leaves the lineage as the previous call left it
                state.remember(PrefixPrint(prepared.prefix, prepared.params), memo)
            response_id = message.get("id")
            if isinstance(response_id, str) and response_id.startswith("resp"):
                state.response_id = response_id


class _UsageObserver(BodyObserver):
    """Folds one response body (JSON, chat chunks or Responses events) into one call record."""

    def __init__(self, meter: OpenAIMeter, attempt: _Attempt, http_status: int, sse: bool) -> None:
        self.mode = "sse" if sse else "json"
        self._meter = meter
        self._attempt = attempt
        self._http_status = http_status
        self._usage: Mapping[str, Any] | None = None
        self._message: dict[str, Any] = {}
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._done = False

    def on_event(self, event: str | None, data: str) -> None:
        if data.startswith("[DONE]"):
            self._finish(True)
            return
        document = json.loads(data)
        if not isinstance(document, Mapping):
            return
        kind = document.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            response = document.get("response")
            if isinstance(response, Mapping):
                self._take(response)
            if kind in _TERMINAL_EVENTS:
                if kind == "response.failed":
                    self._failure = _failure(response)
                self._finish(True)
        elif kind == "error" or event == "error":
            self._failure = "stream error event"
        else:  # a chat or legacy completions chunk
            self._take(document)

    def on_json(self, document: Any) -> None:
        if isinstance(document, Mapping):
            self._take(document)

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        # a Responses stream is whole only with its terminal event (which finishes earlier)
        self._finish(complete and not (self.mode == "sse" and self._attempt.operation == RESPONSES), error)

    def _take(self, document: Mapping[str, Any]) -> None:
        self._usage = _take(document, self._message, self._usage)

    def _finish(self, complete: bool, error: BaseException | None = None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        status: CallStatus = "error" if self._failure else ("ok" if complete else "incomplete")
        detail = self._failure or (type(error).__name__ if error is not None and not complete else None)
        self._meter.record(
            self._attempt,
            self._usage,
            self._message,
            status=status,
            http_status=self._http_status,
            error=detail,
        )


_MESSAGE_FIELDS = ("id", "model", "service_tier", "status", "prompt_cache_diagnostics")


def _take(
    document: Mapping[str, Any], message: dict[str, Any], usage: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """Fold one document (a body, chunk or event's response) into ``message``; the usage it
    reports, else ``usage`` (cumulative: the last report wins, never a sum)."""
    for key in _MESSAGE_FIELDS:
        if document.get(key) is not None:
            message[key] = document[key]
    reported = document.get("usage")
    return reported if type(reported) is dict or isinstance(reported, Mapping) else usage


def _failure(response: Any) -> str:
    if isinstance(response, Mapping) and isinstance(response.get("error"), Mapping):
        code = response["error"].get("code")
        return f"response.failed: {code}" if code else "response.failed"
    return "response.failed"


def _output_limit(operation: str, body: Mapping[str, Any] | None) -> int | None:
    """The most output tokens ``body`` lets the model write (all choices of a chat request)."""
    if body is None:
        return None
    if operation == EMBEDDINGS:
        return 0
    if operation == CHAT:
        limit = output_limit(body.get("max_completion_tokens", body.get("max_tokens")))
        choices = output_limit(body.get("n"))
        return limit * choices if limit is not None and choices else limit
    if operation == COMPLETIONS:
        return output_limit(body.get("max_tokens", _COMPLETIONS_DEFAULT_MAX_TOKENS))
    return output_limit(body.get("max_output_tokens"))


_RETRY_COUNT = "x-stainless-retry-count"
_RETRY_COUNT_KEY = _RETRY_COUNT.encode()


def _retries_taken(request: httpx2.Request) -> int:
    try:
        return max(int(_header(request.headers, _RETRY_COUNT_KEY, _RETRY_COUNT, "0")), 0)
    except ValueError:
        return 0


_ASCII_COMPATIBLE = (None, "ascii", "utf-8", "iso-8859-1")
"""Encodings an ``httpx2.Headers`` decodes ASCII bytes with as ASCII (None: it chooses among these)."""


def _header(headers: Any, key: bytes, name: str, default: str) -> str:
    """``headers.get(name, default)`` (``key``: ``name`` lowercased, as bytes).

    An ``httpx2.Headers`` is read through its list of lowercased names: its ``get`` lowercases and
    encodes the name and decodes every value found, a tenth of a call's own work for two lookups.
    A name sent twice, a value that is not ASCII, or another headers type goes through ``get``."""
    if type(headers) is httpx2.Headers:
        listed = getattr(headers, "_list", None)
        if type(listed) is list and getattr(headers, "_encoding", "") in _ASCII_COMPATIBLE:
            found = [value for _, lowered, value in listed if lowered == key]
            if not found:
                return default
            if len(found) == 1 and type(found[0]) is bytes and found[0].isascii():
                return found[0].decode("ascii")
    return headers.get(name, default)  # type: ignore[no-any-return]


def _has_content(request: Any) -> bool:
    """Whether ``request``'s body has been read (an ``httpx2`` or legacy ``httpx`` request)."""
    try:
        request.content  # noqa: B018 - raises RequestNotRead for unread streaming bodies
    except Exception:  # RequestNotRead of either package
        return False
    return True


def _multipart(headers: Any) -> bool:
    if type(headers) is dict and not headers:  # the client's usual custom headers: none
        return False
    if not isinstance(headers, Mapping):
        return False
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "content-type":
            return isinstance(value, str) and value.lower().startswith("multipart/")
    return False


def _calibrate_with_record(attempt: _Attempt, model: str | None, reported: int) -> None:
    """Calibrate the estimate against what OpenAI counted: with the call's record (off the call
    path when the record is, `metering.finish_call`) when the reported model calibrates the same
    model family as the requested one (the record calibrates by the reported model); else now."""
    requested = attempt.ctx.model
    if model is not None and (model == requested or _same_family(model, requested)):
        attempt.ctx.estimated_raw_tokens = attempt.raw_estimate
    else:
        _calibrate(requested, attempt.raw_estimate, reported)


_SAME_FAMILY: dict[tuple[str, str], bool] = {}
"""Whether a reported model is of its requested model's family, by the pair (a model and its
dated snapshot, on every call)."""


def _same_family(model: str, requested: str) -> bool:
    same = _SAME_FAMILY.get((model, requested))
    if same is None:
        same = _family(model) == _family(requested)
        if len(_SAME_FAMILY) >= 1024:
            _SAME_FAMILY.clear()
        _SAME_FAMILY[(model, requested)] = same
    return same


def _family(model: str) -> str:
    return metering._tokens().model_family(model)  # type: ignore[no-any-return]


def _calibrate(model: str, raw_estimate: int, reported: int) -> None:
    """Teach the pre-call estimator what OpenAI actually counted (budget checks get sharper)."""
    from ..tokens import calibrate

    calibrate(PROVIDER, model, raw_estimate, reported)
