"""Allocation targets (share of a context window per component) and the split of a live request.

Components follow the guide's allocation table: ``system_and_tools``, ``retrieved``, ``history``,
``tool_outputs`` (current turn) and ``user_and_output`` (the user message plus the room kept for
the reply). `analyze` splits a real request body into those parts.

Which content counts as *retrieved*: Anthropic ``document`` and ``search_result`` blocks (also
inside a ``tool_result``), and any text block or OpenAI text part whose text starts with a
``<document``, ``<documents``, ``<search_result`` or ``<retrieved`` tag (the providers reject
extra keys on blocks, so the tag lives in the text, as Anthropic's long-context guidance
suggests). Pass ``is_retrieved`` to recognise your own blocks instead.

The *current turn* starts at the last user message with something other than tool results;
tool results from there on are ``tool_outputs``, earlier ones are ``history``, as are the
assistant's messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._guard import guarded
from .._log import log
from ..allocation import ALLOCATION_KEYS, GUIDE_ALLOCATION, AllocationTargets
from ..errors import PlanError
from ..formats.anthropic.reader import _anthropic_block, has_custom_tool
from ..formats.collect import (
    ANTHROPIC_TOOL_PREAMBLE,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOL_OVERHEAD,
    _Collected,
)
from ..formats.google.reader import _google_part
from ..formats.openai.reader import _openai_part
from ..tokens import calibration_factor, encoding_for
from ..tokens import count_texts as _count_texts

__all__ = [
    "COMPONENTS",
    "GUIDE_ALLOCATION",
    "AllocationRow",
    "AllocationTargets",
    "RequestAnalysis",
    "analyze",
    "check_allocation",
    "check_components",
]


COMPONENTS = ("system", "tools", "history", "retrieved", "tool_outputs", "user_message", "overhead")
"""What `analyze` reports; ``overhead`` is message framing and the tool-use preamble."""

_GROUPS: Mapping[str, tuple[str, ...]] = {
    "system_and_tools": ("system", "tools"),
    "retrieved": ("retrieved",),
    "history": ("history",),
    "tool_outputs": ("tool_outputs",),
    "user_and_output": ("user_message",),
}


@dataclass(frozen=True, slots=True)
class AllocationRow:
    component: str
    tokens: int
    share: float
    """tokens / window."""
    target_share: float | None
    """The target as a fraction of the window; None when this component has no target."""
    target_tokens: int | None
    exceeded: bool


def check_components(components: Mapping[str, int], targets: AllocationTargets) -> tuple[AllocationRow, ...]:
    """One row per allocation component: its tokens and share of the window against the target."""
    rows = []
    for name in ALLOCATION_KEYS:
        tokens = components.get(name, 0)
        has_target = name in targets.shares
        target = targets.tokens(name) if has_target else None
        rows.append(
            AllocationRow(
                component=name,
                tokens=tokens,
                share=tokens / targets.window,
                target_share=targets.shares[name] / 100 if has_target else None,
                target_tokens=target,
                exceeded=target is not None and tokens > target,
            )
        )
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class RequestAnalysis:
    """A request split into components, with tokens (calibrated estimates) and allocation rows."""

    provider: str
    model: str
    components: Mapping[str, int]
    """Tokens per `COMPONENTS` entry."""
    total: int
    window: int
    allocation: tuple[AllocationRow, ...]

    @property
    def shares(self) -> Mapping[str, float]:
        """Each component's tokens as a fraction of the window."""
        return {k: v / self.window for k, v in self.components.items()}

    @property
    def exceeded(self) -> tuple[AllocationRow, ...]:
        return tuple(row for row in self.allocation if row.exceeded)


_TAG = re.compile(r"^\s*<(document|documents|search_result|search_results|retrieved)[\s>]")
_RETRIEVED_TYPES = ("document", "search_result")

Predicate = Callable[[Any], bool]


def _tagged(block: Any) -> bool:
    if isinstance(block, str):
        return bool(_TAG.match(block))
    if isinstance(block, Mapping):
        if block.get("type") in _RETRIEVED_TYPES:
            return True
        text = block.get("text")
        return isinstance(text, str) and bool(_TAG.match(text))
    return False


class _Counter:
    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.encoding = encoding_for(model)
        self.parts: dict[str, _Collected] = {name: _Collected(provider) for name in COMPONENTS}

    def block(self, component: str, block: Any, *, keep_thinking: bool = False) -> None:
        if self.provider == "anthropic":
            _anthropic_block(self.parts[component], block, keep_thinking=keep_thinking)
        elif self.provider == "google":
            _google_part(self.parts[component], block)
        else:
            _openai_part(self.parts[component], block)

    def totals(self, factor: float) -> dict[str, int]:
        return {
            name: int((_count_texts(self.encoding, c.texts) + c.fixed) * factor + 0.5)
            for name, c in self.parts.items()
        }


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [] if value is None else [value]


