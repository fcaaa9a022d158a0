"""What earlier runs of a task teach its first calls: gaps between calls, calls per run, implicit hits.

A periodic agent (one call every few minutes) pays for a 5-minute entry that expires before its
next call, and a short Gemini session never learns in time that an explicit cache would pay:
nothing in the first call of a run says so, but the ledger holds every earlier run of the same
task. `RunHistory` reads them once per task name (the indexed ``calls (task_name, started_at)``
query: the last `RECENT`, and the last `LOOKBACK` when that held too little), cached for
`REFRESH_S`, and keeps a small summary of each call; a run of the name that ends in this process
joins the summary. The read starts when a task starts (a task start hook, registered once a
client has asked for a prior, run on a background thread), so the first call of a run finds it
done, or waits only for what is left of it.

`RunHistory.prior` filters that summary by model and by the stable prefix's fingerprint
(``stable_prefix`` in each call record's metadata, `lineage.ConversationHead.fingerprint`): a task
whose runs use different prefixes learns per prefix (calls recorded before fingerprints were kept
count for any prefix). A ``memory://`` ledger, a task without history or a ledger that cannot be
read gives an empty prior: today's behaviour.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from . import config
from ._guard import guarded
from .ledger.base import Ledger
from .ledger_url import scheme_of, sqlite_path_from_url
from .lineage import GAP_HISTORY
from .tasks import Task, add_task_closing_hook, add_task_start_hook
from .usage import CallRecord

__all__ = [
    "LOOKBACK",
    "STABLE_PREFIX",
    "RunHistory",
    "RunPrior",
    "gaps_between",
    "run_gaps",
    "run_history",
]

LOOKBACK = timedelta(days=14)
"""How far back earlier runs count (a daily job's previous run included)."""
RECENT = timedelta(hours=1)
"""Read first: a frequent task finds its history here, without reading two weeks of calls."""
REFRESH_S = 600.0
"""A task name's history is read again after this long (runs started meanwhile reuse it)."""
MAX_NAMES_CACHED = 256
WAIT_S = 5.0
"""How long a call waits for a read already under way (a ledger read takes milliseconds)."""
STABLE_PREFIX = "stable_prefix"
"""Call-record metadata key of the stable prefix's fingerprint."""


def gaps_between(times: Iterable[float]) -> list[float]:
    """Seconds between consecutive times (sorted first), zero gaps (retries, parallel calls) left out."""
    return [b - a for a, b in pairwise(sorted(times)) if b > a]


@dataclass(frozen=True, slots=True)
class _EarlierCall:
    """What the prior needs of one earlier call."""

    task_id: str
    at: float
    model: str
    prefix: str | None
    prompt: int
    cache_read: int
    explicit: bool
    """Read through an explicit cache entry (Gemini ``cachedContent``): not an implicit hit."""


def _summary(record: CallRecord) -> _EarlierCall | None:
    if record.task_id is None or record.attempt > 0 or record.status != "ok":
        return None
    if record.operation not in ("messages", "generate_content", "chat.completions", "responses"):
        return None
    metadata = record.metadata or {}
    prefix = metadata.get(STABLE_PREFIX)
    usage = record.usage
    return _EarlierCall(
        task_id=record.task_id,
        at=record.started_at.timestamp(),
        model=record.model,
        prefix=prefix if isinstance(prefix, str) else None,
        prompt=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
        cache_read=usage.cache_read_tokens,
        explicit="cached_content" in metadata,
    )


@dataclass(frozen=True, slots=True)
class RunPrior:
    """What earlier runs of a task showed for one model and stable prefix."""

    gaps: list[float] = field(default_factory=list)
    """Gaps between consecutive calls within each earlier run, most recent runs last."""
    calls_per_run: float | None = None
    """Median number of calls an earlier run made (None without history)."""
    implicit_hit_share: float | None = None
    """Share of the prompt the server read from its implicit cache on calls that repeated a
    prefix without an explicit entry (None when no such call is known)."""


def _prior(
    calls: Sequence[_EarlierCall], *, model: str, prefix: str | None, exclude_task: str | None
) -> RunPrior:
    mine = [c for c in calls if c.model == model and c.task_id != exclude_task]
    if prefix is not None:  # calls recorded before fingerprints were kept count for any prefix
        mine = [c for c in mine if c.prefix == prefix or c.prefix is None]
    runs: dict[str, list[_EarlierCall]] = {}
    for call in mine:
        runs.setdefault(call.task_id, []).append(call)
    gaps: list[float] = []
    prompt = read = 0
    for run in runs.values():  # insertion order: by each run's first call, oldest first
        gaps.extend(gaps_between(c.at for c in run))
        for call in sorted(run, key=lambda c: c.at)[1:]:
            if not call.explicit:
                prompt += call.prompt
                read += min(call.cache_read, call.prompt)
    return RunPrior(
        gaps=gaps[-GAP_HISTORY:],
        calls_per_run=statistics.median(len(run) for run in runs.values()) if runs else None,
        implicit_hit_share=read / prompt if prompt else None,
    )


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
    for times in runs.values():
        gaps.extend(gaps_between(times))
    return gaps[-limit:] if limit else []


def _gap_count(calls: Sequence[_EarlierCall]) -> int:
    runs: dict[tuple[str, str], int] = {}
    for call in calls:
        runs[call.task_id, call.model] = runs.get((call.task_id, call.model), 0) + 1
    return sum(n - 1 for n in runs.values())


@dataclass(slots=True)
class _NameHistory:
    read_at: datetime
    done: threading.Event
    calls: list[_EarlierCall] = field(default_factory=list)
    priors: dict[tuple[str, str, str | None], RunPrior] = field(default_factory=dict)
    """`RunHistory.prior` by run, model and prefix, computed once each."""
    read: bool = False
    """Read from a ledger (``memory://`` and a missing file have no history, in-process either)."""


class RunHistory:
    """Earlier runs of each task name, read from the ledger at most every `REFRESH_S`."""

    def __init__(self, opener: Callable[[], Ledger | None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._opener = opener or _configured_ledger
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: OrderedDict[tuple[str, str], _NameHistory] = OrderedDict()
        self._lock = threading.Lock()
        self._hooked = False
        self.queries = 0
        """Ledger reads made."""

    def prior(self, task_name: str, task_id: str, model: str, prefix: str | None = None) -> RunPrior:
        """What earlier runs of ``task_name`` (not run ``task_id``) showed for ``model`` and the
        stable prefix ``prefix``; waits for a read under way, reads if none was started."""
        if not self._hooked:
            self._hooked = True  # from now on each task start reads its history ahead of its calls
            add_task_start_hook(self._task_started)
            add_task_closing_hook(self._task_ending)
        entry = self._start(task_name, background=False)
        entry.done.wait(WAIT_S)
        if not entry.done.is_set():
            return RunPrior()
        with self._lock:
            known = entry.priors.get((task_id, model, prefix))
        if known is None:
            known = _prior(entry.calls, model=model, prefix=prefix, exclude_task=task_id)
            with self._lock:
                if len(entry.priors) > MAX_NAMES_CACHED:
                    entry.priors.clear()
                entry.priors[task_id, model, prefix] = known
        return known

    def gaps(self, task_name: str, task_id: str, model: str, prefix: str | None = None) -> list[float]:
        """The gaps of `prior`."""
        return self.prior(task_name, task_id, model, prefix).gaps

    def _task_started(self, task: Task) -> None:
        self._start(task.name, background=True)

    def _task_ending(self, task: Task) -> None:
        """A run of a name whose history is cached joins it (the next run learns from it without
        reading the ledger again)."""
        key = (config.get_settings().ledger_url, task.name)
        with self._lock:
            entry = self._cache.get(key)
        if entry is None or not entry.done.is_set() or not entry.read:
            return
        ended = [c for c in map(_summary, task.records) if c is not None and c.task_id == task.id]
        with self._lock:
            entry.calls = [*entry.calls, *ended]
            entry.priors.clear()

    def _start(self, task_name: str, *, background: bool) -> _NameHistory:
        """The cached entry of ``task_name``, its read started (on a thread, or here) when stale."""
        key = (config.get_settings().ledger_url, task_name)  # another ledger, another history
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
            # a task start reads again what no ledger answered (its file may exist by now)
            if entry is not None and (now - entry.read_at).total_seconds() < REFRESH_S and (
                entry.read or not background or not entry.done.is_set()
            ):
                self._cache.move_to_end(key)
                return entry
            entry = self._cache[key] = _NameHistory(read_at=now, done=threading.Event())
            while len(self._cache) > MAX_NAMES_CACHED:
                self._cache.popitem(last=False)
        if background:
            threading.Thread(target=self._read, args=(entry, task_name, now), daemon=True,
                             name="budgetclient-run-history").start()
        else:
            self._read(entry, task_name, now)
        return entry

    def _read(self, entry: _NameHistory, task_name: str, now: datetime) -> None:
        try:
            with guarded("ttl.history_failed", task=task_name):  # a history we cannot read is no history
                ledger = self._opener()
                if ledger is None:
                    return
                try:
                    for window in (RECENT, LOOKBACK):
                        self.queries += 1
                        records = ledger.read_calls(task_name=task_name, since=now - window)
                        calls = [c for c in map(_summary, records) if c is not None]
                        if _gap_count(calls) >= GAP_HISTORY:
                            break
                    entry.calls, entry.read = calls, True
                finally:
                    ledger.close()
        finally:
            entry.done.set()


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
    # a parent thread may have held the lock at fork(), or been reading: the child starts afresh
    run_history._lock = threading.Lock()
    run_history._cache = OrderedDict()


os.register_at_fork(after_in_child=_after_fork_in_child)
