"""The HTML report in a real headless browser (Debian's chromium, installed by .ci/chromium.sh).

``BUDGETCLIENT_UPDATE_DOCS=1 pytest tests/test_report_html.py`` also refreshes docs/report.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from budgetclient.cli._html import render_html
from budgetclient.config import SignalThresholds
from budgetclient.reports import build_report
from budgetclient.reports_drift import drift_rows
from budgetclient.usage import CallRecord, TaskRecord

from ._report_data import sample_history

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} not installed (bash .ci/chromium.sh installs it)"
)
DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "report.png"


def sample_page(tmp_path: Path, *, empty: bool = False) -> Path:
    history = sample_history()
    report = build_report([] if empty else history.tasks, [] if empty else history.calls)
    report = replace(report, generated_at=datetime(2025, 3, 11, 8, 0, tzinfo=UTC))
    page = tmp_path / ("empty.html" if empty else "report.html")
    page.write_text(render_html(report, ledger="sqlite:///ledger.db", thresholds=SignalThresholds()), "utf-8")
    return page


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the decoded image data) of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_page_is_self_contained(tmp_path: Path) -> None:
    page = sample_page(tmp_path).read_text("utf-8")
    without_namespace = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://|<link\b|<script[^>]*\bsrc=|@import|url\(|<img\b", without_namespace)
    assert page.count('class="chart') == 3
    for title in ("Cost per task over time", "Cost by bucket", "Cache hit rate"):
        assert f"<h2>{title}</h2>" in page


def test_names_are_escaped(tmp_path: Path) -> None:
    history = sample_history()
    tasks = [
        replace(t, name="<script>alert(1)</script>") if t.name == "triage-ticket" else t
        for t in history.tasks
    ]
    page = render_html(build_report(tasks))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@needs_chromium
def test_screenshot_in_headless_chromium(tmp_path: Path) -> None:
    page = sample_page(tmp_path)
    shot = tmp_path / "report.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    width, height, distinct = png_facts(shot)
    assert (width, height) == (1280, 2000)
    assert shot.stat().st_size > 30_000 and distinct > 100, "the screenshot looks blank"
    if os.environ.get("BUDGETCLIENT_UPDATE_DOCS"):
        DOCS_PNG.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_PNG)


@needs_chromium
@pytest.mark.parametrize("empty", [False, True])
def test_browser_draws_every_chart(tmp_path: Path, empty: bool) -> None:
    page = sample_page(tmp_path, empty=empty)
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = result.stdout
    assert "<svg" in dom, result.stderr[-2000:]
    # set by the page's inline script from getBBox() after layout: charts with drawn marks
    assert 'data-charts-rendered="3"' in dom
    if not empty:
        assert (
            len(re.findall(r"<circle data-mark=\"point\"", dom)) == len(sample_history().tasks) - 1
        )  # 1 unpriced
        assert len(re.findall(r"<polyline data-mark=\"line\"", dom)) == 4
        assert dom.count('data-mark="bar"') >= 10


def many_tasks(count: int = 40) -> tuple[list[TaskRecord], list[CallRecord]]:
    """``count`` task names sharing a long prefix, each its own cost: the charts must tell them apart."""
    history = sample_history()
    base = next(t for t in history.tasks if t.cost is not None)
    tasks = [
        replace(base, id=f"t{i}", name=f"demo:guide_session:strategy-{i:02d}",
                cost=(base.cost or 0) * (i + 1), cost_breakdown=base.cost_breakdown)
        for i in range(count)
    ]  # fmt: skip
    return tasks, []


def wide_page(tmp_path: Path) -> Path:
    tasks, calls = many_tasks()
    report = build_report(tasks, calls)
    page = tmp_path / "many.html"
    page.write_text(render_html(report, ledger="sqlite:///ledger.db"), "utf-8")
    return page


def test_labels_are_whole_and_truncation_is_said(tmp_path: Path) -> None:
    page = wide_page(tmp_path).read_text("utf-8")
    for i in range(40):  # every name appears whole (bars for the filter, and the table)
        assert f">demo:guide_session:strategy-{i:02d}<" in page
    assert "top 12 of 40 task names by cost" in page and "top 8 of 40 task names by cost" in page
    assert 'id="task-filter"' in page


def test_drift_section_lists_drifts_with_their_fix(tmp_path: Path) -> None:
    from budgetclient.drift import PrefixDrift, fix_hint

    history = sample_history()
    drift = PrefixDrift("system[0].text", 40, "", "", "timestamp", 1200, None)
    calls = [replace(c, drift=drift) if i % 7 == 0 else c for i, c in enumerate(history.calls)]
    rows = drift_rows(calls)
    page = render_html(build_report(history.tasks, calls), drift=rows)
    assert "<h2>Prefix drift</h2>" in page and fix_hint("timestamp", "system[0].text") in page
    assert sum(r.calls for r in rows) == len(range(0, len(calls), 7))


def layout_at(tmp_path: Path, page: Path, width: int, fragment: str = "") -> tuple[str, dict[str, object]]:
    result = chromium(tmp_path, f"--window-size={width},2400", "--dump-dom", page.as_uri() + fragment)
    match = re.search(r"data-layout=\"([^\"]+)\"", result.stdout)
    assert match, result.stderr[-2000:]
    return result.stdout, json.loads(match.group(1).replace("&quot;", '"'))


@needs_chromium
@pytest.mark.parametrize("width", [800, 1400])
def test_readable_at_800_and_1400_pixels(tmp_path: Path, width: int) -> None:
    for page in (sample_page(tmp_path), wide_page(tmp_path)):
        dom, layout = layout_at(tmp_path, page, width)
        assert layout["width"] == width
        assert layout["overflow"] is False, layout  # no sideways scrolling of the page
        assert layout["clipped"] == 0, layout  # no label cut off at a chart's edge
        assert float(layout["smallest_text_px"]) >= 10, layout  # type: ignore[arg-type]
        assert 'data-charts-rendered="3"' in dom


@needs_chromium
def test_the_filter_shows_a_task_outside_the_top(tmp_path: Path) -> None:
    page = wide_page(tmp_path)
    dom, _ = layout_at(tmp_path, page, 1400, "#filter=strategy-02")  # the cheapest but two: not in a top
    rows = re.findall(r'<div class="row([^"]*)" data-task="([^"]+)"(?: style="([^"]*)")?', dom)
    shown = {name for classes, name, style in rows if "hidden" not in classes}
    assert shown == {"demo:guide_session:strategy-02"}
    assert all("display: block" in style for classes, name, style in rows if name in shown)