def _is_tool_result(block: Any) -> bool:
    return isinstance(block, Mapping) and block.get("type") in ("tool_result", "mcp_tool_result")


def _split_anthropic(body: Mapping[str, Any], counter: _Counter, retrieved: Predicate) -> None:
    parts = counter.parts
    for block in _as_list(body.get("system")):
        counter.block("system", block)
    tools = _as_list(body.get("tools"))
    for tool in tools:
        parts["tools"].json(tool)
        parts["overhead"].fixed += TOOL_OVERHEAD["anthropic"]
    if has_custom_tool(tools):
        parts["overhead"].fixed += ANTHROPIC_TOOL_PREAMBLE
    messages = [m for m in _as_list(body.get("messages")) if isinstance(m, Mapping)]
    turn_start = max(
        (
            i
            for i, m in enumerate(messages)
            if m.get("role") == "user" and not all(_is_tool_result(b) for b in _as_list(m.get("content")))
        ),
        default=len(messages),
    )
    last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    for i, message in enumerate(messages):
        parts["overhead"].fixed += MESSAGE_OVERHEAD["anthropic"]
        current = i >= turn_start
        keep = i == last_assistant
        for block in _as_list(message.get("content")):
            if retrieved(block):
                counter.block("retrieved", block)
            elif _is_tool_result(block):
                home = "tool_outputs" if current else "history"
                for inner in _as_list(block.get("content")):
                    counter.block("retrieved" if retrieved(inner) else home, inner)
            elif i == turn_start and message.get("role") == "user":
                counter.block("user_message", block)
            else:
                counter.block("history", block, keep_thinking=keep)
    parts["overhead"].fixed += REPLY_PRIMING["anthropic"]


def _split_openai(body: Mapping[str, Any], counter: _Counter, retrieved: Predicate) -> None:
    parts = counter.parts
    messages = [m for m in _as_list(body.get("messages")) if isinstance(m, Mapping)]
    turn_start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
    for i, message in enumerate(messages):
        role = message.get("role")
        parts["overhead"].fixed += MESSAGE_OVERHEAD["openai"]
        parts["overhead"].text(role)
        if role in ("system", "developer"):
            home = "system"
        elif role in ("tool", "function"):
            home = "tool_outputs" if i > turn_start else "history"
        elif i == turn_start:
            home = "user_message"
        else:
            home = "history"
        for part in _as_list(message.get("content")):
            counter.block("retrieved" if home != "system" and retrieved(part) else home, part)
        parts[home].text(message.get("refusal"))
        for call in _as_list(message.get("tool_calls")) + _as_list(message.get("function_call")):
            function = call.get("function", call) if isinstance(call, Mapping) else {}
            parts[home].text(function.get("name"))
            parts[home].text(function.get("arguments"))
    for tool in _as_list(body.get("tools")) + _as_list(body.get("functions")):
        parts["tools"].json(tool)
        parts["overhead"].fixed += TOOL_OVERHEAD["openai"]
    parts["overhead"].fixed += REPLY_PRIMING["openai"]


