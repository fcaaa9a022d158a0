"""OpenAI usage objects (Chat Completions, Responses, legacy Completions, embeddings) as ``Usage``.

OpenAI counts are already cache-inclusive: ``prompt_tokens`` / ``input_tokens`` include the cached
and cache-written tokens, and ``completion_tokens`` / ``output_tokens`` include reasoning. The
functions take plain JSON mappings (what the wire carries), so they need no SDK import.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from ..._construct import fast_constructor
from ...usage import Usage

__all__ = [
    "supports_prompt_cache_breakpoints",
    "usage_from_chat",
    "usage_from_openai",
    "usage_from_responses",
]


def _int(value: Any) -> int:
    if type(value) is int:  # the wire's JSON numbers: no isinstance checks
        return value if value > 0 else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if type(value) is dict or isinstance(value, Mapping) else {}


_new_usage = fast_constructor(Usage)
"""``Usage(...)`` at a fifth of the cost, without its check: `_normalised` passes counts that are
non-negative ints (`_int`), each subset no larger than its whole."""


def _normalised(
    input_tokens: int, cached: int, written: int, written_long: int, output: int, reasoning: int
) -> Usage:
    # min(), written out: this runs for every call's record
    cached = cached if cached < input_tokens else input_tokens
    rest = input_tokens - cached
    written = written if written < rest else rest
    return _new_usage(
        input_tokens=input_tokens,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        cache_write_long_tokens=written_long if written_long < written else written,
        output_tokens=output,
        reasoning_tokens=reasoning if reasoning < output else output,
        requests=1,
    )


def usage_from_chat(usage: Mapping[str, Any] | None) -> Usage:
    """A Chat Completions (or legacy Completions / embeddings) ``CompletionUsage``.

    ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens`` and ``cache_write_tokens``;
    ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``.
    """
    if not usage:
        return Usage(requests=1)
    prompt = _details(usage, "prompt_tokens_details")
    completion = _details(usage, "completion_tokens_details")
    return _normalised(
        _int(usage.get("prompt_tokens")),
        _int(prompt.get("cached_tokens")),
        _int(prompt.get("cache_write_tokens")),
        0,  # Chat Completions caches only with the 30-minute TTL
        _int(usage.get("completion_tokens")),
        _int(completion.get("reasoning_tokens")),
    )


def usage_from_responses(usage: Mapping[str, Any] | None) -> Usage:
    """A Responses ``ResponseUsage``: cache-inclusive ``input_tokens``; 12h writes are the long TTL."""
    if not usage:
        return Usage(requests=1)
    details = _details(usage, "input_tokens_details")
    ttl = _details(details, "cache_write_tokens_details")
    written = _int(details.get("cache_write_tokens"))
    if not written:
        written = _int(ttl.get("ttl_12h_tokens")) + _int(ttl.get("ttl_30m_tokens"))
    return _normalised(
        _int(usage.get("input_tokens")),
        _int(details.get("cached_tokens")),
        written,
        _int(ttl.get("ttl_12h_tokens")),
        _int(usage.get("output_tokens")),
        _int(_details(usage, "output_tokens_details").get("reasoning_tokens")),
    )


def usage_from_openai(usage: Mapping[str, Any] | None) -> Usage:
    """Either shape, told apart by its keys (``input_tokens`` is Responses; ``prompt_tokens`` chat)."""
    if usage and "input_tokens" in usage and "prompt_tokens" not in usage:
        return usage_from_responses(usage)
    return usage_from_chat(usage)


_VERSION = re.compile(r"gpt-(\d+)(?:\.(\d+))?")


@functools.lru_cache(maxsize=1024)
def supports_prompt_cache_breakpoints(model: str) -> bool:
    """True for models that accept ``prompt_cache_breakpoint`` / ``prompt_cache_options`` (gpt-5.6+)."""
    match = _VERSION.search(model.lower())
    if match is None:
        return False
    version = (int(match.group(1)), int(match.group(2) or 0))
    return version >= (5, 6)
