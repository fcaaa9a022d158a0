"""Issue 17 item 10 (bounded queue): records spilled to disk reach the ledger exactly once.

While the ledger is down the writer keeps ``max_queued`` records in memory and appends the rest to
its spill file; at exit it appends what is still unwritten. A process that ends that way leaves
the file behind: the next writer on that ledger writes it, then removes it. Counted against the
calls made, with real processes (the spill file must outlive the one that wrote it).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from budgetclient.errors import LedgerError
from budgetclient.ledger import LedgerWriter, open_ledger
from tests.reliability._processes import calls_made, start_worker
from tests.test_ledger import make_call

CALLS = 40


def run_calls(directory: Path, name: str, url: str, calls: int, **env: str) -> list[tuple[str, float]]:
    progress = directory / f"{name}.txt"
    worker = start_worker("calls", progress, url, arg=str(calls), **env)
    try:
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0, (out + err).decode(errors="replace")
    return calls_made(progress)


def rows(ledger: Path) -> tuple[int, int]:
    """(call rows, distinct call ids) in a SQLite ledger."""
    with sqlite3.connect(ledger) as conn:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM calls").fetchone()


def spill_lines(directory: Path) -> int:
    return sum(len(path.read_text().splitlines()) for path in directory.glob("ledger.db.spill-*.jsonl"))


def test_records_spilled_by_a_process_that_ended_are_written_by_the_next_one(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    url = f"sqlite:///{ledger}"
    ledger.mkdir()  # a directory where the file should be: the ledger cannot be opened (down)
    first = run_calls(
        tmp_path, "first", url, CALLS, BUDGETCLIENT_TEST_MAX_QUEUED="5", BUDGETCLIENT_LEDGER_EXIT_TIMEOUT="1"
    )
    assert len(first) == CALLS
    # Past 5 queued records they went to the spill file, and at exit everything still unwritten.
    assert spill_lines(tmp_path) == CALLS
    ledger.rmdir()  # the ledger is back
    second = run_calls(tmp_path, "second", url, 3)
    assert rows(ledger) == (CALLS + len(second), CALLS + len(second))
    assert not list(tmp_path.glob("ledger.db.spill-*"))


class _FailsAfter:
    """A ledger whose writes fail (as an outage would) after ``writes`` of them went through."""

    def __init__(self, url: str, writes: int) -> None:
        self.inner = open_ledger(url)
        self.left = writes

    def write(self, **records: Any) -> None:
        if self.left == 0:
            raise LedgerError("connection lost")
        self.left -= 1
        self.inner.write(**records)

    def close(self) -> None:
        self.inner.close()


def test_a_replay_cut_short_is_done_again_and_stores_nothing_twice(tmp_path: Path) -> None:
    """A crash (or an outage) in the middle of a replay leaves the file; the next replay writes it
    whole, and the records the first one committed are not stored again (ids are unique)."""
    made = tmp_path / "made"
    made.mkdir()
    (made / "ledger.db").mkdir()
    run_calls(made, "first", f"sqlite:///{made / 'ledger.db'}", CALLS, BUDGETCLIENT_TEST_MAX_QUEUED="5",
              BUDGETCLIENT_LEDGER_EXIT_TIMEOUT="1")  # fmt: skip
    (spill,) = made.glob("ledger.db.spill-*.jsonl")
    shutil.copy(spill, tmp_path / spill.name)
    ledger = tmp_path / "ledger.db"
    url = f"sqlite:///{ledger}"
    extra = make_call(1)

    opened: list[_FailsAfter] = []
    back = [False]

    def open_once(u: str) -> Any:
        if back[0]:
            return open_ledger(u)
        if opened:
            raise LedgerError("connection refused")  # and it stays down for this writer
        opened.append(_FailsAfter(u, writes=2))
        return opened[0]

    cut = LedgerWriter(url, batch_size=10, opener=open_once)
    cut.submit_call(extra)  # starts its thread, which replays the file first
    assert not cut.flush(2)  # the third write fails: the replay stops after 2 batches of 10
    cut.close(timeout=0)
    assert rows(ledger) == (20, 20)
    assert (tmp_path / spill.name).exists()

    again = LedgerWriter(url, batch_size=10)
    again.submit_call(make_call(2))
    assert again.flush(30)
    again.close()
    assert rows(ledger) == (CALLS + 1, CALLS + 1)  # the file's 40 once, and the new call
    assert not (tmp_path / spill.name).exists()
    back[0] = True  # the first writer's ledger is back too: it writes the call it kept
    assert cut.flush(30)
    assert rows(ledger) == (CALLS + 2, CALLS + 2)
