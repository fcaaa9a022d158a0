"""What a fake model answers: one reply type for every fake backend (text, tool calls, or both)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FakeReply", "as_reply"]


@dataclass(frozen=True, slots=True)
class FakeReply:
    """What the fake model answers: text, tool calls, or both."""

    text: str = ""
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """``(function name, arguments)`` pairs."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens, billed as output."""


def as_reply(value: FakeReply | str) -> FakeReply:
    """``value`` as a `FakeReply` (a string is a text answer)."""
    return value if isinstance(value, FakeReply) else FakeReply(text=str(value))
