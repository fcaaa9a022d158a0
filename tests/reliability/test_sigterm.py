"""Issue 17 item 6: SIGTERM (how Docker, Kubernetes and systemd stop a worker) loses no record.

Each trial is a real worker process (`_worker.py`: ``bc.Anthropic`` over a fake wire, one progress
line per call returned) sent SIGTERM at a random point. Every call the worker saw return must be in
the ledger exactly once; the only row allowed beyond them is the call in flight when the signal
arrived (its record is published before ``create`` returns, its progress line after).
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

from tests.reliability._processes import (
    Zygote,
    calls_made,
    start_worker,
    stored_response_ids,
    wait_for_calls,
)

TRIALS = 20
SIGKILL_WINDOW_S = 0.2 + 1.0
"""The writer's flush_interval plus a generous allowance for one commit on a loaded machine."""


def _assert_nothing_lost(made: list[str], stored: list[str]) -> None:
    assert len(stored) == len(set(stored)), "a record was written twice"
    assert set(made) <= set(stored), f"lost {len(set(made) - set(stored))} of {len(made)} records"
    assert len(stored) - len(made) in (0, 1)  # at most the call in flight at the signal


def _kill_each(zygote: Zygote, sig: signal.Signals, calls: list[int]) -> dict[int, int]:
    try:
        for index, pid in enumerate(zygote.pids):
            wait_for_calls(zygote.trial(index)[0], calls[index], timeout=60)
            os.kill(pid, sig)
        return zygote.statuses()
    finally:
        zygote.kill_all()


def test_sigterm_loses_no_record_over_20_trials(tmp_path: Path) -> None:
    rng = random.Random(17)
    zygote = Zygote(tmp_path, TRIALS)
    statuses = _kill_each(zygote, signal.SIGTERM, [rng.randint(1, 60) for _ in range(TRIALS)])
    for index, pid in enumerate(zygote.pids):
        status = statuses[pid]
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM  # default action kept
        progress, ledger = zygote.trial(index)
        made = [call_id for call_id, _ in calls_made(progress)]
        assert made
        _assert_nothing_lost(made, stored_response_ids(ledger))


def test_sigterm_chains_to_the_applications_own_handler(tmp_path: Path) -> None:
    progress, ledger = tmp_path / "progress.txt", tmp_path / "ledger.db"
    worker = start_worker("loop-own-handler", progress, f"sqlite:///{ledger}")
    try:
        wait_for_calls(progress, 5, timeout=60)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 3, err.decode()  # the application's handler ran and chose the status
    assert "handler" in progress.read_text().splitlines()
    _assert_nothing_lost([call_id for call_id, _ in calls_made(progress)], stored_response_ids(ledger))


def test_sigkill_loses_at_most_the_last_flush_window(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: records queued and not yet committed are lost, and no others."""
    rng = random.Random(6)
    zygote = Zygote(tmp_path, 3)
    statuses = _kill_each(zygote, signal.SIGKILL, [rng.randint(30, 90) for _ in range(3)])
    for index, pid in enumerate(zygote.pids):
        assert os.WTERMSIG(statuses[pid]) == signal.SIGKILL
        progress, ledger = zygote.trial(index)
        made, stored = calls_made(progress), stored_response_ids(ledger)
        assert len(stored) == len(set(stored))
        assert set(stored) <= {call_id for call_id, _ in made} | {None}  # nothing invented
        killed_at = made[-1][1]
        old = {call_id for call_id, at in made if at < killed_at - SIGKILL_WINDOW_S}
        assert old <= set(stored), f"lost {len(old - set(stored))} records older than the window"
