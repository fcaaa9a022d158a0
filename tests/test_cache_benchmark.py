"""The cache benchmark's claims, on the reference traces (a fast run of benchmarks/cache_cost.py).

Costs are recomputed here from the usage the fake backend reported, at the published Claude
Sonnet 4.6 prices; trace sizes are recomputed with the fake's documented tokenizer.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from benchmarks.cache_cost import PREFIX_REWRITTEN, Row, check, measure
from budgetclient.testing import block_tokens, count_tokens
from budgetclient.testing.traces import agent_traces, guide_session_trace, reference_traces

PER_MILLION = {  # USD per million tokens, Claude Sonnet 4.6
    "input": Decimal(3),
    "read": Decimal("0.30"),
    "write_5m": Decimal("3.75"),
    "write_1h": Decimal(6),
    "output": Decimal(15),
}


def input_cost(usage: dict[str, Any]) -> Decimal:
    long_writes = usage["cache_creation"]["ephemeral_1h_input_tokens"]
    short_writes = usage["cache_creation_input_tokens"] - long_writes
    return (
        usage["input_tokens"] * PER_MILLION["input"]
        + usage["cache_read_input_tokens"] * PER_MILLION["read"]
        + short_writes * PER_MILLION["write_5m"]
        + long_writes * PER_MILLION["write_1h"]
    ) / 1_000_000


def cost(row: Row, strategy: str) -> Decimal:
    usages = row.runs[strategy].usages
    return sum(
        (input_cost(u) + u["output_tokens"] * PER_MILLION["output"] / 1_000_000 for u in usages), Decimal(0)
    )


@pytest.fixture(scope="module")
def rows() -> dict[str, Row]:
    return {row.trace.name: row for row in measure(beam=8, clairvoyant=False)}


def test_the_reference_traces_cover_the_cases_the_issue_names() -> None:
    assert set(reference_traces()) >= {
        "tool_loop",
        "rag_volatile_tail",
        "long_gaps",
        "summarised",
        "wide_turns",
        "guide_session",
    }
    gaps = [call.gap_s for call in reference_traces()["long_gaps"].calls]
    assert sum(1 for g in gaps if g > 300) >= 5
    wide = reference_traces()["wide_turns"].calls
    blocks = [
        sum(len(m["content"]) if isinstance(m["content"], list) else 1 for m in c.body["messages"])
        for c in wide
    ]
    assert min(b - a for a, b in itertools.pairwise(blocks)) > 20


def test_the_guide_session_has_the_guides_sizes() -> None:
    calls = guide_session_trace().calls
    assert len(calls) == 15
    first = calls[0].body
    system = [count_tokens(block["text"]) for block in first["system"]]
    assert system == [400, 200]
    tools = [block_tokens(tool) for tool in first["tools"]]
    assert tools == [200] * 8
    last = calls[-1].body["messages"]
    retrieved = last[-1]["content"][:-1]
    assert [count_tokens(doc["text"]) for doc in retrieved] == [500] * 5
    assert count_tokens(last[-1]["content"][-1]["text"]) == 200
    history = sum(count_tokens(block["text"]) for message in last[:-1] for block in message["content"])
    assert 9_800 <= history <= 10_200


def test_budgetclient_is_within_two_percent_of_the_offline_best(rows: dict[str, Row]) -> None:
    for name, row in rows.items():
        ours, best = cost(row, "budgetclient"), cost(row, "offline-best")
        assert ours <= best * Decimal("1.02"), f"{name}: ${ours} vs offline best ${best}"


def test_budgetclient_never_costs_more_than_automatic_mode_or_system_only(rows: dict[str, Row]) -> None:
    for name, row in rows.items():
        ours = cost(row, "budgetclient")
        assert ours <= cost(row, "provider-auto"), name
        assert ours <= cost(row, "system-only"), name
        assert ours < cost(row, "none"), name


def test_guide_session_input_cost_is_below_half_of_uncached(rows: dict[str, Row]) -> None:
    row = rows["guide_session"]
    ours = sum((input_cost(u) for u in row.runs["budgetclient"].usages), Decimal(0))
    uncached = sum((input_cost(u) for u in row.runs["none"].usages), Decimal(0))
    assert all(u["cache_read_input_tokens"] == 0 for u in row.runs["none"].usages)
    assert ours < uncached / 2


def test_the_offline_plan_was_measured_on_the_fake_not_modelled(rows: dict[str, Row]) -> None:
    for row in rows.values():
        run = row.runs["offline-best"]
        assert len(run.usages) == len(row.trace.calls)
        assert any(u["cache_read_input_tokens"] for u in run.usages)


def test_the_agent_traces_have_their_shapes() -> None:
    traces = agent_traces()
    for name in ("two_agents_interleaved", "two_agents_alternating"):
        calls = traces[name].calls
        systems = [str(call.body["system"]) for call in calls]
        assert len(set(systems)) == 2
        assert len({str(call.body["tools"]) for call in calls}) == 1
        switches = sum(1 for a, b in itertools.pairwise(systems) if a != b)
        runs = len(calls) - 1
        assert switches == runs if name.endswith("alternating") else 0 < switches < runs
    tool_counts = [len(call.body["tools"]) for call in traces["tool_list_change"].calls]
    assert tool_counts == sorted(tool_counts) and len(set(tool_counts)) == 3


def test_no_drift_is_reported_where_no_prefix_changes(rows: dict[str, Row]) -> None:
    for name, row in rows.items():
        if name not in PREFIX_REWRITTEN:
            assert row.drifts == 0, name
    assert rows["summarised"].drifts >= 1  # the summary rewrites the history: that one is real
    assert check(list(rows.values())) == []
