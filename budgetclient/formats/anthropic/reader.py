"""An Anthropic Messages body read for the token estimate: the texts to count, in cache order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..collect import (
    ANTHROPIC_TOOL_PREAMBLE,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOL_OVERHEAD,
    _as_list,
    _Collected,
    _media,
)

__all__ = [
    "anthropic_block_parts",
    "anthropic_overhead",
    "collect_anthropic",
    "has_custom_tool",
    "last_assistant_index",
]


def _anthropic_block(out: _Collected, block: Any, *, keep_thinking: bool) -> None:
    if isinstance(block, str):
        out.text(block)
        return
    if not isinstance(block, Mapping):
        return
    kind = block.get("type")
    if kind == "text":
        out.text(block.get("text"))
    elif kind == "image":
        out.fixed += IMAGE_TOKENS["anthropic"]
    elif kind == "document":
        out.text(block.get("title"))
        out.text(block.get("context"))
        source = block.get("source") or {}
        if source.get("type") == "text":
            out.text(source.get("data"))
        elif source.get("type") == "content":
            for inner in _as_list(source.get("content")):
                _anthropic_block(out, inner, keep_thinking=keep_thinking)
        else:
            _media(out, source.get("media_type") or "application/pdf", source.get("data"))
    elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        out.text(block.get("name"))
        out.json(block.get("input"))
    elif kind in ("tool_result", "mcp_tool_result"):
        for inner in _as_list(block.get("content")):
            _anthropic_block(out, inner, keep_thinking=keep_thinking)
    elif kind == "search_result":
        out.text(block.get("title"))
        out.text(block.get("source"))
        for inner in _as_list(block.get("content")):
            _anthropic_block(out, inner, keep_thinking=keep_thinking)
    elif kind == "thinking":
        # Thinking from earlier turns is stripped by the API; only the last assistant turn counts.
        if keep_thinking:
            out.text(block.get("thinking"))
    elif kind == "redacted_thinking":
        return
    else:
        out.unknown(block)


def collect_anthropic(body: Mapping[str, Any]) -> _Collected:
    # cache order (tools, system, messages): the order `anthropic_block_parts` callers count in
    out = _Collected("anthropic")
    tools = _as_list(body.get("tools"))
    for tool in tools:
        out.json(tool)
    for block in _as_list(body.get("system")):
        _anthropic_block(out, block, keep_thinking=False)
    messages = [m for m in _as_list(body.get("messages")) if isinstance(m, Mapping)]
    last_assistant = last_assistant_index(messages)
    for i, message in enumerate(messages):
        for block in _as_list(message.get("content")):
            _anthropic_block(out, block, keep_thinking=i == last_assistant)
    out.fixed += anthropic_overhead(len(tools), len(messages), custom=has_custom_tool(tools))
    return out


def last_assistant_index(messages: list[Any]) -> int:
    """Index of the last assistant message (-1 if none): only its thinking counts as input."""
    return max(
        (i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "assistant"),
        default=-1,
    )


def has_custom_tool(tools: list[Any]) -> bool:
    """Whether an Anthropic request declares a client tool (which adds the tool-use preamble)."""
    return any(isinstance(t, Mapping) and t.get("type") in (None, "custom") for t in tools)


def anthropic_overhead(tools: int, messages: int, *, custom: bool) -> int:
    """Tokens an Anthropic request adds around its blocks: per tool, the tool-use preamble (with
    a ``custom`` tool among them), per message, and the reply priming."""
    fixed = TOOL_OVERHEAD["anthropic"] * tools + MESSAGE_OVERHEAD["anthropic"] * messages
    if custom:
        fixed += ANTHROPIC_TOOL_PREAMBLE
    return fixed + REPLY_PRIMING["anthropic"]


def anthropic_block_parts(tool: bool, value: Any, *, keep_thinking: bool = False) -> tuple[list[str], int]:
    """The texts to count and the fixed tokens of one Anthropic block: a tool (``tool=True``), a
    system block or a message content block, exactly as `estimate_request` counts it, so a caller
    that keeps per-block results can estimate an append-only conversation from its new blocks."""
    out = _Collected("anthropic")
    if tool:
        out.json(value)
    else:
        _anthropic_block(out, value, keep_thinking=keep_thinking)
    return out.texts, out.fixed
