"""What each prompt-caching strategy pays on the reference traces, against the best found offline.

    python benchmarks/cache_cost.py              # table on stdout
    python benchmarks/cache_cost.py --markdown   # the table in benchmarks/README.md

Every trace (`budgetclient.testing.traces`) is replayed against `FakeAnthropic`, which bills
prompt caching by Anthropic's documented rules, once per strategy: no caching, system prefix only
(the guide's advice), the provider's automatic mode (top-level ``cache_control``) and
budgetclient. Costs come from the usage the fake reports, at the pricing module's Claude Sonnet 4.6
rates ($3 input, $0.30 cache read, $3.75 5m write, $6 1h write, $15 output per MTok).

The yardstick is the best placement found offline, knowing the whole trace: a beam search over
each call's breakpoints (where the last write ends, among the points later calls share with it,
and the TTLs), simulating the cache exactly with the fake's own accounting. States with the same
live entries that later calls can use are merged (keeping the cheaper), then the cheapest
``beam`` are kept. The chosen plan is replayed through the fake, so its cost is measured, not
modelled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from budgetclient.cachesim.anthropic import (
    Breakpoint,
    PromptBlock,
    PromptCache,
    min_cacheable_tokens,
    prompt_blocks,
)
from budgetclient.formats.anthropic.blocks import request_blocks
from budgetclient.formats.anthropic.markers import apply_markers
from budgetclient.lineage import LineageRegistry
from budgetclient.placement import Marker
from budgetclient.testing.fake_anthropic import DEFAULT_EPOCH, FakeAnthropic, FakeClock
from budgetclient.testing.traces import (
    BudgetclientStrategy,
    Trace,
    TraceRun,
    agent_traces,
    reference_traces,
    run_trace,
    send,
    usage_cost,
)

STRATEGY_NAMES = ("none", "system-only", "provider-auto", "budgetclient")
OUTPUT_TOKENS = 20
"""Tokens the fake answers per call (the same for every strategy)."""


def _fake() -> FakeAnthropic:
    return FakeAnthropic(clock=FakeClock(), output_tokens=OUTPUT_TOKENS)


class _ForkableCache(PromptCache):
    """The fake's prompt cache, copyable so a search can branch on it."""

    def fork(self) -> _ForkableCache:
        other = _ForkableCache()
        other._entries = dict(self._entries)
        return other


@dataclass(frozen=True, slots=True)
class _Call:
    body: Mapping[str, Any]
    time: float
    blocks: tuple[PromptBlock, ...]
    keys: tuple[str, ...]
    fixed_end: int
    """Index of the last tools/system block (-1 if none)."""
    tools_end: int
    """Index of the last tool definition (-1 if none)."""


@dataclass(slots=True)
class _State:
    cost: Decimal
    cache: _ForkableCache
    plan: tuple[tuple[Breakpoint, ...], ...]


@dataclass(frozen=True, slots=True)
class OfflinePlan:
    cost: Decimal
    """Simulated cost of the plan (equal to the replayed cost)."""
    breakpoints: tuple[tuple[Breakpoint, ...], ...]
    """Breakpoints of each call, by block index."""


def _calls(trace: Trace) -> list[_Call]:
    now = DEFAULT_EPOCH
    out = []
    for call in trace.calls:
        now += call.gap_s
        blocks = prompt_blocks(call.body)
        fixed = max((b.index for b in blocks if b.section != "messages"), default=-1)
        tools = max((b.index for b in blocks if b.section == "tools"), default=-1)
        out.append(_Call(call.body, now, blocks, tuple(b.key for b in blocks), fixed, tools))
    return out


