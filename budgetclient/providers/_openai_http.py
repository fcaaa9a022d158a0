"""The OpenAI hook: an HTTP client in front of the SDK's own, metering every model request.

openai 3.x has no middleware, and ``wrap()`` cannot change an existing client's class. What every
client, and every ``copy()`` / ``with_options()`` of it, does share is its ``http_client``
(``copy`` passes ``http_client or self._client``). So budgetclient installs a thin client that
delegates to the original one (its transport, proxies, event hooks, timeouts and auth stay as
they were) and hands each ``send`` to the `OpenAIMeter` around it.

The SDK accepts an ``httpx2`` client and, as its documented escape hatch, a legacy ``httpx`` one;
it tells them apart with ``isinstance``, so the metered client is an instance of the same
package's class (`metered_client`). ``httpx`` is not a dependency of budgetclient: it is imported
only when a legacy client is given, and its responses' byte streams are bridged to the ``httpx2``
ones the meter taps (`_LegacyBridge`).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, TypeGuard

import httpx2

from ._openai_meter import OpenAIMeter

__all__ = ["AsyncMeteredHttpClient", "MeteredHttpClient", "is_metered", "metered_client", "share_meter"]


def _delegated(name: str) -> Any:
    """An attribute read from, and written to, the wrapped client."""
    return property(
        lambda self: getattr(self._bc_inner, name), lambda self, value: setattr(self._bc_inner, name, value)
    )


class _Delegating:
    """What every metered client shares: the wrapped client owns every setting, connection and state.

    The HTTP package's own ``__init__`` is never called; anything not defined here is read from
    the wrapped client, so the metered client behaves exactly like it.
    """

    _bc_bridge: _LegacyBridge | None = None
    """How a legacy ``httpx`` response's body reaches the meter (None for ``httpx2``)."""

    def __init__(self, inner: Any, meter: OpenAIMeter) -> None:
        self._bc_inner = inner
        self._bc_meter = meter

    @property
    def meter(self) -> OpenAIMeter:
        return self._bc_meter

    @property
    def inner(self) -> Any:
        """The client budgetclient delegates to (the one the caller gave, or the SDK's default)."""
        return self._bc_inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_bc_"):
            raise AttributeError(name)
        return getattr(self._bc_inner, name)

    def build_request(self, *args: Any, **kwargs: Any) -> Any:
        return self._bc_inner.build_request(*args, **kwargs)

    is_closed = _delegated("is_closed")
    timeout = _delegated("timeout")
    headers = _delegated("headers")
    base_url = _delegated("base_url")
    cookies = _delegated("cookies")
    params = _delegated("params")
    auth = _delegated("auth")
    event_hooks = _delegated("event_hooks")
    trust_env = _delegated("trust_env")

    def _bc_observe(self, attempt: Any, response: Any, *, is_async: bool) -> None:
        bridge = self._bc_bridge
        if bridge is None:
            self._bc_meter.observe(attempt, response, is_async=is_async)
            return
        legacy_stream = response.stream
        bridged = response.stream = bridge.to_httpx2(legacy_stream, is_async=is_async)
        self._bc_meter.observe(attempt, response, is_async=is_async)
        tapped = response.stream
        response.stream = legacy_stream if tapped is bridged else bridge.to_legacy(tapped, is_async=is_async)


class _SyncMetering(_Delegating):
    def send(self, request: Any, **kwargs: Any) -> Any:
        attempt = self._bc_meter.begin(request)
        if attempt is None:
            return self._bc_inner.send(request, **kwargs)
        try:
            response = self._bc_inner.send(attempt.request, **kwargs)
        except BaseException as exc:
            self._bc_meter.failed(attempt, exc)
            raise
        self._bc_observe(attempt, response, is_async=False)
        return response

    def close(self) -> None:
        self._bc_inner.close()

    def __enter__(self) -> Any:
        self._bc_inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self._bc_inner.__exit__(exc_type, exc, tb)


class _AsyncMetering(_Delegating):
    async def send(self, request: Any, **kwargs: Any) -> Any:
        attempt = self._bc_meter.begin(request)
        if attempt is None:
            return await self._bc_inner.send(request, **kwargs)
        try:
            response = await self._bc_inner.send(attempt.request, **kwargs)
        except BaseException as exc:
            self._bc_meter.failed(attempt, exc)
            raise
        self._bc_observe(attempt, response, is_async=True)
        return response

    async def aclose(self) -> None:
        await self._bc_inner.aclose()

    async def __aenter__(self) -> Any:
        await self._bc_inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._bc_inner.__aexit__(exc_type, exc_value, traceback)


