"""Gemini (google-genai): hook, usage from responses and streams, managed context caches.

Hook. google-genai has no middleware; every request leaves through the API client's two httpx2
clients (the ones ``HttpOptions(httpx_client=..., httpx_async_client=...)`` would supply). They
are replaced by thin httpx2 clients that delegate to the SDK's own (so its TLS context, proxies,
the caller's transport and event hooks all still apply) and meter each HTTP request: every hop of
automatic function calling (the SDK reports only the last hop's usage), every continuation hop,
plain and streamed, sync and async. The API client gets a small subclass that keeps async
requests on httpx2 even when aiohttp is installed (the SDK would otherwise send them through
aiohttp, unseen), and deletes managed caches on ``close()`` / ``aclose()``.

Request rewriting for managed caches happens on the wire, on the JSON body of
``:generateContent`` / ``:streamGenerateContent`` (see ``_google_cache``): the caller's objects and
the SDK's response types are untouched. A rewritten request that fails because its cache is gone
is re-sent once as the caller wrote it, so caching never costs the caller a request.
"""

from __future__ import annotations

import atexit
import copy
import json
import threading
import warnings
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, TypeVar

import httpx2
import structlog
from google import genai
from google.genai._api_client import BaseApiClient

from .. import metering, pricing
from ..drift import PrefixDrift
from ..errors import BudgetExceeded, ConfigurationError, PrefixDriftError, PrefixDriftWarning
from ..lineage import current_conversation, lineage_key
from ..metering import CallContext
from ..options import ClientOptions, split_client_options
from ..tasks import Task, current_task
from ..usage import CallStatus, Usage
from ._google_cache import (
    CacheEntry,
    CachePlan,
    GeminiRoute,
    HttpStep,
    ManagedCaches,
    parse_route,
    rewrite_body,
)
from ._google_drift import explain_drift, share_at_risk
from ._sse import BodyObserver, tap_response

__all__ = ["GenAIClient", "GeminiMeter", "usage_from_gemini", "wrap_genai"]

log = structlog.get_logger("budgetclient")

PROVIDER = "google"
C = TypeVar("C")
R = TypeVar("R")
_MILLION = Decimal(1_000_000)
_CACHE_OP_TIMEOUT = httpx2.Timeout(30.0).as_dict()
"""Our own cache requests (create, refresh, delete) never wait longer than this."""


# -- usage -------------------------------------------------------------------------------------------


