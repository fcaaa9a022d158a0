"""Issue 21: fleet limits (``bc.limit``) hold across processes on one SQLite file.

Eight forked processes hammer one limit through real ``bc.Anthropic`` clients over the fake
backend; every call's cost is recomputed here from the usage the SDK returned and this test's own
price sheet, and must add up to at most the limit, and to exactly what the store counts as spent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import budgetclient as bc
from budgetclient import limits
from budgetclient.ledger.limits_store import LimitRow, LimitStoreError, SqliteLimitStore, window_of
from budgetclient.testing import FakeAnthropic

MODEL = "claude-sonnet-4-6"
MTOK = Decimal(1_000_000)
PRICES = {
    MODEL: {"input": Decimal(3), "output": Decimal(15), "cache_read": Decimal("0.3"),
            "cache_write": Decimal("3.75"), "cache_write_long": Decimal(6)},
}  # fmt: skip
PROMPT = "Classify the ticket by urgency. " * 30
MAX_TOKENS = 200
OUTPUT_TOKENS = 150
PROCESSES = 8
HAMMER_USD = Decimal("0.2")
BIG = 10_000
"""max_tokens of the killed worker's call: its hold leaves no room for a second such call."""


def cost_of(usage: dict[str, int]) -> Decimal:
    """One call's cost from the SDK's usage fields and this test's price sheet."""
    rates = PRICES[MODEL]
    return (
        usage["input_tokens"] * rates["input"]
        + usage["cache_read_input_tokens"] * rates["cache_read"]
        + usage["cache_creation_input_tokens"] * rates["cache_write"]
        + usage["output_tokens"] * rates["output"]
    ) / MTOK


def client(latency_s: float = 0.0) -> Any:
    fake = FakeAnthropic(output_tokens=OUTPUT_TOKENS, latency_s=latency_s)
    return bc.Anthropic(api_key="sk-ant-test", http_client=fake.http_client(), max_retries=0)


def call(c: Any, max_tokens: int = MAX_TOKENS) -> dict[str, int]:
    reply = c.messages.create(
        model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": PROMPT}]
    )
    u = reply.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": u.cache_creation_input_tokens or 0,
    }


def _hammer(url: str, name: str, out: str, start: Any) -> None:
    """One worker: call under the limit until it has been refused 5 times; write its usages."""
    try:
        bc.configure(ledger=url, prices=PRICES)
        bc.limit(name, usd=HAMMER_USD, per="day")
        c = client()
        usages: list[dict[str, int]] = []
        refused = 0
        start.wait(60)  # every worker set up: they all start together
        with bc.limit(name):
            while refused < 5:
                try:
                    usages.append(call(c))
                except bc.LimitExceeded:
                    refused += 1
                    time.sleep(0.005)
        Path(out).write_text(json.dumps({"usages": usages, "refused": refused}))
    finally:
        os._exit(0)


