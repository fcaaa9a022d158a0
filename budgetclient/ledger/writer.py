"""The off-call-path batcher: records are queued in O(1) and written by one background thread.

A model call must never wait for, or fail because of, the ledger. So ``submit_*`` only appends
to an in-memory queue; a daemon thread writes batches in one transaction each. When the ledger
cannot be opened or written, the batch is kept and retried with capped exponential backoff, and
``ledger.write_failed`` is logged (error class and message, passwords masked, never record
contents). Records are never dropped while the process lives; at exit the queue is flushed with
a bounded wait.

The process-wide writer follows ``configure(ledger=...)``: on a URL change the old writer is
drained to its old URL and a new one starts. After ``fork()`` a child starts with an empty queue
and its own thread; the parent's queued records stay the parent's to write.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from .. import config
from .._log import log
from ..errors import ConfigurationError
from ..usage import CallRecord, TaskRecord
from . import _codec
from .base import AlertRecord, Ledger, mask_secrets, mask_url
from .opening import open_ledger

__all__ = ["LedgerWriter", "flush", "get_ledger", "get_writer"]


_Kind = Literal["call", "task", "alert"]

BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 5.0
EXIT_TIMEOUT_S = 10.0
"""Longest the interpreter waits at exit for queued records to reach a working ledger."""
EXIT_TIMEOUT_FAILING_S = 1.0
"""...and for a ledger that is failing right now (one more attempt, then give up)."""
BATCH_SIZE = 20_000
"""Default for the most records one write (one transaction) takes."""
_NEVER = sys.maxsize

_ENCODERS: dict[str, tuple[Callable[[Any], tuple[Any, ...]], ...]] = {
    "call": (_codec.call_to_row, _codec.call_to_compact_row),
    "task": (_codec.task_to_row,),
    "alert": (_codec.alert_to_row,),
}
"""Every encoding a backend applies to a record kind: a record one of them refuses is unstorable."""


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
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
        if not flush_interval >= 0:
            raise ConfigurationError(f"flush_interval must be >= 0 seconds, got {flush_interval!r}")
        self.url = url
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self._opener = opener
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
        self.rejected: list[Any] = []
        """Records set aside because they cannot be encoded at all (see ``ledger.record_rejected``)."""

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
        except Exception:  # the caller's model call must not fail because of the ledger
            pass

    def _start_thread(self) -> None:
        # called with self._cond held
        thread = threading.Thread(target=self._run, name="budgetclient-ledger-writer", daemon=True)
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
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
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
                    remaining = None if deadline is None else deadline - time.monotonic()
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

    def _run(self) -> None:
        batch: list[Any] = []
        taken = 0  # records removed from the queue for this batch, set-aside ones included
        ledger: Ledger | None = None
        try:
            while True:
                with self._cond:
                    if not batch:
                        batch = self._next_batch()
                        taken = len(batch)
                    if not batch:  # closed and drained
                        self._thread = None
                        ledger, self._ledger = self._ledger, None
                        break
                if self._write(batch):
                    with self._cond:
                        self._written += taken
                        self._in_flight = 0
                        self._cond.notify_all()
                    batch = []
                    continue
                storable = self._set_aside_unstorable(batch)
                if len(storable) == len(batch):
                    self._back_off()
                batch = storable
                if not batch:  # every record was set aside: nothing left to retry
                    with self._cond:
                        self._written += taken
                        self._in_flight = 0
                        self._cond.notify_all()
        finally:
            if self._thread is threading.current_thread():  # died of a bug: hand the batch back
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    self._taken -= len(batch)
                    if batch:
                        self._written += taken - len(batch)  # the ones set aside
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
        deadline = time.monotonic() + self.flush_interval
        while True:
            self._wake_at = self.batch_size
            if len(queue) >= self.batch_size or self._closing or self._flush_target > self._written:
                break
            remaining = deadline - time.monotonic()
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
        deadline = time.monotonic() + delay
        with self._cond:
            while not self._retry_now:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._retry_now = False

    def _write(self, batch: list[Any]) -> bool:
        calls = [r for r in batch if type(r) is not _Tagged]
        tasks: list[Any] = []
        alerts: list[Any] = []
        if len(calls) < len(batch):  # most batches are calls only
            tasks = [i.record for i in batch if type(i) is _Tagged and i.kind == "task"]
            alerts = [i.record for i in batch if type(i) is _Tagged and i.kind == "alert"]
        try:
            if self._ledger is None:
                self._ledger = self._opener(self.url)
            self._ledger.write(calls=calls, tasks=tasks, alerts=alerts)
        except Exception as exc:
            self._failures += 1
            ledger, self._ledger = self._ledger, None  # reopen on the next attempt
            if ledger is not None:
                self._close_ledger(ledger)
            try:
                log.error(
                    "ledger.write_failed",
                    url=mask_url(self.url),
                    error=type(exc).__name__,
                    detail=mask_secrets(str(exc))[:500],
                    records=len(batch),
                    pending=self.pending,
                    attempt=self._failures,
                    retry_in_s=min(BACKOFF_INITIAL_S * 2 ** (self._failures - 1), BACKOFF_MAX_S),
                )
            except Exception:
                pass
            return False
        if self._failures:
            try:
                log.info("ledger.write_recovered", url=mask_url(self.url), failed_attempts=self._failures)
            except Exception:
                pass
            self._failures = 0
        return True

    def _write_inline(self, target: int, deadline: float | None) -> bool:
        """Write from the calling thread when no thread can be started (interpreter shutdown)."""
        while True:
            with self._cond:
                if self._written >= target:
                    return True
                if self._in_flight or (deadline is not None and time.monotonic() >= deadline):
                    return False
                batch = self._take()
            ok = self._write(batch)
            with self._cond:
                self._in_flight = 0
                if not ok:
                    self._queue.extendleft(reversed(batch))
                    self._taken -= len(batch)
                    return False
                self._written += len(batch)

    def _set_aside_unstorable(self, batch: list[Any]) -> list[Any]:
        """Move records no ledger could ever store (encoding fails) to ``rejected``.

        Without this one malformed record would block every record queued behind it forever.
        """
        storable: list[Any] = []
        for item in batch:
            kind, record = _kind_and_record(item)
            try:
                for encode in _ENCODERS[kind]:
                    encode(record)
            except Exception as exc:
                self.rejected.append(record)
                try:
                    log.error(
                        "ledger.record_rejected", url=mask_url(self.url), kind=kind,
                        id=str(getattr(record, "id", None))[:100], error=type(exc).__name__,
                        detail="the record cannot be encoded; it is kept in LedgerWriter.rejected",
                    )  # fmt: skip
                except Exception:
                    pass
            else:
                storable.append(item)
        return storable

    @staticmethod
    def _close_ledger(ledger: Ledger) -> None:
        try:
            ledger.close()
        except Exception:
            pass

    def _after_fork_in_child(self) -> None:
        if self._ledger is not None:
            _inherited_ledgers.append(self._ledger)
        self._init_state()


# -- the process-wide writer ----------------------------------------------------------------------

_lock = threading.Lock()
_writer: LedgerWriter | None = None
_retired: list[LedgerWriter] = []
"""Writers replaced after a URL change whose ledger was failing; they keep retrying."""


def get_writer() -> LedgerWriter:
    """The process-wide writer for the configured ledger URL, started on first use."""
    global _writer
    url = config.get_settings().ledger_url
    with _lock:
        if _writer is not None and _writer.url == url:
            return _writer
        old, _writer = _writer, LedgerWriter(url)
        current = _writer
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
    _retire(replaced, timeout=EXIT_TIMEOUT_S)  # written to its old URL before configure() returns


def flush(timeout: float | None = 10.0) -> bool:
    """Write everything submitted to the process-wide writer; False if ``timeout`` passed first."""
    with _lock:
        writer = _writer
    return True if writer is None else writer.flush(timeout)


def get_ledger() -> Ledger:
    """A reader on the configured ledger URL (for reports and tests); close it when done."""
    return open_ledger(config.get_settings().ledger_url)


def _flush_at_exit() -> None:
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    with _lock:
        writers = [w for w in (_writer, *_retired) if w is not None]
    for writer in writers:
        remaining = max(deadline - time.monotonic(), 0.0)
        if writer.failing:
            remaining = min(remaining, EXIT_TIMEOUT_FAILING_S)
        if not writer.flush(remaining) and writer.pending:
            try:
                log.error(
                    "ledger.unwritten_at_exit", url=mask_url(writer.url), pending=writer.pending,
                    detail="the ledger stayed unwritable until exit; these records are lost",
                )  # fmt: skip
            except Exception:
                pass


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
    global _lock, _writer
    _lock = threading.Lock()
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
