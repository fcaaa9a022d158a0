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

``with_options(http_client=other)`` / ``copy(...)`` of an instrumented client meter ``other``
with the same meter (options and conversations). ``bc.OpenAI(...).copy()`` also takes ``cache``,
``cache_ttl`` and ``drift``: a copy with options of its own.

A legacy ``httpx`` client, which the SDK still accepts as ``http_client``, is metered the same
way (`_openai_http`); budgetclient imports ``httpx`` only when given one.

Signatures: ``inspect.signature(bc.OpenAI)`` is the installed SDK's constructor signature plus
budgetclient's keyword-only options (built from the SDK at import, so it never goes stale); type
checkers see `OpenAIParams` / `AsyncOpenAIParams`, the SDK's keyword arguments declared with the
SDK's types, so a misspelled argument is an error there as with the SDK's own class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import httpx2
import openai

from ..formats.openai.prefix import prompt_cache_key_for
from ..formats.openai.usage import usage_from_chat, usage_from_openai, usage_from_responses
from ..options import (
    OPTION_NAMES,
    CacheMode,
    CacheTTL,
    ClientOptions,
    DriftMode,
    pop_option_overrides,
    split_client_options,
)
from ._openai_hook import install, prepared_build, warn_hook_unavailable
from ._openai_http import is_metered, metered_client, share_meter
from ._openai_meter import OpenAIMeter
from ._signature import show_sdk_signatures

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from openai._client import (
        DataResidency,
        NotGiven,
        Timeout,
        WorkloadIdentity,
        X509WorkloadIdentity,
        _Provider,
    )
    from typing_extensions import Unpack

__all__ = [
    "AsyncOpenAI",
    "AsyncOpenAIParams",
    "OpenAI",
    "OpenAIMeter",
    "OpenAIParams",
    "prompt_cache_key_for",
    "usage_from_chat",
    "usage_from_openai",
    "usage_from_responses",
    "wrap_openai",
]

C = TypeVar("C")



class _SDKParams(TypedDict, total=False):
    """The keyword arguments ``openai.OpenAI`` and ``openai.AsyncOpenAI`` share, with the SDK's
    types (``tests/providers/test_openai_signature.py`` checks them against the installed SDK)."""

    admin_api_key: str | None
    workload_identity: WorkloadIdentity | X509WorkloadIdentity | None
    organization: str | None
    project: str | None
    webhook_secret: str | None
    provider: _Provider | None
    base_url: str | httpx2.URL | NotGiven | None
    data_residency: DataResidency | None
    websocket_base_url: str | httpx2.URL | None
    timeout: float | Timeout | NotGiven | None
    max_retries: int
    default_headers: Mapping[str, str] | None
    default_query: Mapping[str, object] | None
    _strict_response_validation: bool
    _enforce_credentials: bool


class OpenAIParams(_SDKParams, total=False):
    """``openai.OpenAI``'s keyword arguments, for type checkers."""

    api_key: str | Callable[[], str] | None
    http_client: httpx2.Client | None


class AsyncOpenAIParams(_SDKParams, total=False):
    """``openai.AsyncOpenAI``'s keyword arguments, for type checkers."""

    api_key: str | Callable[[], Awaitable[str]] | None
    http_client: httpx2.AsyncClient | None


def _instrumented(http_client: Any, options: ClientOptions | None) -> Any:
    """``http_client`` behind budgetclient's metering (re-using its meter if it already has one)."""
    if is_metered(http_client):
        if options is None or options == http_client.meter.options:
            return http_client
        http_client = http_client.inner
    return metered_client(http_client, OpenAIMeter(options))


def _init(client: Any, sdk_init: Any, kwargs: dict[str, Any]) -> None:
    """The SDK's ``__init__`` with the SDK's arguments, then its HTTP client metered.

    Given none of budgetclient's options, an ``http_client`` that is already budgetclient's keeps
    its own (a ``copy()`` keeps its client's options and conversations).
    """
    ours = any(name in kwargs for name in OPTION_NAMES)
    options, rest = split_client_options(kwargs)
    sdk_init(**rest)
    http_client = getattr(client, "_client", None)
    if http_client is None:  # the SDK keeps its HTTP client elsewhere now: a plain SDK client
        warn_hook_unavailable("_client", "missing: the client is not metered")
        return
    client._client = _instrumented(http_client, options if ours else None)


