"""Issue 17 item 7: deleting or replacing the SQLite ledger file while a process writes loses nothing after.

Writes used to go on into the unlinked file (``flush()`` returned True, nothing logged, every later
record lost). Now each write checks the path's inode first, and reopens (logged) when it changed.
"""

from __future__ import annotations

import os
from pathlib import Path

from structlog.testing import capture_logs

from budgetclient.ledger import LedgerWriter, open_ledger
from tests.test_ledger import make_call


def stored_ids(url: str) -> set[str]:
    ledger = open_ledger(url)
    try:
        return {c.id for c in ledger.read_calls()}
    finally:
        ledger.close()


def test_deleted_then_replaced_ledger_file_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    writer = LedgerWriter(url, flush_interval=0.01)
    first = [make_call(i) for i in range(5)]
    for record in first:
        writer.submit_call(record)
    assert writer.flush(30)
    assert stored_ids(url) == {r.id for r in first}

    with capture_logs() as logs:
        os.remove(path)  # what a clean-up script or an operator does
        after_delete = [make_call(10 + i) for i in range(7)]
        for record in after_delete:
            writer.submit_call(record)
        assert writer.flush(30)
        assert stored_ids(url) == {r.id for r in after_delete}

        other_url = f"sqlite:///{tmp_path / 'restored.db'}"
        restored = [make_call(20 + i) for i in range(2)]
        other = open_ledger(other_url)
        other.write(calls=restored)
        other.close()
        os.replace(tmp_path / "restored.db", path)  # a backup restored over the live file
        after_replace = [make_call(30 + i) for i in range(4)]
        for record in after_replace:
            writer.submit_call(record)
        assert writer.flush(30)
    writer.close()
    assert stored_ids(url) == {r.id for r in restored + after_replace}
    changes = [e["change"] for e in logs if e["event"] == "ledger.file_replaced"]
    assert changes == ["deleted", "replaced"]
    assert stat_mode(path) == 0o600


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
