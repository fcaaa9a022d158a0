"""Where cache breakpoints go (pure decisions over `blocks.RequestBlocks`).

Anthropic bills a request as: the longest live cached prefix found from any breakpoint (looking
back at most 20 blocks) is read at 0.1x; everything from there to the last breakpoint is written
at 1.25x (5m) or 2x (1h); the rest is plain input. Extra breakpoints cost nothing by themselves,
so the decisions that matter are how far the last write reaches and whether the next call can
find it. Up to four breakpoints, in priority order:

1. rolling: the end of what the next call will repeat. In an append-only loop that is the last
   block; when the previous calls showed a volatile tail (documents injected into the latest
   user turn and dropped afterwards) it is the block before that tail, so the tail is sent as
   plain input instead of being written at a premium and never read;
2. intermediate: the position the previous call wrote, when the rolling breakpoint is 20 or more
   blocks past it (out of the lookback window), so that entry is still read;
3. stable: the end of tools + system, reused by every call and every conversation sharing them;
4. tools: the end of the tool definitions, when a system prompt follows them and a breakpoint is
   left over: agents sharing the tools but not the system prompt, and a tool list that grows
   by a tool appended at its end, still read the tool definitions.

A breakpoint whose prefix is below the model's minimum cacheable length does nothing and is not
placed; caller markers are kept and count towards the four; TTLs are ordered longest first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from ._construct import fast_constructor
from .blocks import Block, RequestBlocks, Ttl
from .cachesim.anthropic import LOOKBACK_BLOCKS, MAX_BREAKPOINTS, MIN_CACHEABLE_TOKENS
from .cachesim.anthropic import min_cacheable_tokens as documented_min_cacheable_tokens

__all__ = [
    "LONG_GAP_S",
    "LOOKBACK_BLOCKS",
    "MAX_BREAKPOINTS",
    "MIN_CACHEABLE_TOKENS",
    "Marker",
    "Role",
    "TailRule",
    "choose_ttl",
    "drift_region_end",
    "learn_tail",
    "long_gap_share",
    "min_cacheable_tokens",
    "place_breakpoints",
    "trailing_turn_start",
    "volatile_tail_start",
]

LONG_GAP_S = 285.0
"""Gaps longer than this (5 minutes, less a margin for request latency) outlive a 5m entry."""
ONE_HOUR_S = 3600.0

# Anthropic's published multipliers of the base input price, used to weigh TTL choices.
WRITE_5M = 1.25
WRITE_1H = 2.0
READ = 0.1


@functools.lru_cache(maxsize=256)
def min_cacheable_tokens(model: str) -> int:
    """Minimum cacheable prefix of ``model`` (provider-qualified ids match from ``claude-`` on).

    The documented table (`cachesim.anthropic.MIN_CACHEABLE_TOKENS`), memoised: it runs on every
    request and the table is read-only."""
    return documented_min_cacheable_tokens(model)


@dataclass(frozen=True, slots=True)
class TailRule:
    """Where the volatile tail of a call starts, relative to its last message."""

    messages_from_end: int
    """0 = the final message."""
    content_index: int
    """First volatile content block of that message (0 = the whole message is volatile)."""


Role = Literal["rolling", "anchor", "intermediate", "stable", "tools"]


@dataclass(frozen=True, slots=True)
class Marker:
    """A breakpoint budgetclient adds."""

    index: int
    """Block index in cache order."""
    ttl: Ttl
    role: Role


_new_marker = fast_constructor(Marker)
"""``Marker(...)`` by keyword at a third of the cost (up to four per call)."""


def trailing_turn_start(blocks: Sequence[Block]) -> int:
    """First block after the last assistant message: the turn the next call may still rewrite."""
    for i in range(len(blocks) - 1, -1, -1):
        block = blocks[i]
        if block.section != "messages":
            return i + 1
        if block.role == "assistant":
            return i + 1
    return 0


def volatile_tail_start(request: RequestBlocks, tail: TailRule | None) -> int:
    """First block of ``request`` that ``tail`` says the next call will not repeat."""
    if tail is None:
        return len(request)
    count = request.message_count
    if count == 0:
        return len(request)
    message = count - 1 - tail.messages_from_end
    if message < 0:
        return len(request)
    for i in range(request.message_start(message), len(request)):
        block = request.blocks[i]
        if block.message != message or (block.content or 0) >= tail.content_index:
            return i
    return len(request)


def drift_region_end(request: RequestBlocks, tail: TailRule | None) -> int:
    """Blocks of this call that the next call is expected to repeat byte for byte."""
    start = trailing_turn_start(request.blocks)
    if tail is None:
        return start
    return max(start, min(volatile_tail_start(request, tail), len(request)))


def learn_tail(previous: Sequence[Block], divergence: int) -> TailRule | None:
    """The volatile-tail rule implied by the previous call diverging at block ``divergence``.

    Only a divergence inside the previous call's trailing user turn is a tail (the caller
    rewrites the latest turn); one earlier is drift, and a clean append means no tail.
    """
    if divergence >= len(previous) or divergence < trailing_turn_start(previous):
        return None
    block = previous[divergence]
    last = previous[-1].message
    if block.message is None or last is None:
        return None
    return TailRule(messages_from_end=last - block.message, content_index=block.content or 0)


def choose_ttl(
    requested: Literal["auto", "5m", "1h"],
    gaps: Sequence[float],
    *,
    prefix_tokens: int,
    new_tokens: int,
) -> Ttl | None:
    """TTL for this call's breakpoints; None when no cache entry can outlive the gaps.

    ``prefix_tokens``: what the next call will read back; ``new_tokens``: what this call writes.
    ``"auto"``: 5m until gaps between calls outlive a 5m entry. Then 1h when the rewrite it
    avoids (share of long gaps x prefix x (1.25 - 0.1)) outweighs its extra premium on what this
    call writes ((2 - 1.25) x new tokens): a first call, which writes everything, needs most gaps
    to be long; a later call, which writes little on top of a large prefix, needs few. When every
    recent gap exceeds an hour, no entry is ever read again: writing would only cost.
    """
    if requested != "auto":
        return requested
    recent = gaps[-8:] if type(gaps) is list else list(gaps)[-8:]
    if not recent:
        return "5m"
    if len(recent) >= 2 and min(recent) > ONE_HOUR_S:
        return None
    if max(recent) <= LONG_GAP_S:  # no long gap (`_long_share`), the commonest case
        return "5m"
    long_share = _long_share(recent)
    if long_share == 0:
        return "5m"
    saved = long_share * (WRITE_5M - READ) * prefix_tokens
    premium = (WRITE_1H - WRITE_5M) * max(new_tokens, 1)
    return "1h" if saved >= premium else "5m"


def long_gap_share(gaps: Sequence[float]) -> float:
    """Share of recent gaps that outlive a 5m entry but not a 1h one."""
    recent = gaps[-8:] if type(gaps) is list else list(gaps)[-8:]
    if not recent or max(recent) <= LONG_GAP_S:  # (`_long_share`, without the call)
        return 0.0
    return _long_share(recent)


def _long_share(recent: list[float]) -> float:
    """`long_gap_share` of a non-empty ``recent``: 0 at once when no gap outlives a 5m entry (the
    commonest case, with ``max`` in C; a NaN gap, never counted, is never ``max`` unless first,
    and then fails the test: counted one by one)."""
    if max(recent) <= LONG_GAP_S:
        return 0.0
    return sum(1 for g in recent if LONG_GAP_S < g <= ONE_HOUR_S) / len(recent)


def _reaches(points: Sequence[int], target: int, lookback: int) -> bool:
    return any(0 <= point - target < lookback for point in points)


def place_breakpoints(
    request: RequestBlocks,
    *,
    ttl: Ttl,
    min_tokens: int,
    tail: TailRule | None = None,
    previous_end: int | None = None,
    volatile_fixed: int | None = None,
    anchored: bool = False,
    token_scale: float = 1.0,
    lookback: int = LOOKBACK_BLOCKS,
    max_breakpoints: int = MAX_BREAKPOINTS,
) -> tuple[Marker, ...]:
    """The breakpoints to add to ``request`` (the caller's own are kept and counted).

    ``previous_end``: block count of the prefix the previous call of the conversation wrote (or
    read), if this request still starts with it. ``volatile_fixed``: index of a tools/system block
    that changed on each recent call; nothing after it can be reused. ``anchored`` (with a 1h
    ``ttl``): only the first new block gets the 1h entry (an *anchor* that keeps everything
    before it through a long pause) and the rolling breakpoint stays 5m, for conversations where
    only some gaps are long. ``token_scale`` corrects estimated tokens towards what the provider
    reported, for the minimum-length test.
    """
    blocks = request.blocks
    if not blocks:
        return ()
    existing = request.caller_markers()
    free = max_breakpoints - len(existing)
    if free <= 0:
        return ()
    # runs on every call: the minimum-length test (``cacheable``) written out, no closure or call
    ends = request.prefix_tokens

    if volatile_fixed is not None:
        rolling = None
        stable = request.last_markable_at_or_before(volatile_fixed - 1) if volatile_fixed > 0 else None
    else:
        # both at most the last block: the commonest case, a markable block there, asks no loop
        end = (len(blocks) if tail is None else volatile_tail_start(request, tail)) - 1
        rolling = stable = None
        if end >= 0:
            rolling = end if blocks[end].markable else request.last_markable_at_or_before(end)
        last = request.fixed_end - 1
        if last >= 0:
            stable = last if blocks[last].markable else request.last_markable_at_or_before(last)

    known = previous_end is not None and 0 < previous_end <= len(blocks)
    wanted: list[tuple[int, Role]] = []
    if rolling is not None and ends[rolling] * token_scale >= min_tokens:
        wanted.append((rolling, "rolling"))
    anchor = None
    if anchored and ttl == "1h" and known and rolling is not None and previous_end is not None:
        cacheable = (i for i in range(previous_end, rolling) if ends[i] * token_scale >= min_tokens)
        anchor = next((i for i in cacheable if blocks[i].markable), None)
        if anchor is not None:
            wanted.append((anchor, "anchor"))
    if known and rolling is not None and previous_end is not None:
        target = previous_end - 1
        if (
            blocks[target].markable
            and target < rolling
            and not (0 <= rolling - target < lookback)  # `_reaches` of the rolling breakpoint first
            and not _reaches([*existing] + ([anchor] if anchor is not None else []), target, lookback)
            and ends[target] * token_scale >= min_tokens
        ):
            wanted.append((target, "intermediate"))
    if stable is not None and ends[stable] * token_scale >= min_tokens:
        wanted.append((stable, "stable"))
        tools = _tools_end(request)
        if tools is not None and tools < stable and ends[tools] * token_scale >= min_tokens:
            wanted.append((tools, "tools"))

    chosen: dict[int, Role] = {}
    for index, role in wanted:
        if len(chosen) >= free:
            break
        if index not in existing and index not in chosen:
            chosen[index] = role
    has_anchor = "anchor" in chosen.values()
    placed = []
    for index, role in sorted(chosen.items()):
        wanted_ttl: Ttl = "5m" if role == "rolling" and has_anchor else ttl
        if existing:
            wanted_ttl = _ordered_ttl(index, wanted_ttl, existing)
        placed.append(_new_marker(index=index, ttl=wanted_ttl, role=role))
    return tuple(placed)


def _tools_end(request: RequestBlocks) -> int | None:
    """Index of the last tool definition, if the request has tools (kept on the request, and
    carried to the next one of an append-only conversation: its tools are the same blocks)."""
    known = request._tools_end
    if known == -2:
        found = _find_tools_end(request)
        known = -1 if found is None else found
        object.__setattr__(request, "_tools_end", known)
    return None if known < 0 else known


def _find_tools_end(request: RequestBlocks) -> int | None:
    sections = list(map(_SECTION, request.blocks[: request.fixed_end]))  # in C: 20 tools are 20 steps
    count = sections.count("tools")
    if sections[:count] != ["tools"] * count:  # a tools block after another section: walk as the API reads
        count = next((i for i, section in enumerate(sections) if section != "tools"), len(sections))
    return request.last_markable_at_or_before(count - 1) if count else None


_SECTION = attrgetter("section")


def _ordered_ttl(index: int, wanted: Ttl, existing: Mapping[int, Ttl]) -> Ttl:
    """``wanted``, unless the caller's markers force an order (1h breakpoints before 5m ones)."""
    if not existing:
        return wanted
    if any(ttl == "5m" for at, ttl in existing.items() if at < index):
        return "5m"
    if any(ttl == "1h" for at, ttl in existing.items() if at > index):
        return "1h"
    return wanted
