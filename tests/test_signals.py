"""Each warning signal fires on a history that should trigger it and stays silent on one that should not."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient import config, metering, signals
from budgetclient.config import SignalThresholds
from budgetclient.errors import ConfigurationError
from budgetclient.ledger import AlertRecord, flush, open_ledger
from budgetclient.signals import (
    apply_repeat_facts,
    check_cache_hit_rate,
    check_cost_baseline,
    check_cost_limit,
    check_failure_cost,
    check_output_ratio,
    evaluate_history,
    evaluate_task,
    repeat_facts,
    repeat_prefix_calls,
)
from budgetclient.usage import CallRecord, CostBreakdown, Outcome, TaskRecord, Usage

from ._hypothesis import FAST

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULTS = SignalThresholds()


def run(
    n: int,
    cost: str | None,
    *,
    name: str = "triage",
    calls: int = 5,
    outcome: Outcome = "success",
    usage: Usage | None = None,
    parent_id: str | None = None,
) -> TaskRecord:
    start = T0 + timedelta(minutes=10 * n)
    return TaskRecord(
        id=f"{name}-{n}",
        name=name,
        parent_id=parent_id,
        outcome=outcome,
        started_at=start,
        ended_at=start + timedelta(seconds=30),
        usage=usage or Usage(input_tokens=10_000, output_tokens=500, requests=calls),
        cost=None if cost is None else Decimal(cost),
        cost_breakdown=CostBreakdown(),
        calls=calls,
    )


def call(
    n: int,
    *,
    at: datetime,
    input_tokens: int,
    cache_read: int = 0,
    task_id: str = "triage-9",
    conversation: str | None = "conv-a",
    prefix_hash: str | None = "prefix-a",
) -> CallRecord:
    return CallRecord(
        id=f"c{n}",
        provider="anthropic",
        model="claude-sonnet-4-5",
        operation="messages",
        started_at=at,
        duration_s=1.0,
        usage=Usage(input_tokens=input_tokens, cache_read_tokens=cache_read, output_tokens=100, requests=1),
        cost=Decimal("0.01"),
        cost_breakdown=None,
        task_id=task_id,
        task_name="triage",
        conversation=conversation,
        prefix_hash=prefix_hash,
    )


@pytest.fixture(autouse=True)
def _fresh_signals() -> Iterator[None]:
    signals.reset()
    yield
    signals.reset()


# -- per-task cost threshold ---------------------------------------------------------------------


def test_cost_limit_fires_above_the_threshold_and_not_at_or_below() -> None:
    alert = check_cost_limit(run(1, "0.31"), Decimal("0.30"))
    assert alert is not None and alert.kind == "cost_per_task"
    assert alert.value == 0.31 and alert.threshold == 0.30
    assert alert.task_name == "triage" and alert.task_id == "triage-1"
    assert check_cost_limit(run(1, "0.30"), Decimal("0.30")) is None
    assert check_cost_limit(run(1, "0.29"), Decimal("0.30")) is None
    assert check_cost_limit(run(1, None), Decimal("0.30")) is None  # unknown cost is not 0 and not a breach
    assert check_cost_limit(run(1, "9"), None) is None


def test_cost_limit_per_name_overrides_the_default() -> None:
    bc.configure(alert_cost_per_task={"triage": "0.50", "*": "0.10"})
    settings = config.get_settings()
    assert signals.cost_limit_for("triage", settings) == Decimal("0.50")
    assert signals.cost_limit_for("other", settings) == Decimal("0.10")
    bc.configure(alert_cost_per_task=None)
    assert signals.cost_limit_for("triage", config.get_settings()) is None


# -- cost against its baseline -------------------------------------------------------------------

EARLIER_COSTS = ["0.10", "0.11", "0.09", "0.10", "0.12", "0.10"]


def earlier_runs(costs: Sequence[str] = EARLIER_COSTS, calls: int = 5) -> list[TaskRecord]:
    return [run(i, c, calls=calls) for i, c in enumerate(costs)]


def test_cost_baseline_fires_when_cost_rises_and_calls_do_not() -> None:
    earlier = earlier_runs()
    baseline = statistics.median(Decimal(c) for c in EARLIER_COSTS)  # 0.10
    alert = check_cost_baseline(run(9, "0.16"), earlier, DEFAULTS)
    assert alert is not None and alert.kind == "cost_baseline"
    assert alert.value == 0.16
    assert alert.threshold == pytest.approx(float(baseline * Decimal("1.5")))
    assert alert.details["baseline_usd"] == f"{baseline:f}" and alert.details["runs"] == 6


@pytest.mark.parametrize(
    ("costs", "new_cost", "new_calls", "why"),
    [
        (EARLIER_COSTS, "0.14", 5, "below 1.5x the median"),
        (EARLIER_COSTS, "0.15", 5, "exactly 1.5x the median is not above it"),
        (EARLIER_COSTS, "0.30", 8, "calls rose past 1.2x the median: more work explains more cost"),
        (EARLIER_COSTS[:4], "0.30", 5, "fewer than 5 earlier runs: no baseline yet"),
        (["0"] * 6, "0.30", 5, "a zero baseline has no meaningful ratio"),
    ],
)
def test_cost_baseline_stays_silent(costs: list[str], new_cost: str, new_calls: int, why: str) -> None:
    assert check_cost_baseline(run(9, new_cost, calls=new_calls), earlier_runs(costs), DEFAULTS) is None, why


def test_cost_baseline_ignores_unpriced_runs_and_uses_the_window() -> None:
    # 30 runs at 0.50, then 20 at 0.10: the window (last 20 priced) sees only the recent 0.10s
    history = [run(i, "0.50") for i in range(30)] + [run(30 + i, "0.10") for i in range(20)]
    history += [run(60 + i, None) for i in range(5)]  # unpriced runs neither count nor break the median
    assert check_cost_baseline(run(99, "0.16"), history, DEFAULTS) is not None
    wide = SignalThresholds(cost_baseline_window=50)  # median over all 50 priced runs is 0.50
    assert check_cost_baseline(run(99, "0.16"), history, wide) is None


@FAST
@given(
    earlier=st.lists(
        st.tuples(st.none() | st.integers(1, 400), st.integers(1, 12)), max_size=60
    ),
    new=st.tuples(st.integers(1, 900), st.integers(1, 12)),
    window=st.integers(1, 25),
    min_history=st.integers(1, 8),
)
def test_cost_baseline_is_the_rolling_median_rule(
    earlier: list[tuple[int | None, int]], new: tuple[int, int], window: int, min_history: int
) -> None:
    """Against the rule computed here: the median (`statistics.median`) of the last ``window`` priced
    earlier runs' costs and call counts, whatever mix of unpriced runs precedes it."""
    history = [run(i, None if c is None else f"0.{c:03d}", calls=n) for i, (c, n) in enumerate(earlier)]
    task = run(99, f"{new[0] / 1000:.3f}", calls=new[1])
    thresholds = SignalThresholds(
        cost_baseline_window=window, cost_baseline_min_history=min(min_history, window)
    )
    priced = [(Decimal(f"0.{c:03d}"), n) for c, n in earlier if c is not None][-window:]
    alert = check_cost_baseline(task, history, thresholds)
    if len(priced) < thresholds.cost_baseline_min_history:
        assert alert is None
        return
    baseline = statistics.median([c for c, _ in priced])
    median_calls = statistics.median([n for _, n in priced])
    assert task.cost is not None
    fires = task.cost > baseline * Decimal("1.5") and task.calls <= median_calls * 1.2
    assert (alert is not None) == fires
    if alert is not None:
        assert alert.details["baseline_usd"] == f"{baseline:f}"
        assert alert.details["median_calls"] == float(median_calls) and alert.details["runs"] == len(priced)


