"""The TTL learned across runs: gaps between calls that earlier runs of the same task showed.

A periodic agent (one call every few minutes) pays for a 5-minute entry that expires before its
next call: nothing in the first call of a run says the gaps will be long, but the ledger holds
every earlier run of the same task. `RunHistory.gaps` reads them with the indexed query
(``calls (task_name, started_at)``) when a run's first conversation starts, cached per task name
for a few minutes, and hands the gaps to the first calls of a conversation as evidence for
`placement.choose_ttl`. A ``memory://`` ledger, a task without
history or a ledger that cannot be read gives no gaps: today's behaviour.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from . import config
from ._guard import guarded
from .ledger.base import Ledger
from .ledger_url import scheme_of, sqlite_path_from_url
from .lineage import GAP_HISTORY
from .usage import CallRecord

__all__ = ["LOOKBACK", "RunHistory", "gaps_between", "run_gaps", "run_history"]

LOOKBACK = timedelta(days=14)
"""How far back earlier runs count (a daily job's previous run included)."""
RECENT = timedelta(hours=1)
"""Read first: a frequent task finds its history here, without reading two weeks of calls."""
REFRESH_S = 600.0
"""A task name's history is read again after this long (runs started meanwhile reuse it)."""
MAX_NAMES_CACHED = 256


def gaps_between(times: Iterable[float]) -> list[float]:
    """Seconds between consecutive times (sorted first), zero gaps (retries, parallel calls) left out."""
    return [b - a for a, b in pairwise(sorted(times)) if b > a]


def run_gaps(calls: Sequence[CallRecord], *, model: str | None = None, exclude_task: str | None = None,
             limit: int = GAP_HISTORY) -> list[float]:
    """The gaps between consecutive calls within each earlier run (one ``task_id``) of ``calls``
    (oldest first), most recent runs last, at most ``limit``."""
    runs: dict[str, list[float]] = {}
    for record in calls:
        if record.task_id is None or record.task_id == exclude_task or record.attempt > 0:
            continue
        if model is not None and record.model != model:
            continue
        runs.setdefault(record.task_id, []).append(record.started_at.timestamp())
    gaps: list[float] = []
    for times in runs.values():  # insertion order: by each run's first call, oldest first
        gaps.extend(gaps_between(times))
    return gaps[-limit:] if limit else []


class RunHistory:
    """Earlier runs' gaps by task name and model, read from the ledger at most every `REFRESH_S`.

    A read is the indexed ``task_name`` query over the last `RECENT`, and only when that holds
    fewer than `GAP_HISTORY` gaps, over the last `LOOKBACK` (a task that ran hours or days ago).
    """

    def __init__(self, opener: Callable[[], Ledger | None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._opener = opener or _configured_ledger
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: OrderedDict[tuple[str, str, str], tuple[datetime, list[float]]] = OrderedDict()
        self._lock = threading.Lock()
        self.queries = 0
        """Ledger reads made."""

    def gaps(self, task_name: str, task_id: str, model: str) -> list[float]:
        """Gaps between calls of ``model`` in earlier runs of ``task_name`` (not run ``task_id``)."""
        key = (config.get_settings().ledger_url, task_name, model)  # another ledger, another history
        now = self._clock()
        with self._lock:
            known = self._cache.get(key)
            if known is not None and (now - known[0]).total_seconds() < REFRESH_S:
                self._cache.move_to_end(key)
                return list(known[1])
        found: list[float] = []
        with guarded("ttl.history_failed", task=task_name):  # a history we cannot read is no history
            ledger = self._opener()
            if ledger is not None:
                try:
                    for window in (RECENT, LOOKBACK):
                        self.queries += 1
                        calls = ledger.read_calls(task_name=task_name, since=now - window)
                        found = run_gaps(calls, model=model, exclude_task=task_id)
                        if len(found) >= GAP_HISTORY:
                            break
                finally:
                    ledger.close()
        with self._lock:
            self._cache[key] = (now, found)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_NAMES_CACHED:
                self._cache.popitem(last=False)
        return list(found)


def _configured_ledger() -> Ledger | None:
    """A reader on the configured ledger; None for ``memory://`` (a new one is always empty) and for
    a SQLite file not written yet (reading must not create it)."""
    from .ledger.opening import open_ledger

    url = config.get_settings().ledger_url
    scheme = scheme_of(url) if url else ""
    if scheme in ("", "memory"):
        return None
    if scheme == "sqlite" and not os.path.exists(os.path.expanduser(sqlite_path_from_url(url))):
        return None
    return open_ledger(url)


run_history = RunHistory()
"""The process-wide history the clients read (cached per task name)."""


def _after_fork_in_child() -> None:
    # a parent thread may have held the lock at fork(): the child starts with a free one
    run_history._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
