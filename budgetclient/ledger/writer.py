"""The off-call-path batcher: records are queued in O(1) and written by one background thread.

A model call must never wait for, or fail because of, the ledger. So ``submit_*`` only appends
to an in-memory queue; a daemon thread writes batches in one transaction each. When the ledger
cannot be opened or written, the batch is kept and retried with capped exponential backoff, and
``ledger.write_failed`` is logged (error class and message, passwords masked, never record
contents). Records are never dropped while the process lives; at exit the queue is flushed with
a bounded wait (``ledger_exit_timeout``, 10 s by default; a wait past half a second is logged).

Only connection and lock errors are retried. Every record is screened first (`_validate.screen`:
counts clamped to 64 bits, times inside the calendar); a batch the database refuses for its values
(`RecordRefused`, or an encoding error) is split in halves and each half written, down to the
single refused record, which is normalised (`_validate.normalise`: text made encodable, lengths
bounded) and tried once more, and if still refused quarantined: into the ledger's
``quarantine`` table, or when the database refuses that too, a ``*.quarantine.jsonl`` file beside a
SQLite ledger (``$XDG_DATA_HOME/budgetclient/quarantine.jsonl`` for other ledgers). So one bad
record costs only itself, and everything after it is written. A URL no backend can use is not an
outage: its records go straight to the quarantine file and ``ledger.url_invalid`` is logged.

While the ledger is down, at most ``max_queued`` records wait in memory (~1.2 kB each); newer ones
go to a spill file (`spill_prefix` + pid, private, ``flock``-ed by its writer) and are written from
it once the ledger is back. What is still unwritten at exit or SIGTERM (the ledger down or locked)
goes to the spill file too. A spill file left behind by a process that ended is written by the next
writer on that ledger, after its first write, and then removed. Ids are unique and writes skip a
stored id, so a replay cut short by a crash is simply done again: nothing is lost or stored twice.

SIGTERM (how Docker, Kubernetes and systemd stop a worker) flushes the queue before the process
ends; see `install_sigterm_flush`. SIGKILL cannot be caught: it loses what was queued and not yet
committed, at most the last ``flush_interval`` (0.2 s) of records plus the write in progress.

The process-wide writer follows ``configure(ledger=...)``: on a URL change the old writer is
drained to its old URL and a new one starts. After ``fork()`` a child starts with an empty queue
and its own thread; the parent's queued records stay the parent's to write.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import importlib
import json
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from .. import config
from .._guard import guarded, report_fault
from .._log import log
from ..errors import ConfigurationError, LedgerError
from ..ledger_url import InvalidLedgerURL, check_url, mask_url, scheme_of, sqlite_path_from_url
from ..pending import settle
from ..usage import CallRecord, TaskRecord
from . import _codec
from ._files import append_private, open_locked, read_all, write_all
from ._validate import MAX_KEY_BYTES, Unstorable, clean_text, normalise, screen
from .base import AlertRecord, Ledger, RecordRefused, mask_secrets
from .opening import open_ledger

_monotonic = time.monotonic
"""Bound at import: code under test often patches ``time.monotonic`` (anyio's fake clock, a
mock), and the writer's thread runs beside whatever the caller is doing; it must neither die of
the patch nor wait by a clock that does not move."""

__all__ = ["LedgerWriter", "flush", "get_ledger", "get_writer", "install_sigterm_flush", "quarantine_path"]


_Kind = Literal["call", "task", "alert"]

BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 5.0
EXIT_TIMEOUT_S = config.DEFAULT_LEDGER_EXIT_TIMEOUT_S
"""Default longest wait at exit for queued records (``configure(ledger_exit_timeout=...)``)."""
EXIT_QUIET_S = 0.5
"""An exit wait longer than this is logged (``ledger.exit_waiting``): the process seems hung."""
EXIT_TIMEOUT_FAILING_S = 1.0
"""...and for a ledger that is failing right now (one more attempt, then give up)."""
BATCH_SIZE = 20_000
"""Default for the most records one write (one transaction) takes."""
_NEVER = sys.maxsize

_ROW_ENCODERS: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "call": _codec.call_to_row,
    "task": _codec.task_to_row,
    "alert": _codec.alert_to_row,
}
_DATA_ERRORS = (ValueError, TypeError, OverflowError, AttributeError, KeyError, UnicodeError)
"""Raised by encoding or binding a record's values: the record is at fault, not the database."""
MAX_QUEUED = 100_000
"""Default for the most records held in memory while the ledger is down (~1.2 kB each)."""
REJECTED_KEPT = 1000
"""Most quarantined records kept in ``LedgerWriter.rejected`` (the rest are in the quarantine)."""


def _is_record_error(exc: BaseException) -> bool:
    """True when retrying cannot help because the batch's values are refused (see `RecordRefused`)."""
    if isinstance(exc, RecordRefused):
        return True
    return isinstance(exc, _DATA_ERRORS) and not isinstance(exc, LedgerError)


