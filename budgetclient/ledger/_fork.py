"""Fork safety shared by the SQL ledgers: a child never uses its parent's connection mid-write.

A connection inherited across ``fork()`` shares the parent's file or socket: using it corrupts
the parent's session, and closing a PostgreSQL one ends it. So before a fork, every live ledger's
lock is taken (waiting up to `FORK_WAIT_S` for a write in progress to commit), which means no fork
ever happens in the middle of a transaction. In the child, each ledger gets a fresh lock and drops
the inherited connection: SQLite's is closed (which resets SQLite's per-process lock state, see
``SQLiteLedger._close_inherited_after_fork``), others are kept referenced in `inherited` and never
used or closed. The next use opens a new connection in the child.

Why the wait matters for SQLite: its lock state is per process, in memory, per file. A child
forked while the parent's connection held a lock (mid-transaction, or mid-connect) inherits a copy
of that state claiming the lock, which nothing in the child will ever release; every connection the
child opens to that file then sees a sibling holding it and waits in the busy handler for ever
(issue 17 item 5: children stuck in ``_connect``). Nor may the child close that copy: its rollback
would rewrite the WAL index the parent is committing through. So a fork waits for the write (up to
`FORK_WAIT_S`, longer than any write holds the lock); if it went ahead regardless, the child marks
the file unusable (`mid_write_files`): its records then take the outage path (the spill file,
written into the ledger by the next process that opens it) instead of hanging.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

__all__ = ["FORK_WAIT_S", "ForkSafeConnection", "inherited"]

FORK_WAIT_S = 75.0
"""Longest a ``fork()`` waits for a ledger write in progress. A write holds the ledger's lock for
its busy timeout at most (30 s, waiting for another process's transaction) plus the write itself,
so a fork waits it out; past this the fork goes ahead and the child cannot use that file."""

mid_write_files: set[tuple[int, int]] = set()
"""(device, inode) of the SQLite files this process was forked in the middle of writing: their
lock state here claims locks nobody holds, so they are never opened again in this process."""

inherited: list[Any] = []
"""Connections left behind by a fork, never used or closed in this process."""


class ForkSafeConnection:
    """Mixin for a ledger holding one connection in ``_conn`` guarded by ``_lock``."""

    _conn: Any
    _lock: threading.Lock

    def _track_forks(self) -> None:
        """Call once from ``__init__``, after ``_conn`` and ``_lock`` exist, before connecting.

        Waits while a ``fork()`` is in progress: a ledger registered after the fork looked at the
        live ones would start connecting unseen, and the child would find it mid-connect.
        """
        with _registering:
            _instances.add(self)

    def _close_inherited_after_fork(self, conn: Any) -> bool:
        """Release an inherited connection that was idle at the fork; False keeps it referenced."""
        return False

    def _forget_inherited_connection(self, idle: bool) -> None:
        # runs in a forked child: the parent's lock may have been held at fork time
        conn, self._conn = self._conn, None
        self._lock = threading.Lock()
        if conn is None:
            return
        try:
            if idle and self._close_inherited_after_fork(conn):
                return
        except Exception:
            pass
        inherited.append(conn)


_instances: weakref.WeakSet[ForkSafeConnection] = weakref.WeakSet()
_held: list[tuple[ForkSafeConnection, threading.Lock]] = []
_registering = threading.Lock()
"""Held from before a fork until after it: no ledger joins `_instances` (and starts connecting)
once the fork has taken its list, so every ledger the child inherits was waited for."""


def _before_fork() -> None:
    _registering.acquire()
    deadline = time.monotonic() + FORK_WAIT_S
    for ledger in list(_instances):
        lock = ledger._lock
        if lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            _held.append((ledger, lock))


def _after_fork_in_parent() -> None:
    while _held:
        _, lock = _held.pop()
        lock.release()
    _registering.release()


def _after_fork_in_child() -> None:
    global _registering
    _registering = threading.Lock()
    idle = {id(ledger) for ledger, _ in _held}
    _held.clear()
    for ledger in list(_instances):
        file_id = getattr(ledger, "_file_id", None)  # set once SQLite's connect has begun
        if id(ledger) not in idle and file_id is not None:
            mid_write_files.add(file_id)
        ledger._forget_inherited_connection(id(ledger) in idle)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
