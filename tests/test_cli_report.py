"""The ``report``, ``check`` and ``prices`` commands, run in-process against real ledgers."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import budgetclient as bc
from budgetclient.cli import main
from budgetclient.cli._common import Progress, parse_since
from budgetclient.ledger import open_ledger
from budgetclient.usage import CallRecord, Outcome, Usage

from ._report_data import History, make_call, sample_history, task_from_calls
from .test_reports import expected_row

CONTRACT_KEYS = {
    "task", "runs", "outcomes", "calls", "cost_total", "cost_p50", "cost_p95", "cost_per_success",
    "failure_cost", "cache_hit_rate", "tokens", "alerts",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _silent_logging() -> Iterator[None]:
    """Keep library log lines (from this or any background writer) out of the captured stdout/stderr.

    ``main()`` configures structlog only when nothing else did, so configuring it here first wins;
    the previous configuration comes back afterwards.
    """
    import logging

    import structlog

    configured, previous = structlog.is_configured(), structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    yield
    if configured:
        structlog.configure(**previous)
    else:
        structlog.reset_defaults()


def write_ledger(url: str, history: History) -> str:
    ledger = open_ledger(url)
    ledger.write(calls=history.calls, tasks=history.tasks)
    ledger.close()
    return url


@pytest.fixture(scope="module")
def history() -> History:
    return sample_history()


@pytest.fixture
def sqlite_url(tmp_path: Path, history: History) -> str:
    return write_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", history)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- report ---------------------------------------------------------------------------------------


def test_json_report_matches_the_raw_records(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, history: History
) -> None:
    code, out, err = run_cli(capsys, "report", "--ledger", sqlite_url, "--format", "json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert isinstance(rows, list) and all(set(r) >= CONTRACT_KEYS for r in rows)
    by_name = {r["task"]: r for r in rows}
    for name in {t.name for t in history.tasks}:
        want = expected_row(name, history.tasks, history.calls)
        got = by_name[name]
        assert (
            got["runs"] == want["runs"]
            and got["outcomes"] == want["outcomes"]
            and got["calls"] == want["calls"]
        )
        for key in ("cost_total", "cost_p50", "cost_p95", "cost_per_success", "failure_cost"):
            assert (None if got[key] is None else Decimal(got[key])) == want[key], (name, key)
        assert got["cache_hit_rate"] == pytest.approx(want["cache_hit_rate"], abs=1e-6)
        assert {k: got["tokens"][k] for k in ("input", "cache_read", "cache_write", "output")} == want[
            "tokens"
        ]
        assert isinstance(got["alerts"], list)
    loose = [c for c in history.calls if c.task_id is None]
    assert by_name[None]["calls"] == len(loose)
    assert Decimal(by_name[None]["cost_total"]) == sum(
        (c.cost for c in loose if c.cost is not None), Decimal(0)
    )


def test_report_reads_the_configured_ledger_by_default(
    capsys: pytest.CaptureFixture[str], ledger_url: str, history: History
) -> None:
    write_ledger(ledger_url, history)  # conftest points BUDGETCLIENT_LEDGER at this memory:// store
    code, out, _ = run_cli(capsys, "report", "--format", "json")
    assert code == 0 and {r["task"] for r in json.loads(out)} == {t.name for t in history.tasks} | {None}


def recent_history(now: datetime) -> History:
    history = History()
    for n, (name, age) in enumerate([("old", timedelta(days=10)), ("new", timedelta(hours=2))]):
        start = now - age
        usage = Usage(input_tokens=2000, output_tokens=100, requests=1)
        calls = [
            make_call(
                10 * n + i, at=start + timedelta(seconds=i), usage=usage, task_id=f"t{n}", task_name=name
            )
            for i in range(2)
        ]
        history.calls.extend(calls)
        history.tasks.append(task_from_calls(f"t{n}", name, "success", calls, started_at=start))
    return history


@pytest.mark.parametrize("since", ["24h", "3d", "1w", "{day}", "{day}T00:00", "{day}T00:00:00+00:00"])
def test_since_keeps_only_recent_records(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, since: str
) -> None:
    now = datetime.now(UTC)
    url = write_ledger(f"sqlite:///{tmp_path / 'l.db'}", recent_history(now))
    day = (now - timedelta(days=1)).date().isoformat()
    code, out, _ = run_cli(
        capsys, "report", "--ledger", url, "--format", "json", "--since", since.format(day=day)
    )
    assert code == 0 and [r["task"] for r in json.loads(out)] == ["new"]


def test_task_filter(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    code, out, _ = run_cli(
        capsys, "report", "--ledger", sqlite_url, "--format", "json", "--task", "triage-ticket"
    )
    assert code == 0 and [r["task"] for r in json.loads(out)] == ["triage-ticket"]


def test_csv_carries_the_same_figures_as_json(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    _, out_json, _ = run_cli(capsys, "report", "--ledger", sqlite_url, "--format", "json")
    code, out_csv, _ = run_cli(capsys, "report", "--ledger", sqlite_url, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out_csv)))
    for row, data in zip(rows, json.loads(out_json), strict=True):
        assert row["task"] == (data["task"] or "")
        assert int(row["runs"]) == data["runs"] and int(row["failure"]) == data["outcomes"]["failure"]
        assert row["cost_total"] == (data["cost_total"] or "")
        assert row["cost_p95"] == (data["cost_p95"] or "")
        assert int(row["output_tokens"]) == data["tokens"]["output"]
        assert int(row["alerts"]) == len(data["alerts"])


def test_table_lists_every_task_name_and_the_total(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, history: History
) -> None:
    code, out, _ = run_cli(capsys, "report", "--ledger", sqlite_url)
    assert code == 0
    for name in {t.name for t in history.tasks}:
        assert re.search(rf"^{re.escape(name)}\s", out, re.MULTILINE), name
    assert "(no task)" in out
    total = sum((c.cost for c in history.calls if c.cost is not None), Decimal(0))
    assert f"total ${total:.4f} over {len(history.calls)} calls" in out


def test_html_report_is_one_self_contained_file(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    code, out, err = run_cli(
        capsys, "report", "--ledger", sqlite_url, "--format", "html", "--output", str(target)
    )
    assert code == 0 and out == "" and str(target) in err
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 3
    without_namespace = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://|<link\b|<script[^>]*\bsrc=|@import|url\(", without_namespace)


def test_empty_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = write_ledger(f"sqlite:///{tmp_path / 'empty.db'}", History())
    assert run_cli(capsys, "report", "--ledger", url, "--format", "json")[:2] == (0, "[]\n")
    assert "no tasks or calls" in run_cli(capsys, "report", "--ledger", url)[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--since", "yesterday-ish"], "--since 'yesterday-ish'"),
        (
            ["report", "--ledger", "sqlite:////nonexistent/dir/ledger.db"],
            "no ledger at '/nonexistent/dir/ledger.db'",
        ),
        (["report", "--ledger", "ftp://x/y"], "unsupported ledger URL"),
        (["prices", "no-such-model-anywhere"], "no price known for model 'no-such-model-anywhere'"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and err.startswith(f"budgetclient {argv[0]}: error: ")


def test_progress_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        progress = Progress(stream)
        progress.update("reading tasks")
        progress("signals", 500, 1000)
        progress.done()
    assert "reading tasks" in tty.getvalue() and "signals: 500/1000" in tty.getvalue()
    assert tty.getvalue().endswith("\r") and pipe.getvalue() == ""


def test_parse_since_forms() -> None:
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("90m", now=now) == now - timedelta(minutes=90)
    assert parse_since("2025-03-01", now=now) == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_since("2025-03-01T10:00+02:00", now=now) == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert parse_since("2025-03-01T10:00Z", now=now) == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


# -- check ----------------------------------------------------------------------------------------


def healthy_history(*, hit: float = 0.9, failures: int = 0, models: Sequence[str] = ("claude-sonnet-4-5",
                    "claude-haiku-4-5"), output: int = 300) -> History:  # fmt: skip
    history = History()
    start = datetime(2025, 3, 1, tzinfo=UTC)
    for n in range(8):
        for m, model in enumerate(models):
            task_id = f"t{n}-{m}"
            at = start + timedelta(hours=n, minutes=10 * m)
            calls: list[CallRecord] = []
            for i in range(3):
                usage = Usage(
                    input_tokens=4000,
                    cache_read_tokens=int(4000 * hit) if i else 0,
                    cache_write_tokens=0 if i else 3000,
                    output_tokens=output,
                    requests=1,
                )
                at_i = at + timedelta(seconds=10 * i)
                n_call = len(history.calls) + i
                name = f"job-{m}"
                calls.append(
                    make_call(n_call, at=at_i, model=model, usage=usage, task_id=task_id, task_name=name,
                              conversation=task_id)
                )  # fmt: skip
            history.calls.extend(calls)
            outcome: Outcome = "failure" if n < failures else "success"
            history.tasks.append(task_from_calls(task_id, f"job-{m}", outcome, calls, started_at=at))
    return history


def check(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(capsys, "check", "--ledger", url, "--format", "json", *extra)
    data = json.loads(out)
    return code, {item["key"]: item for item in data["items"]} | {"passed": data["passed"]}


def test_check_passes_a_healthy_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = write_ledger(f"sqlite:///{tmp_path / 'ok.db'}", healthy_history())
    bc.configure(alert_cost_per_task="1.00")
    code, items = check(capsys, url)
    assert code == 0 and items.pop("passed") is True
    statuses = {key: item["status"] for key, item in items.items()}
    assert statuses == {
        "budget_modeled": "manual",
        "allocation_targets": "manual",
        "caching": "pass",
        "tool_surface": "manual",
        "cost_stable": "pass",
        "output_constrained": "pass",
        "cost_per_task_logged": "pass",
        "alert_threshold": "pass",
        "failure_cost": "pass",
        "model_tiering": "pass",
    }
    code, out, _ = run_cli(capsys, "check", "--ledger", url)
    assert code == 0 and out.rstrip().endswith("OK: 7 pass, 3 manual")


@pytest.mark.parametrize(
    ("history", "key", "status"),
    [
        (healthy_history(hit=0.0), "caching", "fail"),  # no reads, but writes: caching on and missing
        (healthy_history(hit=0.2), "caching", "fail"),
        (healthy_history(output=13_000), "output_constrained", "fail"),  # 13000 > 3 x 4000 tokens
        (healthy_history(failures=4), "failure_cost", "fail"),  # half the runs failed
        (healthy_history(models=("claude-sonnet-4-5",)), "model_tiering", "warn"),
    ],
)
def test_check_fails_and_warns_per_item(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, history: History, key: str, status: str
) -> None:
    url = write_ledger(f"sqlite:///{tmp_path / 'l.db'}", history)
    bc.configure(alert_cost_per_task="1.00")
    code, items = check(capsys, url)
    assert items[key]["status"] == status, items[key]
    assert code == (1 if status == "fail" else 0) and items["passed"] is (status != "fail")
    if status == "warn":
        assert check(capsys, url, "--strict")[0] == 1


def test_check_without_caching_or_thresholds_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    history = healthy_history()
    plain = Usage(input_tokens=4000, output_tokens=300, requests=1)
    history.calls[:] = [
        make_call(i, at=c.started_at, model=c.model, usage=plain, task_id=c.task_id, task_name=c.task_name)
        for i, c in enumerate(history.calls)
    ]
    url = write_ledger(f"sqlite:///{tmp_path / 'l.db'}", history)
    code, items = check(capsys, url)
    assert code == 1
    assert items["caching"]["status"] == "fail" and "none of 48 calls" in items["caching"]["detail"]
    assert items["alert_threshold"]["status"] == "fail"


def test_check_accepts_task_budgets_as_thresholds(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from dataclasses import replace

    history = healthy_history()
    history.tasks[:] = [replace(t, budget_usd=Decimal("0.5")) for t in history.tasks]
    url = write_ledger(f"sqlite:///{tmp_path / 'l.db'}", history)
    assert check(capsys, url)[1]["alert_threshold"]["status"] == "pass"


def test_check_on_an_empty_ledger_has_nothing_to_judge(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Nothing recorded (a fresh install, or one that only ran the demo) is not a failed check."""
    url = write_ledger(f"sqlite:///{tmp_path / 'l.db'}", History())
    code, out, _ = run_cli(capsys, "check", "--ledger", url, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["passed"] is True and data["items"] == []
    assert data["note"].startswith(f"nothing to check in {url}")
    code, out, _ = run_cli(capsys, "check", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}")
    assert code == 0 and "no ledger file yet" in out


# -- prices ---------------------------------------------------------------------------------------


def test_prices_shows_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    bc.configure(prices={"house-model": {"input": "0.5", "output": 2, "cache_read": "0.05"}})
    code, out, _ = run_cli(capsys, "prices", "house-model", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["source"] == "override"
    assert Decimal(data["input"]["base"]) == Decimal("0.5") and Decimal(data["output"]["base"]) == 2
    assert Decimal(data["cache_read"]["base"]) == Decimal("0.05")
    code, out, _ = run_cli(capsys, "prices", "house-model", "--batch", "--format", "json")
    assert Decimal(json.loads(out)["input"]["base"]) == Decimal("0.25")  # batch halves override rates


def test_prices_agree_with_the_bundled_price_data(capsys: pytest.CaptureFixture[str]) -> None:
    from genai_prices.data_snapshot import get_snapshot

    _, info = get_snapshot().find_provider_model("claude-sonnet-4-5", None, "anthropic", None)
    published = info.get_prices(datetime.now(UTC))
    code, out, _ = run_cli(
        capsys, "prices", "claude-sonnet-4-5", "--provider", "anthropic", "--format", "json"
    )
    data = json.loads(out)
    assert code == 0 and data["source"] == "genai-prices" and data["provider"] == "anthropic"

    def base(value: Any) -> Decimal:
        return Decimal(value) if isinstance(value, Decimal) else Decimal(value.base)

    assert Decimal(data["input"]["base"]) == base(published.input_mtok)
    assert Decimal(data["output"]["base"]) == base(published.output_mtok)
    assert Decimal(data["cache_read"]["base"]) == base(published.cache_read_mtok)
    code, out, _ = run_cli(capsys, "prices", "claude-sonnet-4-5")
    assert code == 0 and re.search(rf"output\s+{base(published.output_mtok):.2f}", out)


@pytest.mark.parametrize("command", [["report"], ["report", "--format", "json"], ["check"]])
def test_reading_commands_open_the_ledger_once_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """``report`` and ``check`` read: the ledger is opened once (report, drift and limits alike) and
    no table is created in it (a ledger that never held a fleet limit has no limit tables)."""
    import sqlite3

    from budgetclient.ledger.sqlite import SQLiteLedger

    path = tmp_path / "ledger.db"
    history = sample_history()
    ledger = open_ledger(f"sqlite:///{path}")
    ledger.write(calls=history.calls, tasks=history.tasks)
    ledger.close()
    with sqlite3.connect(path) as raw:
        before = raw.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    opened: list[str] = []
    real_init = SQLiteLedger.__init__

    def counting_init(self: SQLiteLedger, url: str) -> None:
        opened.append(url)
        real_init(self, url)

    monkeypatch.setattr(SQLiteLedger, "__init__", counting_init)
    assert main([*command, "--ledger", f"sqlite:///{path}"]) in (0, 1)
    capsys.readouterr()
    assert len(opened) == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == before


def test_report_imports_neither_the_planner_nor_other_commands(sqlite_url: str) -> None:
    """A named subcommand builds its own parser only (start-up of each `report` process)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\nfrom budgetclient.cli import main\n"
        f"code = main(['report', '--ledger', {sqlite_url!r}, '--format', 'json'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('budgetclient.plan', 'budgetclient.cli.'))))\n"
        "sys.exit(code)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": root},
    )  # fmt: skip
    loaded = json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert not [m for m in loaded if m.startswith("budgetclient.plan")]
    assert "budgetclient.cli.estimate" not in loaded and "budgetclient.cli.demo" not in loaded
    assert "budgetclient.cli.report" in loaded