def test_cost_baseline_factor_is_configurable() -> None:
    bc.configure(signals={"cost_baseline_factor": 2.0, "cost_baseline_min_history": 3})
    thresholds = config.get_settings().signals
    assert check_cost_baseline(run(9, "0.16"), earlier_runs(), thresholds) is None
    assert check_cost_baseline(run(9, "0.21"), earlier_runs(EARLIER_COSTS[:3]), thresholds) is not None


# -- cache hit rate on a fixed prefix ------------------------------------------------------------


def conversation_calls(reads: Sequence[int], input_tokens: int = 5000, **kwargs: Any) -> list[CallRecord]:
    return [
        call(i, at=T0 + timedelta(seconds=30 * i), input_tokens=input_tokens, cache_read=r, **kwargs)
        for i, r in enumerate(reads)
    ]


def test_cache_hit_rate_fires_when_repeated_prefix_is_not_read_from_cache() -> None:
    calls = conversation_calls([0, 0, 500])  # the 2nd and 3rd call repeat the conversation's prefix
    alert = check_cache_hit_rate(run(9, "0.1"), calls, DEFAULTS)
    assert alert is not None and alert.kind == "cache_hit_rate"
    assert alert.value == pytest.approx(500 / 10_000)  # only the repeating calls are judged
    assert alert.threshold == 0.5 and alert.details["calls"] == 2


