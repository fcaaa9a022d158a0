"""Issue 17 item 5: processes forked while the parent writes the ledger write their own records.

A fork in the middle of a SQLite write used to leave the child's SQLite lock state claiming a lock
the child did not hold: "database is locked" for ever, and 2 of 40 children lost every record. Now
a fork waits for the write in progress (`ledger/_fork.py`), and the child drops the parent's
connection and opens its own.

The real worker (`_worker.py fork`) makes calls from a thread without pause while its main thread
forks 10 children at random moments; each child makes 10 calls and flushes. Every call made, the
parent's and the children's, must be in the ledger exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability._processes import CHILD_CALLS, calls_made, start_worker, stored_response_ids

CHILDREN = 10


@pytest.mark.xfail(
    strict=False,
    reason="known, open (issue 17 item 5): a child forked while the parent's writer is busy sometimes "
    "stays in SQLite's busy handler while it connects, so its flush times out (1-3 of 10 children here)",
)
def test_children_forked_from_a_busy_writer_lose_nothing(tmp_path: Path) -> None:
    progress, ledger = tmp_path / "progress.txt", tmp_path / "ledger.db"
    worker = start_worker("fork", progress, f"sqlite:///{ledger}", arg=str(CHILDREN))
    try:
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0, (out + err).decode(errors="replace")  # every child flushed in time
    made = calls_made(progress)
    stored = stored_response_ids(ledger)
    # Response ids repeat across processes (each has its own fake server), so count them.
    assert len(stored) == len(made) > CHILDREN * CHILD_CALLS


def test_a_module_lock_held_at_fork_is_free_in_the_child() -> None:
    """Another thread of the parent may hold a module lock at ``fork()``; the child must not hang."""
    import os
    import threading

    import budgetclient  # noqa: F401 - loads the modules that register their locks
    from budgetclient import _fork_locks, pricing, signals
    from budgetclient.formats import collect

    held = [(ns, name) for ns, names in _fork_locks._renewals for name in names]
    assert {id(pricing.__dict__), id(signals.__dict__), id(collect.__dict__)} <= {id(ns) for ns, _ in held}
    for ns, name in held:
        assert ns[name].acquire(timeout=1), name
    try:
        pid = os.fork()
        if pid == 0:  # the child: every lock must be free at once
            free = all(ns[name].acquire(timeout=1) for ns, name in held)
            os._exit(0 if free else 1)
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        for ns, name in held:
            ns[name].release()
    assert not any(isinstance(ns[name], type(threading.Lock())) and ns[name].locked() for ns, name in held)
