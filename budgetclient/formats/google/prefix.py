"""Gemini's stable prefix as cacheable blocks, for drift detection and the managed cache's key.

The stable prefix is what a managed ``cachedContents`` entry would hold: the system instruction,
the tools and the tool config. Each becomes a `blocks.Block` named like the request
(``systemInstruction.parts[0]``, ``tools[0].functionDeclarations[2]``, ``toolConfig``) whose bytes
are the ones sent, so `drift.explain_drift` locates a change to a field and a byte offset, with
the same causes and secret masking as every other provider. Pure functions only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ...blocks import Block, Section, block_digest, raw_bytes

__all__ = ["PREFIX_FIELDS", "prefix_blocks", "with_tokens"]

PREFIX_FIELDS = ("systemInstruction", "tools", "toolConfig")
"""Body fields Gemini forbids next to ``cachedContent``: exactly what a managed entry takes over."""


def _block(path: str, section: Section, value: Any) -> Block:
    raw = raw_bytes(value)
    return Block(path=path, section=section, raw=raw, digest=block_digest(raw), tokens=0, markable=False)


def prefix_blocks(body: Mapping[str, Any]) -> list[Block]:
    """The stable prefix of a ``generateContent`` body, block by block, in the order Gemini reads it.

    ``tokens`` is left 0: `with_tokens` spreads a known prefix size over the blocks when needed.
    """
    blocks: list[Block] = []
    system = body.get("systemInstruction")
    if isinstance(system, Mapping) and isinstance(system.get("parts"), list):
        blocks.extend(
            _block(f"systemInstruction.parts[{i}]", "system", p) for i, p in enumerate(system["parts"])
        )
    elif system is not None:
        blocks.append(_block("systemInstruction", "system", system))
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else [] if tools is None else [tools]):
        decls = tool.get("functionDeclarations") if isinstance(tool, Mapping) else None
        if isinstance(decls, list) and len(tool) == 1:
            blocks.extend(
                _block(f"tools[{i}].functionDeclarations[{j}]", "tools", d) for j, d in enumerate(decls)
            )
        else:
            blocks.append(_block(f"tools[{i}]", "tools", tool))
    if body.get("toolConfig") is not None:
        blocks.append(_block("toolConfig", "tools", body["toolConfig"]))
    return blocks


def with_tokens(blocks: Sequence[Block], total_tokens: int) -> list[Block]:
    """``blocks`` with ``total_tokens`` spread over them by size (summing exactly to the total)."""
    total_bytes = sum(len(b.raw) for b in blocks)
    if not total_bytes:
        return list(blocks)
    spread: list[Block] = []
    done_bytes = done_tokens = 0
    for block in blocks:
        done_bytes += len(block.raw)
        upto = round(total_tokens * done_bytes / total_bytes)
        spread.append(replace(block, tokens=upto - done_tokens))
        done_tokens = upto
    return spread
