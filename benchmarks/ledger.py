"""Ledger throughput: call records/s through budgetclient's batched writer into SQLite.

Side by side in one run, on the same machine and disk:

- ``records_per_s``: ``CallRecord`` objects submitted to a ``LedgerWriter`` with its default settings
  (the path every metered call takes: queue, batch on the writer thread, encode each record to a
  row, multi-row INSERTs run by a helper thread while the next ones are encoded, one transaction
  per batch), timed from the first submit until ``flush()`` confirms every record is committed,
  then read back and counted. The records are priced, with usage and a cost breakdown.
- ``raw_sqlite_per_s``: the same rows (already encoded) inserted with a plain ``executemany`` of the
  ledger's one-row INSERT, in transactions as large as the writer's batches, into a fresh database
  with the same schema and the ledger's own pragmas (``sqlite.PRAGMAS``): what Python's ``sqlite3``
  gives for these rows with no queue and no encoding.

    python benchmarks/ledger.py            # 200,000 records
    python benchmarks/ledger.py --quick    # 50,000 records
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from budgetclient import pricing  # noqa: E402
from budgetclient.ledger import _codec, open_ledger  # noqa: E402
from budgetclient.ledger import sqlite as sqlite_ledger  # noqa: E402
from budgetclient.ledger import writer as writer_module  # noqa: E402
from budgetclient.ledger.writer import LedgerWriter  # noqa: E402
from budgetclient.usage import CallRecord, Usage  # noqa: E402

BATCH = writer_module.BATCH_SIZE


def records(n: int) -> list[CallRecord]:
    # each call starts a little after the previous one, as metered calls do (10 µs apart: the
    # throughput measured here); identical start times would make the (started_at, id) index fill
    # in random id order, which no real ledger sees
    first = datetime.now(UTC)
    out = []
    for i in range(n):
        usage = Usage(
            input_tokens=1000 + i % 5000,
            cache_read_tokens=(i % 7) * 100,
            output_tokens=50 + i % 300,
            requests=1,
        )
        try:
            breakdown = pricing.price_call(usage, "claude-sonnet-4-6", "anthropic")
        except Exception:
            breakdown = None
        out.append(
            CallRecord(
                id=uuid.uuid4().hex,
                provider="anthropic",
                model="claude-sonnet-4-6",
                operation="messages",
                started_at=first + timedelta(microseconds=10 * i),
                duration_s=0.5,
                usage=usage,
                cost=None if breakdown is None else breakdown.total,
                cost_breakdown=breakdown,
                status="ok",
                http_status=200,
                task_id=f"task-{i // 10}",
                task_name="bench",
                conversation="conv-1",
                prefix_hash="ab" * 16,
                response_id=f"msg_{i}",
            )
        )
    return out


def budgetclient_rate(recs: list[CallRecord], directory: str) -> float:
    url = f"sqlite:///{directory}/bc.db"
    open_ledger(url).close()  # schema created outside the timing, as on a running system
    writer = LedgerWriter(url)  # the defaults every metered call's writer uses
    t0 = time.perf_counter()
    for r in recs:
        writer.submit_call(r)
    if not writer.flush(300):
        raise SystemExit("ledger writer did not flush")
    elapsed = time.perf_counter() - t0
    writer.close()
    ledger = open_ledger(url)
    written = len(ledger.read_calls())
    ledger.close()
    if written != len(recs):
        raise SystemExit(f"wrote {written} of {len(recs)} records")
    return len(recs) / elapsed


def raw_rate(recs: list[CallRecord], directory: str) -> float:
    url = f"sqlite:///{directory}/raw.db"
    open_ledger(url).close()  # same schema, same pragmas on open
    rows = [_codec.call_to_compact_row(r) for r in recs]  # encoding excluded: the floor
    conn = sqlite3.connect(f"{directory}/raw.db", isolation_level=None)
    for pragma in sqlite_ledger.PRAGMAS:  # the ledger's own connection settings
        conn.execute(pragma)
    conn.execute("PRAGMA journal_mode=WAL")
    insert = sqlite_ledger._INSERT_CALL
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows[i : i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 records instead of 200,000")
    parser.add_argument("-n", type=int, default=None, help="number of records")
    args = parser.parse_args()
    n = args.n or (50_000 if args.quick else 200_000)
    recs = records(n)
    with tempfile.TemporaryDirectory() as tmp:
        ours = budgetclient_rate(recs, tmp)
        raw = raw_rate(recs, tmp)
    print(f"records_per_s={ours:.0f} raw_sqlite_per_s={raw:.0f}")


if __name__ == "__main__":
    _ = Decimal  # money stays Decimal end to end (priced by budgetclient.pricing)
    main()
