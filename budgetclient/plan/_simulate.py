"""A plan's session as a synthetic trace, replayed on the simulated Anthropic cache with our placement.

This is the cache benchmark's cost model (`budgetclient.cachesim.replay.run_trace`), so a plan's
``budgetclient`` figure and the benchmark agree on what placement saves.
"""

from __future__ import annotations

from typing import Any

from ..cachesim.replay import run_trace, usage_of
from ..cachesim.tokenizer import block_tokens
from ..cachesim.traces import MODEL, Trace, TraceCall, TraceText
from ..usage import Usage
from ._schema import PlanSpec

__all__ = ["plan_trace", "simulate_budgetclient"]

CALL_GAP_S = 5.0
"""Seconds between the calls of one turn (a tool loop)."""


def _tool(text: TraceText, index: int, tokens: int) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": f"tool_{index}",
        "description": "",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    }
    tool["description"] = text.words(max(tokens - block_tokens(tool), 1))  # the JSON counts too
    return tool


def _text(text: TraceText, tokens: int) -> dict[str, Any]:
    return {"type": "text", "text": text.words(tokens)}


def plan_trace(spec: PlanSpec, model: str) -> Trace:
    """The plan's session: one body per call, sized in the fake tokenizer's tokens (one word, one token).

    Fixed components are system blocks and tools; each turn's user message carries the retrieved
    chunks and tool outputs first, then the question (as the guide's session trace); a finished
    turn leaves its question and an answer sized so history matches ``history_at``.
    """
    text = TraceText(17)
    fixed: dict[str, Any] = {}
    if spec.tools:
        fixed["tools"] = [_tool(text, i, spec.tool_tokens) for i in range(spec.tools)]
    system = [_text(text, n) for n in (spec.system_prompt, spec.safety, spec.persistent_context) if n]
    if system:
        fixed["system"] = system
    history: list[dict[str, Any]] = []
    calls: list[TraceCall] = []
    for turn in range(1, spec.turns + 1):
        question = _text(text, max(spec.user_message, 1))
        extra = [_text(text, spec.chunk_tokens) for _ in range(spec.retrieved_chunks) if spec.chunk_tokens]
        extra += [
            _text(text, spec.tool_output_tokens) for _ in range(spec.tool_outputs) if spec.tool_output_tokens
        ]
        messages = [*history, {"role": "user", "content": [*extra, question]}]
        body = {"model": model, "max_tokens": max(spec.output_tokens, 1), **fixed, "messages": messages}
        for call in range(spec.calls_per_turn):
            gap = 0.0 if not calls else (CALL_GAP_S if call else spec.gap_seconds)
            calls.append(TraceCall(body, gap))
        if turn < spec.turns:
            grow = spec.history_at(turn + 1) - spec.history_at(turn)
            if grow >= 2:
                asked = min(spec.user_message, grow - 1) if spec.user_message else 1
                kept = question if asked == max(spec.user_message, 1) else _text(text, asked)
                history += [
                    {"role": "user", "content": [kept]},
                    {"role": "assistant", "content": [_text(text, grow - asked)]},
                ]
            elif grow == 1:
                history.append({"role": "assistant", "content": [_text(text, 1)]})
    return Trace(f"plan:{spec.name}", "a budget plan's session", tuple(calls), model)


def simulate_budgetclient(spec: PlanSpec) -> dict[str, tuple[Usage, ...]]:
    """Input usage per call with budgetclient's placement, per Claude model in the plan (``"*"``: others)."""
    wanted = {m for m in spec.models if m.lower().startswith("claude")}
    if len(wanted) < len(set(spec.models)):
        wanted.add("*")
    out: dict[str, tuple[Usage, ...]] = {}
    for model in wanted:
        run = run_trace(plan_trace(spec, MODEL if model == "*" else model), "budgetclient")
        out[model] = tuple(usage_of(u) for u in run.usages)
    return out
