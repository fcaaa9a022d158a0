"""Fleet limits on one SQLite file: every reservation and settlement is one ``BEGIN IMMEDIATE``.

The tables live in the ledger's database file, reached through a connection of their own (the
ledger writer batches off the call path; a reservation must be decided on it, atomically across
processes). ``BEGIN IMMEDIATE`` takes SQLite's write lock before the read, so no two processes
can both see room for the same last dollar. Amounts are stored as decimal text and added up in
Python inside the transaction: exact, whatever the price.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from .sqlite import _transaction as sqlite_transaction

__all__ = [
    "Claim",
    "LimitRow",
    "LimitStore",
    "LimitStoreError",
    "Reserved",
    "SqliteLimitStore",
    "read_limit_rows",
    "window_of",
]

BUSY_TIMEOUT_S = 30.0
_T = TypeVar("_T")

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy handler alone
    fcntl = None  # type: ignore[assignment]
ALL_TIME = "1970-01-01T00:00:00+00:00"
"""The one window of a limit without a period (``per=None``)."""


def window_of(per: str | None, now: float) -> str:
    """Start of the calendar window (UTC) holding ``now``: the hour, the day or the month."""
    if per is None:
        return ALL_TIME
    t = datetime.fromtimestamp(now, UTC)
    if per == "hour":
        t = t.replace(minute=0, second=0, microsecond=0)
    elif per == "day":
        t = t.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        t = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return t.isoformat()


class LimitStoreError(Exception):
    """The limits store could not be reached or refused the transaction (the cause is chained)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One limit a call is held against: its window (UTC start, ISO text) and its cap."""

    name: str
    window: str
    usd: Decimal
    per: str | None
    enforce: bool
    """False (``on_exceed="warn"``): held and counted, never refused."""


@dataclass(frozen=True, slots=True)
class Reserved:
    """What a reservation found: the limit that refused it (nothing held then), and per claim the
    spent plus held before this call."""

    refused: str | None
    totals: dict[str, Decimal]


@dataclass(frozen=True, slots=True)
class LimitRow:
    name: str
    usd: Decimal
    per: str | None
    window: str
    spent: Decimal
    reserved: Decimal


class LimitStore(Protocol):
    def reserve(
        self, hold_id: str, claims: Sequence[Claim], amount: Decimal, now: float, lease_s: float
    ) -> Reserved: ...

    def settle(self, hold_id: str, claims: Sequence[Claim], amount: Decimal) -> None: ...

    def release(self, hold_id: str) -> None: ...

    def rows(self, now: float) -> list[LimitRow]: ...


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS limit_defs (name TEXT PRIMARY KEY, usd TEXT NOT NULL, per TEXT)",
    "CREATE TABLE IF NOT EXISTS limit_windows (name TEXT NOT NULL, window_start TEXT NOT NULL, "
    "spent TEXT NOT NULL, PRIMARY KEY (name, window_start))",
    "CREATE TABLE IF NOT EXISTS limit_holds (id TEXT NOT NULL, name TEXT NOT NULL, "
    "window_start TEXT NOT NULL, amount TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (id, name))",
    "CREATE INDEX IF NOT EXISTS limit_holds_window ON limit_holds (name, window_start)",
)


class SqliteLimitStore:
    """Limits in one SQLite file; one connection per process (reopened after a fork), one lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock_fd: int | None = None
        self._lock_pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            with sqlite_transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
        except sqlite3.Error as exc:
            raise LimitStoreError(f"SQLite limits store {self.path!r}: {type(exc).__name__}: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock, self._turn():
            conn = self._connection()
            try:
                with sqlite_transaction(conn):
                    result = work(conn)
            except sqlite3.Error as exc:
                self._conn = None
                raise LimitStoreError(
                    f"SQLite limits store {self.path!r}: {type(exc).__name__}: {exc}"
                ) from exc
            return result

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Processes take turns on a lock file before ``BEGIN IMMEDIATE``: a blocked ``flock`` wakes
        as soon as the holder is done (SQLite's busy handler polls, sleeping up to 100 ms), and the
        kernel drops the lock of a killed process. Without a file (``:memory:``) nothing to share."""
        if self.path == ":memory:" or fcntl is None:
            yield
            return
        if self._lock_fd is None or self._lock_pid != os.getpid():
            try:
                self._lock_fd = os.open(f"{self.path}.limits-lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise LimitStoreError(f"SQLite limits store {self.path!r}: lock file: {exc}") from exc
            self._lock_pid = os.getpid()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def reserve(
        self, hold_id: str, claims: Sequence[Claim], amount: Decimal, now: float, lease_s: float
    ) -> Reserved:
        def work(conn: sqlite3.Connection) -> Reserved:
            totals: dict[str, Decimal] = {}
            for claim in claims:
                conn.execute("DELETE FROM limit_holds WHERE name = ? AND expires_at <= ?", (claim.name, now))
                total = _spent(conn, claim.name, claim.window) + _held(conn, claim.name, claim.window, None)
                totals[claim.name] = total
                if claim.enforce and total + amount > claim.usd:
                    return Reserved(refused=claim.name, totals=totals)
            for claim in claims:
                conn.execute(
                    "INSERT INTO limit_defs (name, usd, per) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET usd = excluded.usd, per = excluded.per",
                    (claim.name, str(claim.usd), claim.per),
                )
                conn.execute(
                    "INSERT INTO limit_holds (id, name, window_start, amount, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (hold_id, claim.name, claim.window, str(amount), now + lease_s),
                )
            return Reserved(refused=None, totals=totals)

        return self._transaction(work)

    def settle(self, hold_id: str, claims: Sequence[Claim], amount: Decimal) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM limit_holds WHERE id = ?", (hold_id,))
            for claim in claims:
                conn.execute(
                    "INSERT OR REPLACE INTO limit_windows (name, window_start, spent) VALUES (?, ?, ?)",
                    (claim.name, claim.window, str(_spent(conn, claim.name, claim.window) + amount)),
                )

        self._transaction(work)

    def release(self, hold_id: str) -> None:
        self._transaction(lambda conn: conn.execute("DELETE FROM limit_holds WHERE id = ?", (hold_id,)))

    def rows(self, now: float) -> list[LimitRow]:
        def work(conn: sqlite3.Connection) -> list[LimitRow]:
            out: list[LimitRow] = []
            for name, usd, per in conn.execute(
                "SELECT name, usd, per FROM limit_defs ORDER BY name"
            ).fetchall():
                window = window_of(per, now)
                spent, held = _spent(conn, name, window), _held(conn, name, window, now)
                out.append(LimitRow(name, Decimal(usd), per, window, spent, held))
            return out

        return self._transaction(work)


def _spent(conn: sqlite3.Connection, name: str, window: str) -> Decimal:
    row = conn.execute(
        "SELECT spent FROM limit_windows WHERE name = ? AND window_start = ?", (name, window)
    ).fetchone()
    return Decimal(row[0]) if row else Decimal(0)


def _held(conn: sqlite3.Connection, name: str, window: str, now: float | None) -> Decimal:
    """Held on one window (unexpired at ``now``; None: expired holds were just deleted)."""
    rows = conn.execute(
        "SELECT amount FROM limit_holds WHERE name = ? AND window_start = ? AND expires_at > ?",
        (name, window, float("-inf") if now is None else now),
    )
    return sum((Decimal(a) for (a,) in rows), Decimal(0))


class _Fetching(Protocol):
    dialect: str

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


def read_limit_rows(ledger: _Fetching, now: float) -> list[LimitRow]:
    """What `LimitStore.rows` gives, read through an open SQL ledger (`ledger.aggregate.SqlLedger`)
    without creating anything: a ledger that never held a limit has no limit tables, and a report
    is a read."""
    sqlite = ledger.dialect == "sqlite"
    mark, table = ("?", "{name}") if sqlite else ("%s", "{schema}.{name}")
    exists = (
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
        "('limit_defs', 'limit_windows', 'limit_holds')"
        if sqlite
        else "SELECT (to_regclass('{schema}.limit_defs') IS NOT NULL)::int + "
        "(to_regclass('{schema}.limit_windows') IS NOT NULL)::int + "
        "(to_regclass('{schema}.limit_holds') IS NOT NULL)::int"
    )
    if ledger.fetch(exists)[0][0] != 3:
        return []
    defs, windows, holds = (
        table.replace("{name}", n) for n in ("limit_defs", "limit_windows", "limit_holds")
    )
    out: list[LimitRow] = []
    for name, usd, per in ledger.fetch(f"SELECT name, usd, per FROM {defs} ORDER BY name"):
        window = window_of(per, now)
        start: Any = window if sqlite else datetime.fromisoformat(window)
        spent = ledger.fetch(
            f"SELECT spent FROM {windows} WHERE name = {mark} AND window_start = {mark}", (name, start)
        )
        held = ledger.fetch(
            f"SELECT amount FROM {holds} WHERE name = {mark} AND window_start = {mark} "
            f"AND expires_at > {mark}",
            (name, start, now),
        )
        out.append(LimitRow(
            name, Decimal(usd), per, window, Decimal(spent[0][0]) if spent else Decimal(0),
            sum((Decimal(amount) for (amount,) in held), Decimal(0)),
        ))  # fmt: skip
    return out
