"""Issue 17 item 5: processes forked while the parent writes the ledger write their own records.

A fork in the middle of a SQLite write used to leave the child's SQLite lock state claiming a lock
the child did not hold: "database is locked" for ever, and 2 of 40 children lost every record. Now
a fork waits for the write in progress (`ledger/_fork.py`), and the child drops the parent's
connection and opens its own. The wait used to give up after 10 s, which a busy machine passes
(the parent's write waits up to 30 s for the children's); the fork then went ahead mid-write and
the child's SQLite lock state claimed the parent's lock for ever: its connect waited in the busy
handler until its flush timed out (1-3 of 10 children). The fork now waits the write out, and a
child forked mid-write regardless refuses that file at once instead of hanging.

The real worker (`_worker.py fork`) makes calls from a thread without pause while its main thread
forks 10 children at random moments; each child makes 10 calls and flushes. Every call made, the
parent's and the children's, must be in the ledger exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from budgetclient.errors import LedgerError
from budgetclient.ledger import _fork, open_ledger
from tests.reliability._processes import CHILD_CALLS, calls_made, start_worker, stored_response_ids

CHILDREN = 10


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


def test_a_child_forked_in_the_middle_of_a_write_refuses_the_file_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the fork cannot wait the parent's write out, the child's SQLite lock state holds the
    parent's write lock for ever: a connection there waited in the busy handler (30 s, and again
    for WAL) and then failed "database is locked". It is refused at once, naming the cause."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    monkeypatch.setattr(_fork, "FORK_WAIT_S", 0.05)
    with ledger._connection() as conn:  # the ledger's lock, as a write holds it
        conn.execute("BEGIN IMMEDIATE")  # the parent's write in progress
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                open_ledger(url)
            except LedgerError as exc:
                code = 0 if "forked while its parent was writing" in str(exc) else 2
            finally:
                os._exit(code)
        conn.execute("COMMIT")
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    ledger.close()


def test_a_fork_while_another_thread_opens_a_ledger_waits_for_the_open(tmp_path: Path) -> None:
    """A ledger opened by another thread just as ``fork()`` runs (the writer's first open, a report's
    reader) was missed by the fork's wait: the child found the file half-connected in its parent
    and refused it, so its records went to the spill file (1 of 10 children in CI). The fork now
    waits for every open in progress, and no open starts during it."""
    import threading

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).close()
    stop = threading.Event()

    def open_and_close() -> None:
        while not stop.is_set():
            open_ledger(url).close()

    opener = threading.Thread(target=open_and_close)
    opener.start()
    failed = []
    try:
        for _ in range(60):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    open_ledger(url).close()
                    code = 0
                finally:
                    os._exit(code)
            failed += [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]
    finally:
        stop.set()
        opener.join()
    assert not any(failed), failed
