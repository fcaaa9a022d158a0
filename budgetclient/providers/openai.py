"""OpenAI: ``bc.OpenAI``, ``bc.AsyncOpenAI`` and ``wrap()`` for OpenAI and Azure OpenAI clients.

The hook is the client's ``http_client`` (see `_openai_http`): budgetclient puts a delegating
``httpx2`` client in front of the one the SDK would use. ``copy()`` / ``with_options()`` hand
that same ``http_client`` to the new client, so every copy is metered too, and the client keeps
the SDK's class, methods, return types and static types. The body itself is rewritten before
the SDK encodes it (`_openai_hook`), where the client allows it.

- ``bc.OpenAI(...)`` / ``bc.AsyncOpenAI(...)``: subclasses taking the SDK's arguments plus
  ``cache``, ``cache_ttl`` and ``drift``.
- ``wrap_openai(client, options)``: ``client.copy(http_client=<metered>)`` for ``OpenAI``,
  ``AsyncOpenAI``, ``AzureOpenAI`` and ``AsyncAzureOpenAI`` (anything built on the SDK's base
  clients); the original client is left untouched. The two share the underlying HTTP client (and
  its connections), as SDK copies do: closing one closes it for both.

``bc.OpenAI(...).with_options(http_client=other)`` meters ``other`` too. A wrapped SDK client
given a new ``http_client`` in ``with_options`` is not (its class cannot be changed): wrap that
copy again.

Clients built on a legacy ``httpx`` (not ``httpx2``) client cannot be instrumented: pass an
``httpx2`` client (``openai.DefaultHttpxClient(...)``) instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
import openai

from ..options import ClientOptions, split_client_options
from ._openai_cache import prompt_cache_key_for
from ._openai_hook import install, planned_build
from ._openai_http import AsyncMeteredHttpClient, MeteredHttpClient
from ._openai_meter import OpenAIMeter
from ._openai_usage import usage_from_chat, usage_from_openai, usage_from_responses

if TYPE_CHECKING:
    from openai._models import FinalRequestOptions

__all__ = [
    "AsyncOpenAI",
    "OpenAI",
    "OpenAIMeter",
    "prompt_cache_key_for",
    "usage_from_chat",
    "usage_from_openai",
    "usage_from_responses",
    "wrap_openai",
]

C = TypeVar("C")

_OPTION_NAMES = ("cache", "cache_ttl", "drift")


_METERED = (MeteredHttpClient, AsyncMeteredHttpClient)


def _metered(http_client: Any, meter: OpenAIMeter) -> httpx2.Client | httpx2.AsyncClient:
    if isinstance(http_client, httpx2.AsyncClient):
        return AsyncMeteredHttpClient(http_client, meter)
    if isinstance(http_client, httpx2.Client):
        return MeteredHttpClient(http_client, meter)
    raise TypeError(
        f"budgetclient can only instrument OpenAI clients that use an httpx2 client, got "
        f"{type(http_client).__module__}.{type(http_client).__qualname__}; pass "
        "http_client=openai.DefaultHttpxClient(...) (or an httpx2.Client) instead"
    )


def _instrumented(http_client: Any, options: ClientOptions | None) -> httpx2.Client | httpx2.AsyncClient:
    """``http_client`` behind budgetclient's metering (re-using its meter if it already has one)."""
    if isinstance(http_client, _METERED):
        if options is None or options == http_client.meter.options:
            return http_client
        http_client = http_client.inner
    return _metered(http_client, OpenAIMeter(options))


def _keep_meter(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A copy given an http_client of its own keeps this client's meter (options, conversations)."""
    given, current = kwargs.get("http_client"), getattr(client, "_client", None)
    if given is not None and not isinstance(given, _METERED) and isinstance(current, _METERED):
        kwargs["http_client"] = _metered(given, current.meter)
    return kwargs


def _budget_options(client: Any) -> ClientOptions:
    http_client = getattr(client, "_client", None)
    if isinstance(http_client, _METERED):
        return http_client.meter.options
    raise LookupError("client is not instrumented by budgetclient")


class OpenAI(openai.OpenAI):
    """``openai.OpenAI`` with budgetclient's metering, prompt-cache key, breakpoints and drift checks.

    Takes the SDK's constructor arguments plus ``cache``, ``cache_ttl`` and ``drift``.
    """

    def __init__(self, **kwargs: Any) -> None:
        ours = any(name in kwargs for name in _OPTION_NAMES)
        options, rest = split_client_options(kwargs)
        super().__init__(**rest)
        self._client = _instrumented(self._client, options if ours else None)  # type: ignore[assignment]

    _bc_plans = True
    """Requests are planned by ``_build_request`` below (`_openai_hook.install` leaves it alone)."""

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_options(self)

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        return planned_build(self, super()._build_request, options, retries_taken)

    if not TYPE_CHECKING:  # type checkers keep seeing the SDK's fully typed copy / with_options

        def copy(self, **kwargs: Any) -> OpenAI:
            return super().copy(**_keep_meter(self, kwargs))

        with_options = copy


class AsyncOpenAI(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` with budgetclient's metering, prompt-cache key, breakpoints and drift checks."""

    def __init__(self, **kwargs: Any) -> None:
        ours = any(name in kwargs for name in _OPTION_NAMES)
        options, rest = split_client_options(kwargs)
        super().__init__(**rest)
        self._client = _instrumented(self._client, options if ours else None)  # type: ignore[assignment]

    _bc_plans = True
    """Requests are planned by ``_build_request`` below (`_openai_hook.install` leaves it alone)."""

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_options(self)

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        return planned_build(self, super()._build_request, options, retries_taken)

    if not TYPE_CHECKING:

        def copy(self, **kwargs: Any) -> AsyncOpenAI:
            return super().copy(**_keep_meter(self, kwargs))

        with_options = copy


def wrap_openai(client: C, options: ClientOptions) -> C:
    """An instrumented copy of an OpenAI SDK client, of the same class; ``client`` is untouched."""
    http_client = getattr(client, "_client", None)
    copy = getattr(client, "copy", None)
    if http_client is None or copy is None:
        raise TypeError(f"cannot instrument {type(client).__qualname__}: it is not an openai SDK client")
    if isinstance(http_client, _METERED):
        http_client = http_client.inner
    wrapped = copy(http_client=_instrumented(http_client, options))
    install(wrapped)
    return wrapped  # type: ignore[no-any-return]
