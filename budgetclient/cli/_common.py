"""What the ledger-reading commands (``report``, ``check``) share: arguments, time windows, progress."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TextIO

from .. import config
from .._log import log
from ..errors import LedgerError
from ..ledger.aggregate import sql_ledger
from ..ledger.base import Ledger, mask_url, sqlite_path_from_url
from ..ledger.limits_store import LimitRow, read_limit_rows
from ..ledger.opening import open_ledger
from ..ledger_report import read_ledger_report
from ..reports import LedgerFacts, Report
from ..reports_drift import DriftRow, ledger_drift
from . import CommandError

__all__ = ["LoadedReport", "Progress", "add_ledger_arguments", "parse_since", "read_report"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``7d``, ``24h``, ``30m``, ``2w``, ``90s`` ago, or an ISO date / date-time (naive means UTC)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = date.fromisoformat(text.strip())
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--since {text!r} is neither a relative age (7d, 24h, 30m, 2w) nor an ISO date or date-time "
            "(2025-03-01, 2025-03-01T12:00, 2025-03-01T12:00+02:00)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger to read (default: BUDGETCLIENT_LEDGER or the SQLite file under $XDG_DATA_HOME)",
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only records from this time on: an age (7d, 24h, 30m) or an ISO date/time (UTC if naive)",
    )
    parser.add_argument("--task", metavar="NAME", help="only this task name")


def ledger_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet (nothing recorded there)."""
    if url.lower().startswith("sqlite:") or "://" not in url:
        return not os.path.exists(sqlite_path_from_url(url))
    return False


def _open(url: str, command: str = "report") -> Ledger:
    if ledger_missing(url):
        from .demo import demo_ledger_hint

        hint = demo_ledger_hint(command)
        raise CommandError(
            f"no ledger at {sqlite_path_from_url(url)!r} yet: run code that uses budgetclient first, or name "
            "another ledger with --ledger URL or BUDGETCLIENT_LEDGER" + (f"\n{hint}" if hint else "")
        )
    return open_ledger(url)


@dataclass(frozen=True, slots=True)
class LoadedReport:
    """A report and the checklist's facts, read from the ledger the arguments name."""

    url: str
    """Password masked."""
    since: datetime | None
    task: str | None
    report: Report
    facts: LedgerFacts | None
    drift: list[DriftRow] | None = None
    """The prefix drift rows of the same selection, when asked for."""
    limits: tuple[LimitRow, ...] = ()
    """The fleet limits recorded in the ledger database, each in its current window, when asked for."""


def read_report(
    args: argparse.Namespace,
    settings: config.Settings,
    *,
    points: bool = False,
    facts: bool = False,
    drift: bool = False,
    limits: bool = False,
) -> LoadedReport:
    """The report of the records the arguments select (the database aggregates; see `ledger_report`),
    with a progress line while it is built; a ledger that cannot be used is a one-line error.
    ``points`` (every run, for charts) only when they are drawn: they grow with the ledger; ``facts``
    (what the checklist reads besides the report) only for ``check``; ``drift`` and ``limits`` read
    from the same open ledger (the limits without creating their tables)."""
    url = args.ledger or config.get_settings().ledger_url
    since = parse_since(args.since) if args.since else None
    task = args.task or None
    progress = Progress()
    ledger = _open(url, getattr(args, "command", None) or "report")
    try:
        progress.update("reading the ledger")
        loaded = read_ledger_report(
            ledger,
            since=since,
            task_name=task,
            settings=settings,
            points=points,
            facts=facts,
            progress=progress,
        )
        drifts = ledger_drift(ledger, since=since, task=task) if drift else None
        found = _limit_rows(ledger) if limits else ()
    finally:
        ledger.close()
        progress.done()
    return LoadedReport(mask_url(url), since, task, loaded.report, loaded.facts, drifts, found)


def _limit_rows(ledger: Ledger) -> tuple[LimitRow, ...]:
    """The fleet limits recorded beside the ledger (none for a ledger without any, or one that cannot
    hold them): the report shows each one's spend in its current window, as ``budgetclient limits``."""
    db = sql_ledger(ledger)
    if db is None:
        return ()
    try:
        return tuple(read_limit_rows(db, time.time()))
    except LedgerError as exc:
        log.warning("report.limits_unreadable", error=type(exc).__name__, detail=mask_url(str(exc))[:200])
        return ()


class Progress:
    """One self-overwriting status line on stderr, shown only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def update(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        if not self.enabled:
            return
        text = stage if done is None or total is None else f"{stage}: {done}/{total}"
        line = f"budgetclient: {text}"
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.update(stage, done, total)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
