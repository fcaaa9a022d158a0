"""The OpenAI hook: an ``httpx2`` client in front of the SDK's own, metering every model request.

openai 3.x has no middleware, and ``wrap()`` cannot change an existing client's class. What every
client, and every ``copy()`` / ``with_options()`` of it, does share is its ``http_client``
(``copy`` passes ``http_client or self._client``). So budgetclient installs a thin ``httpx2``
client that delegates to the original one (its transport, proxies, event hooks, timeouts and
auth stay as they were) and hands each ``send`` to the `OpenAIMeter` around it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx2

from ._openai_meter import OpenAIMeter

__all__ = ["AsyncMeteredHttpClient", "MeteredHttpClient"]


class MeteredHttpClient(httpx2.Client):
    """An ``httpx2.Client`` that meters OpenAI model requests and delegates everything to ``inner``.

    It never calls ``httpx2.Client.__init__``: configuration, connections and state all belong to
    the wrapped client, which keeps sending every request.
    """

    def __init__(self, inner: httpx2.Client, meter: OpenAIMeter) -> None:
        self._bc_inner = inner
        self._bc_meter = meter

    @property
    def inner(self) -> httpx2.Client:
        return self._bc_inner

    @property
    def meter(self) -> OpenAIMeter:
        return self._bc_meter

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_bc_"):
            raise AttributeError(name)
        return getattr(self._bc_inner, name)

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        attempt = self._bc_meter.begin(request)
        if attempt is None:
            return self._bc_inner.send(request, **kwargs)
        try:
            response = self._bc_inner.send(attempt.request, **kwargs)
        except BaseException as exc:
            self._bc_meter.failed(attempt, exc)
            raise
        self._bc_meter.observe(attempt, response, is_async=False)
        return response

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return self._bc_inner.build_request(*args, **kwargs)

    def close(self) -> None:
        self._bc_inner.close()

    def __enter__(self) -> MeteredHttpClient:
        self._bc_inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self._bc_inner.__exit__(exc_type, exc, tb)

    is_closed = property(lambda self: self._bc_inner.is_closed)  # type: ignore[assignment]
    timeout = property(  # type: ignore[assignment]
        lambda self: self._bc_inner.timeout, lambda self, value: setattr(self._bc_inner, "timeout", value)
    )
    headers = property(  # type: ignore[assignment]
        lambda self: self._bc_inner.headers, lambda self, value: setattr(self._bc_inner, "headers", value)
    )
    base_url = property(  # type: ignore[assignment]
        lambda self: self._bc_inner.base_url, lambda self, value: setattr(self._bc_inner, "base_url", value)
    )


class AsyncMeteredHttpClient(httpx2.AsyncClient):
    """The ``httpx2.AsyncClient`` counterpart of `MeteredHttpClient`."""

    def __init__(self, inner: httpx2.AsyncClient, meter: OpenAIMeter) -> None:
        self._bc_inner = inner
        self._bc_meter = meter

    @property
    def inner(self) -> httpx2.AsyncClient:
        return self._bc_inner

    @property
    def meter(self) -> OpenAIMeter:
        return self._bc_meter

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_bc_"):
            raise AttributeError(name)
        return getattr(self._bc_inner, name)

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        attempt = self._bc_meter.begin(request)
        if attempt is None:
            return await self._bc_inner.send(request, **kwargs)
        try:
            response = await self._bc_inner.send(attempt.request, **kwargs)
        except BaseException as exc:
            self._bc_meter.failed(attempt, exc)
            raise
        self._bc_meter.observe(attempt, response, is_async=True)
        return response

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return self._bc_inner.build_request(*args, **kwargs)

    async def aclose(self) -> None:
        await self._bc_inner.aclose()

    async def __aenter__(self) -> AsyncMeteredHttpClient:
        await self._bc_inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._bc_inner.__aexit__(exc_type, exc_value, traceback)

    is_closed = property(lambda self: self._bc_inner.is_closed)  # type: ignore[assignment]
    timeout = property(  # type: ignore[assignment]
        lambda self: self._bc_inner.timeout, lambda self, value: setattr(self._bc_inner, "timeout", value)
    )
    headers = property(  # type: ignore[assignment]
        lambda self: self._bc_inner.headers, lambda self, value: setattr(self._bc_inner, "headers", value)
    )
    base_url = property(  # type: ignore[assignment]
        lambda self: self._bc_inner.base_url, lambda self, value: setattr(self._bc_inner, "base_url", value)
    )