def hammer(url: str, tmp_path: Path) -> tuple[Decimal, int, int]:
    """Run `PROCESSES` workers on one limit; (their summed cost, calls, refusals)."""
    name = f"tenant:hammer-{os.getpid()}"
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"worker{i}.json" for i in range(PROCESSES)]
    start = ctx.Barrier(PROCESSES)
    workers = [ctx.Process(target=_hammer, args=(url, name, str(o), start)) for o in outs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(240)
        assert w.exitcode == 0
    results = [json.loads(o.read_text()) for o in outs]
    usages = [u for r in results for u in r["usages"]]
    spent = sum((cost_of(u) for u in usages), Decimal(0))
    rows = {r.name: r for r in limits.store(url).rows(time.time())}
    row = rows[name]
    assert spent <= HAMMER_USD, f"{len(usages)} calls spent {spent} > limit {HAMMER_USD}"
    assert row.spent == spent  # the store counted every call, exactly
    assert row.reserved == 0  # every hold was settled
    assert row.usd == HAMMER_USD and row.per == "day"
    assert len([r for r in results if r["usages"]]) >= 2  # processes really competed
    return spent, len(usages), sum(r["refused"] for r in results)


def test_eight_processes_never_pass_the_limit_on_sqlite(tmp_path: Path) -> None:
    spent, calls, refused = hammer(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    assert refused == 5 * PROCESSES and calls > 10
    assert HAMMER_USD - spent < PROCESSES * worst_bound()  # refusals came from a full limit


def worst_bound() -> Decimal:
    """More than one call's worst case: every prompt character a token, and max_tokens of output."""
    return (len(PROMPT) * PRICES[MODEL]["input"] + MAX_TOKENS * PRICES[MODEL]["output"]) / MTOK


# -- a killed worker's hold ---------------------------------------------------------------------


def _held_call(url: str, name: str, usd: str) -> None:
    """Hold one call's worst case and hang in the send until killed."""
    bc.configure(ledger=url, prices=PRICES)
    bc.limit(name, usd=usd, lease_s=600)
    with bc.limit(name):
        call(client(latency_s=3600), max_tokens=BIG)
    os._exit(0)


def _row(url: str, name: str, now: float) -> LimitRow | None:
    return next((r for r in limits.store(url).rows(now) if r.name == name), None)


def killed_worker_is_released(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"job:killed-{os.getpid()}"
    bc.configure(ledger=url, prices=PRICES)
    # room for one call of max_tokens=BIG, never two
    usd = str(BIG * PRICES[MODEL]["output"] / MTOK + worst_bound())
    bc.limit(name, usd=usd, lease_s=600)
    child = multiprocessing.get_context("fork").Process(target=_held_call, args=(url, name, usd))
    child.start()
    deadline = time.monotonic() + 60
    while (row := _row(url, name, time.time())) is None or row.reserved == 0:
        assert time.monotonic() < deadline and child.is_alive(), "the worker never held its call"
        time.sleep(0.02)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    c = client()
    with bc.limit(name), pytest.raises(bc.LimitExceeded, match=name):
        call(c, max_tokens=BIG)  # the dead worker's hold still counts within its lease
    later = time.time() + 601
    monkeypatch.setattr(limits, "_clock", lambda: later)
    with bc.limit(name):
        usage = call(c, max_tokens=BIG)  # its lease ran out: the hold is gone
    row = _row(url, name, later)
    assert row is not None and row.spent == cost_of(usage) and row.reserved == 0


def test_killed_workers_hold_is_released_after_its_lease_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_worker_is_released(f"sqlite:///{tmp_path / 'ledger.db'}", monkeypatch)


# -- windows --------------------------------------------------------------------------------------


def window_rolls_over(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calendar hours in UTC: refused at 10:59:59, admitted again at 11:00:00."""
    name = f"key:hourly-{os.getpid()}"
    bc.configure(ledger=url, prices=PRICES)
    bc.limit(name, usd=str(worst_bound()), per="hour")
    hour = datetime(2026, 12, 7, 10, tzinfo=UTC).timestamp()
    now = [hour + 3599]
    monkeypatch.setattr(limits, "_clock", lambda: now[0])
    c = client()
    first: list[Decimal] = []
    with bc.limit(name):
        for _ in range(10):
            try:
                first.append(cost_of(call(c)))
            except bc.LimitExceeded as exc:
                assert "2026-12-07T10:00:00+00:00" in str(exc)
                break
        else:
            pytest.fail("the limit never refused a call")
        now[0] = hour + 3600
        second = cost_of(call(c))
    row = _row(url, name, now[0])
    assert row is not None and row.window == "2026-12-07T11:00:00+00:00"
    assert row.spent == second and row.reserved == 0
    old = _row(url, name, hour + 3599)
    assert old is not None and old.spent == sum(first, Decimal(0)) and first


def test_window_rolls_over_on_a_moved_clock_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    window_rolls_over(f"sqlite:///{tmp_path / 'ledger.db'}", monkeypatch)


@pytest.mark.parametrize(
    ("per", "at", "start"),
    [
        ("hour", "2026-12-07T10:59:59+00:00", "2026-12-07T10:00:00+00:00"),
        ("day", "2026-12-07T23:59:59+00:00", "2026-12-07T00:00:00+00:00"),
        ("month", "2026-12-31T23:59:59+00:00", "2026-12-01T00:00:00+00:00"),
        (None, "2026-12-31T23:59:59+00:00", "1970-01-01T00:00:00+00:00"),
    ],
)
def test_windows_are_calendar_aligned_in_utc(per: str | None, at: str, start: str) -> None:
    assert window_of(per, datetime.fromisoformat(at).timestamp()) == start


# -- in one process -----------------------------------------------------------------------------


def test_task_limits_and_the_scope_refuse_alike(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bc.configure(ledger=url, prices=PRICES)
    one = worst_bound()
    bc.limit("tenant:acme", usd=str(one), per="month")
    c = client()
    with bc.task("triage", limits=["tenant:acme"]) as t:
        usage = call(c)
        with pytest.raises(bc.LimitExceeded, match="tenant:acme"):
            call(c)  # what is left is less than a worst case
    assert t.calls == 1  # the refused call was not sent
    row = _row(url, "tenant:acme", time.time())
    assert row is not None and row.spent == cost_of(usage) and row.reserved == 0
    with pytest.raises(bc.ConfigurationError, match="not declared"), bc.task("x", limits=["tenant:nobody"]):
        call(c)


def test_a_refused_limit_gives_the_task_budget_back(tmp_path: Path) -> None:
    bc.configure(ledger=f"sqlite:///{tmp_path / 'ledger.db'}", prices=PRICES)
    bc.limit("tiny", usd="0.000001")
    with bc.task("budgeted", budget_usd=1) as t, bc.limit("tiny"), pytest.raises(bc.LimitExceeded):
        call(client())
    assert t._reserved == 0 and t.calls == 0


def test_warn_limits_send_and_warn_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bc.configure(ledger=url, prices=PRICES)
    bc.limit("soft", usd="0.000001", on_exceed="warn")
    c = client()
    with bc.limit("soft"), pytest.warns(bc.BudgetWarning, match="soft") as caught:
        costs = [cost_of(call(c)) for _ in range(3)]
    assert len([w for w in caught if "soft" in str(w.message)]) == 1
    row = _row(url, "soft", time.time())
    assert row is not None and row.spent == sum(costs, Decimal(0))


def test_unreachable_store_fails_closed_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the store's file would be under a plain file: it cannot be opened
    monkeypatch.setattr(limits, "_open_store", lambda url: SqliteLimitStore(str(blocker / "ledger.db")))
    bc.configure(prices=PRICES)
    bc.limit("closed", usd=1)
    bc.limit("open", usd=1, fail_closed=False)
    fake = FakeAnthropic(output_tokens=OUTPUT_TOKENS)
    c = bc.Anthropic(api_key="sk-ant-test", http_client=fake.http_client(), max_retries=0)
    with bc.limit("closed"), pytest.raises(bc.LimitUnavailable) as caught:
        call(c)
    message = str(caught.value)
    assert "fail_closed=True" in message and "fail_closed=False" in message
    assert "BUDGETCLIENT_LEDGER" in message
    assert fake.requests == []  # nothing was sent
    with bc.limit("open"):
        call(c)
    assert len(fake.requests) == 1


def test_calls_outside_any_limit_never_open_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real: Callable[[str], Any] = limits._open_store
    monkeypatch.setattr(limits, "_open_store", lambda url: opened.append(url) or real(url))
    bc.configure(prices=PRICES)
    with bc.task("plain", budget_usd=1):
        call(client())
    call(client())
    assert opened == []


def test_the_limits_command_shows_window_spent_reserved_remaining(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from budgetclient.cli import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bc.configure(ledger=url, prices=PRICES)
    bc.limit("tenant:cli", usd="0.5", per="day")
    with bc.limit("tenant:cli"):
        spent = cost_of(call(client())) + cost_of(call(client()))
    day = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00+00:00")
    assert main(["limits", "--ledger", url, "--json"]) == 0
    # lines of JSON (another test's console logging may share stdout)
    [shown] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert shown == {
        "limit": "tenant:cli",
        "per": "day",
        "window_start": day,
        "usd": "0.5",
        "spent_usd": str(spent),
        "reserved_usd": "0",
        "remaining_usd": str(Decimal("0.5") - spent),
    }
    assert main(["limits", "--ledger", url]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("20")]
    assert table[0].split() == ["limit", "per", "window", "(UTC)", "usd", "spent", "reserved", "remaining"]
    assert table[1].split()[:3] == ["tenant:cli", "day", day[:10]]


def test_the_report_shows_spend_per_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from budgetclient.cli import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bc.configure(ledger=url, prices=PRICES)
    bc.limit("tenant:report", usd="0.5", per="month")
    with bc.task("limited"), bc.limit("tenant:report"):
        spent = cost_of(call(client()))
    bc.flush()
    assert main(["report", "--ledger", url]) == 0
    text = capsys.readouterr().out
    assert "limits (current windows):" in text
    [line] = [line for line in text.splitlines() if line.startswith("  tenant:report (month")]
    assert f"${spent:.6f}".rstrip("0").rstrip(".") + " spent + $0 held of $0.5, " in line
    left = Decimal("0.5") - spent
    assert line.endswith(f"${left:.6f}".rstrip("0").rstrip(".") + " left")


def test_limits_from_a_toml_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = tmp_path / "limits.toml"
    name = f"tenant:toml-{uuid.uuid4().hex[:8]}"
    path.write_text(f'[limits."{name}"]\nusd = "0.000001"\nper = "hour"\nlease_s = 60\n')
    monkeypatch.setenv(limits.LIMITS_ENV, str(path))
    bc.configure(ledger=url, prices=PRICES)
    with bc.task("from-env", limits=[name]), pytest.raises(bc.LimitExceeded, match=name):
        call(client())
    spec = next(s for s in limits.declared() if s.name == name)
    assert (spec.usd, spec.per, spec.lease_s, spec.on_exceed, spec.fail_closed) == (
        Decimal("0.000001"),
        "hour",
        60.0,
        "raise",
        True,
    )
    path.write_text('[limits."x"]\nusd = 1\nper = "week"\n')
    with pytest.raises(bc.ConfigurationError, match="per"):
        limits.load_limits(path)


class _SettleFailsOnce(SqliteLimitStore):
    """The real store, whose first settlement finds it unreachable."""

    failed = False

    def settle(self, hold_id: str, claims: Any, amount: Decimal) -> None:
        if not self.failed:
            self.failed = True
            raise LimitStoreError("server closed the connection unexpectedly")
        super().settle(hold_id, claims, amount)


def test_a_settlement_the_store_refused_is_counted_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "ledger.db")
    monkeypatch.setattr(limits, "_open_store", lambda url: _SettleFailsOnce(path))
    bc.configure(prices=PRICES)
    bc.limit("late", usd=1)
    c = client()
    with bc.limit("late"):
        first = cost_of(call(c))  # its settlement fails: the hold stays, the cost is kept in process
        second = cost_of(call(c))  # admitted after the first is settled late
    row = _row(f"sqlite:///{path}", "late", time.time())
    assert row is not None and row.spent == first + second and row.reserved == 0


def test_track_task_takes_limits(tmp_path: Path) -> None:
    bc.configure(ledger=f"sqlite:///{tmp_path / 'ledger.db'}", prices=PRICES)
    bc.limit("decorated", usd="0.000001")

    @bc.track_task("job", limits=["decorated"])
    def job() -> dict[str, int]:
        return call(client())

    with pytest.raises(bc.LimitExceeded, match="decorated"):
        job()
