"""Hook registries: the one way a module lets others hear about its events.

Every registry in the package (call hooks, task hooks, alert callbacks, drift listeners, settings
listeners) is a `Hooks`: ``add`` returns a function that removes the hook, and ``run`` /
``collect`` call each hook inside `_guard.guarded`, so a hook that raises is logged and the next
one still runs. The hooks are a tuple replaced on every change (changes are rare, runs are on
every call): a run iterates a snapshot without a lock or a copy, and ``registry.hooks`` is a
cheap "anyone listening?" test on the call path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, TypeVarTuple

from ._fork_locks import renew_after_fork
from ._guard import guarded

__all__ = ["Hooks"]

R = TypeVar("R")
Args = TypeVarTuple("Args")

_lock = threading.Lock()
"""One lock for every registry: held only while a hook is added or removed."""
renew_after_fork(globals(), "_lock")


class Hooks(Generic[R, *Args]):
    """Ordered hooks taking ``Args`` and returning ``R`` or None; one that raises is logged as ``event``.

    ``Hooks[None, CallRecord]``: hooks called with a record; ``Hooks[CallEnd]``: hooks called with
    nothing that return a ``CallEnd`` (or None). Positional arguments only: a ``**kwargs`` would
    cost an empty dict on every call of the record path.
    """

    __slots__ = ("event", "hooks")

    def __init__(self, event: str) -> None:
        self.event = event
        self.hooks: tuple[Callable[[*Args], R | None], ...] = ()
        """The hooks, in the order they were added (replaced, never mutated)."""

    def add(self, hook: Callable[[*Args], R | None]) -> Callable[[], None]:
        """Register ``hook`` (run after those already there); returns a function that removes it."""
        with _lock:
            self.hooks = (*self.hooks, hook)

        def remove() -> None:
            with _lock:
                hooks = list(self.hooks)
                if hook in hooks:
                    hooks.remove(hook)
                    self.hooks = tuple(hooks)

        return remove

    def run(self, *args: *Args) -> None:
        """Call every hook in order; one that raises is logged and skipped. Never raises."""
        for hook in self.hooks:
            with guarded(self.event, hook=repr(hook)):
                hook(*args)

    def collect(self, *args: *Args) -> tuple[R, ...]:
        """`run`, keeping what each hook returns other than None (a start hook's "end" callback)."""
        out: list[R] = []
        for hook in self.hooks:
            with guarded(self.event, hook=repr(hook)):
                result = hook(*args)
                if result is not None:
                    out.append(result)
        return tuple(out)


def run_each(event: str, callbacks: tuple[Callable[[*Args], object], ...], *args: *Args) -> None:
    """Call each of ``callbacks`` (what start hooks returned) under `guarded`, in order."""
    for callback in callbacks:
        with guarded(event, hook=repr(callback)):
            callback(*args)
