"""Reference conversation traces: scripted request bodies and the time between calls.

A `Trace` is a scripted conversation: the request body of every call (no cache markers) and the
time since the previous call. The text is deterministic filler counted by the simulation's
tokenizer (`cachesim.tokenizer`: one word = one token), so every size below is exact in its terms.
The cache benchmark, the planner (`plan.plan_trace`), the demo and the tests replay them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .tokenizer import block_tokens

__all__ = [
    "MODEL",
    "Trace",
    "TraceCall",
    "TraceText",
    "guide_session_trace",
    "agent_traces",
    "long_gaps_trace",
    "multi_agent_trace",
    "periodic_trace",
    "rag_trace",
    "reference_traces",
    "summarised_trace",
    "tool_change_trace",
    "tool_loop_trace",
    "wide_turns_trace",
]

MODEL = "claude-sonnet-4-6"


@dataclass(frozen=True, slots=True)
class TraceCall:
    body: Mapping[str, Any]
    """The request as the application builds it: no cache markers."""
    gap_s: float
    """Seconds since the previous call started (0 for the first)."""


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    description: str
    calls: tuple[TraceCall, ...]
    model: str = MODEL
    history_gaps: tuple[float, ...] = ()
    """Gaps between calls that earlier runs of the same task showed (what the ledger holds)."""


_WORDS = [
    "alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "vector", "matrix", "tensor", "signal",
    "router", "ledger", "budget", "cache", "prefix", "token", "stream", "window", "policy", "schema",
    "record", "buffer", "kernel", "socket", "thread", "module", "invoice", "ticket", "account", "region",
    "market", "report", "metric", "sample", "driver", "filter", "parser", "adapter",
]


class TraceText:
    """Deterministic filler text; ``words(n)`` is exactly ``n`` tokens for the fake tokenizer."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(n))

    def between(self, lo: int, hi: int) -> str:
        return self.words(self.rng.randint(lo, hi))


def _fixed_prefix(text: TraceText, *, system_tokens: int = 400, tools: int = 8, tool_tokens: int = 200,
                  safety_tokens: int = 200) -> dict[str, Any]:
    """The guide's fixed components: system prompt, tool definitions, safety instructions."""
    tool_defs = []
    for i in range(tools):
        tool = {
            "name": f"tool_{i}",
            "description": "",
            "input_schema": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": text.words(4)}},
                "required": ["query"],
            },
        }
        tool["description"] = text.words(max(tool_tokens - block_tokens(tool), 1))  # JSON counts too
        tool_defs.append(tool)
    return {
        "tools": tool_defs,
        "system": [
            {"type": "text", "text": text.words(system_tokens)},
            {"type": "text", "text": text.words(safety_tokens)},
        ],
    }


def _body(fixed: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 1024, **fixed, "messages": [dict(m) for m in messages]}


def _tool_step(text: TraceText, step: int, *, result_tokens: tuple[int, int]) -> list[dict[str, Any]]:
    """One agent step: an assistant tool call and the user's tool result."""
    use_id = f"toolu_{step:05d}"
    return [
        {"role": "assistant", "content": [
            {"type": "text", "text": text.words(30)},
            {"type": "tool_use", "id": use_id, "name": f"tool_{step % 8}", "input": {"query": text.words(8)}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use_id, "content": text.between(*result_tokens)},
        ]},
    ]


def _gap(text: TraceText, k: int, lo: int, hi: int) -> float:
    """Seconds before call ``k``: 0 for the first, else a whole number from ``lo`` to ``hi``."""
    return 0.0 if k == 0 else float(text.rng.randint(lo, hi))


Messages = list[dict[str, Any]]


def _agent_loop(
    text: TraceText,
    calls: int,
    prefix: Callable[[int], Mapping[str, Any]],
    *,
    step: Callable[[int], Messages] | None = None,
    rewrite: Callable[[int, Messages], Messages] | None = None,
    gaps: tuple[int, int] = (4, 15),
) -> tuple[TraceCall, ...]:
    """An append-only agent loop: a 200-token task, then each call appends ``step(k)`` (by default
    one tool call and its 300-800-token result), calls ``gaps`` seconds apart. ``prefix(k)``: the
    tools and system call ``k`` sends; ``rewrite(k, messages)``: the history it sends (a summary)."""
    messages: Messages = [{"role": "user", "content": text.words(200)}]
    out: list[TraceCall] = []
    for k in range(calls):
        if k:
            messages.extend(step(k) if step else _tool_step(text, k, result_tokens=(300, 800)))
        if rewrite is not None:
            messages = rewrite(k, messages)
        out.append(TraceCall(_body(prefix(k), messages), _gap(text, k, *gaps)))
    return tuple(out)


