"""Gemini (google-genai): hook, usage from responses and streams, managed context caches.

Hook. google-genai has no middleware; every request leaves through the API client's two httpx2
clients (the ones ``HttpOptions(httpx_client=..., httpx_async_client=...)`` would supply). They
are replaced by thin httpx2 clients that delegate to the SDK's own (so its TLS context, proxies,
the caller's transport and event hooks all still apply) and meter each HTTP request: every hop of
automatic function calling (the SDK reports only the last hop's usage), every continuation hop,
plain and streamed, sync and async. The API client gets a small subclass that keeps async
requests on httpx2 even when aiohttp is installed (the SDK would otherwise send them through
aiohttp, unseen), and deletes managed caches on ``close()`` / ``aclose()``.

Private hooks. The seam above touches google-genai internals: the API client's
``_httpx_client`` / ``_async_httpx_client`` / ``_async_httpx_client_args``, its
``_use_aiohttp`` / ``_use_google_auth_*`` switches and ``close`` / ``aclose`` (through a
``__class__`` swap to a generated subclass), ``_api_client`` and ``_nextgen_client_instance``
on the clients (``wrap`` rebinds a copy). Each has a contract test
(``tests/providers/test_google_contract.py``). At run time a missing hook never breaks a call:
``GenAIClient`` falls back to the public seam (``HttpOptions(httpx_client=...,
httpx_async_client=...)``), ``wrap`` to the client as it is (unmetered), a failed class swap
to metering without cache deletion on ``close()``; each logs one ``sdk.hook_unavailable``.

Request rewriting for managed caches happens on the wire, on the JSON body of
``:generateContent`` / ``:streamGenerateContent`` (see ``_google_cache``): the caller's objects and
the SDK's response types are untouched. A rewritten request that fails because its cache is gone
is re-sent once as the caller wrote it, so caching never costs the caller a request.
"""

from __future__ import annotations

import atexit
import copy
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import Any, TypeVar

import httpx2
from google import genai
from google.genai import types as genai_types
from google.genai._api_client import BaseApiClient
from google.genai.client import AsyncClient as GenAIAsyncClient

from ..errors import ConfigurationError
from ..options import ClientOptions, split_client_options
from ._google_meter import GeminiMeter, meters_with_caches, usage_from_gemini
from ._hooks import hook_unavailable

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


# -- private hooks: names, the one warning, fallbacks ------------------------------------------------

SYNC_CLIENT = "_httpx_client"
ASYNC_CLIENT = "_async_httpx_client"
ASYNC_CLIENT_ARGS = "_async_httpx_client_args"
API_CLIENT = "_api_client"
NEXTGEN_CLIENT = "_nextgen_client_instance"
SDK_SWITCHES = ("_use_aiohttp", "_use_google_auth_sync", "_use_google_auth_async")
"""What ``_BudgetApiClient`` overrides to keep every request on the metered httpx2 clients."""



def sdk_version() -> str:
    try:
        return distribution_version("google-genai")
    except PackageNotFoundError:
        return "unknown"


def _hook_changed(hook: str, fallback: str) -> None:
    """Log, once per hook and process, that a private google-genai hook is missing or changed."""
    hook_unavailable("gemini", sdk_version(), hook, problem="missing or changed", fallback=fallback)


class _HookMissing(Exception):
    def __init__(self, hook: str) -> None:
        super().__init__(hook)
        self.hook = hook


def _check_httpx2(inner: Any, inner_async: Any) -> None:
    if not isinstance(inner, httpx2.Client) or not isinstance(inner_async, httpx2.AsyncClient):
        odd = inner if not isinstance(inner, httpx2.Client) else inner_async
        raise ConfigurationError(
            f"budgetclient meters google-genai over httpx2, but this client uses {type(odd).__module__}."
            f"{type(odd).__name__}; unset GOOGLE_GENAI_HTTP_CLIENT=httpx and pass httpx2 clients "
            "(httpx2.Client / httpx2.AsyncClient) in HttpOptions, if any"
        )


def _async_client_for(api: Any) -> httpx2.AsyncClient:
    """The async httpx2 client the SDK would have built, for when it chose google-auth's aiohttp
    session (Vertex mTLS), which would bypass the meter."""
    args = getattr(api, ASYNC_CLIENT_ARGS, None)
    if not isinstance(args, Mapping):
        _hook_changed(f"BaseApiClient.{ASYNC_CLIENT_ARGS}", "an httpx2.AsyncClient with default arguments")
        args = {}
    try:
        from google.genai._api_client import AsyncHttpx2Client

        return AsyncHttpx2Client(**args)  # type: ignore[no-any-return]
    except (ImportError, TypeError):
        _hook_changed("_api_client.AsyncHttpx2Client", "httpx2.AsyncClient")
        return httpx2.AsyncClient(**args)


def _swap_class(api: Any) -> None:
    """Give ``api`` the `_BudgetApiClient` overrides; a changed SDK costs them, never the call."""
    missing = [name for name in SDK_SWITCHES if not callable(getattr(BaseApiClient, name, None))]
    if missing:
        _hook_changed(f"BaseApiClient.{missing[0]}", "not overridden: some requests may go unmetered")
    try:
        api.__class__ = _budget_class(type(api))
    except TypeError:
        _hook_changed(
            "BaseApiClient.__class__",
            "metered without the overrides: managed caches are deleted at exit, not on close()",
        )


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


def _require_clients(api: Any) -> None:
    """Raise `_HookMissing` unless ``api`` has the two httpx2 client attributes to swap."""
    for name in (SYNC_CLIENT, ASYNC_CLIENT):
        if not hasattr(api, name):
            raise _HookMissing(f"BaseApiClient.{name}")


