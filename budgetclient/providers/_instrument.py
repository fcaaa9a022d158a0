"""``bc.instrument()`` / ``bc.uninstrument()``: every SDK client built from now on, metered.

Frameworks (pydantic-ai, LangChain, the OpenAI Agents SDK...) build their SDK clients inside
their own code, often from classes imported long before the application runs, so rebinding
``anthropic.Anthropic`` would miss them. Like an OpenTelemetry instrumentor, budgetclient wraps
the ``__init__`` of the SDK classes themselves (one reversible class attribute each): a client
built while instrumented is set up exactly as ``bc.wrap`` would set it up, with the same
provider code (`anthropic.BudgetMiddleware`, the metered OpenAI ``http_client``, the metered
google-genai API client). ``bc.Anthropic()`` and friends, and copies of instrumented clients,
already carry budgetclient and are left as they are, so nothing is instrumented twice.

SDK privates touched (each named by ``tests/test_instrument.py``'s contract test): OpenAI's
``_client`` (the HTTP client swapped for a metered one, then `_openai_hook.install`), and
google-genai's ``_api_client`` with the hooks `google._instrument` uses. If one is gone, the
client is built and works, unmetered, and ``sdk.hook_unavailable`` is logged once.

Clients built before ``instrument()`` stay as they are; clients built while instrumented keep
their metering after ``uninstrument()`` (it is part of them, as with ``wrap``), new ones are plain.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from .._fork_locks import renew_after_fork
from .._log import log
from ..options import ClientOptions
from ._hooks import hook_unavailable

__all__ = ["instrument", "instrumented_options", "uninstrument"]

_ANTHROPIC_CLASSES = (
    "Anthropic",
    "AsyncAnthropic",
    "AnthropicAWS",
    "AsyncAnthropicAWS",
    "AnthropicBedrock",
    "AsyncAnthropicBedrock",
    "AnthropicBedrockMantle",
    "AsyncAnthropicBedrockMantle",
    "AnthropicFoundry",
    "AsyncAnthropicFoundry",
    "AnthropicGoogleCloud",
    "AsyncAnthropicGoogleCloud",
    "AnthropicVertex",
    "AsyncAnthropicVertex",
)
"""Anthropic's client classes; a subclass (Azure OpenAI, a platform variant calling
``super().__init__``) reaches a patched ``__init__`` anyway, and the hooks skip a client that is
already instrumented."""

_OPENAI_CLASSES = ("OpenAI", "AsyncOpenAI")
"""``AzureOpenAI`` / ``AsyncAzureOpenAI`` call these ``__init__`` (checked by a test)."""

_OPENAI_HTTP_CLIENT = "_client"
"""The private attribute holding an OpenAI client's HTTP client (its contract test names it)."""

Init = Callable[..., None]
Hook = Callable[[Any, Init, tuple[Any, ...], dict[str, Any], ClientOptions], None]


@dataclass(frozen=True, slots=True)
class _Patch:
    """One SDK class whose ``__init__`` budgetclient replaced, and how to put it back."""

    cls: type[Any]
    original: Init
    own: bool
    """Whether ``original`` was in the class's own ``__dict__`` (else it was inherited)."""
    wrapper: Init


_lock = threading.Lock()
renew_after_fork(globals(), "_lock")
_options: ClientOptions | None = None
_patches: list[_Patch] = []


def instrumented_options() -> ClientOptions | None:
    """The options new SDK clients are instrumented with, or ``None`` when not instrumented."""
    return _options


def instrument(**options: Any) -> None:
    """Instrument every anthropic / openai / google-genai client created from now on, as ``wrap`` would.

    Options as ``wrap``: ``cache``, ``cache_ttl``, ``drift`` (unknown ones are a ``TypeError``).
    Idempotent: a second call only replaces the options that later clients get. SDKs that are
    not installed are skipped.
    """
    global _options
    opts = ClientOptions.create(**options)
    with _lock:
        _options = opts
        if _patches:
            return
        for module, names, hook in _providers():
            try:
                sdk = import_module(module)
            except ImportError:
                continue
            for name in names:
                try:
                    cls = getattr(sdk, name, None)
                except ImportError:  # a platform variant whose optional dependencies are missing
                    continue
                if isinstance(cls, type):
                    _patches.append(_patch(cls, hook))


