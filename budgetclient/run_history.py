"""The TTL learned across runs: gaps between calls that earlier runs of the same task showed.

A periodic agent (one call every few minutes) pays for a 5-minute entry that expires before its
next call: nothing in the first call of a run says the gaps will be long, but the ledger holds
every earlier run of the same task. `RunHistory.gaps` reads them with one indexed query
(``calls (task_name, started_at)``) per task run, cached, and hands the gaps to the first calls
of a conversation as evidence for `placement.choose_ttl`. A ``memory://`` ledger, a task without
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
"""How far back earlier runs count (older runs may have had another schedule)."""
MAX_RUNS_CACHED = 256


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
    """Earlier runs' gaps by task name, read once per task run (``task_id``) and cached."""

    def __init__(self, opener: Callable[[], Ledger | None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._opener = opener or _configured_ledger
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()
        self.queries = 0
        """Ledger queries made (one per task run and model at most)."""

    def gaps(self, task_name: str, task_id: str, model: str) -> list[float]:
        """Gaps between calls of ``model`` in earlier runs of ``task_name`` (not run ``task_id``)."""
        key = (task_name, task_id, model)
        with self._lock:
            known = self._cache.get(key)
            if known is not None:
                self._cache.move_to_end(key)
                return list(known)
        found: list[float] = []
        with guarded("ttl.history_failed", task=task_name):  # a history we cannot read is no history
            ledger = self._opener()
            if ledger is not None:
                self.queries += 1
                try:
                    calls = ledger.read_calls(task_name=task_name, since=self._clock() - LOOKBACK)
                finally:
                    ledger.close()
                found = run_gaps(calls, model=model, exclude_task=task_id)
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > MAX_RUNS_CACHED:
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
"""The process-wide history the clients read (one query per task run, cached)."""