@pytest.mark.parametrize(
    ("calls", "why"),
    [
        (conversation_calls([0, 4500, 4600]), "a working cache reads most of the input"),
        (conversation_calls([0, 0, 0], input_tokens=800), "prompts below the minimum cacheable length"),
        (conversation_calls([0]), "a single call has nothing to repeat"),
        (
            [
                call(
                    i,
                    at=T0 + timedelta(seconds=30 * i),
                    input_tokens=5000,
                    conversation=None,
                    prefix_hash=f"p{i}",
                )
                for i in range(3)
            ],
            "no prefix is repeated, so there is no fixed prefix to cache",
        ),
    ],
)
def test_cache_hit_rate_stays_silent(calls: list[CallRecord], why: str) -> None:
    assert check_cache_hit_rate(run(9, "0.1"), calls, DEFAULTS) is None, why


def test_cache_hit_rate_counts_prefixes_seen_in_earlier_tasks_only_within_the_ttl() -> None:
    first = [call(1, at=T0, input_tokens=5000, conversation=None, task_id="triage-1")]
    seen: dict[str, int] = {}
    assert check_cache_hit_rate(run(1, "0.1"), first, DEFAULTS, seen=seen) is None
    soon = [call(2, at=T0 + timedelta(minutes=2), input_tokens=5000, conversation=None)]
    alert = check_cache_hit_rate(run(2, "0.1"), soon, DEFAULTS, seen=dict(seen))
    assert alert is not None and alert.value == 0.0
    late = [call(3, at=T0 + timedelta(minutes=20), input_tokens=5000, conversation=None)]
    assert check_cache_hit_rate(run(3, "0.1"), late, DEFAULTS, seen=dict(seen)) is None


def test_calls_without_keys_repeat_after_the_first_call_of_the_task() -> None:
    calls = conversation_calls([0, 100, 100], conversation=None, prefix_hash=None)
    alert = check_cache_hit_rate(run(9, "0.1"), calls, DEFAULTS)
    assert alert is not None and alert.value == pytest.approx(200 / 10_000)


# -- failure cost --------------------------------------------------------------------------------


def test_failure_cost_share_fires_when_failures_take_too_much() -> None:
    earlier = [run(i, "0.10") for i in range(4)]
    alert = check_failure_cost(run(9, "0.20", outcome="failure"), earlier, DEFAULTS)
    assert [a.kind for a in alert] == ["failure_cost_share"]
    assert alert[0].value == pytest.approx(0.20 / 0.60)
    assert alert[0].details["failures"] == 1 and alert[0].details["runs"] == 5


