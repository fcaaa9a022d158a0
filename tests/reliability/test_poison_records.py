"""Issue 17 item 1: a record the database cannot store costs only itself; every later record is written.

The reported triggers (usage of 2^63 or more, task totals past 2^63, an undecodable filename in
metadata, a task name over PostgreSQL's index-entry limit, a lone surrogate in a model name) are
normalised at the ledger's boundary and stored; records nothing can fix (a time outside the
calendar, a cost PostgreSQL's NUMERIC overflows on, a NaN duration SQLite would store as NULL) are
quarantined, found by bisecting the batch they came in. All of them sit in ONE batch with 20 good
records after them, on SQLite and on PostgreSQL (``BUDGETCLIENT_TEST_POSTGRES_URL``,
``source .ci/postgres.sh``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.ledger import LedgerWriter, open_ledger
from budgetclient.usage import Usage
from tests.providers.wire import Wire, anthropic_message, anthropic_usage, json_response
from tests.test_ledger import make_call, make_task

PG_URL = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")
BIG = 2**64
INT64_MAX = 2**63 - 1


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not PG_URL:
        pytest.skip("BUDGETCLIENT_TEST_POSTGRES_URL is not set; `source .ci/postgres.sh` starts a server")
    import psycopg

    schema = f"poison_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def quarantined_ids(url: str) -> list[str]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [row[0] for row in conn.execute("SELECT id FROM quarantine ORDER BY id")]
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_URL) as conn:
        return [row[0] for row in conn.execute(f'SELECT id FROM "{schema}".quarantine ORDER BY id')]


def test_a_poison_record_never_stops_the_records_after_it(url: str) -> None:
    huge = make_call(1, usage=Usage(input_tokens=BIG, output_tokens=2**70, requests=1))
    fsname = make_call(2, metadata={"file": os.fsdecode(b"report-\xff.txt"), os.fsdecode(b"\xfe"): 1})
    long_name = make_call(3, task_name=base64.b64encode(random.Random(3).randbytes(4000)).decode())
    surrogate = make_call(4, model="claude-\ud800", response_id="msg_\udcff")
    task_total = make_task(5, usage=Usage(input_tokens=INT64_MAX, output_tokens=BIG, requests=2),
                           metadata={"path": os.fsdecode(b"/tmp/\xff")})  # fmt: skip
    out_of_calendar = make_call(6, started_at=datetime.max.replace(tzinfo=timezone(-timedelta(hours=5))))
    poison = [out_of_calendar]
    if url.startswith("sqlite"):
        poison.append(make_call(7, duration_s=float("nan")))
    else:
        poison.append(make_call(7, cost=Decimal("1e200000")))  # numeric field overflow, SQLSTATE 22003
    later = [make_call(10 + i) for i in range(20)]
    first = make_call(0)

    writer = LedgerWriter(url, flush_interval=0.01)
    with capture_logs() as logs:
        for record in (first, huge, fsname, long_name, surrogate, *poison, *later):
            writer.submit_call(record)
        writer.submit_task(task_total)
        assert writer.flush(60)
    writer.close()

    ledger = open_ledger(url)
    stored = {c.id: c for c in ledger.read_calls()}
    (stored_task,) = ledger.read_tasks()
    ledger.close()
    good = [first, huge, fsname, long_name, surrogate, *later]
    assert set(stored) == {c.id for c in good}  # every later record written, exactly
    assert writer.rejected == poison
    assert quarantined_ids(url) == sorted(c.id for c in poison)
    assert not [e for e in logs if e["event"] == "ledger.write_failed"]  # a data error is never retried

    assert stored[huge.id].usage == Usage(input_tokens=INT64_MAX, output_tokens=INT64_MAX, requests=1)
    assert stored_task.usage == Usage(input_tokens=INT64_MAX, output_tokens=INT64_MAX, requests=2)
    assert stored_task.metadata == {"path": "/tmp/\\xff"}  # a row of text columns: cleaned
    invalid = {e["id"] for e in logs if e["event"] == "ledger.record_invalid"}
    name = stored[long_name.id].task_name
    assert name is not None
    if url.startswith("sqlite"):
        # SQLite takes these as they are (metadata is stored as ASCII JSON, text of any length):
        # they round-trip exactly, and only what it refused was normalised.
        assert stored[fsname.id].metadata == fsname.metadata
        assert name == long_name.task_name
        odd = stored[surrogate.id]
        assert (odd.model, odd.response_id) == (surrogate.model, surrogate.response_id)
        assert invalid == {huge.id, task_total.id}
    else:
        assert stored[fsname.id].metadata == {"file": "report-\\xff.txt", "\\xfe": 1}
        assert long_name.task_name is not None  # incompressible: past the 2,704-byte index entry limit
        assert len(name.encode()) <= 1024 and long_name.task_name.startswith(name[:1000])
        assert name.endswith("…#" + hashlib.sha256(long_name.task_name.encode()).hexdigest()[:16])
        odd = stored[surrogate.id]
        assert (odd.model, odd.response_id) == ("claude-\ufffd", "msg_\\xff")
        assert invalid == {huge.id, fsname.id, long_name.id, surrogate.id, task_total.id}
    quarantined = [e for e in logs if e["event"] == "ledger.record_quarantined"]
    assert [e["quarantined_in"] for e in quarantined] == ["ledger"] * len(poison)


def test_usage_past_2_63_from_the_wire_is_clamped_and_later_calls_are_written(tmp_path: Path) -> None:
    """A proxy reporting absurd usage: the call is stored clamped, and the next 20 calls too."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bc.configure(ledger=url)
    absurd, normal = anthropic_message(anthropic_usage(BIG, BIG)), anthropic_message(anthropic_usage(10, 2))
    replies = iter([absurd] + [normal] * 20)
    wire = Wire(default=lambda request: json_response(next(replies)))
    client = bc.Anthropic(api_key="sk-ant-test", base_url="http://anthropic.test", http_client=wire.client())
    with capture_logs() as logs:
        for _ in range(21):
            client.messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                   messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert bc.flush(30)
    ledger = open_ledger(url)
    calls = ledger.read_calls()
    ledger.close()
    assert len(calls) == 21
    assert calls[0].usage.input_tokens == INT64_MAX and calls[0].usage.output_tokens == INT64_MAX
    assert [c.usage.input_tokens for c in calls[1:]] == [10] * 20
    assert [e["event"] for e in logs].count("ledger.record_invalid") == 1


def test_a_transient_error_is_retried_not_quarantined() -> None:
    """The other side of the rule: a connection or lock error keeps the whole batch and retries."""
    attempts: list[int] = []

    class Down:
        url = "memory://down"

        def write(self, calls: Any = (), tasks: Any = (), alerts: Any = ()) -> None:
            attempts.append(len(calls))
            if len(attempts) < 3:
                raise bc.errors.LedgerError("database is locked")
            target.write(calls=calls, tasks=tasks, alerts=alerts)

        def close(self) -> None:
            pass

    target = open_ledger(f"memory://transient-{uuid.uuid4().hex}")
    writer = LedgerWriter(target.url, flush_interval=0.01, opener=lambda url: Down())  # type: ignore[arg-type,return-value]
    records = [make_call(i) for i in range(5)]
    for record in records:
        writer.submit_call(record)
    assert writer.flush(30)
    assert attempts == [5, 5, 5] and writer.rejected == []
    assert target.read_calls() == [replace(r) for r in records]