def _split_responses(body: Mapping[str, Any], counter: _Counter, retrieved: Predicate) -> None:
    """An OpenAI Responses body: ``instructions`` and ``input`` items read as chat messages."""
    messages: list[Mapping[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    for item in [{"role": "user", "content": items}] if isinstance(items, str) else _as_list(items):
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "function_call_output" or kind == "custom_tool_call_output":
            messages.append({"role": "tool", "content": _as_text(item.get("output"))})
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments", item.get("input"))
            call = {"function": {"name": item.get("name"), "arguments": _as_text(arguments)}}
            messages.append({"role": "assistant", "tool_calls": [call]})
        elif "role" in item:
            messages.append(item)
        else:  # reasoning, web search results and other items: history as they are
            messages.append({"role": "assistant", "content": [item]})
    tools = [t for t in _as_list(body.get("tools")) if isinstance(t, Mapping)]
    _split_openai({"messages": messages, "tools": tools}, counter, retrieved)


def _split_gemini(body: Mapping[str, Any], counter: _Counter, retrieved: Predicate) -> None:
    """A Gemini ``generateContent`` body: ``systemInstruction``, ``contents`` and tool declarations."""
    parts = counter.parts
    system = body.get("systemInstruction", body.get("system_instruction"))
    if system is not None:
        parts["overhead"].fixed += MESSAGE_OVERHEAD["google"]  # the system instruction is a content too
    for part in _as_list(system.get("parts") if isinstance(system, Mapping) else system):
        counter.block("system", part)
    contents = [c for c in _as_list(body.get("contents")) if isinstance(c, Mapping)]

    def responses_only(content: Mapping[str, Any]) -> bool:
        return all(
            isinstance(p, Mapping) and ("functionResponse" in p or "function_response" in p)
            for p in _as_list(content.get("parts"))
        )

    turn_start = max(
        (i for i, c in enumerate(contents) if c.get("role", "user") == "user" and not responses_only(c)),
        default=len(contents),
    )
    for i, content in enumerate(contents):
        parts["overhead"].fixed += MESSAGE_OVERHEAD["google"]
        current = i >= turn_start
        for part in _as_list(content.get("parts")):
            if retrieved(part):
                counter.block("retrieved", part)
            elif isinstance(part, Mapping) and ("functionResponse" in part or "function_response" in part):
                counter.block("tool_outputs" if current else "history", part)
            elif i == turn_start:
                counter.block("user_message", part)
            else:
                counter.block("history", part)
    for tool in _as_list(body.get("tools")):
        if not isinstance(tool, Mapping):
            continue
        for declaration in _as_list(tool.get("functionDeclarations", tool.get("function_declarations"))):
            parts["tools"].json(declaration)
            parts["overhead"].fixed += TOOL_OVERHEAD["google"]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else repr(value)


def _is_responses(body: Mapping[str, Any]) -> bool:
    return "input" in body and "messages" not in body


def _detect(body: Mapping[str, Any]) -> str:
    if "contents" in body:
        return "google"
    if _is_responses(body):
        return "openai"
    if "system" in body or any(
        isinstance(t, Mapping) and "input_schema" in t for t in _as_list(body.get("tools"))
    ):
        return "anthropic"
    roles = {m.get("role") for m in _as_list(body.get("messages")) if isinstance(m, Mapping)}
    if roles & {"system", "developer", "tool", "function"}:
        return "openai"
    if any(isinstance(t, Mapping) and "function" in t for t in _as_list(body.get("tools"))):
        return "openai"
    return "anthropic"


def analyze(
    request: Mapping[str, Any],
    *,
    provider: str | None = None,
    model: str | None = None,
    targets: AllocationTargets | None = None,
    output_reserve: int = 0,
    is_retrieved: Predicate | None = None,
) -> RequestAnalysis:
    """Split a request body into system, tools, history, retrieved, tool outputs and user message.

    ``provider`` is ``"anthropic"`` (Messages), ``"openai"`` (chat.completions or Responses) or
    ``"google"`` (Gemini ``generateContent``), detected from the body when omitted. Tokens are the
    offline estimate with the model's learnt calibration, so they add up to
    `budgetclient.tokens.estimate_tokens` for the same body. ``output_reserve``
    (e.g. the request's ``max_tokens``) is added to ``user_and_output`` for the allocation check.
    """
    if not isinstance(request, Mapping):
        raise PlanError(f"analyze() takes a request body (a mapping), got {type(request).__name__}")
    name = (provider or _detect(request)).lower()
    if name not in _SPLITTERS:
        raise PlanError(f"analyze() supports provider 'anthropic', 'openai' or 'google', got {provider!r}")
    model_name = model if model is not None else str(request.get("model") or "")
    counter = _Counter(name, model_name)
    predicate = is_retrieved or _tagged
    if name == "openai" and _is_responses(request):
        _split_responses(request, counter, predicate)
    else:
        _SPLITTERS[name](request, counter, predicate)
    components = counter.totals(calibration_factor(name, model_name))
    targets = targets or AllocationTargets.guide_default()
    grouped = {group: sum(components[c] for c in members) for group, members in _GROUPS.items()}
    grouped["user_and_output"] += output_reserve
    return RequestAnalysis(
        provider=name,
        model=model_name,
        components=MappingProxyType(components),
        total=sum(components.values()),
        window=targets.window,
        allocation=check_components(grouped, targets),
    )


_SPLITTERS: Mapping[str, Callable[[Mapping[str, Any], _Counter, Predicate], None]] = {
    "anthropic": _split_anthropic,
    "openai": _split_openai,
    "google": _split_gemini,
}


def check_allocation(
    provider: str,
    body: Mapping[str, Any],
    targets: AllocationTargets | None = None,
    *,
    model: str | None = None,
) -> list[AllocationRow]:
    """The per-call check: log ``plan.allocation_exceeded`` for each component over its target.

    Returns the exceeded rows. Never raises: a body it cannot read is logged as
    ``plan.allocation_check_failed`` and yields no rows, so it is safe on the request path.
    """
    analysis = None
    with guarded("plan.allocation_check_failed", provider=provider):
        analysis = analyze(body, provider=provider, model=model, targets=targets)
    if analysis is None:
        return []
    for row in analysis.exceeded:
        log.warning(
            "plan.allocation_exceeded",
            provider=analysis.provider,
            model=analysis.model,
            component=row.component,
            tokens=row.tokens,
            target_tokens=row.target_tokens,
            share=round(row.share, 4),
            target_share=row.target_share,
            window=analysis.window,
        )
    return list(analysis.exceeded)
