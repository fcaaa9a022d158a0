"""The fake backends' deterministic tokenizer: simple enough to compute expectations by hand.

A token is a run of word characters (``\\w+``) or one punctuation mark; whitespace is free.
``"Hello, world!"`` is 4 tokens and ``"word " * 1100`` is 1,100. Non-text content (tool
definitions, images, tool calls and results) is counted over its compact JSON rendering without
``cache_control``, so a cache marker never changes a count. Real tokenizers differ; what matters
for the fakes is that every count is reproducible and easy to reason about in a test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["block_bytes", "block_tokens", "count_tokens", "strip_cache_control"]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Number of word runs and punctuation marks in ``text``."""
    return sum(1 for _ in _TOKEN.finditer(text))


def strip_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    """The block without its ``cache_control`` marker (markers never change the prompt)."""
    return {key: value for key, value in block.items() if key != "cache_control"}


def block_bytes(block: Mapping[str, Any]) -> bytes:
    """Compact JSON of the block without ``cache_control``, keys in the order they were sent.

    Key order is kept on purpose: the real API renders blocks as sent, so reordered keys (say in a
    ``tool_use`` input) break the cache, and the fake must reproduce that.
    """
    return json.dumps(strip_cache_control(block), ensure_ascii=False, separators=(",", ":")).encode()


def block_tokens(block: Mapping[str, Any] | str) -> int:
    """Tokens of one prompt block: a text block's text, otherwise its JSON without ``cache_control``.

    A plain string (a ``system`` or message ``content`` string) counts as one text block; tool
    definitions are counted the same way as non-text blocks.
    """
    if isinstance(block, str):
        return count_tokens(block)
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return count_tokens(block["text"])
    return count_tokens(block_bytes(block).decode())
