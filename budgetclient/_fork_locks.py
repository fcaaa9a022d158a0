"""Module locks renewed in a forked child.

A lock that another thread of the parent held at ``fork()`` stays held forever in the child (only
the forking thread exists there), so the child's first metered call would hang on it. Each module
names its process-wide locks here once; the child gets fresh ones. What they guard are caches and
registries, consistent whenever the lock was free, and at worst recomputed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["renew_after_fork"]

_RLOCK = type(threading.RLock())
_renewals: list[tuple[dict[str, Any], tuple[str, ...]]] = []


def renew_after_fork(namespace: dict[str, Any], *names: str) -> None:
    """In a forked child, replace the locks ``names`` of module ``namespace`` (its ``globals()``)."""
    _renewals.append((namespace, names))


def _renew() -> None:
    for namespace, names in _renewals:
        for name in names:
            namespace[name] = threading.RLock() if isinstance(namespace[name], _RLOCK) else threading.Lock()


os.register_at_fork(after_in_child=_renew)
