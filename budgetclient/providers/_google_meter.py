"""The meter of one instrumented Gemini client: what each HTTP request is, what it cost, and its cache.

`GeminiMeter.send` / `send_async` see every request the SDK makes (the SDK's own httpx2 clients
do the sending). A ``generateContent`` / ``streamGenerateContent`` request is fingerprinted
(drift), checked against the task's budget, possibly rewritten to read a managed cache entry, and
its response body is observed as the caller reads it; the caller's own ``cachedContents``
requests are billed too. Everything else passes through untouched.

The body is decoded next to the conversation's previous one (`_google_body`), so a call costs in
proportion to what it adds to the conversation, not to the conversation's length; a request that
needs no rewrite is sent as the SDK wrote it, the very same ``httpx2.Request``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import httpx2

from .. import metering, pricing
from .._construct import fast_constructor
from .._fork_locks import renew_after_fork
from .._guard import guarded
from .._log import log
from ..admission import Admission, admit, holding, output_limit, sending
from ..config import get_settings
from ..drift import PrefixDrift, explain_drift
from ..errors import BudgetExceeded, PrefixDriftError, PrefixDriftWarning
from ..estimate import estimate_request
from ..formats.google.prefix import with_tokens
from ..lineage import Conversations, current_conversation, lineage_key
from ..metering import CallContext
from ..options import ClientOptions
from ..run_history import STABLE_PREFIX, run_history
from ..tasks import Task, add_task_closing_hook, current_task
from ..tokens import calibrate
from ..usage import Usage
from ._drift_report import announce_drift
from ._google_body import BodyHistory
from ._google_cache import (
    CachedContent,
    HttpStep,
    ManagedCaches,
    PrefixCheck,
    conversation_head,
    request_prefix_shape,
)
from ._google_estimate import ContentsTally, estimate_body
from ._google_rules import GeminiRoute, parse_route
from ._sse import BodyObserver, tap_response

__all__ = ["GeminiMeter", "meters_with_caches", "usage_from_gemini"]


PROVIDER = "google"
R = TypeVar("R")
_MILLION = Decimal(1_000_000)
_ESTIMATE_MEMOS = 32
"""Conversations per client whose token-estimate memo is kept (as many as bodies are)."""
_CACHE_OP_TIMEOUT = httpx2.Timeout(30.0).as_dict()
"""Our own cache requests (create, refresh, delete) never wait longer than this."""


# -- usage -------------------------------------------------------------------------------------------


def _count(meta: Mapping[str, Any], camel: str, snake: str) -> int:
    value = meta.get(camel, meta.get(snake))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


_CAMEL = (
    "promptTokenCount",
    "toolUsePromptTokenCount",
    "cachedContentTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
)
_SNAKE = (
    "prompt_token_count",
    "tool_use_prompt_token_count",
    "cached_content_token_count",
    "candidates_token_count",
    "thoughts_token_count",
)
_trusted_usage = fast_constructor(Usage)
"""``Usage(...)`` without its validation, for counts already checked to be non-negative ints."""


def usage_from_gemini(meta: Mapping[str, Any] | None) -> Usage:
    """Normalise Gemini ``usageMetadata`` (REST camelCase or the SDK's snake_case).

    ``promptTokenCount`` already includes ``cachedContentTokenCount``; ``toolUsePromptTokenCount``
    is further input; ``thoughtsTokenCount`` is output billed on top of ``candidatesTokenCount``.
    """
    if not meta:
        return Usage(requests=1)
    counts: list[Any] = list(map(meta.get, _CAMEL))
    for i, value in enumerate(counts):  # a non-negative int, as JSON gives it, is its own count
        if type(value) is not int or value < 0:
            counts[i] = _count(meta, _CAMEL[i], _SNAKE[i])
    prompt, tool_use, cached, candidates, thoughts = counts
    given: int = prompt + tool_use
    return _trusted_usage(
        input_tokens=given,
        cache_read_tokens=cached if cached < given else given,
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
        requests=1,
    )


# -- one request in flight ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """A metered request: what the caller sent, what went on the wire, and its metering context."""

    route: GeminiRoute
    original: httpx2.Request
    sent: httpx2.Request
    ctx: CallContext | None
    task: Task | None
    check: PrefixCheck | None = None
    entry: CachedContent | None = None
    estimate_raw: list[int] = field(default_factory=list)
    tally: ContentsTally | None = None
    """The conversation's tally, once the budget estimate counted this request's contents."""

    def without_cache(self) -> _Call:
        if self.ctx is not None:
            self.ctx.metadata.pop("cached_content", None)
        return replace(self, sent=self.original, entry=None)


class _GenerateObserver(BodyObserver):
    """Folds a generateContent response (JSON, or SSE chunks with running totals) into one record."""

    def __init__(
        self, meter: GeminiMeter, call: _Call, http_status: int, server_time: float, sse: bool
    ) -> None:
        self.mode = "sse" if sse else "json"
        self._meter = meter
        self._call = call
        self._http_status = http_status
        self._server_time = server_time
        self._meta: Mapping[str, Any] | None = None
        self._response: dict[str, Any] = {}
        self._finished_reason = False
        self._lock = threading.Lock()
        self._done = False

    def _chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, Mapping):
            return
        meta = chunk.get("usageMetadata")
        if isinstance(meta, Mapping):
            self._meta = meta  # a running total for this HTTP request: keep the last, never add
        for key in ("modelVersion", "responseId"):
            if isinstance(chunk.get(key), str):
                self._response[key] = chunk[key]
        for candidate in chunk.get("candidates") or ():
            if isinstance(candidate, Mapping) and candidate.get("finishReason"):
                self._finished_reason = True

    def on_event(self, event: str | None, data: str) -> None:
        try:
            self._chunk(json.loads(data))
        except ValueError:
            pass

    def on_json(self, document: Any) -> None:
        for chunk in document if isinstance(document, list) else [document]:
            self._chunk(chunk)
        self._finished_reason = True

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        ended = complete and (self._finished_reason or self._meta is not None)
        self._meter._finish_generate(
            self._call, self._meta, self._response, ended, self._http_status, error, self._server_time
        )


class _CacheOpObserver(BodyObserver):
    """The JSON answer to a caller's own ``client.caches`` request."""

    mode = "json"

    def __init__(self, meter: GeminiMeter, call: _Call, server_time: float) -> None:
        self._meter = meter
        self._call = call
        self._server_time = server_time
        self._document: Any = None

    def on_json(self, document: Any) -> None:
        self._document = document

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        self._meter._finish_cache_op(
            self._call, self._document if complete else None, self._server_time, error
        )


class _guarded_prepare(guarded):
    """`guarded` around preparing a request: the caller's own refusals (a budget, ``drift="raise"``,
    a drift warning filtered into an error) pass through; any other fault sends it unprepared."""

    __slots__ = ()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, (BudgetExceeded, PrefixDriftError, PrefixDriftWarning)):
            return False
        return super().__exit__(exc_type, exc, tb)