def _copy_kwargs(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The SDK's ``copy()`` arguments for a copy of a budgetclient client.

    The copy shares this client's meter (options, conversations), also when it is given an
    ``http_client`` of its own; given budgetclient options, it gets a meter of its own with them.
    """
    overrides = pop_option_overrides(kwargs)
    current = getattr(client, "_client", None)
    if not (overrides and is_metered(current)):
        return share_meter(current, kwargs)
    options = current.meter.options.updated(overrides)
    base = kwargs.get("http_client") or current
    kwargs["http_client"] = metered_client(base.inner if is_metered(base) else base, OpenAIMeter(options))
    return kwargs


def _budget_options(client: Any) -> ClientOptions:
    http_client = getattr(client, "_client", None)
    if is_metered(http_client):
        options: ClientOptions = http_client.meter.options
        return options
    raise LookupError("client is not instrumented by budgetclient")


class OpenAI(openai.OpenAI):
    """``openai.OpenAI`` with budgetclient's metering, prompt-cache key, breakpoints and drift checks.

    Takes the SDK's constructor arguments plus ``cache``, ``cache_ttl`` and ``drift``.
    """

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            cache: CacheMode = "auto",
            cache_ttl: CacheTTL = "auto",
            drift: DriftMode = "warn",
            **kwargs: Unpack[OpenAIParams],
        ) -> None: ...

    else:

        def __init__(self, **kwargs):
            _init(self, super().__init__, kwargs)

    _bc_prepares = True
    """Requests are prepared by ``_build_request`` below (`_openai_hook.install` leaves it alone)."""

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_options(self)

    def _build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return prepared_build(self, super()._build_request, args, kwargs)

    if not TYPE_CHECKING:  # type checkers keep seeing the SDK's fully typed copy / with_options

        def copy(self, **kwargs: Any) -> OpenAI:
            return super().copy(**_copy_kwargs(self, kwargs))

        with_options = copy


class AsyncOpenAI(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` with budgetclient's metering, prompt-cache key, breakpoints and drift checks."""

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            cache: CacheMode = "auto",
            cache_ttl: CacheTTL = "auto",
            drift: DriftMode = "warn",
            **kwargs: Unpack[AsyncOpenAIParams],
        ) -> None: ...

    else:

        def __init__(self, **kwargs):
            _init(self, super().__init__, kwargs)

    _bc_prepares = True
    """Requests are prepared by ``_build_request`` below (`_openai_hook.install` leaves it alone)."""

    @property
    def budget_options(self) -> ClientOptions:
        return _budget_options(self)

    def _build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return prepared_build(self, super()._build_request, args, kwargs)

    if not TYPE_CHECKING:

        def copy(self, **kwargs: Any) -> AsyncOpenAI:
            return super().copy(**_copy_kwargs(self, kwargs))

        with_options = copy


show_sdk_signatures(OpenAI, openai.OpenAI)
show_sdk_signatures(AsyncOpenAI, openai.AsyncOpenAI)


def wrap_openai(client: C, options: ClientOptions) -> C:
    """An instrumented copy of an OpenAI SDK client, of the same class; ``client`` is untouched."""
    http_client = getattr(client, "_client", None)
    copy = getattr(client, "copy", None)
    if copy is None:
        raise TypeError(f"cannot instrument {type(client).__qualname__}: it is not an openai SDK client")
    if http_client is None:  # the SDK keeps its HTTP client elsewhere now: an unmetered copy
        warn_hook_unavailable("_client", "missing: the client is not metered")
        return copy()  # type: ignore[no-any-return]
    if is_metered(http_client):
        http_client = http_client.inner
    wrapped = copy(http_client=_instrumented(http_client, options))
    install(wrapped)
    return wrapped  # type: ignore[no-any-return]
