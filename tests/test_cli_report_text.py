"""``budgetclient report`` as text a person reads: 100 columns, one money format, the drift section
and ``--drift``; ``budgetclient prices`` on a broken price file."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from budgetclient.drift import PrefixDrift, fix_hint
from budgetclient.ledger import open_ledger
from budgetclient.usage import CallRecord, Usage

from ._report_data import make_call, sample_history, task_from_calls
from .test_cli_report import _silent_logging, run_cli  # noqa: F401  (the fixture silences log lines)

LONG = "support:triage-ticket-for-the-enterprise-customers-of-the-northern-region"
MONEY = re.compile(r"\$[\d,]+\.\d+")
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def drifting_calls() -> tuple[list[CallRecord], list[tuple[str, PrefixDrift]]]:
    """Calls of a long-named task, three of them drifted (two causes), with known tokens and cost."""
    drifts = [
        PrefixDrift("system[0].text", 12, "", "", "timestamp", 1500, Decimal("0.0045")),
        PrefixDrift("system[0].text", 12, "", "", "timestamp", 1700, Decimal("0.0051")),
        PrefixDrift("tools[1].input_schema", 3, "", "", "key-order", 800, None),
    ]
    calls = []
    for i in range(6):
        usage = Usage(input_tokens=4000 + 100 * i, cache_read_tokens=3000 if i else 0, output_tokens=200,
                      requests=1)
        call = make_call(1000 + i, at=START + timedelta(seconds=30 * i), usage=usage, task_id="long-1",
                         task_name=LONG)
        calls.append(replace(call, drift=drifts[i // 2] if i % 2 else None))
    return calls, [(LONG, d) for d in drifts]


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    history = sample_history()
    calls, _ = drifting_calls()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    ledger.write(calls=[*history.calls, *calls],
                 tasks=[*history.tasks, task_from_calls("long-1", LONG, "success", calls, started_at=START)])
    ledger.close()
    return url


def test_table_fits_100_columns_with_one_money_format(
    capsys: pytest.CaptureFixture[str], ledger_url: str
) -> None:
    code, out, _ = run_cli(capsys, "report", "--ledger", ledger_url)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100
    amounts = MONEY.findall(out)
    assert amounts and all(re.fullmatch(r"\$[\d,]+\.\d{4}", a) for a in amounts), set(amounts)
    row = next(line for line in out.splitlines() if line.startswith("support:"))
    assert "…" in row.split()[0]  # the long name is shortened in the middle
    assert row.split()[0].startswith("support:triage") and row.split()[0].endswith("northern-region")


def test_wide_shows_every_column_and_whole_names(
    capsys: pytest.CaptureFixture[str], ledger_url: str
) -> None:
    code, out, _ = run_cli(capsys, "report", "--ledger", ledger_url, "--wide")
    assert code == 0
    header = out.splitlines()[0].split()
    for column in ("CALLS", "PER", "SUCCESS", "INPUT", "OUTPUT"):
        assert column in header
    assert re.search(rf"^{re.escape(LONG)}\s", out, re.M)


def test_report_ends_with_a_drift_line(capsys: pytest.CaptureFixture[str], ledger_url: str) -> None:
    _, out, _ = run_cli(capsys, "report", "--ledger", ledger_url)
    _, drifts = drifting_calls()
    extra = sum((d.est_extra_cost or Decimal(0) for _, d in drifts), Decimal(0))
    line = f"prefix drift: {len(drifts)} calls in 1 task name, ~${extra:.4f} extra"
    line += " (budgetclient report --drift)"
    assert line in out


def test_drift_report_by_task_cause_and_segment(
    capsys: pytest.CaptureFixture[str], ledger_url: str
) -> None:
    code, out, _ = run_cli(capsys, "report", "--ledger", ledger_url, "--drift", "--format", "json")
    assert code == 0
    _, drifts = drifting_calls()
    expected: dict[tuple[str, str], dict[str, object]] = {}
    for task, drift in drifts:
        row = expected.setdefault((drift.cause, drift.segment),
                                  {"task": task, "calls": 0, "tokens": 0, "cost": None})
        row["calls"] = int(row["calls"]) + 1  # type: ignore[call-overload]
        row["tokens"] = int(row["tokens"]) + drift.tokens_at_risk  # type: ignore[call-overload]
        if drift.est_extra_cost is not None:
            row["cost"] = (row["cost"] or Decimal(0)) + drift.est_extra_cost  # type: ignore[operator]
    got = {(r["cause"], r["segment"]): r for r in json.loads(out)}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        got_row = (row["task"], row["calls"], row["tokens_at_risk"])
        assert got_row == (want["task"], want["calls"], want["tokens"])
        assert (None if row["cost_at_risk"] is None else Decimal(row["cost_at_risk"])) == want["cost"]
        assert row["hint"] == fix_hint(*key)
    assert list(got) == [("timestamp", "system[0].text"), ("key-order", "tools[1].input_schema")]  # $ first

    code, text, _ = run_cli(capsys, "report", "--ledger", ledger_url, "--drift")
    assert code == 0 and max(len(line) for line in text.splitlines()) <= 100
    assert "sort_keys=True" in text and "after the last cache breakpoint" in text


def test_prices_fails_on_a_broken_price_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import budgetclient as bc

    broken = tmp_path / "prices.toml"
    broken.write_text('[models."house-model"]\ninput = 3\noutput = [\n', encoding="utf-8")
    monkeypatch.setenv("BUDGETCLIENT_PRICES", str(broken))
    bc.config.reset_settings()
    code, out, err = run_cli(capsys, "prices", "claude-sonnet-4-5")
    assert code == 2 and out == ""
    assert err.startswith(f"budgetclient prices: error: {broken}, line 3:"), err

    broken.write_text('[models."house-model"]\ninput = "three"\noutput = 15\n', encoding="utf-8")
    bc.config.reset_settings()
    code, out, err = run_cli(capsys, "prices", "claude-sonnet-4-5")
    assert code == 2 and str(broken) in err and "line 2" in err, err
