"""Anthropic prompt caching as documented, as plain data and functions the fake backend runs.

The rules (platform.claude.com, "Prompt caching"):

- The prompt is a sequence of blocks in the order tools → system → messages; a string ``system``
  or message ``content`` is one text block. A position's cache key is a hash of the model and of
  every block up to and including it, ``cache_control`` stripped, so markers never change a key.
- Breakpoints are the blocks carrying ``cache_control`` (at most 4) plus the top-level automatic
  ``cache_control``, which marks the last cacheable block and takes one of the 4 slots. Longer
  TTLs must come before shorter ones.
- Reads: from each breakpoint, look back at most 20 blocks (the breakpoint itself first) for the
  longest prefix with a live entry; the request reads the longest such hit (position A).
- Writes happen only at breakpoints past A whose prefix reaches the model's minimum cacheable
  length. 1h writes are billed from A to the last 1h breakpoint written (B), 5m writes from
  max(A, B) to the last breakpoint written (C); ``input_tokens`` is what follows.
- TTLs (5m, 1h) are measured from the start of the request and refreshed on every hit; a
  request never reads what it writes itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from .tokenizer import block_bytes, block_tokens

__all__ = [
    "DEFAULT_MIN_CACHEABLE_TOKENS",
    "LOOKBACK_BLOCKS",
    "MAX_BREAKPOINTS",
    "MIN_CACHEABLE_TOKENS",
    "TTL_SECONDS",
    "Breakpoint",
    "CacheAccounting",
    "CacheEntry",
    "InvalidRequest",
    "PromptBlock",
    "PromptCache",
    "cache_breakpoints",
    "min_cacheable_tokens",
    "prompt_blocks",
]

Ttl = Literal["5m", "1h"]
Section = Literal["tools", "system", "messages"]

TTL_SECONDS: Mapping[str, float] = MappingProxyType({"5m": 300.0, "1h": 3600.0})
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
DEFAULT_MIN_CACHEABLE_TOKENS = 1024

MIN_CACHEABLE_TOKENS: Mapping[str, int] = MappingProxyType({
    # Model-id prefixes (the longest match wins) → minimum cacheable prefix, from Anthropic's table.
    "claude-opus-5": 512,
    "claude-fable-5": 512,
    "claude-mythos-5": 512,
    "claude-mythos-preview": 2048,
    "claude-opus-4-8": 1024,
    "claude-opus-4-7": 2048,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-5": 1024,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-sonnet-4": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-haiku-4-5": 4096,
    "claude-3-5-haiku": 2048,
    "claude-haiku-3-5": 2048,
    "claude-3-haiku": 2048,
})

# Blocks that cannot carry a breakpoint; the automatic marker walks back past them.
_NOT_CACHEABLE = frozenset({"thinking", "redacted_thinking"})


class InvalidRequest(ValueError):
    """The request breaks an API rule; the fake answers 400 ``invalid_request_error``."""


def _model_matches(model: str, prefix: str) -> bool:
    return model == prefix or model.startswith((prefix + "-", prefix + "@"))


def min_cacheable_tokens(model: str, overrides: Mapping[str, int] | None = None) -> int:
    """Minimum cacheable prefix for ``model``: longest matching prefix, overrides first.

    Provider-qualified ids (``us.anthropic.claude-…``) are matched from ``claude-`` on. An
    override key ``"*"`` applies to every model the other override keys do not match.
    """
    start = model.find("claude-")
    bare = model[start:] if start >= 0 else model
    for table in (overrides or {}, MIN_CACHEABLE_TOKENS):
        matches = [prefix for prefix in table if prefix != "*" and _model_matches(bare, prefix)]
        if matches:
            return table[max(matches, key=len)]
        if "*" in table:
            return table["*"]
    return DEFAULT_MIN_CACHEABLE_TOKENS


@dataclass(frozen=True, slots=True)
class PromptBlock:
    """One block of the prompt in cache order, with its tokens and cumulative cache key."""

    index: int
    """Position in tools → system → messages order, from 0."""
    segment: str
    """Where the block sits in the request, e.g. ``"system[0]"`` or ``"messages[2].content[1]"``."""
    section: Section
    tokens: int
    """Tokens of this block alone (`tokenizer.block_tokens`)."""
    prefix_tokens: int
    """Tokens of every block up to and including this one."""
    key: str
    """Cache key of the prefix ending here: hash of the model and all blocks so far, markers stripped."""
    cache_ttl: Ttl | None
    """TTL of this block's own ``cache_control`` marker, if it has one."""
    cacheable: bool
    """Whether a breakpoint may sit here (thinking blocks cannot carry one)."""