# -- the meter: one per instrumented client ----------------------------------------------------------


class GeminiMeter:
    """budgetclient's state for one Gemini client: options, caches, and the SDK's own HTTP clients."""

    def __init__(
        self,
        options: ClientOptions,
        inner: httpx2.Client,
        inner_async: httpx2.AsyncClient,
        *,
        owns_inner: bool,
        owns_inner_async: bool,
    ) -> None:
        self.options = options
        self.inner = inner
        self.inner_async = inner_async
        self.owns_inner = owns_inner
        self.owns_inner_async = owns_inner_async
        self.client_key = f"{id(self):x}"
        self.caches = ManagedCaches(cache_ttl=options.cache_ttl, on_entry=self._track)
        self.bodies = BodyHistory()
        self.conversations = Conversations()
        self._memos: OrderedDict[str, ContentsTally] = OrderedDict()
        """Token-estimate tallies per conversation: its decoded bodies reuse unchanged contents."""
        self._memos_lock = threading.Lock()

    def _estimate_memo(self, conversation: str) -> ContentsTally:
        with self._memos_lock:
            memo = self._memos.get(conversation)
            if memo is None:
                memo = self._memos[conversation] = ContentsTally()
                while len(self._memos) > _ESTIMATE_MEMOS:
                    self._memos.popitem(last=False)
            else:
                self._memos.move_to_end(conversation)
            return memo

    def _track(self) -> None:
        global _closing_hook_installed
        with _meters_lock:
            _meters_with_caches.add(self)
            install = not _closing_hook_installed
            _closing_hook_installed = True
        if install:
            add_task_closing_hook(_bill_storage_at_task_end)

    # -- sending -----------------------------------------------------------------------------------
    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        call = None
        with _guarded_prepare("meter.failed", stage="google.prepare"):  # never costs the caller a request
            call = _run_sync(self._prepare(request), self.inner)
        if call is None:
            return self.inner.send(request, **kwargs)
        with sending(call.ctx):
            response = self.inner.send(call.sent, **kwargs)
            if call.entry is not None and _maybe_cache_error(response) and _is_cache_error(response.read()):
                response.close()
                call = self._cache_vanished(call, response)
                response = self.inner.send(call.sent, **kwargs)
        self._after(call, response)
        return response

    async def send_async(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        call = None
        with _guarded_prepare("meter.failed", stage="google.prepare"):  # never costs the caller a request
            call = await _run_async(self._prepare(request), self.inner_async)
        if call is None:
            return await self.inner_async.send(request, **kwargs)
        with sending(call.ctx):
            response = await self.inner_async.send(call.sent, **kwargs)
            if (
                call.entry is not None
                and _maybe_cache_error(response)
                and _is_cache_error(await response.aread())
            ):
                await response.aclose()
                call = self._cache_vanished(call, response)
                response = await self.inner_async.send(call.sent, **kwargs)
        self._after(call, response)
        return response

    # -- before sending ----------------------------------------------------------------------------
    def _prepare(self, request: httpx2.Request) -> HttpStep[_Call | None]:
        route = parse_route(request.url)
        if route is None:
            return None
        if route.method == "cachedContents":
            return self._prepare_cache_op(route, request)
        if not route.is_generate or request.method.upper() != "POST":
            return None
        task = current_task()
        named = current_conversation()
        key = lineage_key(self.client_key, PROVIDER, route.model, task.id if task else None, named)
        wire = self.bodies.decode(key, request.read() or b"null")
        if wire is None:
            return None
        head = conversation_head(wire)
        if named is None:  # matched by content among the scope's conversations (lineage.Conversations)
            key = self.conversations.match(key, head, lambda: request_prefix_shape(wire))
        body = wire.body
        check = None
        if not body.get("cachedContent"):
            prior = None
            if task is not None and self.options.cache == "auto" and wire.prefix().fields:
                # read when the task started (run_history), per task name; filtered by prefix here
                prior = run_history.prior(task.name, task.id, route.model, head.fingerprint)
            check = self.caches.check_prefix(route, wire, key, task_id=task.id if task else None, prior=prior)
        call = _Call(route=route, original=request, sent=request, ctx=None, task=task, check=check)
        ctx = call.ctx = admit(
            Admission(
                provider=PROVIDER,
                model=route.model,
                operation="generate_content",
                body=body,
                drift=self._drift(check) if check is not None else None,
                drift_mode=self.options.drift,
                announce=lambda drift: _announce_drift(drift, route.model),
                estimate=lambda: self._estimate(body, route.model, call, self._estimate_memo(key)),
                max_output_tokens=_output_limit(body),
                stream=route.method == "streamGenerateContent",
                request_bytes=len(request.content),
                conversation=key,
                prefix_hash=check.base_key if check is not None and check.fields else None,
                metadata={STABLE_PREFIX: head.fingerprint} if head.fixed else None,
            )
        )
        with holding(ctx):  # the call holds budget now: any exit before sending gives it back
            if check is not None:
                self.caches.commit(check)
            if check is None or self.options.cache != "auto" or not check.fields:
                return call
            with guarded("cache.prepare_failed", provider=PROVIDER, model=route.model):  # sent uncached
                entry = yield from self.caches.acquire(check, request)
                if entry is not None:
                    call.sent = _with_body(request, wire.rewritten(entry.name, len(entry.leading)))
                    call.entry = entry
                    ctx.metadata["cached_content"] = entry.name
        return call

    def _prepare_cache_op(self, route: GeminiRoute, request: httpx2.Request) -> _Call | None:
        method = request.method.upper()
        if method == "POST" and route.cache_id is None:
            body = json.loads(request.read() or b"null")
            if not isinstance(body, dict):
                return None
            model = str(body.get("model") or "").rsplit("/", 1)[-1]
            call = _Call(
                route=replace(route, model=model),
                original=request,
                sent=request,
                ctx=None,
                task=current_task(),
            )
            call.ctx = admit(  # billed as input, with no output: a worst case of its input alone
                Admission(
                    provider=PROVIDER,
                    model=model,
                    operation="cache.create",
                    estimate=lambda: self._estimate(body, model, call),
                    max_output_tokens=0,
                    request_bytes=len(request.content),
                    conversation=current_conversation(),
                )
            )
            return call
        if method in ("PATCH", "DELETE", "GET") and route.cache_id is not None:
            return _Call(route=route, original=request, sent=request, ctx=None, task=current_task())
        return None

    def _drift(self, check: PrefixCheck) -> PrefixDrift | None:
        previous = check.previous_blocks
        if self.options.drift == "off" or not previous:
            return None
        if previous is check.blocks or [b.digest for b in previous] == [b.digest for b in check.blocks]:
            return None
        model = check.route.model
        return explain_drift(
            with_tokens(previous, self.caches.previous_prefix_tokens(check)),
            check.blocks,
            extra_cost=lambda tokens: _lost_discount(tokens, model),
            excerpts=get_settings().drift_excerpts,
        )

    def _estimate(
        self, body: Mapping[str, Any], model: str, call: _Call, tally: ContentsTally | None = None
    ) -> int:
        if tally is None:
            estimate = estimate_request(PROVIDER, body, model)
        else:
            estimate = estimate_body(body, model, tally)
            call.tally = tally
        call.estimate_raw.append(estimate.raw_tokens)
        return estimate.tokens

    # -- after the response ------------------------------------------------------------------------
    def _cache_vanished(self, call: _Call, response: httpx2.Response) -> _Call:
        """The entry is gone on the server (deleted elsewhere, or expired): bill its storage up to
        now at most, and send the request as the caller wrote it."""
        assert call.entry is not None
        log.warning("cache.vanished", provider=PROVIDER, cache=call.entry.name, action="resent without cache")
        self.caches.drop(call.entry, at=self.caches.clock.observe(response.headers.get("date")))
        return call.without_cache()

    def _after(self, call: _Call, response: httpx2.Response) -> None:
        status = response.status_code
        with guarded("meter.failed", stage="google.tap"):
            server_time = self.caches.clock.observe(response.headers.get("date"))
            if call.route.method == "cachedContents":
                if status >= 400:
                    if call.ctx is not None:
                        metering.finish_call(
                            call.ctx, Usage(), status="error", http_status=status, error=f"HTTP {status}"
                        )
                    return
                tap_response(response, _CacheOpObserver(self, call, server_time))
                return
            if status >= 400:
                if call.ctx is not None:
                    metering.finish_call(
                        call.ctx, Usage(), status="error", http_status=status, error=f"HTTP {status}"
                    )
                return
            sse = "text/event-stream" in response.headers.get("content-type", "")
            tap_response(response, _GenerateObserver(self, call, status, server_time, sse))
            return
        if call.ctx is not None:  # a fault above: the call is still recorded
            metering.finish_call(call.ctx, Usage(requests=1), status="incomplete", http_status=status)

    def _finish_generate(
        self,
        call: _Call,
        meta: Mapping[str, Any] | None,
        response: Mapping[str, Any],
        complete: bool,
        http_status: int,
        error: BaseException | None,
        server_time: float,
    ) -> None:
        with guarded("meter.failed", stage="google.record"):
            usage = usage_from_gemini(meta)
            tier = meta.get("trafficType") if isinstance(meta, Mapping) else None
            version = response.get("modelVersion")
            if call.ctx is not None:
                # priced as requested: modelVersion may name a dated variant the price table lacks
                metering.finish_call(
                    call.ctx,
                    usage,
                    status="ok" if complete else "incomplete",
                    http_status=http_status,
                    error=None if error is None else type(error).__name__,
                    response_id=response.get("responseId"),
                    service_tier=tier if isinstance(tier, str) else None,
                    metadata={"model_version": version} if isinstance(version, str) else None,
                )
            if call.check is not None and meta is not None:
                self.caches.observe_call(call.check, call.entry, usage, server_time, call.task, call.tally)
            if call.estimate_raw and meta is not None and call.entry is None:
                calibrate(PROVIDER, call.route.model, call.estimate_raw[-1], usage.input_tokens)
        if call.ctx is not None:  # a fault above must neither keep the hold nor lose the record
            metering.finish_call(call.ctx, Usage(requests=1), status="incomplete", http_status=http_status)

    def _finish_cache_op(
        self, call: _Call, document: Any, server_time: float, error: BaseException | None
    ) -> None:
        with guarded("meter.failed", stage="google.cache_op"):
            if document is None:
                if call.ctx is not None:
                    metering.finish_call(
                        call.ctx,
                        Usage(),
                        status="incomplete",
                        error=None if error is None else type(error).__name__,
                    )
                return
            self.caches.observe_user_cache(
                call.route, call.original.method.upper(), call.original.url, document, server_time, call.ctx
            )
            if call.ctx is not None and not call.ctx.finished:  # an answer without a cache in it
                metering.finish_call(call.ctx, Usage(), status="error", error="no cache in response")
        if call.ctx is not None:  # a fault above must neither keep the hold nor lose the record
            metering.finish_call(call.ctx, Usage(), status="incomplete", error="meter fault")

    # -- closing -----------------------------------------------------------------------------------
    def close_caches(self) -> None:
        """Delete managed cache entries (blocking); never raises."""
        with guarded("cache.close_failed", provider=PROVIDER):
            _run_sync(self.caches.close(), self.inner)
        with _meters_lock:
            _meters_with_caches.discard(self)

    async def aclose_caches(self) -> None:
        with guarded("cache.close_failed", provider=PROVIDER):
            await _run_async(self.caches.close(), self.inner_async)
        with _meters_lock:
            _meters_with_caches.discard(self)


def _lost_discount(tokens: int, model: str) -> Decimal | None:
    """What a missed cache costs on ``tokens``: input rate minus cache-read rate."""
    try:
        rates = pricing.rates_for(model, PROVIDER)
    except Exception:
        return None
    if rates is None:
        return None
    return tokens * (rates.input.at(tokens) - rates.cache_read.at(tokens)) / _MILLION


def _maybe_cache_error(response: httpx2.Response) -> bool:
    return response.status_code in (400, 403, 404)


def _is_cache_error(body: bytes) -> bool:
    text = body.decode("utf-8", errors="replace").lower()
    return "cachedcontent" in text or "cached content" in text or "cached_content" in text


def _with_body(request: httpx2.Request, content: bytes) -> httpx2.Request:
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx2.Request(
        request.method, request.url, headers=headers, content=content, extensions=dict(request.extensions)
    )


def _run_sync(step: Generator[httpx2.Request, httpx2.Response, R], client: httpx2.Client) -> R:
    """Drive an ``HttpStep`` with a sync client."""
    try:
        request = next(step)
        while True:
            request.extensions.setdefault("timeout", _CACHE_OP_TIMEOUT)
            try:
                response = client.send(request)
                response.read()
            except Exception as exc:
                request = step.throw(exc)
                continue
            except BaseException as exc:
                step.throw(exc)  # an interrupt or cancel: the step's handlers give back its hold
                raise
            request = step.send(response)
    except StopIteration as stop:
        result: R = stop.value
        return result


async def _run_async(step: Generator[httpx2.Request, httpx2.Response, R], client: httpx2.AsyncClient) -> R:
    """Drive an ``HttpStep`` with an async client."""
    try:
        request = next(step)
        while True:
            request.extensions.setdefault("timeout", _CACHE_OP_TIMEOUT)
            try:
                response = await client.send(request)
                await response.aread()
            except Exception as exc:
                request = step.throw(exc)
                continue
            except BaseException as exc:
                step.throw(exc)  # an interrupt or cancel: the step's handlers give back its hold
                raise
            request = step.send(response)
    except StopIteration as stop:
        result: R = stop.value
        return result


def _output_limit(body: Mapping[str, Any]) -> int | None:
    """The most output tokens a ``generateContent`` body lets the model write (all candidates)."""
    config = body.get("generationConfig", body.get("generation_config"))
    if not isinstance(config, Mapping):
        return None
    limit = output_limit(config.get("maxOutputTokens", config.get("max_output_tokens")))
    candidates = output_limit(config.get("candidateCount", config.get("candidate_count")))
    return limit * candidates if limit is not None and candidates else limit


def _announce_drift(drift: PrefixDrift, model: str) -> None:
    announce_drift(drift, provider=PROVIDER, model=model, stacklevel=4)


# -- meters holding live managed cache entries -------------------------------------------------

_meters_lock = threading.Lock()
renew_after_fork(globals(), "_meters_lock")
_meters_with_caches: set[GeminiMeter] = set()


_closing_hook_installed = False


def _bill_storage_at_task_end(task: Task) -> None:
    for meter in meters_with_caches():
        meter.caches.task_ending(task)


def meters_with_caches() -> list[GeminiMeter]:
    """Meters that still hold managed cache entries (strongly referenced until closed)."""
    with _meters_lock:
        return list(_meters_with_caches)