class MeteredHttpClient(_SyncMetering, httpx2.Client):  # type: ignore[misc]
    """An ``httpx2.Client`` that meters OpenAI model requests and delegates everything to ``inner``."""

    def __init__(self, inner: httpx2.Client, meter: OpenAIMeter) -> None:
        _Delegating.__init__(self, inner, meter)


class AsyncMeteredHttpClient(_AsyncMetering, httpx2.AsyncClient):  # type: ignore[misc]
    """The ``httpx2.AsyncClient`` counterpart of `MeteredHttpClient`."""

    def __init__(self, inner: httpx2.AsyncClient, meter: OpenAIMeter) -> None:
        _Delegating.__init__(self, inner, meter)


def is_metered(http_client: Any) -> TypeGuard[_Delegating]:
    """Whether ``http_client`` is budgetclient's (of either HTTP package)."""
    return isinstance(http_client, _Delegating)


def metered_client(http_client: Any, meter: OpenAIMeter) -> Any:
    """``http_client`` behind ``meter``: an instance of the same package's ``Client`` /
    ``AsyncClient``, as the SDK checks. TypeError for anything else, as the SDK raises."""
    if isinstance(http_client, httpx2.AsyncClient):
        return AsyncMeteredHttpClient(http_client, meter)
    if isinstance(http_client, httpx2.Client):
        return MeteredHttpClient(http_client, meter)
    legacy = sys.modules.get("httpx")  # a legacy client exists only if its package is imported
    if legacy is not None and isinstance(http_client, (legacy.Client, legacy.AsyncClient)):
        sync_cls, async_cls = _legacy_classes()
        cls = async_cls if isinstance(http_client, legacy.AsyncClient) else sync_cls
        return cls(http_client, meter)
    raise TypeError(
        f"budgetclient can only instrument OpenAI clients that use an httpx2 (or legacy httpx) client, "
        f"got {type(http_client).__module__}.{type(http_client).__qualname__}; pass "
        "http_client=openai.DefaultHttpxClient(...) (or an httpx2.Client) instead"
    )


def share_meter(current: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``copy()`` arguments whose ``http_client`` of its own, if any, is metered by ``current``'s
    meter: the copy keeps its client's options and conversations."""
    given = kwargs.get("http_client")
    if given is not None and not is_metered(given) and is_metered(current):
        kwargs["http_client"] = metered_client(given, current.meter)
    return kwargs


class _LegacyBridge:
    """Byte streams between a legacy ``httpx`` response and the ``httpx2`` taps of the meter.

    ``httpx.Response`` reads only an ``httpx.SyncByteStream`` / ``AsyncByteStream`` and the taps
    wrap ``httpx2`` ones: the body is handed across both ways, chunk by chunk, unchanged.
    """

    def __init__(self, module: Any) -> None:
        self._to_legacy = {
            False: type("LegacySyncStream", (_SyncStream, module.SyncByteStream), {}),
            True: type("LegacyAsyncStream", (_AsyncStream, module.AsyncByteStream), {}),
        }

    def to_httpx2(self, stream: Any, *, is_async: bool) -> Any:
        return _AsyncHttpx2Stream(stream) if is_async else _SyncHttpx2Stream(stream)

    def to_legacy(self, stream: Any, *, is_async: bool) -> Any:
        return self._to_legacy[is_async](stream)


class _SyncStream:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self.inner

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class _AsyncStream:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class _SyncHttpx2Stream(_SyncStream, httpx2.SyncByteStream):
    pass


class _AsyncHttpx2Stream(_AsyncStream, httpx2.AsyncByteStream):
    pass


@functools.cache
def _legacy_classes() -> tuple[type[_Delegating], type[_Delegating]]:
    """The metered clients for a legacy ``httpx`` client, built on first use (httpx is optional)."""
    httpx: Any = importlib.import_module("httpx")
    bridge = _LegacyBridge(httpx)
    namespace = {"__module__": __name__, "_bc_bridge": bridge}
    sync_cls = type("LegacyMeteredHttpClient", (_SyncMetering, httpx.Client), dict(namespace))
    async_cls = type("AsyncLegacyMeteredHttpClient", (_AsyncMetering, httpx.AsyncClient), dict(namespace))
    return sync_cls, async_cls
