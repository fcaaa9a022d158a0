"""Issue 17 item 9: task names from the ledger cannot inject into CSV, terminals or HTML reports.

The ledger is written by whatever code runs with it, so a task name is untrusted input to
``budgetclient report``: CSV cells must not be spreadsheet formulas (OWASP CSV injection), table
output must not carry terminal escape sequences (OSC 52 clipboard writes, clear screen), a 1 MB
name must not make an 18 MB table, and the HTML report must escape names. JSON and CSV keep the
full name.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from budgetclient._display import DISPLAY_NAME_MAX, csv_cell, display_name, terminal_text
from budgetclient.cli._html import render_html
from budgetclient.reports import build_report

from ._report_data import History, sample_history
from .test_cli_report import _silent_logging, run_cli, write_ledger

__all__ = ["_silent_logging"]  # the CLI tests' fixture, used here too

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # writes "echo pwned" to the reader's clipboard
CLEAR = "\x1b[2J\x1b[H"
FORMULAS = ['=HYPERLINK("http://x.test","x")', "+1+1", "-2+3", "@SUM(A1:A2)", "\tcmd", "\rcmd", "\uff1d1+1"]
HUGE = "a" * 1_000_000


def renamed(history: History, names: dict[str, str], *, huge: bool = False) -> History:
    """``history`` with task names replaced, in its tasks and in their calls; ``huge`` adds one
    run of a task named with 1 MB (its calls are not copied: the name is what matters)."""
    extra = [replace(history.tasks[0], id="huge-task", name=HUGE)] if huge else []
    return History(
        tasks=[replace(t, name=names.get(t.name, t.name)) for t in history.tasks] + extra,
        calls=[
            replace(c, task_name=names.get(c.task_name, c.task_name)) if c.task_name else c
            for c in history.calls
        ],
    )


@pytest.fixture(scope="module")
def history() -> History:
    return sample_history()


def original_names(history: History) -> list[str]:
    return sorted({t.name for t in history.tasks})


# -- the three functions ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", FORMULAS)
def test_csv_cell_makes_formulas_text(value: str) -> None:
    assert csv_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["triage", "a=b", "", "0.5", 12, None, "'quoted"])
def test_csv_cell_leaves_other_values(value: object) -> None:
    assert csv_cell(value) == value


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"job{OSC52}done", "job?done"),
        (f"{CLEAR}job", "??job"),
        ("job\x1b[31mred\x1b[0m", "job?red?"),
        ("a\rb\nc\td\x07e\x00f\x9bg", "a?b?c?d?e?f?g"),
        ("left\u202eright", "left?right"),  # a bidirectional override reorders what is read
        ("naïve 日本 ✓", "naïve 日本 ✓"),
    ],
)
def test_terminal_text_strips_control_sequences(text: str, shown: str) -> None:
    assert terminal_text(text) == shown


def test_terminal_text_can_keep_newlines() -> None:
    assert terminal_text("a\nb\x1b[2Jc", keep_newlines=True) == "a\nb?c"


def test_display_name_cuts_long_names() -> None:
    shown = display_name(HUGE)
    assert len(shown) == DISPLAY_NAME_MAX and shown.endswith("…")
    assert display_name("short") == "short"
    assert display_name("x" * DISPLAY_NAME_MAX) == "x" * DISPLAY_NAME_MAX
    assert display_name(OSC52 * 1000).isprintable()  # cut inside an escape: still stripped


# -- the report command -------------------------------------------------------------------------------


def test_csv_report_escapes_formulas_and_keeps_full_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, history: History
) -> None:
    names = dict(zip(original_names(history), [FORMULAS[0], FORMULAS[3], FORMULAS[1]], strict=False))
    url = write_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", renamed(history, names, huge=True))
    code, out, _ = run_cli(capsys, "report", "--ledger", url, "--format", "csv")
    assert code == 0
    limit = csv.field_size_limit(2_000_000)  # the reader's own limit is 128 kB
    try:
        cells = [row[0] for row in csv.reader(io.StringIO(out))][1:]
    finally:
        csv.field_size_limit(limit)
    for name in [*names.values(), HUGE]:
        expected = "'" + name if name[0] in "=+-@" else name
        assert expected in cells, name[:20]  # the full name, 1 MB included, made inert
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    code, out, _ = run_cli(capsys, "report", "--ledger", url, "--format", "json")
    assert set(names.values()) <= {row["task"] for row in json.loads(out)}  # JSON: exactly as stored


def test_table_report_strips_escapes_and_cuts_long_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, history: History
) -> None:
    hostile = [f"clip{OSC52}board", f"{CLEAR}wipe"]
    names = dict(zip(original_names(history), hostile, strict=False))
    url = write_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", renamed(history, names, huge=True))
    code, out, _ = run_cli(capsys, "report", "--ledger", url)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "clip?board" in out and "??wipe" in out
    rows = [line for line in out.splitlines() if line.startswith("a" * 10)]
    assert len(rows) == 1 and rows[0].startswith("a" * (DISPLAY_NAME_MAX - 1) + "… ")
    assert len(out) < 20_000, len(out)  # was 18 MB for one 1 MB name
    assert all(line.isprintable() and len(line) < 300 for line in out.splitlines())  # alerts cut too


def test_html_report_escapes_names(history: History) -> None:
    hostile = ['"><img src=x onerror=alert(1)>', "</title><script>alert(2)</script>", "a&b'c"]
    names = dict(zip(original_names(history), hostile, strict=False))
    page = render_html(build_report(renamed(history, names).tasks))
    assert "<img" not in page and "<script>alert" not in page and "</title><script>" not in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "a&amp;b&#x27;c" in page


def test_check_lists_names_cut_and_terminal_safe() -> None:
    from budgetclient.cli.check import _names

    shown = _names([HUGE, f"clip{OSC52}board", "ok"])
    assert len(shown) < 3 * DISPLAY_NAME_MAX and "\x1b" not in shown and "'ok'" in shown
