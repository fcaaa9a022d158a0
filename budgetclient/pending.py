"""Records still being made off the call path: queued here, settled before anything reads them.

A metered call hands its record work (pricing, the record, the task roll-up, the ledger queue,
call hooks, calibration) to `defer`; a daemon thread runs it, in submission order. Whatever reads
what that work produces first calls `settle`, which runs every queued job in the calling thread
(waiting for the one the thread is running): a task's totals, its end, a budget check that would
refuse, ``bc.flush()``. So ``t.cost`` right after a call is exact, and a budget's holds stay
until their call's roll-up gives them back.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections import deque
from collections.abc import Callable

from ._guard import guarded

__all__ = ["defer", "settle", "unsettled"]

_jobs: deque[Callable[[], None]] = deque()
_lock = threading.Lock()
"""Held while jobs run: one at a time, in order."""
_busy = False
"""A job was taken from the queue and has not finished (set before it leaves the queue)."""


def _new_signal() -> threading.Lock:
    signal = threading.Lock()
    signal.acquire()
    return signal


_signal = _new_signal()
"""Released when jobs wait for the worker, which acquires it to wake: a lock, not an ``Event``,
whose ``set`` runs a condition variable in Python on every call (`defer`)."""
_thread: threading.Thread | None = None
_local = threading.local()
_exiting = False
"""Set by the exit handler: later jobs (a stream finalised at shutdown) run in the caller's thread."""


def unsettled() -> bool:
    """Whether some call's record work is still queued or running."""
    return bool(_jobs) or _busy


def defer(job: Callable[[], None]) -> None:
    """Run ``job`` off the call path (before any `settle` returns); never raises.

    At exit it runs at once instead: the exit handler has settled the queue, and starting or
    waking a thread during interpreter shutdown can block for ever (Python 3.11).
    """
    if _exiting or sys.is_finalizing():
        with guarded("meter.failed", stage="deferred"):
            job()
        return
    _jobs.append(job)
    if _thread is None:
        _start()
    # wake the worker: a job appended before this is run by the worker's next pass (the signal is
    # released now, or still released from before: the worker has not taken it yet)
    signal = _signal
    if signal.locked():
        try:
            signal.release()
        except RuntimeError:  # another thread released it in between
            pass


def settle() -> None:
    """Run every queued job now, in this thread; wait for one running elsewhere. Never raises.

    A job that reads a task's totals (a call hook) does not wait for itself.
    """
    if not _jobs and not _busy:
        return
    if getattr(_local, "settling", False):
        return
    with _lock:
        _run_queued()


def _run_queued() -> None:
    global _busy
    _local.settling = True
    try:
        while _jobs:
            _busy = True
            try:
                job = _jobs.popleft()
            except IndexError:
                break
            with guarded("meter.failed", stage="deferred"):
                job()
    finally:
        _busy = False
        _local.settling = False


def _work() -> None:
    while True:
        _signal.acquire()
        with _lock:
            _run_queued()


def _start() -> None:
    global _thread
    with _lock:
        if _thread is None:
            thread = threading.Thread(target=_work, name="budgetclient-records", daemon=True)
            thread.start()
            _thread = thread


def _after_fork_in_child() -> None:
    """The parent's queued records are the parent's to write; the child starts empty."""
    global _lock, _busy, _thread, _signal
    _jobs.clear()
    _lock = threading.Lock()
    _busy = False
    _thread = None
    _signal = _new_signal()
    util = sys.modules.get("multiprocessing.util")  # fork children leave through os._exit
    if util is not None:
        util.register_after_fork(_child_exit_key, _settle_at_multiprocessing_exit)


class _ChildExitKey:
    """Weak-referenceable key for ``multiprocessing.util.register_after_fork``."""


_child_exit_key = _ChildExitKey()


def _settle_at_multiprocessing_exit(_: object) -> None:
    util = sys.modules.get("multiprocessing.util")
    if util is not None:  # before the ledger writer's own flush (exitpriority 10)
        util.Finalize(None, settle, exitpriority=11)


def _settle_at_exit() -> None:
    global _exiting
    _exiting = True
    settle()


atexit.register(_settle_at_exit)  # registered after the ledger writer's: runs before it flushes
os.register_at_fork(after_in_child=_after_fork_in_child)
