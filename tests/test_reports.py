"""Report figures agree with figures computed here, independently, from the raw records."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

from budgetclient import config
from budgetclient.ledger import AlertRecord
from budgetclient.reports import build_report, merge_alerts, percentile
from budgetclient.usage import CallRecord, TaskRecord

from ._report_data import T0, History, sample_history

TWELVE_PLACES = Decimal("0.000000000001")


def nearest_rank(values: list[Decimal], p: int) -> Decimal:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def expected_row(name: str, tasks: list[TaskRecord], calls: list[CallRecord]) -> dict[str, Any]:
    """Every figure of one task name's row, from the records, the way the report documents them."""
    runs = [t for t in tasks if t.name == name]
    priced = [t for t in runs if t.cost is not None]
    costs = [t.cost for t in priced if t.cost is not None]
    total = sum(costs, Decimal(0))
    successes = [t for t in priced if t.outcome == "success"]
    failures = [t for t in priced if t.outcome == "failure"]
    failure_cost = sum((t.cost for t in failures if t.cost is not None), Decimal(0))
    input_tokens = sum(t.usage.input_tokens for t in runs)
    cache_read = sum(t.usage.cache_read_tokens for t in runs)
    return {
        "task": name,
        "runs": len(runs),
        "outcomes": {o: sum(1 for t in runs if t.outcome == o) for o in ("success", "partial", "failure")},
        "calls": sum(t.calls for t in runs),
        "cost_total": total if priced else None,
        "cost_p50": nearest_rank(costs, 50) if costs else None,
        "cost_p95": nearest_rank(costs, 95) if costs else None,
        "cost_per_success": (total / len(successes)).quantize(TWELVE_PLACES, ROUND_HALF_EVEN)
        if successes
        else None,
        "failure_cost": failure_cost if priced else None,
        "cache_hit_rate": cache_read / input_tokens if input_tokens else 0.0,
        "tokens": {
            "input": input_tokens,
            "cache_read": cache_read,
            "cache_write": sum(t.usage.cache_write_tokens for t in runs),
            "output": sum(t.usage.output_tokens for t in runs),
        },
        "unpriced_runs": len(runs) - len(priced),
        "models": sorted({c.model for c in calls if c.task_name == name}),
    }


def money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


@pytest.fixture(scope="module")
def history() -> History:
    return sample_history()


def test_every_row_matches_the_raw_records(history: History) -> None:
    report = build_report(history.tasks, history.calls, settings=config.Settings(ledger_url="memory://"))
    rows = {row["task"]: row for row in report.as_json()}
    names = {t.name for t in history.tasks}
    assert set(rows) == names | {None}
    for name in names:
        want = expected_row(name, history.tasks, history.calls)
        got = rows[name]
        for key in ("runs", "outcomes", "calls", "unpriced_runs"):
            assert got[key] == want[key], (name, key)
        for key in ("cost_total", "cost_p50", "cost_p95", "cost_per_success", "failure_cost"):
            assert money(got[key]) == want[key], (name, key)
        assert got["cache_hit_rate"] == pytest.approx(want["cache_hit_rate"], abs=1e-6)
        assert {k: got["tokens"][k] for k in want["tokens"]} == want["tokens"]
        assert sorted(got["models"]) == want["models"]
    # the research runs include their child summarize-doc calls (roll-up), so calls > direct calls
    research = [t for t in history.tasks if t.name == "research-agent"]
    assert rows["research-agent"]["calls"] == sum(t.calls for t in research) == 10 * len(research)


def test_every_row_sums_each_usage_field_and_cost_bucket_of_its_runs(history: History) -> None:
    report = build_report(history.tasks, history.calls, settings=config.Settings(ledger_url="memory://"))
    usage_fields = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_long_tokens",
                    "output_tokens", "reasoning_tokens", "requests")  # fmt: skip
    buckets = ("uncached_input", "cache_read", "cache_write", "output", "storage")
    for row in report.rows:
        if row.task is None:
            continue
        runs = [t for t in history.tasks if t.name == row.task]
        for field in usage_fields:
            assert getattr(row.usage, field) == sum(getattr(t.usage, field) for t in runs), (row.task, field)
        for bucket in buckets:
            want = Decimal(0)
            for t in runs:
                want += getattr(t.cost_breakdown, bucket)
            got = getattr(row.cost_breakdown, bucket)
            assert got == want and str(got) == str(want), (row.task, bucket)  # the same places too


def test_unpriced_runs_are_counted_not_priced(history: History) -> None:
    row = next(r for r in build_report(history.tasks, history.calls).as_json() if r["task"] == "experimental")
    assert row["runs"] == 1 and row["unpriced_runs"] == 1 and row["priced_runs"] == 0
    assert row["cost_total"] is None and row["cost_p50"] is None and row["cost_per_success"] is None
    assert row["failure_cost"] is None


def test_calls_outside_tasks_form_the_null_row(history: History) -> None:
    loose = [c for c in history.calls if c.task_id is None]
    row = build_report(history.tasks, history.calls).as_json()[-1]
    assert row["task"] is None and row["runs"] == 0 and row["calls"] == len(loose) == 10
    assert money(row["cost_total"]) == sum((c.cost for c in loose if c.cost is not None), Decimal(0))
    assert row["tokens"]["input"] == sum(c.usage.input_tokens for c in loose)
    assert row["cost_p50"] is None and row["cost_per_success"] is None