def _lcp(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _markable(blocks: Sequence[PromptBlock], index: int) -> int | None:
    for i in range(min(index, len(blocks) - 1), -1, -1):
        if blocks[i].cacheable:
            return i
    return None


def _deepest_live(cache: PromptCache, call: _Call) -> int | None:
    live = {entry.key for entry in cache.entries(call.time)}
    return next((i for i in range(len(call.keys) - 1, -1, -1) if call.keys[i] in live), None)


def _options(calls: Sequence[_Call], t: int, horizon: int, min_tokens: int) -> list[int | None]:
    """Where call ``t``'s last write may end: the points later calls share with it, the end, the
    fixed prefix, or nowhere."""
    call = calls[t]
    points: set[int | None] = {None, _markable(call.blocks, len(call.blocks) - 1)}
    if call.fixed_end >= 0:
        points.add(_markable(call.blocks, call.fixed_end))
    for u in range(t + 1, min(len(calls), t + 1 + horizon)):
        shared = _lcp(call.keys, calls[u].keys)
        if shared:
            points.add(_markable(call.blocks, shared - 1))
    return sorted(
        (p for p in points if p is None or call.blocks[p].prefix_tokens >= min_tokens),
        key=lambda p: -1 if p is None else p,
    )


_TTL_PLANS: tuple[tuple[str, str, bool], ...] = (
    ("5m", "5m", False), ("1h", "5m", False), ("1h", "1h", False), ("1h", "5m", True),
)
"""(TTL of the stable-prefix breakpoint, TTL of the others, whether the first new block gets a 1h
anchor): every mix budgetclient can send, longer TTLs first as the API requires."""


_MODES = {"5m": _TTL_PLANS[0], "1h": _TTL_PLANS[2], "anchored": _TTL_PLANS[3]}
"""budgetclient's TTL modes (`TraceRun.ttls`) as plans."""


def _breakpoints(call: _Call, deepest: int | None, end: int | None, share_next: int | None,
                 plan: tuple[str, str, bool]) -> tuple[Breakpoint, ...]:
    fixed_ttl, ttl, anchored = plan
    points: dict[int, str] = {}
    fixed = _markable(call.blocks, call.fixed_end) if call.fixed_end >= 0 else None
    if fixed is not None:
        points[fixed] = fixed_ttl
    candidates = [deepest, end]
    if end is not None and share_next is not None and share_next < end:
        candidates.append(share_next)
    for index in candidates:
        if index is not None and index not in points:
            points[index] = ttl
    if anchored and end is not None:
        start = max(i for i in (deepest, fixed, -1) if i is not None) + 1
        anchor = next((i for i in range(start, end) if call.blocks[i].cacheable), None)
        if anchor is not None:
            points[anchor] = "1h"
    tools = _markable(call.blocks, call.tools_end) if 0 <= call.tools_end < call.fixed_end else None
    if tools is not None and tools not in points and len(points) < 4 and fixed is not None:
        points[tools] = fixed_ttl  # a spare one: calls with these tools but another system read them
    ordered = sorted(points.items())
    if len(ordered) > 4:  # keep the stable prefix, the read position, the anchor and the end
        keep = {fixed, deepest, end} | {i for i, t in ordered if t == "1h" and i not in (fixed, deepest)}
        ordered = [item for item in ordered if item[0] in keep][:4]
    last_long = max((i for i, t in ordered if t == "1h"), default=-1)
    return tuple(Breakpoint(i, "1h" if i <= last_long else "5m") for i, _ in ordered)


def _choices(calls: Sequence[_Call], t: int, horizon: int, min_tokens: int, deepest: int | None,
             share_next: int | None, ttls: Sequence[str | None] | None) -> list[tuple[Breakpoint, ...]]:
    """Breakpoint sets to try for call ``t``: in ``ttls[t]``'s TTL mode, or in any (clairvoyant)."""
    call = calls[t]
    if ttls is not None and ttls[t] is None:
        return [()]
    plans = _TTL_PLANS if ttls is None else (_MODES[str(ttls[t])],)
    return [_breakpoints(call, deepest, end, share_next, plan)
            for end in _options(calls, t, horizon, min_tokens) for plan in plans]


def _signature(cache: PromptCache, now: float, future: set[str]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((e.key, e.expires_at) for e in cache.entries(now) if e.key in future))


def offline_best(
    trace: Trace, *, beam: int = 48, horizon: int = 3, ttls: Sequence[str | None] | None = None
) -> OfflinePlan:
    """The cheapest breakpoint plan for ``trace`` the beam search finds (see module doc).

    ``ttls``: per call, the TTL mode it must use (``"5m"``, ``"1h"``, ``"anchored"``; None: no
    breakpoints), e.g. the ones an online policy chose from the gaps it had seen; without it
    every mode is tried on every call (clairvoyant: as if the future gaps were known).
    """
    if ttls is not None and len(ttls) != len(trace.calls):
        raise ValueError(f"ttls has {len(ttls)} entries for {len(trace.calls)} calls")
    calls = _calls(trace)
    min_tokens = min_cacheable_tokens(trace.model)
    future_keys = [set().union(*(set(c.keys) for c in calls[t + 1:])) for t in range(len(calls))]
    states = [_State(Decimal(0), _ForkableCache(), ())]
    for t, call in enumerate(calls):
        share = _lcp(call.keys, calls[t + 1].keys) if t + 1 < len(calls) else 0
        share_next = _markable(call.blocks, share - 1) if share else None
        merged: dict[tuple[tuple[str, float], ...], _State] = {}
        for state in states:
            deepest = _deepest_live(state.cache, call)
            seen: set[tuple[Breakpoint, ...]] = set()
            for points in _choices(calls, t, horizon, min_tokens, deepest, share_next, ttls):
                if points in seen:
                    continue
                seen.add(points)
                cache = state.cache.fork()
                accounting = cache.account(call.blocks, points, now=call.time, min_tokens=min_tokens)
                cost = state.cost + usage_cost(accounting.usage(OUTPUT_TOKENS))
                next_time = calls[t + 1].time if t + 1 < len(calls) else call.time
                key = _signature(cache, next_time, future_keys[t])
                best = merged.get(key)
                if best is None or cost < best.cost:
                    merged[key] = _State(cost, cache, (*state.plan, points))
        states = sorted(merged.values(), key=lambda s: s.cost)[:beam]
    winner = states[0]
    return OfflinePlan(winner.cost, winner.plan)


def replay(trace: Trace, plan: OfflinePlan, label: str = "offline-best") -> TraceRun:
    """Send ``trace`` with ``plan``'s breakpoints to a fresh fake backend; what it reports."""
    fake = _fake()
    usages = []
    for call, points in zip(trace.calls, plan.breakpoints, strict=True):
        fake.clock.advance(call.gap_s)
        request = request_blocks(call.body)
        markers = [Marker(p.index, p.ttl, "rolling") for p in points]
        message = send(fake, apply_markers(call.body, request, markers))
        usages.append(message["usage"])
    return TraceRun(trace.name, label, tuple(usages))


@dataclass(frozen=True, slots=True)
class Row:
    trace: Trace
    runs: Mapping[str, TraceRun]
    """Every strategy, plus ``offline-best`` (budgetclient's TTLs) and ``clairvoyant`` (any TTLs)."""
    drifts: int = 0
    """Drift budgetclient reported on the trace (each call's prefix compared with its conversation's)."""

    def cost(self, strategy: str) -> Decimal:
        return self.runs[strategy].cost()


def all_traces() -> dict[str, Trace]:
    """The single-conversation reference traces, then the agent shapes (`agent_traces`)."""
    return {**reference_traces(), **agent_traces()}


def measure(
    traces: Mapping[str, Trace] | None = None, *, beam: int = 48, clairvoyant: bool = True
) -> list[Row]:
    """Run every strategy and the offline searches on every trace (``clairvoyant``: also search TTLs).

    budgetclient runs as a client does: each call matched to a conversation by content within the
    trace (one client, one task), drift checked."""
    rows = []
    for trace in (traces or all_traces()).values():
        runs = {name: run_trace(trace, name, fake=_fake()) for name in STRATEGY_NAMES[:-1]}
        ours = BudgetclientStrategy(registry=LineageRegistry(), drift="warn", history=trace.history_gaps)
        runs["budgetclient"] = run_trace(trace, ours, fake=_fake())
        searches: list[tuple[str, Sequence[str | None] | None]] = [
            ("offline-best", runs["budgetclient"].ttls)]
        if clairvoyant:
            searches.append(("clairvoyant", None))
        for label, ttls in searches:
            plan = offline_best(trace, beam=beam, ttls=ttls)
            run = replay(trace, plan, label)
            if run.cost() != plan.cost:
                raise AssertionError(f"{trace.name}: the search simulated ${plan.cost}, the fake billed "
                                     f"${run.cost()}: the simulation no longer matches the fake backend")
            if label == "clairvoyant" and run.cost() > runs["offline-best"].cost():
                # its search space holds offline-best's plan; a narrower beam merely lost it
                run = TraceRun(trace.name, label, runs["offline-best"].usages)
            runs[label] = run
        rows.append(Row(trace, {name: runs[name] for name in (*STRATEGY_NAMES, *(s for s, _ in searches))},
                        ours.drifts))
    return rows


COLUMNS = (*STRATEGY_NAMES, "offline-best", "clairvoyant")


def table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    columns = [c for c in COLUMNS if all(c in row.runs for row in rows)]
    versus = [c for c in ("offline-best", "clairvoyant") if c in columns]
    header = ["trace", "calls", *columns, *(f"vs {c}" for c in versus), "drift"]
    lines = []
    for row in rows:
        ours = row.cost("budgetclient")
        lines.append([
            row.trace.name, str(len(row.trace.calls)), *(f"${row.cost(n):.4f}" for n in columns),
            *(f"{(ours / row.cost(c) - 1) * 100:+.2f}%" for c in versus), str(row.drifts),
        ])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), *(fmt.format(*line) for line in lines)])


