"""Offline test support: fake provider backends that bill prompt caching like the real APIs.

``FakeAnthropic`` answers the Anthropic Messages API through an ``httpx2`` transport or a local
server (`serve`), computing ``usage`` with the documented caching rules on a `FakeClock`, so a
test suite, the demo and the cost benchmarks run with no network and no key.
"""

from __future__ import annotations

from ._prompt_cache import (
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
from .fake_anthropic import FakeAnthropic, FakeClock, FakeRequestLog
from .server import run_forever, serve
from .tokenizer import block_tokens, count_tokens

__all__ = [
    "Breakpoint",
    "CacheAccounting",
    "CacheEntry",
    "FakeAnthropic",
    "FakeClock",
    "FakeRequestLog",
    "InvalidRequest",
    "PromptBlock",
    "PromptCache",
    "block_tokens",
    "cache_breakpoints",
    "count_tokens",
    "min_cacheable_tokens",
    "prompt_blocks",
    "run_forever",
    "serve",
]