def test_report_totals_count_each_call_once(history: History) -> None:
    report = build_report(history.tasks, history.calls)
    priced = [c.cost for c in history.calls if c.cost is not None]
    assert report.calls == len(history.calls)
    assert report.unpriced_calls == len(history.calls) - len(priced) == 2
    assert report.cost_total == sum(priced, Decimal(0))
    assert report.usage.output_tokens == sum(c.usage.output_tokens for c in history.calls)
    buckets = [c.cost_breakdown for c in history.calls if c.cost_breakdown is not None]
    assert report.cost_breakdown.cache_read == sum((b.cache_read for b in buckets), Decimal(0))


def test_rows_are_most_expensive_first_and_json_is_plain(history: History) -> None:
    rows = build_report(history.tasks, history.calls).as_json()
    priced = [Decimal(r["cost_total"]) for r in rows if r["task"] is not None and r["cost_total"] is not None]
    assert priced == sorted(priced, reverse=True)
    text = json.dumps(rows)
    assert "E-" not in text  # decimal strings, never scientific notation
    for row in rows:
        for key in ("cost_total", "cost_p50", "cost_p95", "cost_per_success", "failure_cost"):
            assert row[key] is None or isinstance(row[key], str)


def test_task_filter_keeps_one_row(history: History) -> None:
    rows = build_report(history.tasks, history.calls, task_name="triage-ticket").as_json()
    assert [r["task"] for r in rows] == ["triage-ticket"]
    assert rows[0] == next(
        r for r in build_report(history.tasks, history.calls).as_json() if r["task"] == "triage-ticket"
    )


def test_report_replays_the_signals(history: History) -> None:
    rows = {r["task"]: r for r in build_report(history.tasks, history.calls).as_json()}
    kinds = {name: {a["kind"] for a in row["alerts"]} for name, row in rows.items()}
    assert "cost_baseline" in kinds["triage-ticket"]  # its history grows from day 6
    assert "output_ratio" in kinds["classify-intent"]  # tiny prompts, long answers
    assert "failure_cost_share" in kinds["research-agent"]  # a third of its runs fail
    assert "cache_hit_rate" in kinds["summarize-doc"]  # never reads its cache
    no_replay = build_report(history.tasks, history.calls, replay_signals=False).as_json()
    assert all(row["alerts"] == [] for row in no_replay)


def alert(kind: str, task_id: str | None, alert_id: str, minutes: int = 0) -> AlertRecord:
    return AlertRecord(
        id=alert_id, kind=kind, task_name="triage", task_id=task_id,
        created_at=T0 + timedelta(minutes=minutes), message=kind,
    )  # fmt: skip


def test_stored_and_replayed_alerts_merge_one_per_kind_and_task() -> None:
    stored = [alert("cost_per_task", "t1", "stored-1", 1), alert("custom", None, "stored-2", 3)]
    replayed = [alert("cost_per_task", "t1", "replay-1", 1), alert("output_ratio", "t1", "replay-2", 2)]
    merged = merge_alerts(stored, replayed)
    assert [a.id for a in merged] == ["stored-1", "replay-2", "stored-2"]


def test_stored_alerts_appear_in_their_row(history: History) -> None:
    task = next(t for t in history.tasks if t.name == "triage-ticket")
    stored = AlertRecord(
        id="a1", kind="cost_per_task", task_name=task.name, task_id=task.id, created_at=task.ended_at,
        message="over", value=1.0, threshold=0.5,
    )  # fmt: skip
    rows = {r["task"]: r for r in build_report(history.tasks, history.calls, [stored]).as_json()}
    assert {"kind": "cost_per_task", "task_id": task.id} in [
        {"kind": a["kind"], "task_id": a["task_id"]} for a in rows["triage-ticket"]["alerts"]
    ]


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        (list(range(1, 11)), 50, 5),
        (list(range(1, 11)), 95, 10),
        (list(range(1, 21)), 95, 19),
        (list(range(1, 21)), 50, 10),
        ([7], 50, 7),
        ([7], 95, 7),
        ([2, 1], 50, 1),
        ([2, 1], 95, 2),
        (list(range(1, 101)), 95, 95),
    ],
)
def test_nearest_rank_percentile(values: list[int], p: int, expected: int) -> None:
    assert percentile([Decimal(v) for v in values], p) == Decimal(expected)


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None


def test_empty_input_gives_an_empty_report() -> None:
    report = build_report([], [])
    assert report.rows == () and report.as_json() == [] and report.cost_total == 0


def test_a_row_with_no_successes_has_no_cost_per_success(history: History) -> None:
    failed = [replace(t, outcome="failure") for t in history.tasks if t.name == "classify-intent"]
    row = build_report(failed).as_json()[0]
    assert row["cost_per_success"] is None
    assert money(row["failure_cost"]) == money(row["cost_total"])
    assert row["failure_cost_share"] == 1.0
