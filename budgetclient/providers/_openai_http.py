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


def _delegated(name: str) -> Any:
    """An attribute read from, and written to, the wrapped client."""
    return property(
        lambda self: getattr(self._bc_inner, name), lambda self, value: setattr(self._bc_inner, name, value)
    )


class _Delegating:
    """What both metered clients share: the wrapped client owns every setting, connection and state.

    ``httpx2``'s own ``__init__`` is never called; anything not defined here is read from the
    wrapped client, so the metered client behaves exactly like it.
    """

    def __init__(self, inner: Any, meter: OpenAIMeter) -> None:
        self._bc_inner = inner
        self._bc_meter = meter

    @property
    def meter(self) -> OpenAIMeter:
        return self._bc_meter

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_bc_"):
            raise AttributeError(name)
        return getattr(self._bc_inner, name)

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        request: httpx2.Request = self._bc_inner.build_request(*args, **kwargs)
        return request

    is_closed = _delegated("is_closed")
    timeout = _delegated("timeout")
    headers = _delegated("headers")
    base_url = _delegated("base_url")
    cookies = _delegated("cookies")
    params = _delegated("params")
    auth = _delegated("auth")
    event_hooks = _delegated("event_hooks")
    trust_env = _delegated("trust_env")


class MeteredHttpClient(_Delegating, httpx2.Client):
    """An ``httpx2.Client`` that meters OpenAI model requests and delegates everything to ``inner``."""

    def __init__(self, inner: httpx2.Client, meter: OpenAIMeter) -> None:
        super().__init__(inner, meter)

    @property
    def inner(self) -> httpx2.Client:
        inner: httpx2.Client = self._bc_inner
        return inner

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        attempt = self._bc_meter.begin(request)
        if attempt is None:
            return self.inner.send(request, **kwargs)
        try:
            response = self.inner.send(attempt.request, **kwargs)
        except BaseException as exc:
            self._bc_meter.failed(attempt, exc)
            raise
        self._bc_meter.observe(attempt, response, is_async=False)
        return response

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> MeteredHttpClient:
        self.inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.inner.__exit__(exc_type, exc, tb)


class AsyncMeteredHttpClient(_Delegating, httpx2.AsyncClient):
    """The ``httpx2.AsyncClient`` counterpart of `MeteredHttpClient`."""

    def __init__(self, inner: httpx2.AsyncClient, meter: OpenAIMeter) -> None:
        super().__init__(inner, meter)

    @property
    def inner(self) -> httpx2.AsyncClient:
        inner: httpx2.AsyncClient = self._bc_inner
        return inner

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        attempt = self._bc_meter.begin(request)
        if attempt is None:
            return await self.inner.send(request, **kwargs)
        try:
            response = await self.inner.send(attempt.request, **kwargs)
        except BaseException as exc:
            self._bc_meter.failed(attempt, exc)
            raise
        self._bc_meter.observe(attempt, response, is_async=True)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> AsyncMeteredHttpClient:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc_value, traceback)
