"""Conversation history management: a sliding window by tokens, with optional summaries of what it drops.

Without it, history is the largest cost driver of a long session (the guide's second
optimisation). Two properties matter beyond the token count:

- **Tool pairs stay whole.** The window only ever starts at a user message that opens a turn (one
  with something other than tool results), so no ``tool_result`` loses its ``tool_use`` and no
  OpenAI ``tool`` message loses its assistant ``tool_calls``.
- **The prefix stays cache-stable.** Trimming a little on every call would change the first
  message each time and throw away the prompt cache. `HistoryWindow` instead lets history grow
  to ``max_tokens`` and then cuts in one coarse step down to ``trim_to`` of it; between trims
  every call's messages extend the previous call's, so the cached prefix keeps being read.

Summaries: give ``summarize(previous_summary, dropped_messages) -> str`` (or build one with
`summarizer(client, model)`); it runs once per trim and its text leads the window as a user
message until the next trim. With a budgetclient client the summary call is an ordinary call,
metered under whatever task is running.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ConfigurationError
from .estimate import estimate_request
from .formats.collect import REPLY_PRIMING

__all__ = ["HistoryWindow", "Summarize", "is_turn_start", "render_transcript", "summarizer", "trim_history"]

Summarize = Callable[[str | None, Sequence[Mapping[str, Any]]], str]
"""(previous summary or None, messages being dropped) -> the new summary text."""
Count = Callable[[Mapping[str, Any]], int]

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
SUMMARY_INSTRUCTIONS = (
    "You compress conversation history for an assistant that will continue the conversation. Keep "
    "decisions, facts, names, numbers, open questions and tool results that are still relevant; drop "
    "pleasantries and superseded details. Write plain prose, at most a few hundred words."
)


def _blocks(message: Mapping[str, Any]) -> list[Any]:
    content = message.get("content")
    if isinstance(content, list | tuple):
        return list(content)
    return [] if content is None else [content]


def is_turn_start(message: Mapping[str, Any]) -> bool:
    """A user message with something besides tool results: a window may safely start here."""
    if message.get("role") != "user":
        return False
    blocks = _blocks(message)
    return not blocks or any(
        not (isinstance(b, Mapping) and b.get("type") in ("tool_result", "mcp_tool_result")) for b in blocks
    )


def _default_count(provider: str, model: str | None) -> Count:
    priming = REPLY_PRIMING.get(provider, 0)

    def count(message: Mapping[str, Any]) -> int:
        return max(estimate_request(provider, {"messages": [message]}, model).tokens - priming, 0)

    return count


def trim_history(
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int,
    *,
    provider: str = "anthropic",
    model: str | None = None,
    count: Count | None = None,
) -> list[Mapping[str, Any]]:
    """Stateless trim: the shortest-dropping suffix within ``max_tokens`` that starts a turn.

    It cuts on every call that is over budget, so consecutive calls rarely share a prefix; prefer
    `HistoryWindow` in a session. Keeps at least the last turn even if that alone is too big.
    """
    counter = count or _default_count(provider, model)
    sizes = [counter(m) for m in messages]
    total = sum(sizes)
    if total <= max_tokens:
        return list(messages)
    starts = [i for i, m in enumerate(messages) if is_turn_start(m)]
    for start in starts:
        total_from = sum(sizes[start:])
        if total_from <= max_tokens:
            return list(messages[start:])
    return list(messages[starts[-1] :]) if starts else list(messages)


class HistoryWindow:
    """A sliding token window over one conversation, trimmed in coarse, cache-friendly steps.

    Call `apply` with the whole conversation before every request (keep appending to your own
    list); send what it returns. ``max_tokens`` bounds the history it returns whenever a turn
    boundary allows; after a trim the history is at most ``trim_to x max_tokens`` (summary
    included), leaving room to grow before the next trim.
    """

    def __init__(
        self,
        max_tokens: int,
        *,
        trim_to: float = 0.5,
        summarize: Summarize | None = None,
        provider: str = "anthropic",
        model: str | None = None,
        count: Count | None = None,
    ) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ConfigurationError(f"HistoryWindow max_tokens must be a positive int, got {max_tokens!r}")
        if not 0 < trim_to < 1:
            raise ConfigurationError(
                "HistoryWindow trim_to must be between 0 and 1 (the share kept after a trim), "
                f"got {trim_to!r}"
            )
        self.max_tokens = max_tokens
        self.trim_to = trim_to
        self.summarize = summarize
        self._count = count or _default_count(provider, model)
        self.cut = 0
        """How many leading messages of the conversation the window has dropped."""
        self.summary: str | None = None
        self.trims = 0
        self._summary_message: dict[str, Any] | None = None
        self._first: Mapping[str, Any] | None = None

    def reset(self) -> None:
        """Forget the cut and summary (a new conversation)."""
        self.cut, self.summary, self.trims, self._summary_message, self._first = 0, None, 0, None, None

    def _head(self) -> list[dict[str, Any]]:
        return [self._summary_message] if self._summary_message is not None else []

    def apply(self, messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The messages to send now: [summary message,] then the conversation from the current cut."""
        if self.cut > len(messages) or (
            self.cut and messages[self.cut - 1] is not self._first and messages[self.cut - 1] != self._first
        ):
            self.reset()  # not the conversation this window was trimming
        sizes = [self._count(m) for m in messages[self.cut :]]
        head = self._count(self._summary_message) if self._summary_message is not None else 0
        if head + sum(sizes) > self.max_tokens:
            self._trim(messages, sizes)
        return [*self._head(), *messages[self.cut :]]

    def _trim(self, messages: Sequence[Mapping[str, Any]], sizes: list[int]) -> None:
        low_water = self.max_tokens * self.trim_to
        starts = [i for i in range(self.cut + 1, len(messages)) if is_turn_start(messages[i])]
        if not starts:
            return  # one turn fills the window: nothing can go without splitting it
        chosen = starts[-1]
        head = self._count(self._summary_message) if self._summary_message is not None else 0
        for start in starts:
            if head + sum(sizes[start - self.cut :]) <= low_water:
                chosen = start
                break
        dropped = messages[self.cut : chosen]
        if self.summarize is not None:
            self.summary = self.summarize(self.summary, list(dropped))
            self._summary_message = {"role": "user", "content": SUMMARY_PREFIX + self.summary}
        self.cut = chosen
        self._first = messages[chosen - 1]
        self.trims += 1