def quarantine_path(url: str) -> Path:
    """The file records go to when neither the ledger nor its quarantine table takes them.

    Beside a SQLite ledger (``ledger.db.quarantine.jsonl``); for other ledgers, and URLs no backend
    can use, in budgetclient's data directory. One JSON object a line: kind, id, error, the row.
    """
    try:
        if scheme_of(url) == "sqlite":
            return Path(f"{Path(sqlite_path_from_url(url)).absolute()}.quarantine.jsonl")
    except LedgerError:
        pass
    default = Path(sqlite_path_from_url(config.default_ledger_url()))
    return default.parent / "quarantine.jsonl"


def _quarantine_entry(kind: str, record: Any, error: BaseException) -> dict[str, Any]:
    """What is kept of a quarantined record: its stored row (no prompt text: records hold none)."""
    try:
        row: Any = dict(zip(_COLUMNS[kind], _ROW_ENCODERS[kind](record), strict=True))
    except Exception as exc:
        row = {"unencodable": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {
        "kind": kind,
        "id": clean_text(str(getattr(record, "id", "")), MAX_KEY_BYTES),
        "quarantined_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "error": clean_text(f"{type(error).__name__}: {mask_secrets(str(error))}", 2000),
        "record": json.dumps(row, default=str, ensure_ascii=True, separators=(",", ":")),
    }


_COLUMNS = {"call": _codec.CALL_COLUMNS, "task": _codec.TASK_COLUMNS, "alert": _codec.ALERT_COLUMNS}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "call": _codec.call_from_row, "task": _codec.task_from_row, "alert": _codec.alert_from_row,
}  # fmt: skip
_SPILL_SCHEMES = frozenset({"sqlite", "postgresql", "postgres"})
"""Ledgers another process can write a spill file into (not ``memory://``: it dies with its process)."""


