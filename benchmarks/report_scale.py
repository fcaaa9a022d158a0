"""``budgetclient report`` and ``check`` on large ledgers: time and peak memory against a GROUP BY floor.

Fills a ledger of N calls (200 task names, runs of 10 calls over 30 days, 5% of runs with a child
task of another name, 1% of calls outside any task, one name on an unpriced model; priced from fixed
per-million rates) by inserting rows in the ledger's own schema directly (the codec's rows; SQLite
``executemany``, PostgreSQL ``COPY``), then runs each command in a fresh process (``--format json``
to /dev/null) and reads that process's peak RSS. One first report runs before them and is timed
apart: it computes and stores each run's facts (what its calls say to the alerts and the checklist,
`ledger_report.RunFacts`) from the calls, once, on SQLite fills the money and model columns of
every call, as the first report after the writer stored them does, and keeps its own work in the
ledger (`ledger.rollups`: the call sums up to a mark, each name's row sums, replayed signals and
checklist figures up to its last run); later reports read what was kept and what came after it.
``groupby_s`` is the floor: the report's per-name
figures as plain GROUP BY queries (calls per task name with their token and money sums, runs per
name and outcome), timed in this process. ``ratio`` is ``report_s / groupby_s``.

    python benchmarks/report_scale.py                    # 100k, then 1M calls; SQLite, and
                                                         # PostgreSQL if BUDGETCLIENT_TEST_POSTGRES_URL is set
    python benchmarks/report_scale.py --calls 100000 --backend sqlite
    python benchmarks/report_scale.py --markdown         # the table for benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from budgetclient.ledger import _codec, open_ledger  # noqa: E402
from budgetclient.ledger import sqlite as sqlite_ledger  # noqa: E402
from budgetclient.usage import CallRecord, CostBreakdown, TaskRecord, Usage  # noqa: E402

NAMES = 200
CALLS_PER_RUN = 10
DAYS = 30
START = datetime(2026, 11, 1, tzinfo=UTC)
MILLION = Decimal(1_000_000)
RATES = (Decimal(3), Decimal("0.3"), Decimal("3.75"), Decimal(15))  # input, cache read, cache write, output


def _breakdown(usage: Usage) -> CostBreakdown:
    rin, rread, rwrite, rout = RATES
    return CostBreakdown(
        uncached_input=usage.uncached_input_tokens * rin / MILLION,
        cache_read=usage.cache_read_tokens * rread / MILLION,
        cache_write=usage.cache_write_tokens * rwrite / MILLION,
        output=usage.output_tokens * rout / MILLION,
    )


def _run(
    rng: random.Random,
    name: str,
    run_id: str,
    start: datetime,
    n_calls: int,
    parent: str | None,
    unpriced: bool,
) -> tuple[list[CallRecord], TaskRecord]:
    calls = []
    for i in range(n_calls):
        input_tokens = 2000 + rng.randint(0, 6000)
        read = int(input_tokens * rng.uniform(0.3, 0.9)) if i else 0
        usage = Usage(
            input_tokens=input_tokens,
            cache_read_tokens=read,
            cache_write_tokens=0 if i else input_tokens // 2,
            output_tokens=rng.randint(50, 900),
            requests=1,
        )
        parts = None if unpriced else _breakdown(usage)
        calls.append(
            CallRecord(
                id=uuid.uuid4().hex,
                provider="anthropic",
                model="in-house-model" if unpriced else "claude-sonnet-4-5",
                operation="messages",
                started_at=start + timedelta(seconds=20 * i),
                duration_s=3.0,
                usage=usage,
                cost=None if parts is None else parts.total,
                cost_breakdown=parts,
                status="ok",
                http_status=200,
                task_id=run_id,
                task_name=name,
                conversation=f"conv-{run_id}",
                prefix_hash=f"prefix-{name}",
            )
        )
    roll = rng.random()
    task = TaskRecord(
        id=run_id,
        name=name,
        parent_id=parent,
        outcome="failure" if roll < 0.05 else "partial" if roll < 0.15 else "success",
        started_at=start - timedelta(seconds=1),
        ended_at=start + timedelta(seconds=20 * n_calls + 2),
        usage=sum((c.usage for c in calls), Usage()),
        cost=None if unpriced else sum((c.cost for c in calls if c.cost is not None), Decimal(0)),
        cost_breakdown=sum((c.cost_breakdown for c in calls if c.cost_breakdown), CostBreakdown()),
        calls=n_calls,
    )
    return calls, task


def history(n_calls: int, seed: int = 24) -> Iterator[tuple[list[CallRecord], list[TaskRecord]]]:
    """Runs (and a few loose calls) in chunks of about 10,000 calls, in no particular time order."""
    rng = random.Random(seed)
    made = 0
    while made < n_calls:
        calls: list[CallRecord] = []
        tasks: list[TaskRecord] = []
        while len(calls) < 10_000 and made + len(calls) < n_calls:
            k = rng.randrange(NAMES)
            name = f"task-{k:03d}"
            start = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
            run_id = uuid.uuid4().hex
            if rng.random() < 0.05:  # a child run of another name, 2 of its 10 calls
                child_calls, child = _run(
                    rng,
                    f"task-{(k + 1) % NAMES:03d}",
                    uuid.uuid4().hex,
                    start + timedelta(seconds=5),
                    2,
                    run_id,
                    False,
                )
                own, task = _run(rng, name, run_id, start, CALLS_PER_RUN - 2, None, False)
                task = TaskRecord(
                    **{
                        **{f: getattr(task, f) for f in task.__slots__},
                        "calls": CALLS_PER_RUN,
                        "usage": task.usage + child.usage,
                        "cost": (task.cost or 0) + (child.cost or 0),
                        "cost_breakdown": task.cost_breakdown + child.cost_breakdown,
                        "ended_at": max(task.ended_at, child.ended_at) + timedelta(seconds=1),
                    }
                )
                calls += own + child_calls
                tasks += [child, task]
            else:
                own, task = _run(rng, name, run_id, start, CALLS_PER_RUN, None, k == NAMES - 1)
                calls += own
                tasks.append(task)
            if rng.random() < 0.1:  # about 1% of calls outside any task
                loose, _ = _run(rng, name, "loose", start + timedelta(hours=1), 1, None, False)
                calls.append(
                    CallRecord(
                        **{
                            **{f: getattr(loose[0], f) for f in loose[0].__slots__},
                            "task_id": None,
                            "task_name": None,
                        }
                    )
                )
        made += len(calls)
        yield calls, tasks


def fill_sqlite(url: str, n_calls: int) -> None:
    open_ledger(url).close()  # the schema, by the ledger itself
    conn = sqlite3.connect(sqlite_ledger.sqlite_path_from_url(url), isolation_level=None)
    for pragma in sqlite_ledger.PRAGMAS:
        conn.execute(pragma)
    insert_task = sqlite_ledger._INSERT_TASK
    for calls, tasks in history(n_calls):
        conn.execute("BEGIN")
        conn.executemany(sqlite_ledger._INSERT_CALL, [_codec.call_to_compact_row(c) for c in calls])
        conn.executemany(insert_task, [_codec.task_to_row(t) for t in tasks])
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def fill_postgres(url: str, n_calls: int) -> None:
    import psycopg

    from budgetclient.ledger.postgres import split_url

    open_ledger(url).close()
    dsn, schema = split_url(url)
    with psycopg.connect(dsn) as conn:
        for calls, tasks in history(n_calls):
            with conn.cursor() as cur:
                for table, columns, rows in (
                    ("calls", _codec.CALL_COLUMNS, [_codec.call_to_row(c) for c in calls]),
                    ("tasks", _codec.TASK_COLUMNS, [_codec.task_to_row(t) for t in tasks]),
                ):
                    with cur.copy(f'COPY "{schema}".{table} ({", ".join(columns)}) FROM STDIN') as copy:
                        for row in rows:
                            copy.write_row(row)
            conn.commit()
        conn.execute(f'ANALYZE "{schema}".calls')
        conn.execute(f'ANALYZE "{schema}".tasks')
        conn.commit()


def groupby_floor(url: str) -> float:
    """The report's per-name figures as plain GROUP BY queries, timed (wall; on SQLite, where the
    queries run in this process, `groupby_cpu` gives their CPU time)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_ledger.sqlite_path_from_url(url))
        t0 = time.perf_counter()
        conn.execute(
            "SELECT task_name, COUNT(*), SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), "
            "SUM(output_tokens), SUM(m_cost >> 4), MAX(m_cost & 15) FROM calls GROUP BY task_name"
        ).fetchall()
        conn.execute(
            "SELECT name, outcome, COUNT(*), SUM(calls) FROM tasks GROUP BY name, outcome"
        ).fetchall()
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed
    import psycopg

    from budgetclient.ledger.postgres import split_url

    dsn, schema = split_url(url)
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        conn.execute(
            "SELECT task_name, COUNT(*), SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), "
            f'SUM(output_tokens), SUM(cost) FROM "{schema}".calls GROUP BY task_name'
        ).fetchall()
        conn.execute(
            f'SELECT name, outcome, COUNT(*), SUM(calls) FROM "{schema}".tasks GROUP BY name, outcome'
        ).fetchall()
        return time.perf_counter() - t0


