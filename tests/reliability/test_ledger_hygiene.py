"""Issue 17 item 10 (the ledger's part): private files under any umask, masked URLs, bounded queue."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from budgetclient.cli import main
from budgetclient.errors import LedgerError
from budgetclient.ledger import LedgerWriter, open_ledger
from budgetclient.ledger.base import mask_url
from tests.test_ledger import make_call


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o277, 0o377])
def test_directories_created_under_a_restrictive_umask_are_usable(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    previous = os.umask(umask)
    try:
        ledger = open_ledger(f"sqlite:///{path}")  # mkdir(0o700) & ~umask gave 0500 / 0400: unusable
        ledger.write(calls=[make_call(1)])
        ledger.close()
    finally:
        os.umask(previous)
    assert (mode(path.parent), mode(path.parent.parent), mode(path)) == (0o700, 0o700, 0o600)
    assert len(open_ledger(f"sqlite:///{path}").read_calls()) == 1


def test_a_ledger_file_readable_by_others_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)  # made by an older version, or by hand
    with capture_logs() as logs:
        open_ledger(f"sqlite:///{path}").close()
    assert mode(path) == 0o600
    (event,) = [e for e in logs if e["event"] == "ledger.permissions_tightened"]
    assert (event["old_mode"], event["new_mode"]) == ("0o644", "0o600")


def test_report_output_files_are_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    ledger.write(calls=[make_call(1)])
    ledger.close()
    out = tmp_path / "report.csv"
    assert main(["report", "--ledger", url, "--format", "csv", "-o", str(out)]) == 0
    capsys.readouterr()
    assert mode(out) == 0o600 and out.read_text()


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://app:p@ss@w0rd@db.internal:5432/ledger", "p@ss@w0rd"),
        ("postgresql://app:s3cret@db/ledger?sslmode=verify-full&sslpassword=keyPASS&x=1", "keyPASS"),
        ("postgresql://app@db/ledger?password=qwerty", "qwerty"),
        ("host=db user=app sslpassword='k e y' password=hunter2", "hunter2"),
    ],
)
def test_ledger_urls_are_masked_whole(url: str, secret: str) -> None:
    masked = mask_url(url)
    assert secret not in masked and "***" in masked
    assert "s3cret" not in masked and "k e y" not in masked


def test_the_queue_of_a_down_ledger_is_bounded_in_memory(tmp_path: Path) -> None:
    """A queued record costs ~1.2 kB; past ``max_queued`` records the newest go to the spill file
    (logged), never dropped, and are written to the ledger when it is back."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    down = {"now": True}

    def opener(u: str) -> Any:
        if down["now"]:
            raise LedgerError("connection refused")
        return open_ledger(u)

    writer = LedgerWriter(url, flush_interval=0.01, batch_size=20, max_queued=50, opener=opener)
    records = [make_call(i) for i in range(300)]
    with capture_logs() as logs:
        for record in records:
            writer.submit_call(record)
        deadline = time.monotonic() + 30
        spilled_now = lambda: sum(e["records"] for e in logs if e["event"] == "ledger.queue_spilled")  # noqa: E731
        while spilled_now() < len(records) - 20 - 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.pending == 20 + 50  # the failing batch, and 50 behind it
        assert writer.spill_path.exists() and mode(writer.spill_path) == 0o600
        down["now"] = False
        assert writer.flush(30)
        deadline = time.monotonic() + 30
        while writer.spill_path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    writer.close()
    assert not writer.spill_path.exists()
    assert sorted(c.id for c in open_ledger(url).read_calls()) == sorted(r.id for r in records)
    spilled = sum(e["records"] for e in logs if e["event"] == "ledger.queue_spilled")
    (replayed,) = [e["records"] for e in logs if e["event"] == "ledger.spill_replayed"]
    assert spilled == replayed > 0