def uninstrument() -> None:
    """Stop instrumenting new clients; the SDK classes get their own ``__init__`` back.

    A class whose ``__init__`` someone else replaced after us keeps their wrapper (ours, below it,
    then passes calls straight through), so their instrumentation is not undone.
    """
    global _options
    with _lock:
        _options = None
        for patch in reversed(_patches):
            if patch.cls.__dict__.get("__init__") is not patch.wrapper:
                continue
            if patch.own:
                patch.cls.__init__ = patch.original  # type: ignore[misc]
            else:
                delattr(patch.cls, "__init__")
        _patches.clear()


def _patch(cls: type[Any], hook: Hook) -> _Patch:
    original: Init = cls.__init__
    own = "__init__" in cls.__dict__

    @functools.wraps(original)  # the SDK's signature, for inspect and IDEs
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        options = _options
        if options is None:
            original(self, *args, **kwargs)
            return
        hook(self, original, args, kwargs, options)

    cls.__init__ = __init__  # type: ignore[misc]
    return _Patch(cls, original, own, __init__)


def _providers() -> list[tuple[str, tuple[str, ...], Hook]]:
    return [
        ("anthropic", _ANTHROPIC_CLASSES, _anthropic_init),
        ("openai", _OPENAI_CLASSES, _openai_init),
        ("google.genai", ("Client",), _genai_init),
    ]


def _not_metered(provider: str, client: Any, exc: BaseException) -> None:
    """A client budgetclient cannot meter (say an HTTP client of another package): built as asked."""
    log.warning(
        "instrument.not_metered",
        provider=provider,
        client=type(client).__qualname__,
        problem=f"{type(exc).__name__}: {str(exc)[:200]}",
    )


# -- per provider -------------------------------------------------------------------------------


def _anthropic_init(
    client: Any, original: Init, args: tuple[Any, ...], kwargs: dict[str, Any], options: ClientOptions
) -> None:
    """Add budgetclient's middleware, innermost, as ``wrap_anthropic`` does."""
    from .anthropic import _NO_DIAGNOSTICS, BudgetMiddleware, _arrange, _hook_copies

    given = list(kwargs.get("middleware") or ())
    if any(isinstance(m, BudgetMiddleware) for m in given):  # bc.Anthropic, a copy, a nested __init__
        original(client, *args, **kwargs)
        return
    diagnostics = not type(client).__name__.endswith(_NO_DIAGNOSTICS)
    kwargs["middleware"] = _arrange(given, BudgetMiddleware(options, diagnostics=diagnostics))
    original(client, *args, **kwargs)
    _hook_copies(client)


def _openai_init(
    client: Any, original: Init, args: tuple[Any, ...], kwargs: dict[str, Any], options: ClientOptions
) -> None:
    """The SDK's ``__init__``, then its HTTP client metered and requests prepared, as ``wrap_openai``."""
    import openai

    from ._openai_hook import install
    from ._openai_http import is_metered, metered_client
    from ._openai_meter import OpenAIMeter

    original(client, *args, **kwargs)
    if getattr(type(client), "_bc_prepares", False):  # bc.OpenAI / bc.AsyncOpenAI meter themselves
        return
    http_client = getattr(client, _OPENAI_HTTP_CLIENT, None)
    if http_client is None:
        hook_unavailable(
            "openai",
            openai.__version__,
            f"client.{_OPENAI_HTTP_CLIENT}",
            problem="missing",
            fallback="the client is built unmetered (bc.OpenAI(...) still meters)",
        )
        return
    if not is_metered(http_client):  # a copy of an instrumented client shares its meter
        try:
            http_client = metered_client(http_client, OpenAIMeter(options))
        except TypeError as exc:
            _not_metered("openai", client, exc)
            return
        setattr(client, _OPENAI_HTTP_CLIENT, http_client)
    install(client)


def _genai_init(
    client: Any, original: Init, args: tuple[Any, ...], kwargs: dict[str, Any], options: ClientOptions
) -> None:
    """The SDK's ``__init__``, then its API client metered as ``bc.GenAIClient`` does."""
    from ..errors import ConfigurationError
    from ._google_meter import GeminiMeter
    from .google import API_CLIENT, GenAIClient, _hook_changed, _HookMissing, _instrument

    original(client, *args, **kwargs)
    if isinstance(client, GenAIClient):
        return
    api = getattr(client, API_CLIENT, None)
    if isinstance(getattr(api, "_budget_meter", None), GeminiMeter):
        return
    try:
        if api is None:
            raise _HookMissing(f"Client.{API_CLIENT}")
        _instrument(api, options, owns_inner=True)
    except _HookMissing as missing:
        _hook_changed(missing.hook, "the client is built unmetered (bc.GenAIClient(...) still meters)")
    except ConfigurationError as exc:
        _not_metered("gemini", client, exc)
