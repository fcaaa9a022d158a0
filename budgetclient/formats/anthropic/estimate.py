"""The input-token estimate of a built Anthropic request, incremental over a conversation.

Each block's texts are counted once (`blocks._PARTS`, by digest) and the counts of the previous
call are reused, so the pre-call budget reservation costs only the new blocks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ...blocks import Block
from ...tokens import TokenEstimate, calibrated_estimate, count_each, encoding_for
from .blocks import _PARTS, BuiltRequest, _same_kept_or_not
from .reader import anthropic_block_parts, anthropic_overhead

__all__ = ["estimate_input"]

def estimate_input(built: BuiltRequest) -> TokenEstimate:
    """The request's input-token estimate, equal to `tokens.estimate_request` of its body.

    Work is proportional to what is new: a request that extends the previous one starts from
    that one's sum, and a block's estimate is kept by digest (a new block's value is read back
    from its bytes, so a caller editing its objects in place afterwards cannot skew it).
    """
    request = built.request
    known = built.estimates
    if len(known) > 4 * len(request.blocks) + 64:
        known.clear()  # a conversation that trimmed its history: forget the dropped blocks
    blocks = _blocks_estimate(built, known)
    if blocks is None:
        blocks = _sum_estimates(built, request.blocks, known)
    built.blocks_estimate = blocks
    built.values = None
    tools, custom = built.tool_overhead
    total = blocks + anthropic_overhead(tools, built.messages_count, custom=custom)
    return calibrated_estimate("anthropic", request.model, total)


def _blocks_estimate(built: BuiltRequest, known: dict[bytes, int]) -> int | None:
    """The blocks' sum from the previous request's, when this one extends it (else None)."""
    base = built.extends
    if base is None or base.blocks_estimate is None:
        return None
    total = base.blocks_estimate
    start = len(base.request.blocks)
    old_last = base.last_assistant
    if old_last >= 0 and old_last != built.last_assistant:
        # the previous last assistant message no longer is: its thinking stops counting
        a, b = base.message_span(old_last)
        moved: list[Block] = []
        for block in base.request.blocks[a:b]:
            before = known.get(block.digest + b"!")
            if before is None:
                return None
            after = known.get(block.digest)  # what `_sum_estimates` reads for it first
            if after is None:
                moved.append(block)
                total -= before
            else:
                total += after - before
        if moved:
            total += _sum_estimates(built, moved, known, last=-1)
    return total + _sum_estimates(built, built.request.blocks[start:], known)


def _sum_estimates(
    built: BuiltRequest, blocks: Sequence[Block], known: dict[bytes, int], *, last: int | None = None
) -> int:
    """Sum of the blocks' estimates, counting the ones not known yet (together, in one pass)."""
    total = 0
    missing: list[tuple[bytes, bytes | None, int, int, int]] = []
    texts: list[str] = []
    last = built.last_assistant if last is None else last
    values = built.values or {}
    for block in blocks:
        keep = block.message is not None and block.message == last
        key = block.digest + b"!" if keep else block.digest
        tokens = known.get(key)
        if tokens is not None:
            total += tokens
            continue
        # thinking is the only content whose count depends on ``keep``: without it, both keys
        # hold the same count (a block leaving the last assistant turn is then not re-read)
        # (a string shorthand is one text block: no thinking, so no need to scan its bytes)
        same = block.shorthand or _same_kept_or_not(block.raw)
        twin = (block.digest if keep else block.digest + b"!") if same else None
        value = values.get(id(block), _UNREAD)
        if block.shorthand:  # a string turned into one text block: its text is what counts
            text = value if type(value) is str else json.loads(block.raw)["text"]
            parts, fixed = ([text] if text else []), 0
        else:
            # what to count is a function of the block's bytes: kept by digest for every
            # conversation (counting the texts goes through the token memo, like estimate_request)
            found = _PARTS.get(key)
            if found is None:
                if value is _UNREAD:
                    value = json.loads(block.raw)
                found = anthropic_block_parts(block.section == "tools", value, keep_thinking=keep)
                _PARTS.put(key, found, sum(map(len, found[0])))
            parts, fixed = found
        missing.append((key, twin, len(texts), len(texts) + len(parts), fixed))
        texts.extend(parts)
    if missing:
        counts = count_each(encoding_for(built.request.model), texts)
        for key, twin, start, end, fixed in missing:
            tokens = sum(counts[start:end]) + fixed
            known[key] = tokens
            if twin is not None:
                known[twin] = tokens
            total += tokens
    return total


_UNREAD = object()