@dataclass(frozen=True, slots=True, order=True)
class Breakpoint:
    """A position where the request may write a cache entry."""

    index: int
    ttl: Ttl
    automatic: bool = False
    """Placed by the top-level ``cache_control`` rather than by a block's own marker."""


def _marker_ttl(marker: Any, where: str) -> Ttl:
    if not isinstance(marker, Mapping) or marker.get("type") != "ephemeral":
        raise InvalidRequest(f"{where}.cache_control: Input tag {marker!r} does not match the expected "
                             "tag 'ephemeral'")
    ttl = marker.get("ttl", "5m")
    if ttl is None:
        ttl = "5m"
    if ttl not in TTL_SECONDS:
        raise InvalidRequest(f"{where}.cache_control.ttl: Input should be '5m' or '1h', got {ttl!r}")
    return "1h" if ttl == "1h" else "5m"


def _as_blocks(content: Any, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})]
    if isinstance(content, list) and all(isinstance(block, Mapping) for block in content):
        return [(f"{where}[{i}]", block) for i, block in enumerate(content)]
    raise InvalidRequest(f"{where}: Input should be a valid string or a list of content blocks")


def _hash(previous: bytes, label: str, payload: bytes) -> bytes:
    return hashlib.sha256(previous + label.encode() + b"\x00" + payload).digest()


def prompt_blocks(body: Mapping[str, Any]) -> tuple[PromptBlock, ...]:
    """The request's prompt as cacheable blocks, in the order the cache sees them.

    Message blocks are labelled with their message index and role, so moving a block to another
    message changes the key. ``speed`` is folded in before the system blocks, ``tool_choice`` and
    ``thinking`` before the first message, so changing them invalidates what the docs say they do.
    """
    key = _hash(b"", "model", str(body.get("model", "")).encode())
    blocks: list[PromptBlock] = []
    prefix = 0

    def add(section: Section, segment: str, block: Mapping[str, Any], label: str) -> None:
        nonlocal key, prefix
        tokens = block_tokens(block)
        key = _hash(key, label, block_bytes(block))
        prefix += tokens
        marker = block.get("cache_control")
        blocks.append(PromptBlock(
            index=len(blocks), segment=segment, section=section, tokens=tokens, prefix_tokens=prefix,
            key=key.hex(), cache_ttl=None if marker is None else _marker_ttl(marker, segment),
            cacheable=block.get("type") not in _NOT_CACHEABLE,
        ))

    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(tool, Mapping) for tool in tools):
        raise InvalidRequest("tools: Input should be a valid list of tool definitions")
    for i, tool in enumerate(tools):
        add("tools", f"tools[{i}]", tool, "tool")
    if body.get("speed") is not None:  # documented to invalidate system and messages, not tools
        key = _hash(key, "speed", json.dumps(body["speed"]).encode())
    system = body.get("system")
    if system is not None:
        for segment, block in _as_blocks(system, "system"):
            add("system", segment, block, "system")
    params = {name: body[name] for name in ("tool_choice", "thinking") if body.get(name) is not None}
    if params:
        key = _hash(key, "params", json.dumps(params, sort_keys=True).encode())
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(message, Mapping) for message in messages):
        raise InvalidRequest("messages: Input should be a valid list of messages")
    for m, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"messages[{m}].role: Input should be 'user' or 'assistant', got {role!r}")
        for segment, block in _as_blocks(message.get("content"), f"messages[{m}].content"):
            add("messages", segment, block, f"message:{m}:{role}")
    return tuple(blocks)


