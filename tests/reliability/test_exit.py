"""Issue 17 items 2 and 10: exiting never hangs, never loses the last record, and says why it waits.

Each case is a real script run in its own interpreter with a timeout (exit and finalisation are
what is tested); the four start together, since an interpreter with the SDKs takes seconds to start.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import budgetclient as bc
from budgetclient.ledger import LedgerWriter, open_ledger
from tests.reliability._processes import calls_made, start_worker, stored_response_ids
from tests.test_ledger import make_call

EXIT_TIMEOUT_S = 1.5


class Run:
    def __init__(self, directory: Path, mode: str, url: str, **env: str) -> None:
        directory.mkdir()
        self.directory = directory
        self.started = time.monotonic()
        self.process: subprocess.Popen[bytes] = start_worker(mode, directory / "progress.txt", url, **env)

    def wait(self) -> None:
        try:
            out, err = self.process.communicate(timeout=90)
        finally:
            self.process.kill()
        self.elapsed = time.monotonic() - self.started
        self.output = (out + err).decode(errors="replace")
        self.returncode = self.process.returncode


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    base = tmp_path_factory.mktemp("exit")
    locked = base / "locked.db"
    open_ledger(f"sqlite:///{locked}").close()  # the file and schema exist
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock for ever
    try:
        started = {
            "abandoned": Run(base / "abandoned", "abandoned-stream", f"sqlite:///{base / 'abandoned.db'}"),
            "garbage": Run(base / "garbage", "one-call", "garbage://x"),
            "locked": Run(
                base / "locked", "one-call", f"sqlite:///{locked}",
                BUDGETCLIENT_LEDGER_EXIT_TIMEOUT=str(EXIT_TIMEOUT_S),
            ),
            "normal": Run(base / "normal", "one-call", f"sqlite:///{base / 'normal.db'}"),
        }
        for run in started.values():
            run.wait()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    yield started


SONNET_45_USD_PER_MTOK = {"input": Decimal(3), "cache_read": Decimal("0.30"), "output": Decimal(15)}
"""Anthropic's price sheet for claude-sonnet-4-5 (the worker's model), USD per million tokens."""


def test_a_stream_abandoned_without_closing_exits_and_its_record_is_written(runs: dict[str, Run]) -> None:
    """Python 3.11 blocked for ever starting the writer thread during finalisation (the stream's
    generator is finalised with the module holding it); the ``incomplete`` record was lost, and
    then written with no cost (the price data could no longer be imported). It is priced from the
    usage seen before the break (``message_start``), like any other record."""
    run = runs["abandoned"]
    assert run.returncode == 0, run.output
    assert (run.directory / "progress.txt").read_text() == "broke out\n"
    with sqlite3.connect(run.directory.parent / "abandoned.db") as conn:
        rows = conn.execute(
            "SELECT json_extract(record, '$[3]'), input_tokens, cache_read_tokens, cache_write_tokens, "
            "cache_write_long_tokens, output_tokens, json_extract(record, '$[12]') FROM calls"
        ).fetchall()
    ((status, input_tokens, cache_read, cache_write, cache_write_long, output_tokens, cost),) = rows
    assert status == "incomplete"
    assert input_tokens >= 300 and output_tokens >= 1 and cache_write == cache_write_long == 0
    price = SONNET_45_USD_PER_MTOK
    uncached = input_tokens - cache_read
    expected = (
        uncached * price["input"] + cache_read * price["cache_read"] + output_tokens * price["output"]
    ) / 1_000_000
    assert cost is not None and Decimal(cost) == expected


def test_a_normal_exit_writes_every_record(runs: dict[str, Run]) -> None:
    run = runs["normal"]
    assert run.returncode == 0, run.output
    made = [call_id for call_id, _ in calls_made(run.directory / "progress.txt")]
    assert len(made) == 1
    assert stored_response_ids(run.directory.parent / "normal.db") == made


def test_an_unparseable_ledger_url_is_a_configuration_error_not_an_outage(runs: dict[str, Run]) -> None:
    with pytest.raises(bc.ConfigurationError, match="garbage://x"):
        bc.configure(ledger="garbage://x")
    with pytest.raises(bc.ConfigurationError, match="host part"):
        bc.configure(ledger="sqlite://host/ledger.db")
    # From the environment, read on the metering path (which never raises): the error is logged,
    # the script exits as fast as a normal one (it took 15 s of retries), and the record is kept in
    # the quarantine file.
    run = runs["garbage"]
    assert run.returncode == 0, run.output
    assert "ledger.url_invalid" in run.output and "garbage://x" in run.output
    assert run.elapsed < runs["normal"].elapsed + 3
    ((made, _),) = calls_made(run.directory / "progress.txt")
    lines = (run.directory / "xdg" / "budgetclient" / "quarantine.jsonl").read_text().splitlines()
    kept = [json.loads(line) for line in lines]
    assert [entry["kind"] for entry in kept] == ["call"]
    assert json.loads(kept[0]["record"])["response_id"] == made


def test_the_exit_wait_on_a_locked_ledger_is_logged_and_bounded(runs: dict[str, Run]) -> None:
    """The record the locked ledger did not take by the deadline goes to the spill file, and the
    next writer on that ledger (once unlocked) stores it."""
    run = runs["locked"]
    assert run.returncode == 0, run.output
    assert "ledger.exit_waiting" in run.output and "BUDGETCLIENT_LEDGER_EXIT_TIMEOUT" in run.output
    assert "ledger.spilled_at_exit" in run.output and "ledger.unwritten_at_exit" not in run.output
    assert run.elapsed < runs["normal"].elapsed + EXIT_TIMEOUT_S + 3  # the default would wait 10 s
    locked = run.directory.parent / "locked.db"
    assert stored_response_ids(locked) == []
    (spill,) = locked.parent.glob("locked.db.spill-*.jsonl")
    assert len(spill.read_text().splitlines()) == 1
    next_writer = LedgerWriter(f"sqlite:///{locked}")  # the fixture has released the lock
    next_writer.submit_call(make_call(1, response_id="next"))
    assert next_writer.flush(30)
    next_writer.close()
    ((made, _),) = calls_made(run.directory / "progress.txt")
    assert sorted(stored_response_ids(locked)) == sorted([made, "next"])
    assert not spill.exists()