# --- summaries through a client -------------------------------------------------------------------


def render_transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """Plain text of messages for a summary prompt; tool calls and results as compact JSON."""
    lines = []
    for message in messages:
        role = str(message.get("role", "user"))
        for block in _blocks(message):
            if isinstance(block, str):
                lines.append(f"{role}: {block}")
            elif isinstance(block, Mapping) and block.get("type") == "text":
                lines.append(f"{role}: {block.get('text', '')}")
            else:
                lines.append(
                    f"{role}: {json.dumps(block, ensure_ascii=False, separators=(',', ':'), default=str)}"
                )
        for call in message.get("tool_calls") or ():
            lines.append(f"{role} tool call: {json.dumps(call, ensure_ascii=False, default=str)}")
    return "\n".join(lines)


def summarizer(
    client: Any, model: str, *, max_tokens: int = 1024, instructions: str = SUMMARY_INSTRUCTIONS
) -> Summarize:
    """A `Summarize` that asks ``model`` through ``client`` (Anthropic or OpenAI style, sync).

    Use a budgetclient client (``bc.Anthropic()``, ``bc.OpenAI()``) and the call is metered under
    the task running at trim time, like any other call; route it to a cheaper model with
    `budgetclient.models.Router`.
    """

    def summarize(previous: str | None, dropped: Sequence[Mapping[str, Any]]) -> str:
        prompt = render_transcript(dropped)
        if previous:
            prompt = f"Earlier summary:\n{previous}\n\nConversation since then:\n{prompt}"
        if hasattr(client, "messages"):
            response = client.messages.create(
                model=model,
                max_tokens=max_tokens,
                system=instructions,
                messages=[{"role": "user", "content": prompt}],
            )
            return "".join(
                getattr(b, "text", "") for b in response.content if getattr(b, "type", "") == "text"
            )
        if hasattr(client, "chat"):
            response = client.chat.completions.create(
                model=model,
                max_tokens=max_tokens,
                messages=[{"role": "system", "content": instructions}, {"role": "user", "content": prompt}],
            )
            return str(response.choices[0].message.content or "")
        raise ConfigurationError(
            f"summarizer needs an Anthropic or OpenAI style client, got {type(client).__name__}; "
            "or pass your own summarize(previous, dropped) -> str"
        )

    return summarize
