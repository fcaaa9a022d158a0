"""Fleet limits: calls/s against one limit (``bc.limit``) from 8 processes, SQLite and PostgreSQL.

Each of 8 forked processes calls ``bc.Anthropic`` over the fake backend (the real SDK, no network)
inside ``with bc.limit("bench")`` for a fixed time; the limit is large enough never to refuse, so
every call takes one reservation transaction before it is sent and one settlement after. The
same run without a limit is the baseline: the difference is the cost of the check.

    python benchmarks/limits.py                      # SQLite (a temporary file), 5 s per figure
    python benchmarks/limits.py --postgres URL       # also PostgreSQL (e.g. from .ci/postgres.sh)
    python benchmarks/limits.py --seconds 10
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import budgetclient as bc  # noqa: E402
from budgetclient.testing import FakeAnthropic  # noqa: E402

PROCESSES = 8
MODEL = "claude-sonnet-4-6"


def _worker(url: str, limited: bool, seconds: float, start: Any, counts: Any, index: int) -> None:
    try:
        bc.configure(ledger=url)
        bc.limit("bench", usd=1_000_000, per="day")
        fake = FakeAnthropic(output_tokens=20)
        client = bc.Anthropic(api_key="sk-ant-test", http_client=fake.http_client(), max_retries=0)
        messages = [{"role": "user", "content": "Classify this ticket by urgency."}]
        client.messages.create(model=MODEL, max_tokens=50, messages=messages)  # warm: imports, tables
        start.wait(120)
        calls = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if limited:
                with bc.limit("bench"):
                    client.messages.create(model=MODEL, max_tokens=50, messages=messages)
            else:
                client.messages.create(model=MODEL, max_tokens=50, messages=messages)
            calls += 1
        counts[index] = calls
        bc.flush()
    finally:
        os._exit(0)


def calls_per_s(url: str, limited: bool, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(PROCESSES)
    counts = ctx.Array("l", PROCESSES)
    workers = [
        ctx.Process(target=_worker, args=(url, limited, seconds, start, counts, i)) for i in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed run")
    parser.add_argument("--postgres", metavar="URL", help="also measure on this PostgreSQL server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("sqlite", f"sqlite:///{Path(tmp) / 'ledger.db'}")]
        if args.postgres:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            stores.append(
                ("postgresql", f"{args.postgres}{'&' if '?' in args.postgres else '?'}schema={schema}")
            )
        print(f"{PROCESSES} processes, {args.seconds:g} s each, cpus={os.cpu_count()}")
        for name, url in stores:
            base = calls_per_s(url, False, args.seconds)
            limited = calls_per_s(url, True, args.seconds)
            print(f"{name}: no_limit_calls_per_s={base:.0f} one_limit_calls_per_s={limited:.0f}")
            if name == "postgresql":
                import psycopg

                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
