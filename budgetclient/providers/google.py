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
from typing import Any, TypeVar

import httpx2
from google import genai
from google.genai._api_client import BaseApiClient

from ..errors import ConfigurationError
from ..options import ClientOptions, split_client_options
from ._google_meter import GeminiMeter, meters_with_caches, usage_from_gemini

__all__ = ["GenAIClient", "GeminiMeter", "meter_of", "usage_from_gemini", "wrap_genai"]

C = TypeVar("C")


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
    wrapped = _rebind(client, api, new_api)
    # genai.Client.__del__ closes its HTTP clients, which the copy shares: ``bc.wrap(genai.Client())``
    # drops the original at once, so the copy keeps it alive
    new_api._budget_original = client  # type: ignore[attr-defined]
    return wrapped


# -- interpreter exit -----------------------------------------------------------------------------------


def _close_all_at_exit() -> None:
    for meter in meters_with_caches():
        meter.close_caches()
        if meter.owns_inner:
            try:
                meter.inner.close()
            except Exception:
                pass


atexit.register(_close_all_at_exit)