def tool_loop_trace(calls: int = 24, seed: int = 1) -> Trace:
    """An append-only agent loop: each call adds a tool call and its result, seconds apart."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text)
    out = _agent_loop(text, calls, lambda k: fixed)
    return Trace("tool_loop", "append-only tool loop, calls 4-15 s apart", out)


def _rag_turns(text: TraceText, fixed: Mapping[str, Any], *, turns: int, docs: tuple[int, int],
               doc_tokens: tuple[int, int], question_tokens: tuple[int, int], answer_tokens: tuple[int, int],
               docs_first: bool, gaps: tuple[int, int]) -> list[TraceCall]:
    history: list[dict[str, Any]] = []
    out: list[TraceCall] = []
    for k in range(turns):
        question = {"type": "text", "text": text.between(*question_tokens)}
        retrieved = [{"type": "text", "text": text.between(*doc_tokens)}
                     for _ in range(text.rng.randint(*docs))]
        content = [*retrieved, question] if docs_first else [question, *retrieved]
        messages = [*history, {"role": "user", "content": content}]
        out.append(TraceCall(_body(fixed, messages), _gap(text, k, *gaps)))
        # the documents are dropped once the turn is answered; the question and answer stay
        history += [
            {"role": "user", "content": [question]},
            {"role": "assistant", "content": [{"type": "text", "text": text.between(*answer_tokens)}]},
        ]
    return out


def rag_trace(turns: int = 16, seed: int = 2) -> Trace:
    """RAG chat: 3-6 retrieved documents appended to each user question, dropped the next turn."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text)
    calls = _rag_turns(text, fixed, turns=turns, docs=(3, 6), doc_tokens=(400, 700),
                       question_tokens=(50, 250), answer_tokens=(200, 600), docs_first=False, gaps=(20, 120))
    return Trace("rag_volatile_tail", "RAG: documents injected into the latest user turn, dropped later",
                 tuple(calls))


def guide_session_trace(turns: int = 15, seed: int = 6) -> Trace:
    """The guide's session: 400-token system prompt, 8 tools of ~200 tokens, 200 tokens of safety
    text, 5 retrieved chunks of 500 tokens per turn, 200-token user messages and ~514-token
    answers, so the history reaches 10,000 tokens by turn 15."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text)
    answer = round(10_000 / (turns - 1)) - 200 if turns > 1 else 500
    calls = _rag_turns(text, fixed, turns=turns, docs=(5, 5), doc_tokens=(500, 500),
                       question_tokens=(200, 200), answer_tokens=(answer, answer), docs_first=True,
                       gaps=(30, 90))
    return Trace("guide_session", "the guide's 15-turn session (fixed 2,200 + RAG 2,500 + history to 10k)",
                 tuple(calls))


def long_gaps_trace(turns: int = 8, calls_per_turn: int = 3, seed: int = 3) -> Trace:
    """A support agent whose user answers after 6-25 minutes; each turn is a short tool loop."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text)
    messages: list[dict[str, Any]] = []
    out: list[TraceCall] = []
    step = 0
    for turn in range(turns):
        if turn:
            answer = {"type": "text", "text": text.between(150, 300)}
            messages.append({"role": "assistant", "content": [answer]})
        messages.append({"role": "user", "content": [{"type": "text", "text": text.between(100, 250)}]})
        for k in range(calls_per_turn):
            if k:
                step += 1
                messages.extend(_tool_step(text, step, result_tokens=(200, 500)))
            if not out:
                gap = 0.0
            elif k == 0:
                gap = float(text.rng.randint(360, 1500))
            else:
                gap = float(text.rng.randint(3, 10))
            out.append(TraceCall(_body(fixed, messages), gap))
    return Trace("long_gaps", "user turns 6-25 min apart, each a 3-call tool loop seconds apart", tuple(out))