def spill_prefix(url: str) -> str:
    """Where the spill files of ``url``'s writers go: this prefix, the writer's pid, ``.jsonl``.

    Beside a SQLite ledger (``ledger.db.spill-<pid>.jsonl``); for other ledgers, in the data
    directory, named for the ledger (a hash of its masked URL), so each ledger replays its own.
    """
    path = quarantine_path(url)
    if path.name.endswith(".quarantine.jsonl"):
        return str(path.with_name(f"{path.name.removesuffix('.quarantine.jsonl')}.spill-"))
    digest = hashlib.sha256(mask_url(url).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return str(path.with_name(f"spill-{digest}-"))


_BACKEND_OPENERS = {
    "sqlite": ("sqlite", "SQLiteLedger"),
    "postgresql": ("postgres", "open_postgres_ledger"),
    "postgres": ("postgres", "open_postgres_ledger"),
    "memory": ("memory", "MemoryLedger"),
}
_openers: dict[str, Callable[[str], Ledger]] = {}


def _resolve_opener(url: str) -> Callable[[str], Ledger]:
    """The backend's own factory for ``url``, imported now, in the thread creating the writer.

    ``open_ledger`` imports the backend on first use, which would happen in the writer thread: a
    ``fork()`` from another thread during that import leaves the child a half-initialised module
    (ImportError forever), and during interpreter finalisation imports fail outright. A backend
    that cannot be imported (psycopg missing) stays with ``open_ledger``, which says so.
    """
    scheme = scheme_of(url)
    opener = _openers.get(scheme)
    if opener is None:
        target = _BACKEND_OPENERS.get(scheme)
        if target is None:
            return open_ledger
        try:
            module = importlib.import_module(f"{__package__}.{target[0]}")
        except Exception:
            return open_ledger
        opener = _openers[scheme] = getattr(module, target[1])
    return opener


class _Tagged:
    """A task or alert in the queue. Calls, the volume, are queued bare: no wrapper to build."""

    __slots__ = ("kind", "record")

    def __init__(self, kind: _Kind, record: Any) -> None:
        self.kind = kind
        self.record = record


def _kind_and_record(item: Any) -> tuple[_Kind, Any]:
    return (item.kind, item.record) if type(item) is _Tagged else ("call", item)


_instances: weakref.WeakSet[LedgerWriter] = weakref.WeakSet()
# Ledgers opened by a parent process: a forked child must neither use nor close them.
_inherited_ledgers: list[Ledger] = []


class LedgerWriter:
    """Queue records and write them to ``url`` in batches from a daemon thread.

    A write (one transaction) starts when ``batch_size`` records are queued, or ``flush_interval``
    seconds after the first, or on `flush`; it takes at most ``batch_size`` records. So transactions
    grow with the load, and each commit's sync is shared by more records.

    Submitting takes no lock: ``deque.append`` is atomic, and a submit only wakes the thread (lock
    and notify) when the queue reaches the length the thread is waiting for (``_wake_at``).
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = BATCH_SIZE,
        flush_interval: float = 0.2,
        opener: Callable[[str], Ledger] = open_ledger,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        if not isinstance(max_queued, int) or max_queued < 1:
            raise ConfigurationError(f"max_queued must be a positive int, got {max_queued!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
        if not flush_interval >= 0:
            raise ConfigurationError(f"flush_interval must be >= 0 seconds, got {flush_interval!r}")
        self.url = url
        self.max_queued = max_queued
        """While the ledger is down, records queued past this many go to `spill_path` (logged)
        instead of memory, and are written from there once the ledger is back."""
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self._opener = opener
        self.url_error: InvalidLedgerURL | None = None
        """Set when ``url`` is one no backend can use: records then go to `quarantine_path` at once."""
        if opener is open_ledger:
            try:
                check_url(url)
            except InvalidLedgerURL as exc:
                self.url_error = exc
            else:
                self._opener = _resolve_opener(url)
        self._init_state()
        _instances.add(self)

    def _init_state(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._queue: deque[Any] = deque()  # CallRecords bare, tasks and alerts as _Tagged
        self._wake_at = 1
        """Queue length at which a submit must wake the thread: 1 while it waits for a record (or
        no thread runs), ``batch_size`` while it lingers to fill a batch, _NEVER while it writes.
        The thread sets it (under the lock) before it looks at the queue, so no wake-up is lost."""
        self._in_flight = 0
        self._taken = 0  # records taken off the queue, ever
        self._written = 0  # ...of which written (or set aside)
        self._flush_target = 0
        self._retry_now = False
        self._closing = False
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._ledger: Ledger | None = None
        self._bisecting = False
        self._spilled = 0  # records in our spill file not yet replayed
        self._spill_fd: int | None = None  # our spill file, open and flock'ed while it exists
        self._spill_lock = threading.Lock()
        self._orphans_checked = False  # other processes' spill files replayed after the first write
        self._in_flight_items: list[Any] = []  # the batch being written (copied to the spill at exit)
        self.rejected: list[Any] = []
        """The first `REJECTED_KEPT` records quarantined (``ledger.record_quarantined``)."""

    def __repr__(self) -> str:
        return f"LedgerWriter({mask_url(self.url)!r}, pending={self.pending})"

    # -- producer side: O(1), no I/O, never raises -------------------------------------------

    def submit_call(self, record: CallRecord) -> None:
        queue = self._queue
        queue.append(record)
        if len(queue) >= self._wake_at:
            self._wake()

    def submit_task(self, record: TaskRecord) -> None:
        self._submit(_Tagged("task", record))

    def submit_alert(self, record: AlertRecord) -> None:
        self._submit(_Tagged("alert", record))

    def _submit(self, item: _Tagged) -> None:
        queue = self._queue
        queue.append(item)
        if len(queue) >= self._wake_at:
            self._wake()

    def _wake(self) -> None:
        try:
            with self._mutex:  # the condition's own lock, without Condition's Python-level wrapper
                if self._thread is None:
                    self._start_thread()
                else:
                    self._wake_at = _NEVER  # woken once is enough: it sets _wake_at again before waiting
                    self._cond.notify_all()
                inline = self._thread is None
            if inline:  # after the exit flush: nothing else will write this record
                self.flush(_exit_timeout)
        except Exception:  # the caller's model call must not fail because of the ledger
            pass

    def _start_thread(self) -> None:
        # called with self._cond held
        if _shutting_down or sys.is_finalizing():
            # Python 3.11 blocks forever in Thread.start() during finalisation; writing inline
            # (flush -> _write_inline) is the only way such a record is stored.
            return
        thread = threading.Thread(target=self._run_guarded, name="budgetclient-ledger-writer", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: flush() writes inline instead
            return
        self._thread = thread

    @property
    def pending(self) -> int:
        """Records submitted but not yet written (queued or in the batch being written)."""
        with self._cond:
            return len(self._queue) + self._in_flight

    @property
    def failing(self) -> bool:
        """True while the last write attempt failed and the current batch awaits a retry."""
        return self._failures > 0

    # -- flush / close ----------------------------------------------------------------------

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything submitted so far is written; False if ``timeout`` passed first.

        Never raises: while the ledger is down this returns False and the records stay queued.
        """
        settle()  # calls whose records are still being made off the call path (`pending`)
        deadline = None if timeout is None else _monotonic() + max(timeout, 0.0)
        with self._cond:
            target = self._taken + len(self._queue)
            if self._written >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            self._retry_now = self._failures > 0  # skip the current back-off: try again now
            if self._thread is None:
                self._start_thread()
            self._cond.notify_all()
            if self._thread is not None:
                while self._written < target:
                    remaining = None if deadline is None else deadline - _monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
        return self._write_inline(target, deadline)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush and stop the thread; records that could not be written stay queued and retried.

        Submitting after close is allowed: a new thread starts and stops again once drained.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not self.flush(timeout) and self.failing:
            log.warning(
                "ledger.close_pending", url=mask_url(self.url), pending=self.pending,
                detail="the ledger is not writable; records stay queued and are retried in the background",
            )  # fmt: skip

    # -- the background thread ----------------------------------------------------------------

    def _run_guarded(self) -> None:
        """`_run`, whose fault is logged, not raised into ``threading.excepthook`` (where a test
        runner reports it as the user's failure): `_run` has handed its batch back, and the next
        submit starts a new thread."""
        try:
            self._run()
        except Exception as exc:
            report_fault("ledger.writer_failed", exc, url=mask_url(self.url))

    def _run(self) -> None:
        batch: list[Any] = []
        taken = 0  # records removed from the queue for this batch
        ledger: Ledger | None = None
        try:
            if not self._orphans_checked:  # before the first batch: an exit flush waits for them too
                with guarded("ledger.spill_replay_failed", url=mask_url(self.url)):
                    self._replay_orphans()
            while True:
                with self._cond:
                    fresh = not batch
                    if fresh:
                        batch = self._next_batch()
                        taken = len(batch)
                    if not batch:  # closed and drained
                        self._thread = None
                        ledger, self._ledger = self._ledger, None
                        break
                if fresh:
                    batch = self._normalised(batch)
                    self._in_flight_items = batch
                batch = self._store(batch)
                if batch:  # the ledger is down: keep the rest and try again
                    self._in_flight_items = batch
                    self._spill_excess()
                    self._back_off()
                    continue
                with self._cond:
                    self._written += taken
                    self._in_flight = 0
                    self._in_flight_items = []
                    self._cond.notify_all()
                with guarded("ledger.spill_replay_failed", url=mask_url(self.url)):
                    if self._spilled:
                        self._replay_spilled()
                    if not self._orphans_checked:
                        self._replay_orphans()
        finally:
            if self._thread is threading.current_thread():  # died of a bug: hand the batch back
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    self._taken -= len(batch)
                    if batch:
                        self._written += taken - len(batch)  # the ones written or quarantined
                    self._in_flight = 0
                    self._thread = None
                    self._wake_at = 1
        if ledger is not None:
            self._close_ledger(ledger)

    def _next_batch(self) -> list[Any]:
        """Wait for records, linger up to ``flush_interval`` to fill a batch, and take it."""
        queue = self._queue
        while True:
            self._wake_at = 1
            if queue:
                break
            if self._closing:
                return []  # _wake_at stays 1: the next submit starts a new thread
            self._cond.wait()
        deadline = _monotonic() + self.flush_interval
        while True:
            self._wake_at = self.batch_size
            if len(queue) >= self.batch_size or self._closing or self._flush_target > self._written:
                break
            remaining = deadline - _monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        self._wake_at = _NEVER
        return self._take()

    def _take(self) -> list[Any]:
        # called with self._cond held
        size = min(self.batch_size, len(self._queue))
        popleft = self._queue.popleft
        batch = [popleft() for _ in range(size)]
        self._taken += size
        self._in_flight = size
        return batch

    def _back_off(self) -> None:
        delay = min(BACKOFF_INITIAL_S * 2 ** (self._failures - 1), BACKOFF_MAX_S)
        deadline = _monotonic() + delay
        with self._cond:
            while not self._retry_now:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._retry_now = False

    def _store(self, batch: list[Any]) -> list[Any]:
        """Write ``batch``, or as much of it as the database takes; returns what is left to retry.

        Empty when every record is written or quarantined. A refusal of the batch's values is
        bisected down to the refused records, so only they are quarantined; a connection or lock
        error (transient) leaves the rest of the batch to retry after a back-off.
        """
        if self.url_error is not None:
            for item in batch:
                self._quarantine(item, self.url_error)
            return []
        error = self._write(batch, quiet=self._bisecting)
        if error is None:
            return []
        if not _is_record_error(error):
            return batch
        if len(batch) == 1:
            fixed = self._normalised(batch, whole=True)  # [] when quarantined as unstorable
            if fixed and fixed[0] is not batch[0]:
                error = self._write(fixed, quiet=True)
                if error is None:
                    return []
                if not _is_record_error(error):
                    return fixed
            if fixed:
                self._quarantine(batch[0], error)
            return []
        outer, self._bisecting = self._bisecting, True
        try:
            middle = len(batch) // 2
            left = self._store(batch[:middle])
            return left + batch[middle:] if left else self._store(batch[middle:])
        finally:
            self._bisecting = outer

    def _normalised(self, batch: list[Any], *, whole: bool = False) -> list[Any]:
        """The batch with every record screened (`_validate.screen`), or with ``whole`` normalised;
        most pass unchanged. A record no normalisation can save is quarantined here and left out."""
        out = batch
        check = normalise if whole else screen
        for index, item in enumerate(batch):
            try:
                if type(item) is not _Tagged:
                    record = check("call", item)
                    new = item if record is item else record
                else:
                    record = check(item.kind, item.record)
                    new = item if record is item.record else _Tagged(item.kind, record)
            except Unstorable as exc:
                self._quarantine(item, exc)
                new = None
            if new is not item:
                if out is batch:
                    out = list(batch)
                out[index] = new
        return out if out is batch else [item for item in out if item is not None]

    def _write(self, batch: list[Any], *, quiet: bool = False) -> BaseException | None:
        """One transaction; None when it committed, else the error (logged unless ``quiet``)."""
        calls = [r for r in batch if type(r) is not _Tagged]
        tasks: list[Any] = []
        alerts: list[Any] = []
        if len(calls) < len(batch):  # most batches are calls only
            tasks = [i.record for i in batch if type(i) is _Tagged and i.kind == "task"]
            alerts = [i.record for i in batch if type(i) is _Tagged and i.kind == "alert"]
        try:
            if self._ledger is None:
                self._ledger = self._opener(self.url)
        except Exception as exc:  # opening is never the records' fault: retry
            self._failed(exc, len(batch), quiet=False)
            return exc
        try:
            self._ledger.write(calls=calls, tasks=tasks, alerts=alerts)
        except Exception as exc:
            if _is_record_error(exc):
                if not quiet:
                    self._log(
                        "error", "ledger.write_refused", url=mask_url(self.url), error=type(exc).__name__,
                        detail=mask_secrets(str(exc))[:500], records=len(batch),
                        action="writing the batch in halves to quarantine only the refused records",
                    )  # fmt: skip
                return exc
            self._failed(exc, len(batch), quiet=quiet)
            return exc
        if self._failures:
            self._log("info", "ledger.write_recovered", url=mask_url(self.url),
                      failed_attempts=self._failures)  # fmt: skip
            self._failures = 0
        return None

    def _failed(self, exc: BaseException, records: int, *, quiet: bool) -> None:
        self._failures += 1
        ledger, self._ledger = self._ledger, None  # reopen on the next attempt
        if ledger is not None:
            self._close_ledger(ledger)
        if not quiet:
            self._log(
                "error", "ledger.write_failed", url=mask_url(self.url), error=type(exc).__name__,
                detail=mask_secrets(str(exc))[:500], records=records, pending=self.pending,
                attempt=self._failures,
                retry_in_s=min(BACKOFF_INITIAL_S * 2 ** (self._failures - 1), BACKOFF_MAX_S),
            )  # fmt: skip

    @staticmethod
    def _log(level: str, event: str, **fields: Any) -> None:
        try:
            getattr(log, level)(event, **fields)
        except Exception:  # logging must not stop the writer
            pass

    def _quarantine(self, item: Any, error: BaseException) -> None:
        """Keep a record the ledger refuses where it is found again, and log it; never raises."""
        kind, record = _kind_and_record(item)
        entry = _quarantine_entry(kind, record, error)
        where = "ledger"
        try:
            if isinstance(error, InvalidLedgerURL):
                raise LookupError("no ledger to quarantine into")
            if self._ledger is None:
                self._ledger = self._opener(self.url)
            store = getattr(self._ledger, "quarantine", None)
            if store is None:
                raise LookupError("this ledger has no quarantine table")
            store([entry])
        except Exception:
            where = str(quarantine_path(self.url))
            try:
                append_private(Path(where), json.dumps(entry, ensure_ascii=True) + "\n")
            except Exception as exc:
                where = f"memory only (writing {where} failed: {type(exc).__name__})"
        if len(self.rejected) < REJECTED_KEPT:
            self.rejected.append(record)
        self._log(
            "error", "ledger.record_quarantined", url=mask_url(self.url), kind=kind, id=entry["id"][:100],
            error=type(error).__name__, detail=entry["error"][:300], quarantined_in=where,
        )  # fmt: skip

    @property
    def spill_path(self) -> Path:
        """This process's overflow file for this ledger (`spill_prefix` + pid; only its writer
        appends to it, under an exclusive ``flock`` held while the file exists)."""
        return Path(f"{spill_prefix(self.url)}{os.getpid()}.jsonl")

    def _spill_excess(self) -> None:
        """Move the newest records past `max_queued` from memory to `spill_path`; they count as
        written (they are on disk) and go to the ledger once it takes writes again."""
        with self._cond:
            excess = len(self._queue) - self.max_queued
            if excess <= 0:
                return
            items = [self._queue.pop() for _ in range(excess)]
            items.reverse()
        if not self._append_to_spill(items, why="the ledger is down and the queue is full"):
            with self._cond:  # keep them in memory after all: better late than lost
                self._queue.extend(items)
            return
        with self._cond:
            self._taken += len(items)
            self._written += len(items)
            self._cond.notify_all()

    def _append_to_spill(self, items: list[Any], *, why: str) -> bool:
        """Append ``items`` to `spill_path` (one JSON line each: kind and row); False if that failed
        (logged). A record that cannot be encoded is quarantined instead."""
        lines = []
        for item in items:
            kind, record = _kind_and_record(item)
            try:
                row = _ROW_ENCODERS[kind](record)
            except Exception as exc:
                self._quarantine(item, exc)
                continue
            lines.append(json.dumps({"kind": kind, "row": row}, default=str, ensure_ascii=True))
        path = self.spill_path
        # a timeout: SIGTERM's flush may interrupt this very thread inside the lock
        if not self._spill_lock.acquire(timeout=5.0):
            self._log("error", "ledger.spill_failed", path=str(path), error="TimeoutError",
                      records=len(items))  # fmt: skip
            return False
        try:
            if self._spill_fd is None:
                self._spill_fd = open_locked(path, create=True)
                if self._spill_fd is None:
                    raise BlockingIOError(f"{path} is being replayed by another process")
            write_all(self._spill_fd, "".join(f"{line}\n" for line in lines))
            self._spilled += len(lines)
        except Exception as exc:
            self._log("error", "ledger.spill_failed", path=str(path), error=type(exc).__name__,
                      detail=str(exc)[:300], records=len(items))  # fmt: skip
            return False
        finally:
            self._spill_lock.release()
        self._log(
            "warning", "ledger.queue_spilled", url=mask_url(self.url), records=len(lines), path=str(path),
            max_queued=self.max_queued, detail=f"{why}; written to the ledger once it takes writes again",
        )  # fmt: skip
        return True

    def _replay_spilled(self) -> None:
        """Write `spill_path` back into the recovered ledger, a batch at a time, then remove it.

        Records appended while it is replayed stay for the next replay (the file is removed only
        when it holds nothing more than what was read); a replay cut short (the ledger down again,
        or a crash) is done again whole, and writes are idempotent (ids are unique), so nothing is
        stored twice."""
        with self._spill_lock:
            fd = self._spill_fd
            if fd is None:
                self._spilled = 0
                return
            data = read_all(fd)
        if not self._replay(data, self.spill_path):
            return  # down again: the file stays
        with self._spill_lock:
            if os.fstat(fd).st_size == len(data):
                os.unlink(self.spill_path)
                os.close(fd)
                self._spill_fd = None
                self._spilled = 0

    def _replay_orphans(self) -> None:
        """Write the spill files other processes left for this ledger (they exited or were killed
        while it was down) into it, then remove each. A file whose owner lives stays locked, and
        is skipped; two processes starting at once never replay the same file (the lock). Tried
        when the thread starts, and again after each write until it succeeded once."""
        if self.url_error is not None or scheme_of(self.url) not in _SPILL_SCHEMES:
            self._orphans_checked = True
            return
        for path in sorted(glob.glob(f"{glob.escape(spill_prefix(self.url))}*.jsonl")):
            fd = open_locked(Path(path), create=False)  # None: its writer lives, or it is gone
            if fd is None:
                continue
            try:
                if not self._replay(read_all(fd), Path(path)):
                    return  # the ledger is down: tried again after the next write that succeeds
                os.unlink(path)
            finally:
                os.close(fd)
        self._orphans_checked = True

    def _replay(self, data: bytes, path: Path) -> bool:
        """Store the records of a spill file's content; False if the ledger failed (retry later)."""
        items: list[Any] = []
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            try:
                entry = json.loads(line)
                kind = entry["kind"]
                record = _DECODERS[kind](dict(zip(_COLUMNS[kind], entry["row"], strict=True)))
            except Exception as exc:  # a line cut short by a crash: kept in the quarantine file
                self._quarantine_line(line, f"{path}:{number}", exc)
                continue
            items.append(record if kind == "call" else _Tagged(kind, record))
        for start in range(0, len(items), self.batch_size):
            if self._store(self._normalised(items[start : start + self.batch_size])):
                return False
        self._log("info", "ledger.spill_replayed", url=mask_url(self.url), records=len(items), path=str(path))
        return True

    def _quarantine_line(self, line: str, where: str, error: BaseException) -> None:
        entry = {
            "kind": "spill-line", "id": where,
            "quarantined_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "error": clean_text(f"{type(error).__name__}: {str(error)[:200]}", 2000), "record": line,
        }  # fmt: skip
        try:
            append_private(quarantine_path(self.url), json.dumps(entry, ensure_ascii=True) + "\n")
        except Exception:
            pass
        self._log("error", "ledger.spill_line_unreadable", where=where, error=type(error).__name__)

    def spill_unwritten(self) -> int:
        """Append everything not yet written (queued, and a copy of the batch being written) to
        `spill_path`, for the next process on this ledger to write; returns how many records.

        For exit and SIGTERM while the ledger is down or locked: written to disk rather than lost.
        The batch in flight may still commit; its replay then stores nothing twice (unique ids)."""
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
            in_flight = list(self._in_flight_items) if self._in_flight else []
        if not (queued or in_flight):
            return 0
        if not self._append_to_spill(in_flight + queued, why="the ledger is not writable at exit"):
            with self._cond:
                self._queue.extendleft(reversed(queued))
            return 0
        with self._cond:
            self._taken += len(queued)
            self._written += len(queued)
            self._cond.notify_all()
        return len(queued) + len(in_flight)

    def _write_inline(self, target: int, deadline: float | None) -> bool:
        """Write from the calling thread when no thread can be started (interpreter shutdown)."""
        while True:
            with self._cond:
                if self._written >= target:
                    return True
                if self._in_flight or (deadline is not None and _monotonic() >= deadline):
                    return False
                batch = self._take()
            taken = len(batch)
            left = self._store(self._normalised(batch))
            with self._cond:
                self._in_flight = 0
                if left:
                    self._queue.extendleft(reversed(left))
                    self._taken -= len(left)
                    self._written += taken - len(left)
                    break
                self._written += taken
        if _shutting_down:  # after the exit flush: the spill file is the only place left for them
            self.spill_unwritten()
        return False

    @staticmethod
    def _close_ledger(ledger: Ledger) -> None:
        try:
            ledger.close()
        except Exception:
            pass

    def _after_fork_in_child(self) -> None:
        if self._ledger is not None:
            _inherited_ledgers.append(self._ledger)
        if self._spill_fd is not None:  # the parent's spill file: closed, never unlocked (its lock is
            os.close(self._spill_fd)  # the parent's too), and left for the parent to replay
        self._init_state()


# -- the process-wide writer ----------------------------------------------------------------------

_lock = threading.Lock()
_writer: LedgerWriter | None = None
_retired: list[LedgerWriter] = []
"""Writers replaced after a URL change whose ledger was failing; they keep retrying."""
_shutting_down = False
"""Set once the exit flush has run: from then on records are written inline, no thread started."""
_exit_timeout = EXIT_TIMEOUT_S


def get_writer() -> LedgerWriter:
    """The process-wide writer for the configured ledger URL, started on first use.

    The first use from the main thread also installs the SIGTERM flush (`install_sigterm_flush`).
    """
    global _writer
    if not _sigterm_done:
        install_sigterm_flush()
    url = config.get_settings().ledger_url
    with _lock:
        if _writer is not None and _writer.url == url:
            return _writer
        old, _writer = _writer, LedgerWriter(url, max_queued=MAX_QUEUED)
        current = _writer
    if current.url_error is not None:
        current._log(
            "error", "ledger.url_invalid", url=mask_url(url), detail=str(current.url_error)[:500],
            quarantined_in=str(quarantine_path(url)),
            action="records go to the quarantine file; fix BUDGETCLIENT_LEDGER or bc.configure(ledger=...)",
        )  # fmt: skip
    if old is not None:  # settings changed without notice: drain the old one without blocking
        _retire(old, timeout=0.0)
    return current


def _retire(old: LedgerWriter, *, timeout: float) -> None:
    """Close a replaced writer; whatever it cannot write yet it keeps retrying in the background."""
    old.close(timeout=0.0 if old.failing else timeout)
    if old.pending:
        with _lock:
            _retired[:] = [w for w in _retired if w.pending]
            _retired.append(old)


def _on_settings_change(old: Any, new: Any) -> None:
    global _writer
    with _lock:
        if _writer is None or _writer.url == new.ledger_url:
            return
        replaced, _writer = _writer, None
    _retire(replaced, timeout=new.ledger_exit_timeout)  # written to its old URL before configure() returns


def flush(timeout: float | None = 10.0) -> bool:
    """Write everything submitted to the process-wide writer; False if ``timeout`` passed first."""
    settle()
    with _lock:
        writer = _writer
    return True if writer is None else writer.flush(timeout)


def get_ledger() -> Ledger:
    """A reader on the configured ledger URL (for reports and tests); close it when done.

    Raises `InvalidLedgerURL` (a `ConfigurationError`) for a URL no backend can use.
    """
    return open_ledger(config.get_settings().ledger_url)


def _flush_writers(writers: list[LedgerWriter], timeout: float, *, why: str) -> None:
    """Wait up to ``timeout`` for ``writers``; a wait over `EXIT_QUIET_S` is logged, and so is
    what is left unwritten when the time is up."""
    deadline = _monotonic() + timeout
    for writer in writers:
        remaining = max(deadline - _monotonic(), 0.0)
        if writer.failing:
            remaining = min(remaining, EXIT_TIMEOUT_FAILING_S)
        if writer.flush(min(remaining, EXIT_QUIET_S)):
            continue
        if remaining > EXIT_QUIET_S and writer.pending:
            writer._log(
                "warning", "ledger.exit_waiting", url=mask_url(writer.url), pending=writer.pending, on=why,
                timeout_s=round(remaining, 3), failing=writer.failing,
                detail="waiting for the ledger (locked or unreachable?); "
                "configure(ledger_exit_timeout=...) or BUDGETCLIENT_LEDGER_EXIT_TIMEOUT bounds the wait",
            )  # fmt: skip
            if writer.flush(max(deadline - _monotonic(), 0.0)):
                continue
        if not writer.pending:
            continue
        pending = writer.pending
        spilled = writer.spill_unwritten()
        if spilled:
            writer._log(
                "warning", "ledger.spilled_at_exit", url=mask_url(writer.url), records=spilled, on=why,
                path=str(writer.spill_path),
                detail="the ledger stayed unwritable until exit; the next process writing to it stores them",
            )  # fmt: skip
        else:
            writer._log(
                "error", "ledger.unwritten_at_exit", url=mask_url(writer.url), pending=pending, on=why,
                detail="the ledger stayed unwritable until exit and the spill file could not be written; "
                "these records are lost",
            )  # fmt: skip


def _live_writers() -> list[LedgerWriter]:
    with _lock:
        return [w for w in (_writer, *_retired) if w is not None]


def _flush_at_exit() -> None:
    global _shutting_down, _exit_timeout
    settle()
    settings = config.get_settings()
    _exit_timeout = settings.ledger_exit_timeout
    writers = _live_writers()
    # Imports fail during finalisation: resolve now the backend a late record (a stream abandoned
    # without closing, finalised with its module) is written to, and the substitution templates.
    _resolve_opener(settings.ledger_url)
    mask_url("scheme://user:secret@host?password=x")
    _flush_writers(writers, _exit_timeout, why="exit")
    for writer in writers:  # stop the threads: a daemon thread stalls once finalisation starts
        with writer._cond:  # (what they could not write is in the spill file by now)
            writer._closing = True
            writer._cond.notify_all()
        thread = writer._thread
        if thread is not None:
            thread.join(EXIT_QUIET_S)
    _shutting_down = True


# -- SIGTERM ----------------------------------------------------------------------------------------

_sigterm_done = False
"""True once `install_sigterm_flush` has decided (installed, or found SIGTERM ignored)."""
_previous_sigterm: Any = signal.SIG_DFL


def install_sigterm_flush() -> bool:
    """Flush the ledger when SIGTERM arrives, then let the signal do what it did before.

    Docker, Kubernetes and systemd stop a worker with SIGTERM, whose default action ends the
    process at once, losing what was queued. The handler flushes (up to ``ledger_exit_timeout``)
    and then chains: to the application's own handler if it had one (called as it would have
    been), else it restores the default action and re-sends SIGTERM, so the process still ends
    "killed by SIGTERM". An ignored SIGTERM, or a handler installed outside Python, is left alone.

    Only the main thread may install signal handlers, so this runs on the first record published
    from the main thread (`get_writer`), and returns False from any other thread (call it from the
    main thread at start-up to be sure). A handler the application installs later replaces this one
    (that is its choice); it can call ``bc.ledger.flush()`` itself. SIGKILL cannot be caught: it
    loses the records queued and not yet committed, at most the last ``flush_interval`` (0.2 s).
    """
    global _sigterm_done, _previous_sigterm
    if _sigterm_done:
        return signal.getsignal(signal.SIGTERM) is _on_sigterm
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is _on_sigterm:
            _sigterm_done = True
            return True
        if previous is None or previous == signal.SIG_IGN:
            _sigterm_done = True
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return False
    _previous_sigterm = previous
    _sigterm_done = True
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    try:
        _flush_on_signal()
    finally:
        previous = _previous_sigterm
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


def _flush_on_signal() -> None:
    """The SIGTERM flush. A signal handler runs in the main thread between two of its bytecodes,
    maybe while that thread holds a writer's lock (inside a submit): each lock is tried with a
    timeout first, so the handler never deadlocks on its own thread."""
    found = _usable_writers()
    if found is not None and len(found[0]) == len(found[1]):
        settle()  # records still being made off the call path (`pending`) reach a writer first
        found = _usable_writers()
    if found is None:
        return
    usable = found[1]
    try:
        _flush_writers(usable, config.get_settings().ledger_exit_timeout, why="SIGTERM")
    except Exception:
        pass


def _usable_writers() -> tuple[list[LedgerWriter], list[LedgerWriter]] | None:
    """Every writer, and those whose locks this thread does not hold (tried with a timeout); None:
    the module lock could not be taken."""
    if not _lock.acquire(timeout=1.0):
        return None
    try:
        writers = [w for w in (_writer, *_retired) if w is not None]
    finally:
        _lock.release()
    usable = []
    for writer in writers:
        if writer._mutex.acquire(timeout=1.0):
            writer._mutex.release()
            usable.append(writer)
    return writers, usable


class _ForkAnchor:
    """Weak-referenceable key for ``multiprocessing.util.register_after_fork``."""


_fork_anchor = _ForkAnchor()


def _flush_at_multiprocessing_exit(_: object) -> None:
    # multiprocessing's fork children leave through os._exit (atexit never runs), but they do run
    # multiprocessing's finalizers, which it clears at start-up and re-creates from after-fork hooks.
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _flush_at_exit, exitpriority=10)


def _after_fork_in_child() -> None:
    global _lock, _writer, _shutting_down
    _lock = threading.Lock()
    _shutting_down = False
    for writer in list(_instances):
        writer._after_fork_in_child()
    _writer = None
    _retired.clear()
    util = sys.modules.get("multiprocessing.util")  # imported by anyone starting a multiprocessing child
    if util is not None:
        util.register_after_fork(_fork_anchor, _flush_at_multiprocessing_exit)


config.on_settings_change(_on_settings_change)
atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
