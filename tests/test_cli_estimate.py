"""``budgetclient estimate``: the guide's example end to end, JSON and table output, errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from budgetclient.cli import main

GUIDE = Path(__file__).resolve().parents[1] / "examples" / "plans" / "guide.toml"
M = Decimal(1_000_000)


def _history(turn: int) -> int:
    return round(10_000 * (turn - 1) / 14)


def test_guide_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(GUIDE), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fixed_tokens"] == 400 + 8 * 200 + 200 == 2_200
    last = data["turns"][-1]
    assert (last["turn"], last["fixed"], last["variable"], last["total"]) == (15, 2_200, 12_700, 14_900)
    assert [row["total"] for row in data["turns"]] == [2_200 + _history(t) + 2_700 for t in range(1, 16)]
    # published Sonnet 4.6: 3 input, 0.30 cache read, 3.75 5-minute cache write, 15 output
    inputs = sum(2_200 + _history(t) + 2_700 for t in range(1, 16))
    variables = sum(_history(t) + 2_700 for t in range(1, 16))
    output = 15 * 500 * Decimal(15)
    uncached = (inputs * Decimal(3) + output) / M
    cached = (2_200 * Decimal("3.75") + 14 * 2_200 * Decimal("0.30") + variables * Decimal(3) + output) / M
    cost = {k: Decimal(v) for k, v in data["session_cost"].items()}
    assert set(cost) == {"uncached", "fixed_prefix_cached", "budgetclient"}
    assert cost["uncached"] == uncached
    assert cost["fixed_prefix_cached"] == cached
    assert Decimal(data["per_1000_sessions"]["uncached"]) == uncached * 1000
    assert 0 < cost["budgetclient"] < cost["fixed_prefix_cached"]


def test_table_and_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(GUIDE), "--model", "claude-sonnet-4-6", "--model", "claude-haiku-4-5"]) == 0
    out = capsys.readouterr().out
    assert "  15    2,200    10,000      2,500         0     200    12,700    14,900" in out
    assert "claude-haiku-4-5" in out and "per 1,000 sessions" in out
    assert "history" in out and "OVER" in out


def test_bad_plan_is_one_line_with_the_line_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('model = "claude-sonnet-4-6"\nturns = 3\n\n[variable]\nretrieved_chunks = "five"\n')
    assert main(["estimate", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"budgetclient estimate: error: {plan}:5: variable.retrieved_chunks")