@pytest.mark.parametrize(
    ("earlier", "new", "why"),
    [
        ([run(i, "0.10") for i in range(4)], run(9, "0.05", outcome="failure"), "failures are cheap"),
        ([run(i, "0.10") for i in range(3)], run(9, "0.20", outcome="failure"), "fewer than 5 runs"),
        (
            [run(i, "0.10", outcome="failure") for i in range(4)],
            run(9, "0.20"),
            "only evaluated when a task fails",
        ),
        ([run(i, "0.10") for i in range(4)], run(9, None, outcome="failure"), "its cost is unknown"),
    ],
)
def test_failure_cost_share_stays_silent(earlier: list[TaskRecord], new: TaskRecord, why: str) -> None:
    assert check_failure_cost(new, earlier, DEFAULTS) == [], why


def test_failure_share_window_keeps_only_recent_runs() -> None:
    old_failures = [run(i, "1.00", outcome="failure") for i in range(10)]
    recent = [run(10 + i, "0.10") for i in range(19)]
    # the window of 20 holds 19 cheap successes and the new cheap failure: 0.05 / 1.95
    assert check_failure_cost(run(99, "0.05", outcome="failure"), old_failures + recent, DEFAULTS) == []


def test_absolute_failure_cost() -> None:
    thresholds = SignalThresholds(failure_cost_max=Decimal("0.15"))
    fired = check_failure_cost(run(9, "0.20", outcome="failure"), [], thresholds)
    assert (
        [a.kind for a in fired] == ["failure_cost"] and fired[0].value == 0.20 and fired[0].threshold == 0.15
    )
    assert check_failure_cost(run(9, "0.10", outcome="failure"), [], thresholds) == []
    assert check_failure_cost(run(9, "0.90", outcome="success"), [], thresholds) == []


# -- output / input ratio ------------------------------------------------------------------------


def test_output_ratio_fires_above_three_times_input() -> None:
    alert = check_output_ratio(run(1, "0.1", usage=Usage(input_tokens=1000, output_tokens=3500)), DEFAULTS)
    assert (
        alert is not None and alert.kind == "output_ratio" and alert.value == 3.5 and alert.threshold == 3.0
    )


@pytest.mark.parametrize(
    "usage",
    [
        Usage(input_tokens=1000, output_tokens=3000),  # exactly 3x is not above it
        Usage(input_tokens=1000, output_tokens=2000),
        Usage(input_tokens=0, output_tokens=0),
    ],
)
def test_output_ratio_stays_silent(usage: Usage) -> None:
    assert check_output_ratio(run(1, "0.1", usage=usage), DEFAULTS) is None


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"cost_baseline_factor": 0.5},
        {"cache_hit_rate_min": 1.5},
        {"failure_window": 2.5},
        {"failure_min_runs": True},
        {"no_such_threshold": 1},
        {"failure_cost_max": "-1"},
    ],
)
def test_bad_signal_thresholds_are_clear_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        bc.configure(signals=bad)
    assert next(iter(bad)) in str(info.value)


def test_signal_thresholds_merge_and_reset() -> None:
    bc.configure(signals={"output_input_ratio_max": 4})
    bc.configure(signals={"cache_hit_rate_min": 0.7})
    thresholds = config.get_settings().signals
    assert thresholds.output_input_ratio_max == 4.0 and thresholds.cache_hit_rate_min == 0.7
    bc.configure(signals=None)
    assert config.get_settings().signals == SignalThresholds()


def test_alert_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETCLIENT_ALERT_COST_PER_TASK", "triage=0.5, *=1.25")
    config.reset_settings()
    settings = config.get_settings()
    assert settings.alert_cost_per_task == Decimal("1.25")
    assert settings.alert_cost_per_task_by_name == {"triage": Decimal("0.5")}


