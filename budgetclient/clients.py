"""``wrap()``: instrument an SDK client built elsewhere, whichever provider it belongs to."""

from __future__ import annotations

from typing import Any, TypeVar

from .options import ClientOptions

__all__ = ["wrap"]

C = TypeVar("C")

_SUPPORTED = (
    "anthropic.Anthropic, anthropic.AsyncAnthropic (and Bedrock/Vertex/Foundry/AWS/GoogleCloud variants), "
    "openai.OpenAI, openai.AsyncOpenAI, openai.AzureOpenAI, openai.AsyncAzureOpenAI, google.genai.Client"
)


def wrap(client: C, **options: Any) -> C:
    """Return an instrumented copy of ``client``, of the same class; the original is untouched.

    Options: ``cache="auto"|"off"``, ``cache_ttl="auto"|"5m"|"1h"``, ``drift="warn"|"raise"|"off"``.
    """
    opts = ClientOptions.create(**options)
    # by the SDK class it derives from, so budgetclient's own subclasses re-wrap too
    roots = [cls.__module__.split(".", 1)[0] for cls in type(client).__mro__]
    root = next((r for r in roots if r in ("anthropic", "openai", "google")), roots[0])
    if root == "anthropic":
        from .providers.anthropic import wrap_anthropic

        return wrap_anthropic(client, opts)
    if root == "openai":
        from .providers.openai import wrap_openai

        return wrap_openai(client, opts)
    if root == "google":
        from .providers.google import wrap_genai

        return wrap_genai(client, opts)
    name = f"{type(client).__module__}.{type(client).__qualname__}"
    raise TypeError(f"wrap() cannot instrument {name}; it accepts {_SUPPORTED}")