def _instrument(api: Any, options: ClientOptions, *, owns_inner: bool) -> GeminiMeter:
    """Route ``api``'s HTTP through budgetclient; ``api`` must be a client of our own (new or copied).

    Raises `_HookMissing` (nothing changed yet) when the SDK no longer has the clients to swap.
    """
    _require_clients(api)
    inner = getattr(api, SYNC_CLIENT)
    inner_async = getattr(api, ASYNC_CLIENT)
    previous = getattr(api, "_budget_meter", None)
    if isinstance(previous, GeminiMeter):  # instrumenting an instrumented client: use the SDK's clients
        inner, inner_async = previous.inner, previous.inner_async
        api.__class__ = getattr(type(api), "_budget_base", type(api))
    owns_async = owns_inner
    if inner_async is None:  # the SDK chose google-auth's aiohttp session for Vertex mTLS
        inner_async = _async_client_for(api)
        owns_async = True
    _check_httpx2(inner, inner_async)
    meter = GeminiMeter(options, inner, inner_async, owns_inner=owns_inner, owns_inner_async=owns_async)
    setattr(api, SYNC_CLIENT, _MeteredClient(meter))
    setattr(api, ASYNC_CLIENT, _MeteredAsyncClient(meter))
    api._budget_meter = meter
    _swap_class(api)
    return meter


def _public_seam(options: ClientOptions, http_options: Any) -> tuple[GeminiMeter, genai_types.HttpOptions]:
    """A meter and the ``HttpOptions`` that send through it, by the SDK's public seam: the caller's
    own httpx2 clients (or new ones built from their ``client_args``) wrapped in metered ones."""
    if http_options is None:
        http_options = genai_types.HttpOptions()
    elif isinstance(http_options, Mapping):
        http_options = genai_types.HttpOptions.model_validate(http_options)
    inner = http_options.httpx_client or httpx2.Client(**(http_options.client_args or {}))
    async_args = http_options.async_client_args or {}
    inner_async = http_options.httpx_async_client or httpx2.AsyncClient(**async_args)
    _check_httpx2(inner, inner_async)
    meter = GeminiMeter(
        options,
        inner,
        inner_async,
        owns_inner=http_options.httpx_client is None,
        owns_inner_async=http_options.httpx_async_client is None,
    )
    seam = http_options.model_copy(
        update={"httpx_client": _MeteredClient(meter), "httpx_async_client": _MeteredAsyncClient(meter)}
    )
    return meter, seam


def _rebind(obj: C, old: object, new: object) -> C:
    """A shallow copy of ``obj`` (a client or one of its resources) that talks through ``new``."""
    clone = copy.copy(obj)
    for name, value in list(vars(clone).items()):
        if value is old:
            setattr(clone, name, new)
        elif value is not None and getattr(value, "_api_client", None) is old:
            setattr(clone, name, _rebind(value, old, new))
        elif name == NEXTGEN_CLIENT:
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
        api = getattr(self, API_CLIENT, None)
        try:
            if not isinstance(api, BaseApiClient):
                raise _HookMissing(f"Client.{API_CLIENT}")
            _instrument(api, options, owns_inner=True)
        except _HookMissing as missing:
            _hook_changed(missing.hook, "metered through HttpOptions(httpx_client=, httpx_async_client=)")
            meter, seam = _public_seam(options, rest.get("http_options"))
            super().__init__(**{**rest, "http_options": seam})
            self._budget_meter = meter
            api = getattr(self, API_CLIENT, None)
            if api is not None:
                api._budget_meter = meter
                _swap_class(api)

    @property
    def budget_options(self) -> ClientOptions:
        return meter_of(self).options


def meter_of(client: Any) -> GeminiMeter:
    """The meter of an instrumented ``genai.Client`` (or its ``.aio``)."""
    meter = getattr(getattr(client, API_CLIENT, None), "_budget_meter", None)
    if not isinstance(meter, GeminiMeter):  # instrumented through the public seam, the SDK changed
        meter = vars(client).get("_budget_meter") if hasattr(client, "__dict__") else None
    if not isinstance(meter, GeminiMeter):
        raise LookupError("client is not instrumented by budgetclient")
    return meter


def wrap_genai(client: C, options: ClientOptions) -> C:
    """A copy of a ``genai.Client`` (same class) that is metered; the original stays as it was.

    The copy shares the original's connection pools; closing it deletes its own cache entries only.
    When google-genai no longer has the hooks to do that, ``client`` is returned as it is (one
    ``sdk.hook_unavailable`` warning logged): its calls work, unmetered.
    """
    api = getattr(client, API_CLIENT, None)
    if not isinstance(api, BaseApiClient):
        if isinstance(client, genai.Client | GenAIAsyncClient):
            _hook_changed(f"Client.{API_CLIENT}", "not instrumented: the client's calls are not metered")
            return client
        raise TypeError(f"cannot instrument {type(client).__name__}: it has no google-genai API client")
    try:
        _require_clients(api)  # before copying: a dropped copy would close the clients it shares
    except _HookMissing as missing:
        _hook_changed(missing.hook, "not instrumented: the client's calls are not metered")
        return client
    new_api = copy.copy(api)
    _instrument(new_api, options, owns_inner=False)
    if NEXTGEN_CLIENT not in vars(client):
        _hook_changed(f"Client.{NEXTGEN_CLIENT}", "a next-gen client built before wrap() may stay unmetered")
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
