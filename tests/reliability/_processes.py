"""Running `_worker.py` as a real process, and counting what it made against what the ledger holds."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

WORKER = Path(__file__).with_name("_worker.py")
ROOT = Path(__file__).resolve().parents[2]
CHILD_CALLS = 10
"""Calls each child of ``_worker.py fork`` makes (the worker's own constant)."""
RESPONSE_ID = 14
"""Position of ``response_id`` in SQLite's compact ``record`` array (`_codec.COMPACT_RECORD_FIELDS`)."""


def start_worker(
    mode: str, progress: Path, ledger_url: str, arg: str = "2", **env: str
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BUDGETCLIENT_LEDGER": ledger_url,
        "XDG_DATA_HOME": str(progress.parent / "xdg"),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(progress), arg],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_calls(progress: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(calls_made(progress)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker made fewer than {count} calls in {timeout} s")
        time.sleep(0.01)


def calls_made(progress: Path) -> list[tuple[str, float]]:
    """``(response id, time)`` of each call the worker saw return, in order."""
    if not progress.exists():
        return []
    lines = progress.read_text().splitlines()
    return [(p[0], float(p[1])) for p in (line.split() for line in lines) if len(p) == 2]


def stored_response_ids(path: Path) -> list[str]:
    """Response ids of every call row in a SQLite ledger (duplicates kept, so they show)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"SELECT json_extract(record, '$[{RESPONSE_ID}]') FROM calls").fetchall()
    except sqlite3.OperationalError:  # no table: nothing was ever written
        return []
    finally:
        conn.close()
    return [row[0] for row in rows]


class Zygote:
    """``_worker.py zygote``: ``count`` warm worker processes forked at once, each in ``directory/t<i>``."""

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.process = start_worker("zygote", directory / "zygote.txt", "memory://unused", arg=str(count))
        assert self.process.stdout is not None
        self.pids: list[int] = []
        for _ in range(count):
            line = self.process.stdout.readline().decode()
            assert line.startswith("pid "), line + self.process.stderr.read().decode()  # type: ignore[union-attr]
            self.pids.append(int(line.split()[1]))

    def trial(self, index: int) -> tuple[Path, Path]:
        """``(progress file, ledger file)`` of child ``index``."""
        return self.directory / f"t{index}" / "progress.txt", self.directory / f"t{index}" / "ledger.db"

    def statuses(self, timeout: float = 60.0) -> dict[int, int]:
        """Wait for every child; their ``os.waitpid`` statuses by pid."""
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err.decode()
        found = [line.split() for line in out.decode().splitlines() if line.startswith("status ")]
        return {int(pid): int(status) for _, pid, status in found}

    def kill_all(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.kill()