def summarised_trace(calls: int = 30, summarise_at: int = 16, keep: int = 4, seed: int = 4) -> Trace:
    """A tool loop whose history is replaced by a summary (plus the last steps) mid-session."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text)

    def summarise(k: int, messages: Messages) -> Messages:
        if k != summarise_at:
            return messages
        return [{"role": "user", "content": [{"type": "text", "text": text.words(800)}]}, *messages[-keep:]]

    out = _agent_loop(text, calls, lambda k: fixed, rewrite=summarise)
    return Trace("summarised", f"tool loop; history summarised at call {summarise_at + 1}", out)


def wide_turns_trace(calls: int = 12, parallel: int = 12, seed: int = 5) -> Trace:
    """Parallel tool calls: each call adds 2 x ``parallel`` + 1 blocks, past the 20-block lookback."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text)

    def parallel_step(k: int) -> Messages:
        ids = [f"toolu_{k:03d}_{j:02d}" for j in range(parallel)]
        return [
            {"role": "assistant", "content": [
                {"type": "text", "text": text.words(20)},
                *({"type": "tool_use", "id": i, "name": f"tool_{j % 8}", "input": {"query": text.words(6)}}
                  for j, i in enumerate(ids)),
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": i, "content": text.between(80, 200)} for i in ids
            ]},
        ]

    out = _agent_loop(text, calls, lambda k: fixed, step=parallel_step, gaps=(5, 20))
    return Trace("wide_turns", f"each call adds {2 * parallel + 1} blocks (parallel tool calls)", out)


def multi_agent_trace(calls: int = 40, *, alternating: bool = False, seed: int = 7) -> Trace:
    """Two sub-agents on one client in one task (a researcher and a critic): the same 8 tools,
    system prompts of their own, each its own tool loop; turns interleaved irregularly (runs of a
    few calls each) or strictly alternating, seconds apart."""
    text = TraceText(seed)
    tools = _fixed_prefix(text)["tools"]
    agents = []
    for _ in range(2):
        system = [{"type": "text", "text": text.words(600)}, {"type": "text", "text": text.words(200)}]
        agents.append(({"tools": tools, "system": system}, [{"role": "user", "content": text.words(200)}]))
    steps = [0, 0]
    who = 0
    out: list[TraceCall] = []
    for k in range(calls):
        if k:
            who = 1 - who if alternating or text.rng.random() < 0.4 else who
        fixed, messages = agents[who]
        if steps[who]:
            messages.extend(_tool_step(text, 1000 * who + steps[who], result_tokens=(300, 800)))
        steps[who] += 1
        out.append(TraceCall(_body(fixed, messages), _gap(text, k, 2, 12)))
    name = "two_agents_alternating" if alternating else "two_agents_interleaved"
    how = "strictly alternating" if alternating else "interleaved irregularly"
    return Trace(name, f"two sub-agents, same tools, own system prompts, {how}", tuple(out))


def tool_change_trace(calls: int = 24, every: int = 8, seed: int = 8) -> Trace:
    """A tool loop whose tool list grows by one tool (appended at its end) every ``every`` calls."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text, tools=10)
    tools = list(fixed["tools"])
    out = _agent_loop(text, calls, lambda k: {"tools": tools[: 8 + k // every], "system": fixed["system"]})
    how = f"tool loop; a tool added to the end of the list every {every} calls"
    return Trace("tool_list_change", how, out)


def periodic_trace(calls: int = 12, gap_s: float = 420.0, seed: int = 9) -> Trace:
    """A periodic agent: every 7 minutes a fresh question on a 12k-token prefix, a task that ran
    on the same schedule before (its earlier run's gaps are the trace's history)."""
    text = TraceText(seed)
    fixed = _fixed_prefix(text, system_tokens=10_200)
    out = [TraceCall(_body(fixed, [{"role": "user", "content": text.between(150, 300)}]), gap_s if k else 0.0)
           for k in range(calls)]
    return Trace("periodic_with_history", f"{calls} calls {gap_s / 60:g} min apart on a 12k prefix, "
                 "earlier runs in the ledger", tuple(out), history_gaps=(gap_s,) * (calls - 1))


def agent_traces() -> dict[str, Trace]:
    """The agent-shape traces (several conversations on one client, a changing tool list, a
    periodic agent with earlier runs), by name."""
    traces = [multi_agent_trace(), multi_agent_trace(alternating=True), tool_change_trace(), periodic_trace()]
    return {trace.name: trace for trace in traces}


def reference_traces() -> dict[str, Trace]:
    """The benchmark's traces, by name."""
    traces = [tool_loop_trace(), rag_trace(), long_gaps_trace(), summarised_trace(), wide_turns_trace(),
              guide_session_trace()]
    return {trace.name: trace for trace in traces}