def warm_client_cost(trace: Trace) -> tuple[Decimal, Decimal]:
    """budgetclient's cost on ``trace`` as a client's first conversation, and as its second (two
    hours later, so nothing is cached) when it has seen the first one's gaps."""
    registry = LineageRegistry()
    strategy = BudgetclientStrategy()
    fake = _fake()
    costs = []
    for conversation in range(2):
        state = registry.get(f"{trace.name}:{conversation}")
        total = Decimal(0)
        for call in trace.calls:
            fake.clock.advance(call.gap_s)
            message = send(fake, strategy(dict(call.body), state, fake.clock.now()))
            strategy.observe(state, message, fake.clock.now())
            total += usage_cost(message["usage"])
        costs.append(total)
        fake.clock.advance(7200)
    return costs[0], costs[1]


def guide_input_share(rows: Sequence[Row]) -> Decimal | None:
    """budgetclient's input cost on the guide's session as a share of the uncached input cost."""
    for row in rows:
        if row.trace.name == "guide_session":
            return row.runs["budgetclient"].input_cost() / row.runs["none"].input_cost()
    return None


PREFIX_REWRITTEN = frozenset({"summarised"})
"""Traces that rewrite a cached prefix on purpose (a summarised history): drift there is real."""


def check(rows: Sequence[Row], *, tolerance: Decimal = Decimal("0.02")) -> list[str]:
    """The claims the README makes; each failed one as a line (empty when all hold)."""
    problems = []
    for row in rows:
        if row.drifts and row.trace.name not in PREFIX_REWRITTEN:
            problems.append(f"{row.trace.name}: {row.drifts} drift reports where no prefix changes")
        ours = row.cost("budgetclient")
        if ours > row.cost("offline-best") * (1 + tolerance):
            problems.append(f"{row.trace.name}: budgetclient ${ours:.4f} is more than {tolerance:.0%} above "
                            f"the offline best ${row.cost('offline-best'):.4f}")
        for other in ("provider-auto", "system-only"):
            if ours > row.cost(other):
                problems.append(
                    f"{row.trace.name}: budgetclient ${ours:.4f} > {other} ${row.cost(other):.4f}")
    share = guide_input_share(rows)
    if share is not None and share >= Decimal("0.5"):
        problems.append(f"guide_session: budgetclient input cost is {share:.1%} of uncached (want < 50%)")
    return problems


# -- OpenAI and Gemini traces (issue 23) -------------------------------------------------------


def openai_gemini_section() -> str:
    """The OpenAI and Gemini traces on their fakes, against their offline best (see
    `benchmarks/cache_cost_providers.py`); separate from the Anthropic table above."""
    import budgetclient as bc
    from benchmarks.cache_cost_providers import measure_providers, provider_table

    # a benchmark's calls are not the user's spending; its deliberately uncached traces are no alert
    bc.configure(ledger="memory://", signals={"cache_hit_rate_min": 0.0})
    return provider_table(measure_providers())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    parser.add_argument("--beam", type=int, default=48, help="beam width of the offline search")
    args = parser.parse_args(argv)
    rows = measure(beam=args.beam)
    print(table(rows, markdown=args.markdown))
    share = guide_input_share(rows)
    if share is not None:
        print(f"\nguide session: budgetclient input cost = {share:.1%} of uncached input cost")
    first, second = warm_client_cost(reference_traces()["long_gaps"])
    print(f"long_gaps: first conversation of a client ${first:.4f}, a later one ${second:.4f}")
    print(f"\nOpenAI and Gemini (fake backends)\n{openai_gemini_section()}")
    problems = check(rows)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
