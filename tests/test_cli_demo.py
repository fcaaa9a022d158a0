"""``budgetclient demo`` and the CLI basics a new user meets first, run as a user would (subprocess).

The demo must write to a ledger of its own: the user's default ledger stays empty, so
``budgetclient check`` on it exits 0 and ``budgetclient report`` there shows no ``demo:`` task.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetclient.ledger import open_ledger
from budgetclient.testing import FakeAnthropic, FakeClock
from budgetclient.testing.traces import reference_traces, run_trace

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, data_home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m budgetclient ARGS`` with its own XDG data directory and no ledger variable."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETCLIENT_")}
    environ.update(XDG_DATA_HOME=str(data_home), PYTHONPATH=str(ROOT), COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "budgetclient", *args],
        capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("xdg")
    return home, run_cli("demo", data_home=home)


Demo = tuple[Path, subprocess.CompletedProcess[str]]


def test_demo_writes_its_own_ledger_and_says_where(after_demo: Demo) -> None:
    home, done = after_demo
    assert done.returncode == 0, done.stderr
    demo_db = home / "budgetclient" / "demo-ledger.db"
    assert f"sqlite:///{demo_db}" in done.stdout
    assert f"budgetclient report --ledger sqlite:///{demo_db}" in done.stdout
    ledger = open_ledger(f"sqlite:///{demo_db}")
    try:
        tasks = ledger.read_tasks()
        calls = ledger.read_calls()
    finally:
        ledger.close()
    trace = reference_traces()["guide_session"]
    assert sorted(t.name for t in tasks) == sorted(
        f"demo:guide_session:{s}" for s in ("none", "system-only", "provider-auto", "budgetclient")
    )
    assert len(calls) == 4 * len(trace.calls)
    # the uncached run's cost, computed here from the fake's usage and the published rates
    uncached = run_trace(trace, "none", fake=FakeAnthropic(clock=FakeClock()))
    expected = sum((_published_cost(u) for u in uncached.usages), Decimal(0))
    (none_task,) = [t for t in tasks if t.name == "demo:guide_session:none"]
    assert none_task.cost == expected
    assert f"${expected:.4f}" in done.stdout


def _published_cost(usage: Mapping[str, Any]) -> Decimal:
    """Claude Sonnet 4.6's published rates (USD per million tokens), stated here, not read from the code."""
    rates = {"input_tokens": Decimal(3), "cache_read_input_tokens": Decimal("0.30"),
             "cache_creation_input_tokens": Decimal("3.75"), "output_tokens": Decimal(15)}
    return sum((Decimal(usage.get(k) or 0) * r for k, r in rates.items()), Decimal(0)) / Decimal(1_000_000)


def test_user_ledger_stays_clean_and_check_passes(after_demo: Demo) -> None:
    home, done = after_demo
    assert done.returncode == 0, done.stderr
    user_db = home / "budgetclient" / "ledger.db"
    if user_db.exists():  # nothing wrote it; if something did, it holds no demo task
        ledger = open_ledger(f"sqlite:///{user_db}")
        try:
            assert not [t for t in ledger.read_tasks() if (t.name or "").startswith("demo:")]
        finally:
            ledger.close()
    check = run_cli("check", data_home=home)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "demo-ledger.db" in check.stdout  # and it says where the demo's records went
    report = run_cli("report", data_home=home)
    assert "demo:" not in report.stdout
    assert "budgetclient report --ledger" in report.stderr
    # an existing but empty user ledger: still nothing to judge, still exit 0
    open_ledger(f"sqlite:///{user_db}").close()
    check = run_cli("check", data_home=home)
    assert check.returncode == 0, check.stdout + check.stderr


def test_demo_ledger_option(tmp_path: Path) -> None:
    target = tmp_path / "mine.db"
    done = run_cli("demo", "--trace", "wide_turns", "--ledger", f"sqlite:///{target}", data_home=tmp_path)
    assert done.returncode == 0, done.stderr
    ledger = open_ledger(f"sqlite:///{target}")
    try:
        assert {t.name for t in ledger.read_tasks()} == {
            f"demo:wide_turns:{s}" for s in ("none", "system-only", "provider-auto", "budgetclient")
        }
    finally:
        ledger.close()
    assert not (tmp_path / "budgetclient" / "demo-ledger.db").exists()
    assert max(len(line.replace(str(target), "FILE")) for line in done.stdout.splitlines()) <= 100
    assert "\x1b" not in done.stdout and not done.stderr.strip()  # no warnings or log lines


def test_demo_help_lists_the_traces(tmp_path: Path) -> None:
    done = run_cli("demo", "--help", data_home=tmp_path)
    assert done.returncode == 0
    for name, trace in reference_traces().items():
        assert name in done.stdout and trace.description in done.stdout


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = run_cli("--version", data_home=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"budgetclient {version('budgetclient')}"
