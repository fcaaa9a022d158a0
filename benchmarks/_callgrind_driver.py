"""Instructions per warm call, raw SDK vs budgetclient, under valgrind's callgrind.

Instruction counts do not depend on machine load, so they compare two versions of the code on a
busy machine where times cannot. The driver runs one side (``raw`` or ``budgetclient``) of one
`overhead.py` case: ``--warmup`` calls, then ``--calls`` measured calls, each appending one
exchange to the conversation as `overhead.py` does, inside a task with a budget (the full path).
The measured calls are bracketed by two ``os.getppid()`` calls, and callgrind is told to dump its
counters before each (``--dump-before=getppid``): the second dump holds exactly the measured calls.

    python benchmarks/_callgrind_driver.py                       # anthropic sync 1k/30k/150k
    python benchmarks/_callgrind_driver.py --providers anthropic,openai --sizes 1000 --calls 10
    python benchmarks/_callgrind_driver.py --run budgetclient anthropic 1000 sync 3 10  # one side

Prints per case ``raw_instr`` / ``budgetclient_instr``: instructions per call in the calling
thread (the call path; work handed to a background thread, the ledger writer's, is not in it),
``added_instr`` and ``ratio``. Needs ``valgrind`` (Debian package); about 2 minutes per side.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_side(side: str, provider: str, tokens: int, mode: str, warmup: int, calls: int) -> None:
    """The measured program (run under valgrind by `measure`)."""
    sys.path[:0] = [str(HERE), str(ROOT)]
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import overhead

    import budgetclient as bc

    with tempfile.TemporaryDirectory() as tmp:
        bc.configure(ledger=f"sqlite:///{tmp}/ledger.db")
        with bc.task("callgrind", budget_usd=1_000_000):
            raw, wrapped, append = overhead.make_case(provider, tokens, mode)
            call = raw if side == "raw" else wrapped
            i = 0
            for _ in range(warmup):
                append(i)
                call()
                i += 1
            bc.flush(30)
            os.getppid()  # callgrind dumps here: the warm-up ends
            for _ in range(calls):
                append(i)
                call()
                i += 1
            os.getppid()  # and here: the measured calls end
        bc.flush(30)


_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.M)


def _instructions(path: str) -> int:
    text = Path(path).read_text()
    found = _TOTALS.findall(text)
    return int(found[-1]) if found else 0


def measure(side: str, provider: str, tokens: int, mode: str, warmup: int, calls: int) -> float:
    """Instructions per measured call in the calling thread."""
    with tempfile.TemporaryDirectory() as out:
        prefix = f"{out}/cg.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=getppid",
                "--separate-threads=yes",
                f"--callgrind-out-file={prefix}",
                sys.executable,
                __file__,
                "--run",
                side,
                provider,
                str(tokens),
                mode,
                str(warmup),
                str(calls),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)},
        )
        # files: <prefix>.<dump>-<thread>; dump 2 of thread 1 is the measured calls
        return _instructions(f"{prefix}.2-01") / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default="anthropic")
    parser.add_argument("--sizes", default="1000,30000,150000")
    parser.add_argument("--modes", default="sync")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--run", nargs=6, metavar=("SIDE", "PROVIDER", "TOKENS", "MODE", "WARMUP", "CALLS"))
    args = parser.parse_args()
    if args.run:
        side, provider, tokens, mode, warmup, calls = args.run
        run_side(side, provider, int(tokens), mode, int(warmup), int(calls))
        return
    for provider in args.providers.split(","):
        for tokens in map(int, args.sizes.split(",")):
            for mode in args.modes.split(","):
                raw = measure("raw", provider, tokens, mode, args.warmup, args.calls)
                ours = measure("budgetclient", provider, tokens, mode, args.warmup, args.calls)
                print(
                    f"provider={provider} tokens={tokens} mode={mode} raw_instr={raw:.0f} "
                    f"budgetclient_instr={ours:.0f} added_instr={ours - raw:.0f} ratio={ours / raw:.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
