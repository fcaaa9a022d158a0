"""Crash loss: over N kills of a real worker, records written and lost, and the loss window.

Each trial forks a warm worker (``tests/reliability/_worker.py zygote``: ``bc.Anthropic`` over a fake
wire, calls back to back with a 2 ms pause, one progress line per call returned, into its own
SQLite ledger) and kills it at a random moment (after 20 to 200 calls) with SIGTERM or SIGKILL.
Then it compares the calls the worker saw return with the rows in its ledger:

- ``written`` / ``made``: rows stored / calls returned; ``lost``: calls returned whose row is
  missing (``extra`` is the call in flight at the kill, whose record was published before its
  progress line was written);
- ``window_ms``: for each kill, how long before the kill the oldest lost call returned (0 with no
  loss); the largest and the median over the kills are printed.

    python benchmarks/crash.py              # 40 kills of each signal
    python benchmarks/crash.py --kills 10
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability._processes import (  # noqa: E402
    Zygote,
    calls_made,
    stored_response_ids,
    wait_for_calls,
)


def run(sig: signal.Signals, kills: int, seed: int) -> str:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="budgetclient-crash-") as directory:
        zygote = Zygote(Path(directory), kills)
        try:
            for index, pid in enumerate(zygote.pids):
                wait_for_calls(zygote.trial(index)[0], rng.randint(20, 200), timeout=120)
                os.kill(pid, sig)
            zygote.statuses(timeout=300)
        finally:
            zygote.kill_all()
        made_total = written_total = lost_total = extra_total = 0
        windows: list[float] = []
        for index in range(kills):
            progress, ledger = zygote.trial(index)
            made = calls_made(progress)
            stored = set(stored_response_ids(ledger))
            lost = [(call_id, at) for call_id, at in made if call_id not in stored]
            made_total += len(made)
            written_total += len(stored)
            lost_total += len(lost)
            extra_total += len(stored - {call_id for call_id, _ in made})
            killed_at = made[-1][1]
            windows.append((killed_at - lost[0][1]) * 1000 if lost else 0.0)
    return (
        f"signal={sig.name} kills={kills} made={made_total} written={written_total} lost={lost_total} "
        f"extra={extra_total} window_ms_max={max(windows):.0f} "
        f"window_ms_median={statistics.median(windows):.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40, help="kills per signal (default: 40)")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        print(run(sig, args.kills, args.seed), flush=True)


if __name__ == "__main__":
    main()