# -- replay and live evaluation ------------------------------------------------------------------


def test_replay_matches_task_by_task_evaluation() -> None:
    tasks = [run(i, c) for i, c in enumerate(EARLIER_COSTS)] + [run(9, "0.40", outcome="failure")]
    alerts = evaluate_history(reversed(tasks), settings=config.get_settings())  # order of input is irrelevant
    expected = evaluate_task(tasks[-1], tasks[:-1], thresholds=DEFAULTS)
    assert (
        sorted(a.kind for a in alerts)
        == sorted(a.kind for a in expected)
        == ["cost_baseline", "failure_cost_share"]
    )
    assert all(a.created_at == tasks[-1].ended_at for a in alerts)


def test_replay_gives_a_child_task_s_calls_to_its_parent() -> None:
    child = run(2, "0.1", name="lookup", parent_id="triage-9")
    parent = run(9, "0.2")
    child_calls = [
        call(i, at=T0 + timedelta(seconds=i), input_tokens=5000, task_id=child.id, conversation="conv-x")
        for i in range(3)
    ]
    alerts = evaluate_history([child, parent], child_calls, settings=config.get_settings())
    assert sorted((a.kind, a.task_id) for a in alerts) == [
        ("cache_hit_rate", "lookup-2"),
        ("cache_hit_rate", "triage-9"),
    ]


PRICE = {"signal-model": {"input": 3, "output": 15}}


def metered_call(input_tokens: int, output_tokens: int) -> None:
    ctx = metering.begin_call("anthropic", "signal-model", "messages")
    metering.finish_call(ctx, Usage(input_tokens=input_tokens, output_tokens=output_tokens, requests=1))


def test_live_alert_is_logged_stored_and_delivered(ledger_url: str) -> None:
    bc.configure(prices=PRICE, alert_cost_per_task="0.01")
    received: list[AlertRecord] = []
    remove = signals.on_alert(received.append)
    try:
        with capture_logs() as logs, bc.task("triage") as t:
            metered_call(2000, 1000)  # 2000 x 3/M + 1000 x 15/M = 0.021 USD
    finally:
        remove()
    cost = Decimal(2000) * 3 / 1_000_000 + Decimal(1000) * 15 / 1_000_000
    assert [a.kind for a in received] == ["cost_per_task"]
    assert received[0].task_id == t.id and received[0].value == float(cost) and received[0].threshold == 0.01
    events = [e for e in logs if e["event"] == "alert.cost_per_task"]
    assert len(events) == 1 and events[0]["log_level"] == "warning" and events[0]["task"] == "triage"
    assert flush(10)
    stored = open_ledger(ledger_url).read_alerts(task_name="triage")
    assert [(a.id, a.kind, a.task_id) for a in stored] == [(received[0].id, "cost_per_task", t.id)]


def test_a_failing_callback_breaks_nothing(ledger_url: str) -> None:
    bc.configure(prices=PRICE, alert_cost_per_task="0")
    received: list[str] = []

    def broken(alert: AlertRecord) -> None:
        raise RuntimeError("callback bug")

    removers = [signals.on_alert(broken), signals.on_alert(lambda a: received.append(a.kind))]
    try:
        with capture_logs() as logs, bc.task("triage") as t:
            metered_call(100, 10)
            result = "task body finished"
    finally:
        for remove in removers:
            remove()
    assert result == "task body finished" and t.outcome == "success"
    assert received == ["cost_per_task"]  # the second callback still ran
    assert any(e["event"] == "alert.hook_failed" for e in logs)