def _count(meta: Mapping[str, Any], camel: str, snake: str) -> int:
    value = meta.get(camel, meta.get(snake))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_gemini(meta: Mapping[str, Any] | None) -> Usage:
    """Normalise Gemini ``usageMetadata`` (REST camelCase or the SDK's snake_case).

    ``promptTokenCount`` already includes ``cachedContentTokenCount``; ``toolUsePromptTokenCount``
    is further input; ``thoughtsTokenCount`` is output billed on top of ``candidatesTokenCount``.
    """
    if not meta:
        return Usage(requests=1)
    prompt = _count(meta, "promptTokenCount", "prompt_token_count")
    tool_use = _count(meta, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    cached = _count(meta, "cachedContentTokenCount", "cached_content_token_count")
    candidates = _count(meta, "candidatesTokenCount", "candidates_token_count")
    thoughts = _count(meta, "thoughtsTokenCount", "thoughts_token_count")
    return Usage(
        input_tokens=prompt + tool_use,
        cache_read_tokens=min(cached, prompt + tool_use),
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
    plan: CachePlan | None = None
    entry: CacheEntry | None = None
    estimate_raw: list[int] = field(default_factory=list)

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

    def _track(self) -> None:
        with _meters_lock:
            _meters_with_caches.add(self)

    # -- sending -----------------------------------------------------------------------------------
    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            call = _run_sync(self._prepare(request), self.inner)
        except (BudgetExceeded, PrefixDriftError):
            raise
        except Exception as exc:  # metering must never cost the caller a request
            log.error("meter.failed", stage="google.prepare", error=type(exc).__name__, detail=str(exc)[:200])
            call = None
        if call is None:
            return self.inner.send(request, **kwargs)
        try:
            response = self.inner.send(call.sent, **kwargs)
            if call.entry is not None and _maybe_cache_error(response) and _is_cache_error(response.read()):
                response.close()
                call = self._cache_vanished(call, response)
                response = self.inner.send(call.sent, **kwargs)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._after(call, response)
        return response

    async def send_async(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            call = await _run_async(self._prepare(request), self.inner_async)
        except (BudgetExceeded, PrefixDriftError):
            raise
        except Exception as exc:
            log.error("meter.failed", stage="google.prepare", error=type(exc).__name__, detail=str(exc)[:200])
            call = None
        if call is None:
            return await self.inner_async.send(request, **kwargs)
        try:
            response = await self.inner_async.send(call.sent, **kwargs)
            if (
                call.entry is not None
                and _maybe_cache_error(response)
                and _is_cache_error(await response.aread())
            ):
                await response.aclose()
                call = self._cache_vanished(call, response)
                response = await self.inner_async.send(call.sent, **kwargs)
        except BaseException as exc:
            self._failed(call, exc)
            raise
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
        body = json.loads(request.read() or b"null")
        if not isinstance(body, dict):
            return None
        task = current_task()
        key = lineage_key(
            self.client_key, PROVIDER, route.model, task.id if task else None, current_conversation()
        )
        plan = None if body.get("cachedContent") else self.caches.plan(route, body, key)
        drift = self._drift(plan) if plan is not None else None
        if drift is not None and self.options.drift == "raise":
            log.warning(
                "cache.drift", provider=PROVIDER, model=route.model, action="raised", **_drift_fields(drift)
            )
            raise PrefixDriftError(drift)
        call = _Call(route=route, original=request, sent=request, ctx=None, task=task, plan=plan)
        call.ctx = metering.begin_call(
            PROVIDER,
            route.model,
            "generate_content",
            estimated_input_tokens=lambda: self._estimate(body, route.model, call),
            stream=route.method == "streamGenerateContent",
            request_bytes=len(request.content),
            conversation=key,
        )
        if plan is not None:
            self.caches.commit(plan)
            call.ctx.prefix_hash = plan.base_key if plan.fields else None
        call.ctx.drift = drift
        if drift is not None and self.options.drift == "warn":
            _announce_drift(drift, route.model)
        if plan is None or self.options.cache != "auto" or not plan.fields:
            return call
        try:
            call.entry = yield from self.caches.acquire(plan, request)
            if call.entry is not None:
                rewritten = rewrite_body(body, call.entry.name, len(call.entry.leading))
                call.sent = _with_body(request, rewritten)
                call.ctx.metadata["cached_content"] = call.entry.name
        except Exception as exc:
            log.error(
                "cache.prepare_failed",
                provider=PROVIDER,
                model=route.model,
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            call.entry, call.sent = None, request
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
            call.ctx = metering.begin_call(
                PROVIDER,
                model,
                "cache.create",
                estimated_input_tokens=lambda: self._estimate(body, model, call),
                request_bytes=len(request.content),
                conversation=current_conversation(),
            )
            return call
        if method in ("PATCH", "DELETE", "GET") and route.cache_id is not None:
            return _Call(route=route, original=request, sent=request, ctx=None, task=current_task())
        return None

    def _drift(self, plan: CachePlan) -> PrefixDrift | None:
        if (
            self.options.drift == "off"
            or not plan.previous_segments
            or plan.previous_segments == plan.segments
        ):
            return None
        tokens = round(
            self.caches.previous_prefix_tokens(plan) * share_at_risk(plan.previous_segments, plan.segments)
        )
        return explain_drift(
            plan.previous_segments,
            plan.segments,
            tokens_at_risk=tokens,
            est_extra_cost=_lost_discount(tokens, plan.route.model),
        )

    def _estimate(self, body: Mapping[str, Any], model: str, call: _Call) -> int:
        from ..tokens import estimate_request

        estimate = estimate_request(PROVIDER, body, model)
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

    def _failed(self, call: _Call, exc: BaseException) -> None:
        if call.ctx is None:
            return
        status: CallStatus = "incomplete" if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) else "error"
        metering.finish_call(call.ctx, Usage(), status=status, error=type(exc).__name__)

    def _after(self, call: _Call, response: httpx2.Response) -> None:
        status = response.status_code
        try:
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
        except Exception as exc:
            log.error("meter.failed", stage="google.tap", error=type(exc).__name__, detail=str(exc)[:200])
            if call.ctx is not None:
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
        try:
            usage = usage_from_gemini(meta)
            model = str(response.get("modelVersion") or call.route.model)
            tier = meta.get("trafficType") if isinstance(meta, Mapping) else None
            if call.ctx is not None:
                metering.finish_call(
                    call.ctx,
                    usage,
                    status="ok" if complete else "incomplete",
                    model=model,
                    http_status=http_status,
                    error=None if error is None else type(error).__name__,
                    response_id=response.get("responseId"),
                    service_tier=tier if isinstance(tier, str) else None,
                )
            if call.plan is not None and meta is not None:
                self.caches.observe_call(call.plan, call.entry, usage, server_time, call.task)
            if call.estimate_raw and meta is not None and call.entry is None:
                from ..tokens import calibrate

                calibrate(PROVIDER, call.route.model, call.estimate_raw[-1], usage.input_tokens)
        except Exception as exc:
            log.error("meter.failed", stage="google.record", error=type(exc).__name__, detail=str(exc)[:200])

    def _finish_cache_op(
        self, call: _Call, document: Any, server_time: float, error: BaseException | None
    ) -> None:
        try:
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
        except Exception as exc:
            log.error(
                "meter.failed", stage="google.cache_op", error=type(exc).__name__, detail=str(exc)[:200]
            )

    # -- closing -----------------------------------------------------------------------------------
    def close_caches(self) -> None:
        """Delete managed cache entries (blocking); never raises."""
        try:
            _run_sync(self.caches.close(), self.inner)
        except Exception as exc:
            log.error(
                "cache.close_failed", provider=PROVIDER, error=type(exc).__name__, detail=str(exc)[:200]
            )
        with _meters_lock:
            _meters_with_caches.discard(self)

    async def aclose_caches(self) -> None:
        try:
            await _run_async(self.caches.close(), self.inner_async)
        except Exception as exc:
            log.error(
                "cache.close_failed", provider=PROVIDER, error=type(exc).__name__, detail=str(exc)[:200]
            )
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


def _with_body(request: httpx2.Request, body: Mapping[str, Any]) -> httpx2.Request:
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx2.Request(
        request.method,
        request.url,
        headers=headers,
        content=json.dumps(body).encode(),
        extensions=dict(request.extensions),
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
            request = step.send(response)
    except StopIteration as stop:
        result: R = stop.value
        return result


def _drift_fields(drift: PrefixDrift) -> dict[str, Any]:
    return {
        "segment": drift.segment,
        "offset": drift.offset,
        "cause": drift.cause,
        "tokens_at_risk": drift.tokens_at_risk,
        "est_extra_cost": None if drift.est_extra_cost is None else str(drift.est_extra_cost),
    }


def _announce_drift(drift: PrefixDrift, model: str) -> None:
    log.warning("cache.drift", provider=PROVIDER, model=model, **_drift_fields(drift))
    from .. import drift as drift_module

    notify = getattr(drift_module, "notify_drift", None)
    if callable(notify):
        try:
            notify(drift)
        except Exception as exc:
            log.error("meter.failed", stage="drift.notify", error=type(exc).__name__)
    warnings.warn(PrefixDriftWarning(drift), stacklevel=2)


# -- the SDK seam ------------------------------------------------------------------------------------


class _MeteredClient(httpx2.Client):
    """What the SDK sees as its sync HTTP client: builds with, and sends through, the SDK's own."""

    def __init__(self, meter: GeminiMeter) -> None:
        super().__init__(transport=httpx2.BaseTransport())  # never used: every request is delegated
        self._meter = meter

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return self._meter.inner.build_request(*args, **kwargs)

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        return self._meter.send(request, **kwargs)

    def close(self) -> None:
        if self._meter.owns_inner and not self._meter.caches.has_managed_entries():
            self._meter.inner.close()
        super().close()


class _MeteredAsyncClient(httpx2.AsyncClient):
    """The async twin of ``_MeteredClient``."""

    def __init__(self, meter: GeminiMeter) -> None:
        super().__init__(transport=httpx2.AsyncBaseTransport())
        self._meter = meter

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return self._meter.inner_async.build_request(*args, **kwargs)

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        return await self._meter.send_async(request, **kwargs)

    async def aclose(self) -> None:
        if self._meter.owns_inner_async:
            await self._meter.inner_async.aclose()
        await super().aclose()


class _BudgetApiClient(BaseApiClient):
    """Mixed in front of the SDK's API client class (see ``_budget_class``) on instrumented clients."""

    _budget_meter: GeminiMeter

    def _use_aiohttp(self) -> bool:
        return False  # aiohttp would bypass the metered httpx2 client

    def _use_google_auth_sync(self) -> bool:
        return False  # the requests-based mTLS session would bypass it too

    def _use_google_auth_async(self) -> bool:
        return False

    def close(self) -> None:
        self._budget_meter.close_caches()
        super().close()

    async def aclose(self) -> None:
        await self._budget_meter.aclose_caches()
        await super().aclose()


_budget_classes: dict[type[Any], type[Any]] = {}


def _budget_class(cls: type[Any]) -> type[Any]:
    if issubclass(cls, _BudgetApiClient):
        return cls
    made = _budget_classes.get(cls)
    if made is None:
        made = _budget_classes[cls] = type(
            f"Budget{cls.__name__}", (_BudgetApiClient, cls), {"_budget_base": cls}
        )
    return made


def _instrument(api: Any, options: ClientOptions, *, owns_inner: bool) -> GeminiMeter:
    """Route ``api``'s HTTP through budgetclient; ``api`` must be a client of our own (new or copied)."""
    inner = api._httpx_client
    inner_async = api._async_httpx_client
    previous = getattr(api, "_budget_meter", None)
    if isinstance(previous, GeminiMeter):  # instrumenting an instrumented client: use the SDK's clients
        inner, inner_async = previous.inner, previous.inner_async
        api.__class__ = getattr(type(api), "_budget_base", type(api))
    owns_async = owns_inner
    if inner_async is None:  # the SDK chose google-auth's aiohttp session for Vertex mTLS
        from google.genai._api_client import AsyncHttpx2Client

        inner_async = AsyncHttpx2Client(**(getattr(api, "_async_httpx_client_args", None) or {}))
        owns_async = True
    if not isinstance(inner, httpx2.Client) or not isinstance(inner_async, httpx2.AsyncClient):
        raise ConfigurationError(
            f"budgetclient meters google-genai over httpx2, but this client uses {type(inner).__module__}."
            f"{type(inner).__name__}; unset GOOGLE_GENAI_HTTP_CLIENT=httpx and pass httpx2 clients "
            "(httpx2.Client / httpx2.AsyncClient) in HttpOptions, if any"
        )
    meter = GeminiMeter(options, inner, inner_async, owns_inner=owns_inner, owns_inner_async=owns_async)
    api._httpx_client = _MeteredClient(meter)
    api._async_httpx_client = _MeteredAsyncClient(meter)
    api._budget_meter = meter
    api.__class__ = _budget_class(type(api))
    return meter


def _rebind(obj: C, old: object, new: object) -> C:
    """A shallow copy of ``obj`` (a client or one of its resources) that talks through ``new``."""
    clone = copy.copy(obj)
    for name, value in list(vars(clone).items()):
        if value is old:
            setattr(clone, name, new)
        elif value is not None and getattr(value, "_api_client", None) is old:
            setattr(clone, name, _rebind(value, old, new))
        elif name == "_nextgen_client_instance":
            setattr(clone, name, None)  # rebuilt on demand from the new API client
    return clone


class GenAIClient(genai.Client):
    """``google.genai.Client`` with budgetclient's metering, managed context caches and drift checks.

    Takes the SDK's constructor arguments plus ``cache``, ``cache_ttl`` and ``drift``; ``.aio``
    is metered too. ``close()`` (or leaving a ``with`` block) deletes the managed cache entries.
    """

    def __init__(self, **kwargs: Any) -> None:
        options, rest = split_client_options(kwargs)
        super().__init__(**rest)
        _instrument(self._api_client, options, owns_inner=True)

    @property
    def budget_options(self) -> ClientOptions:
        return meter_of(self).options


def meter_of(client: Any) -> GeminiMeter:
    """The meter of an instrumented ``genai.Client`` (or its ``.aio``)."""
    meter = getattr(getattr(client, "_api_client", None), "_budget_meter", None)
    if not isinstance(meter, GeminiMeter):
        raise LookupError("client is not instrumented by budgetclient")
    return meter


def wrap_genai(client: C, options: ClientOptions) -> C:
    """A copy of a ``genai.Client`` (same class) that is metered; the original stays as it was.

    The copy shares the original's connection pools; closing it deletes its own cache entries only.
    """
    api = getattr(client, "_api_client", None)
    if not isinstance(api, BaseApiClient):
        raise TypeError(f"cannot instrument {type(client).__name__}: it has no google-genai API client")
    new_api = copy.copy(api)
    _instrument(new_api, options, owns_inner=False)
    return _rebind(client, api, new_api)


# -- interpreter exit ----------------------------------------------------------------------------------

_meters_lock = threading.Lock()
_meters_with_caches: set[GeminiMeter] = set()


def _close_all_at_exit() -> None:
    with _meters_lock:
        meters = list(_meters_with_caches)
    for meter in meters:
        meter.close_caches()
        if meter.owns_inner:
            try:
                meter.inner.close()
            except Exception:
                pass


atexit.register(_close_all_at_exit)
