"""Fork safety shared by the SQL ledgers: a child never uses or closes its parent's connection.

A connection inherited across ``fork()`` shares the parent's file or socket: using it corrupts
the parent's session and closing it ends it. After a fork, every live ledger hands its connection
to `inherited` (kept referenced, so the garbage collector never closes it either) and starts with
a fresh lock; the next use opens a new connection in the child.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

__all__ = ["ForkSafeConnection", "inherited"]

inherited: list[Any] = []
"""Connections left behind by a fork, never used or closed in this process."""


class ForkSafeConnection:
    """Mixin for a ledger holding one connection in ``_conn`` guarded by ``_lock``."""

    _conn: Any
    _lock: threading.Lock

    def _track_forks(self) -> None:
        """Call once from ``__init__``, after ``_conn`` and ``_lock`` exist."""
        _instances.add(self)

    def _forget_inherited_connection(self) -> None:
        # runs in a forked child: the parent's lock may have been held at fork time
        if self._conn is not None:
            inherited.append(self._conn)
        self._conn = None
        self._lock = threading.Lock()


_instances: weakref.WeakSet[ForkSafeConnection] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in list(_instances):
        ledger._forget_inherited_connection()


os.register_at_fork(after_in_child=_after_fork_in_child)
