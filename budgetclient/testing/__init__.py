"""Offline test support: fake provider backends that bill prompt caching like the real APIs.

``FakeAnthropic``, ``FakeOpenAI`` and ``FakeGemini`` answer like the real APIs through an ``httpx2``
transport or a local server (`serve`), computing ``usage`` with each provider's caching rules on a
`FakeClock`, so a test suite, the demo and the cost benchmarks run with no network and no key.
``assert_cache_stable(fn)`` fails a user's test when ``fn``'s calls drift their cached prefix.
"""

from __future__ import annotations

from ..cachesim.anthropic import (
    Breakpoint,
    CacheAccounting,
    CacheEntry,
    InvalidRequest,
    PromptBlock,
    PromptCache,
    cache_breakpoints,
    min_cacheable_tokens,
    prompt_blocks,
)
from ..cachesim.tokenizer import block_tokens, count_tokens
from .fake_anthropic import FakeAnthropic, FakeClock, FakeRequestLog
from .fake_gemini import FakeCache, FakeGemini, GenerateLog
from .fake_openai import FakeOpenAI, FakeOpenAIRequest, FakeReply
from .server import run_forever, serve
from .stability import assert_cache_stable, collect_drifts

__all__ = [
    "Breakpoint",
    "CacheAccounting",
    "CacheEntry",
    "FakeAnthropic",
    "FakeCache",
    "FakeClock",
    "FakeGemini",
    "FakeOpenAI",
    "FakeOpenAIRequest",
    "FakeReply",
    "FakeRequestLog",
    "GenerateLog",
    "InvalidRequest",
    "PromptBlock",
    "PromptCache",
    "assert_cache_stable",
    "block_tokens",
    "cache_breakpoints",
    "collect_drifts",
    "count_tokens",
    "min_cacheable_tokens",
    "prompt_blocks",
    "run_forever",
    "serve",
]
