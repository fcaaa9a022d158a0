"""The pre-call token estimate of a Chat Completions conversation, walking only what is new.

`estimate.estimate_request` reads the whole body on every call: each message, and each tool as
JSON. A conversation resends its earlier messages and tools unchanged, so the estimate of the
previous call is kept per conversation (`ChatEstimates`): the leading messages equal to the
previous call's (``is`` or ``==``: the SDK copies the dicts but keeps the caller's strings, so the
comparison is mostly pointer checks) and an equal tool list keep their counts, and only the rest
is read and counted. The sum is what the full read gives: the same texts, counted by the same
memoised counter, and the same fixed overheads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..estimate import estimate_request
from ..formats.collect import MESSAGE_OVERHEAD, REPLY_PRIMING, _Collected
from ..formats.openai.reader import _collect_openai_chat
from ..tokens import TokenEstimate, calibrated_estimate, count_each, encoding_for

__all__ = ["ChatEstimates"]

_MESSAGE_OVERHEAD = MESSAGE_OVERHEAD["openai"]
_CONVERSATIONS = 32
"""Conversations whose last estimate is kept, per client."""


@dataclass(slots=True)
class _Last:
    """One conversation's last estimate: its messages and tools, and their raw token counts."""

    messages: list[Any]
    counts: list[int]
    tools: Any
    tools_print: bytes | None
    tools_raw: int


class ChatEstimates:
    """The last chat estimate of each recent conversation of one client."""

    def __init__(self) -> None:
        self._last: OrderedDict[str, _Last] = OrderedDict()
        self._lock = threading.Lock()

    def estimate(
        self, conversation: str | None, body: Mapping[str, Any], model: str, tools_print: bytes | None = None
    ) -> TokenEstimate:
        """``estimate_request("openai", body, model)``, reading only what the conversation's last
        call did not send.

        ``tools_print``: the body's tools as `formats.openai.prefix.RequestPrints` printed them; an
        equal print is an equal tools list (compared as bytes, not walked again)."""
        messages = body.get("messages")
        if (
            conversation is None
            or type(messages) is not list
            or "functions" in body
            or "response_format" in body
        ):
            return estimate_request("openai", body, model)
        tools = body.get("tools")
        with self._lock:
            last = self._last.get(conversation)
        kept = 0
        if last is not None:
            known = min(len(messages), len(last.messages))
            # the usual case, an appended conversation, compared at C speed (each ``is``, then ``==``)
            if messages[:known] == last.messages[:known]:
                kept = known
            else:
                for now, then in zip(messages, last.messages, strict=False):
                    if now is not then and now != then:
                        break
                    kept += 1
        # the new messages' texts, each message's (first text, fixed tokens): a plain-text turn (two
        # string fields) read inline as `_collect_openai_chat` reads it, any other through it
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for message in messages[kept:]:
            if type(message) is dict and len(message) == 2:
                role, content = message.get("role"), message.get("content")
                if type(role) is str and type(content) is str:
                    spans.append((len(texts), _MESSAGE_OVERHEAD))
                    if role:
                        texts.append(role)
                    if content:
                        texts.append(content)
                    continue
            out = _Collected("openai")
            _collect_openai_chat({"messages": [message]}, out)
            spans.append((len(texts), out.fixed))
            texts += out.texts
        at = len(texts)
        if last is not None and _same_tools(tools, tools_print, last):
            tools_raw, tool_fixed = last.tools_raw, 0
        else:
            tool_part = _Collected("openai")
            _collect_openai_chat({"tools": tools}, tool_part)
            tools_raw, tool_fixed = -1, tool_part.fixed
            texts += tool_part.texts
        counts = count_each(encoding_for(model), texts)
        new_counts: list[int] = []
        for index in range(len(spans)):
            start, fixed = spans[index]
            end = spans[index + 1][0] if index + 1 < len(spans) else at
            new_counts.append(sum(counts[start:end]) + fixed)
        if tools_raw < 0:
            tools_raw = sum(counts[at:]) + tool_fixed
        message_counts = (last.counts[:kept] if last is not None else []) + new_counts
        with self._lock:
            self._last[conversation] = _Last(list(messages), message_counts, tools, tools_print, tools_raw)
            self._last.move_to_end(conversation)
            while len(self._last) > _CONVERSATIONS:
                self._last.popitem(last=False)
        raw = sum(message_counts) + tools_raw + REPLY_PRIMING["openai"]
        return calibrated_estimate("openai", model, raw)


def _same_tools(tools: Any, tools_print: bytes | None, last: _Last) -> bool:
    """Whether ``tools`` are the tools ``last`` counted: by their prints when both have one."""
    if tools_print is not None and last.tools_print is not None:
        return tools_print == last.tools_print
    return tools is last.tools or bool(tools == last.tools)