def cache_breakpoints(body: Mapping[str, Any], blocks: Sequence[PromptBlock]) -> tuple[Breakpoint, ...]:
    """The request's breakpoints in prompt order, validated like the API does (400 otherwise)."""
    points = [Breakpoint(block.index, block.cache_ttl) for block in blocks if block.cache_ttl is not None]
    if len(points) > MAX_BREAKPOINTS:
        raise InvalidRequest(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                             f"Found {len(points)}.")
    marker = body.get("cache_control")
    if marker is not None:
        ttl = _marker_ttl(marker, "cache_control")
        target = next((block for block in reversed(blocks) if block.cacheable), None)
        if target is not None and target.cache_ttl != ttl:
            if target.cache_ttl is not None:
                raise InvalidRequest(
                    f"Top-level cache_control (ttl={ttl!r}) conflicts with the cache_control "
                    f"(ttl={target.cache_ttl!r}) already on the last cacheable block {target.segment}; "
                    "use the same ttl or remove one of them.")
            if len(points) == MAX_BREAKPOINTS:
                raise InvalidRequest(
                    f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found "
                    f"{MAX_BREAKPOINTS + 1} (top-level cache_control applies to {target.segment}).")
            points = sorted([*points, Breakpoint(target.index, ttl, automatic=True)])
    seen_5m: Breakpoint | None = None
    for point in points:
        if point.ttl == "5m" and seen_5m is None:
            seen_5m = point
        elif point.ttl == "1h" and seen_5m is not None:
            raise InvalidRequest(
                f"A cache_control block with ttl='1h' ({blocks[point.index].segment}) must not come after "
                f"one with ttl='5m' ({blocks[seen_5m.index].segment}); place longer TTLs first.")
    return tuple(points)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A live or expired cache entry, as `PromptCache.entries` reports it."""

    key: str
    ttl: Ttl
    written_at: float
    expires_at: float
    prefix_tokens: int
    segment: str
    """Block the entry ends at, in the request that wrote it."""


@dataclass(frozen=True, slots=True)
class CacheAccounting:
    """How one request's input splits into cache reads, writes by TTL and uncached tokens."""

    total_input_tokens: int
    cache_read_input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    input_tokens: int
    """Tokens after the last position read or written (the API's ``input_tokens``)."""
    min_cacheable_tokens: int
    breakpoints: tuple[Breakpoint, ...]
    read_index: int | None
    """Block index of the longest prefix read (position A), or ``None`` on a miss."""
    written: tuple[Breakpoint, ...]
    """Breakpoints that wrote an entry."""

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def cached_prefix_tokens(self) -> int:
        """Tokens of the prompt now in the cache through this request (read plus written)."""
        return self.total_input_tokens - self.input_tokens

    def usage(self, output_tokens: int, *, service_tier: str = "standard") -> dict[str, Any]:
        """The ``usage`` object the API returns for this accounting."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m_tokens,
                "ephemeral_1h_input_tokens": self.cache_write_1h_tokens,
            },
            "output_tokens": output_tokens,
            "service_tier": service_tier,
        }


class PromptCache:
    """Cache entries by prefix key, with TTLs on the caller's clock. Thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()

    def entries(self, now: float | None = None) -> list[CacheEntry]:
        """Entries in write order; only the live ones when ``now`` is given."""
        with self._lock:
            return [e for e in self._entries.values() if now is None or e.expires_at > now]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _live(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.expires_at > now

    def account(self, blocks: Sequence[PromptBlock], breakpoints: Sequence[Breakpoint], *, now: float,
                min_tokens: int, commit: bool = True) -> CacheAccounting:
        """Bill one request started at ``now``; with ``commit``, refresh the hits and store the writes."""
        with self._lock:
            hits: list[int] = []
            for point in breakpoints:
                stop = max(point.index - LOOKBACK_BLOCKS, -1)
                hit = next((i for i in range(point.index, stop, -1) if self._live(blocks[i].key, now)), None)
                if hit is not None:
                    hits.append(hit)
            read_index = max(hits) if hits else None
            read = blocks[read_index].prefix_tokens if read_index is not None else 0
            written = tuple(
                point for point in breakpoints
                if (read_index is None or point.index > read_index)
                and blocks[point.index].prefix_tokens >= min_tokens
            )
            long_ones = [point for point in written if point.ttl == "1h"]
            long_end = blocks[long_ones[-1].index].prefix_tokens if long_ones else read
            end = blocks[written[-1].index].prefix_tokens if written else read
            total = blocks[-1].prefix_tokens if blocks else 0
            if commit:
                for i in set(hits):
                    entry = self._entries[blocks[i].key]
                    expires = max(entry.expires_at, now + TTL_SECONDS[entry.ttl])
                    self._entries[entry.key] = CacheEntry(entry.key, entry.ttl, entry.written_at, expires,
                                                          entry.prefix_tokens, entry.segment)
                for point in written:
                    block = blocks[point.index]
                    self._entries.pop(block.key, None)
                    expires = now + TTL_SECONDS[point.ttl]
                    self._entries[block.key] = CacheEntry(block.key, point.ttl, now, expires,
                                                          block.prefix_tokens, block.segment)
            return CacheAccounting(
                total_input_tokens=total,
                cache_read_input_tokens=read,
                cache_write_5m_tokens=end - max(read, long_end),
                cache_write_1h_tokens=long_end - read,
                input_tokens=total - end,
                min_cacheable_tokens=min_tokens,
                breakpoints=tuple(breakpoints),
                read_index=read_index,
                written=written,
            )