def test_live_history_is_per_task_name(ledger_url: str) -> None:
    bc.configure(prices=PRICE)
    received: list[AlertRecord] = []
    remove = signals.on_alert(received.append)
    try:
        for _ in range(6):
            with bc.task("steady"):
                metered_call(1000, 100)
        with bc.task("other"):  # a different name has no history: no baseline alert
            metered_call(5000, 100)
        assert received == []
        with bc.task("steady"):
            metered_call(3000, 100)  # cost 0.0105 vs a 0.0045 baseline, same single call
    finally:
        remove()
    assert [(a.kind, a.task_name) for a in received] == [("cost_baseline", "steady")]
    baseline = Decimal(1000) * 3 / 1_000_000 + Decimal(100) * 15 / 1_000_000
    assert received[0].details["baseline_usd"] == f"{baseline:f}"


def test_replay_keeps_every_task_s_calls_however_many_tasks() -> None:
    first = run(0, "0.1")
    first_calls = [
        call(i, at=T0 + timedelta(seconds=i), input_tokens=5000, task_id=first.id) for i in range(3)
    ]
    others = [
        run(1 + i, "0.1", name=f"other-{i % 7}") for i in range(10_050)
    ]  # more than live evaluation keeps
    other_calls = [
        call(100 + i, at=t.started_at, input_tokens=10, task_id=t.id, conversation=None, prefix_hash=None)
        for i, t in enumerate(others)
    ]
    alerts = evaluate_history([first, *others], [*first_calls, *other_calls], settings=config.get_settings())
    assert [(a.kind, a.task_id) for a in alerts if a.kind == "cache_hit_rate"] == [
        ("cache_hit_rate", first.id)
    ]


def test_calls_without_keys_far_apart_do_not_repeat() -> None:
    calls = [
        call(i, at=T0 + timedelta(hours=i), input_tokens=5000, conversation=None, prefix_hash=None)
        for i in range(3)
    ]
    assert check_cache_hit_rate(run(9, "0.1"), calls, DEFAULTS) is None  # an hour apart: beyond the cache TTL


@st.composite
def runs_of_calls(draw: st.DrawFn) -> list[list[CallRecord]]:
    """A name's runs in the order they end, each a few calls minutes apart, keyed or not."""
    runs, n = [], 0
    for _ in range(draw(st.integers(1, 5))):
        start = T0 + timedelta(seconds=draw(st.integers(0, 1200)))
        calls = []
        for _ in range(draw(st.integers(0, 4))):
            n += 1
            start += timedelta(seconds=draw(st.sampled_from([0, 10, 200, 299, 301, 600])))
            calls.append(call(
                n, at=start, input_tokens=draw(st.sampled_from([100, 1024, 5000])),
                cache_read=draw(st.sampled_from([0, 1000])),
                conversation=draw(st.sampled_from([None, "conv-a", "conv-b"])),
                prefix_hash=draw(st.sampled_from([None, "prefix-a"])),
            ))  # fmt: skip
        runs.append(calls)
    return runs


@settings(FAST, max_examples=300)
@given(runs=runs_of_calls())
def test_repeat_facts_give_what_repeat_prefix_calls_gives(runs: list[list[CallRecord]]) -> None:
    """What a report keeps per run (`repeat_facts`), resolved against earlier runs
    (`apply_repeat_facts`), counts the calls `repeat_prefix_calls` finds over the run's calls with the
    name's earlier prefixes, and leaves the same prefixes seen (times in microseconds)."""
    seen_then: dict[str, datetime] = {}
    seen_now: dict[str, int] = {}
    for calls in runs:
        repeats = [
            c
            for c in repeat_prefix_calls(calls, seen_then)
            if c.usage.input_tokens >= DEFAULTS.cache_min_input_tokens
        ]
        want = (
            len(repeats),
            sum(c.usage.input_tokens for c in repeats),
            sum(c.usage.cache_read_tokens for c in repeats),
        )
        facts = repeat_facts(calls, DEFAULTS.cache_min_input_tokens)
        assert apply_repeat_facts(facts, seen_now) == want
        assert seen_now == {
            k: (v - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            for k, v in seen_then.items()
        }
        assert list(seen_now) == list(seen_then)  # the same first-use order (the engine prunes by it)
