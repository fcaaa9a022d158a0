"""Issue 21 on PostgreSQL: the same fleet-limit guarantees as `test_limits`, on one server.

Needs ``BUDGETCLIENT_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` starts a throwaway server and sets
it). Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import budgetclient as bc
from budgetclient import limits

from .test_limits import HAMMER_USD, PRICES, client, hammer, killed_worker_is_released, window_rolls_over

BASE_URL = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(
    not BASE_URL,
    reason="BUDGETCLIENT_TEST_POSTGRES_URL is not set; `source .ci/postgres.sh` starts a throwaway server",
)


@pytest.fixture
def url() -> Iterator[str]:
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    yield f"{BASE_URL}{'&' if '?' in BASE_URL else '?'}schema={schema}"
    bc.configure(ledger=None)
    bc.flush()
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_eight_processes_never_pass_the_limit_on_postgres(url: str, tmp_path: Path) -> None:
    spent, calls, refused = hammer(url, tmp_path)
    assert spent <= HAMMER_USD and calls > 10 and refused > 0


def test_killed_workers_hold_is_released_after_its_lease_on_postgres(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_worker_is_released(url, monkeypatch)


def test_window_rolls_over_on_a_moved_clock_postgres(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    window_rolls_over(url, monkeypatch)


def test_unreachable_server_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from budgetclient.ledger.limits_postgres import PostgresLimitStore

    dead = "postgresql://budgetclient@127.0.0.1:1/nowhere?connect_timeout=1"
    monkeypatch.setattr(limits, "_open_store", lambda _url: PostgresLimitStore(dead))
    bc.configure(prices=PRICES)
    bc.limit("pg-closed", usd=1)
    with bc.limit("pg-closed"), pytest.raises(bc.LimitUnavailable, match="fail_closed=True"):
        client().messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