def groupby_cpu(url: str) -> float:
    """CPU seconds of the SQLite floor's queries in this process (the machine's load inflates wall
    time, not CPU time)."""
    c0 = time.process_time()
    groupby_floor(url)
    return time.process_time() - c0


def measure(command: str, url: str, repeat: int) -> tuple[float, float, float]:
    """(seconds, peak RSS in MB, CPU seconds) of ``budgetclient <command>``, each run in a fresh
    process; the fastest of ``repeat`` runs (the first one also warms the database's and the OS's
    caches), and the least CPU."""
    runs = [_measure_once(command, url) for _ in range(repeat)]
    seconds, rss_mb, _ = min(runs)
    return seconds, rss_mb, min(cpu for _, _, cpu in runs)


def _measure_once(command: str, url: str) -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", command, url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["rss_mb"], result["cpu_s"]


def child(command: str, url: str) -> None:
    """Run the command with stdout to /dev/null; print its time and this process's peak RSS."""
    from budgetclient.cli import main

    if command == "report-old":  # what `report` did before: every record decoded, aggregated in Python
        from budgetclient import config
        from budgetclient.reports import build_report

        t0, c0 = time.perf_counter(), time.process_time()
        ledger = open_ledger(url)
        build_report(
            ledger.read_tasks(), ledger.read_calls(), ledger.read_alerts(), settings=config.get_settings()
        )
        ledger.close()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds": elapsed, "rss_mb": rss_mb, "cpu_s": cpu}))
        return
    real = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        t0, c0 = time.perf_counter(), time.process_time()
        code = main([command, "--ledger", url, "--format", "json"])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        sys.stdout.flush()
        os.dup2(real, 1)
    if code not in (0, 1):  # check exits 1 when an item fails: that is a result, not an error
        raise SystemExit(f"{command} exited {code}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "rss_mb": rss_mb, "cpu_s": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, action="append", help="ledger sizes (default 100000 and 1000000)"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), action="append")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table for benchmarks/README.md"
    )
    parser.add_argument(
        "--old", action="store_true", help="also time the previous report (100k calls at most)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per command; the fastest counts")
    parser.add_argument("--child", nargs=2, metavar=("COMMAND", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    pg_url = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")
    backends = args.backend or ["sqlite", *(["postgres"] if pg_url else [])]
    results = []
    for n in args.calls or [100_000, 1_000_000]:
        for backend in backends:
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    url = f"sqlite:///{tmp}/ledger.db"
                    t0 = time.perf_counter()
                    fill_sqlite(url, n)
                else:
                    if not pg_url:
                        raise SystemExit("BUDGETCLIENT_TEST_POSTGRES_URL is not set (source .ci/postgres.sh)")
                    schema = f"bench_{uuid.uuid4().hex[:12]}"
                    url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
                    t0 = time.perf_counter()
                    fill_postgres(url, n)
                fill_s = time.perf_counter() - t0
                try:
                    floor = min(groupby_floor(url) for _ in range(3))
                    floor_cpu = min(groupby_cpu(url) for _ in range(3)) if backend == "sqlite" else None
                    # the first report after the fill also fills SQLite's money columns (once per call)
                    first_s, _, _ = _measure_once("report", url)
                    report_s, report_mb, report_cpu = measure("report", url, args.repeat)
                    check_s, check_mb, check_cpu = measure("check", url, args.repeat)
                    old = measure("report-old", url, args.repeat) if args.old and n <= 100_000 else None
                finally:
                    if backend == "postgres":
                        import psycopg

                        with psycopg.connect(pg_url, autocommit=True) as conn:
                            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            line = (
                f"backend={backend} rows={n} report_s={report_s:.2f} rss_mb={report_mb:.0f} "
                f"groupby_s={floor:.3f} ratio={report_s / floor:.1f} check_s={check_s:.2f} "
                f"check_rss_mb={check_mb:.0f} check_ratio={check_s / floor:.1f} first_report_s={first_s:.2f} "
                f"fill_s={fill_s:.0f} report_cpu_s={report_cpu:.2f} check_cpu_s={check_cpu:.2f}"
            )
            if floor_cpu is not None:
                line += (
                    f" groupby_cpu_s={floor_cpu:.3f} cpu_ratio={report_cpu / floor_cpu:.1f}"
                    f" check_cpu_ratio={check_cpu / floor_cpu:.1f}"
                )
            if old is not None:
                line += f" old_report_s={old[0]:.2f} old_rss_mb={old[1]:.0f}"
            print(line, flush=True)
            results.append(
                (backend, n, report_s, report_mb, check_s, check_mb, floor, report_cpu, check_cpu, floor_cpu)
            )
    if args.markdown:
        print(
            "\n| backend | calls | report s | report peak RSS MB | check s | check peak RSS MB "
            "| GROUP BY floor s | report / floor | check / floor | report CPU s | check CPU s "
            "| floor CPU s | report / floor CPU | check / floor CPU |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for backend, n, report_s, report_mb, check_s, check_mb, floor, rcpu, ccpu, fcpu in results:
            cpu_cells = "— | — | —" if fcpu is None else f"{fcpu:.3f} | {rcpu / fcpu:.1f} | {ccpu / fcpu:.1f}"
            print(
                f"| {backend} | {n:,} | {report_s:.2f} | {report_mb:.0f} | {check_s:.2f} | {check_mb:.0f} | "
                f"{floor:.3f} | {report_s / floor:.1f} | {check_s / floor:.1f} | {rcpu:.2f} | {ccpu:.2f} | "
                f"{cpu_cells} |"
            )


if __name__ == "__main__":
    main()
