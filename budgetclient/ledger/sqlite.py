"""SQLite ledger: one file, WAL journal, shared safely by threads and processes.

The file is created with mode 0600 (its directory 0700) before SQLite opens it: records carry
costs, models and task names that are nobody else's business. Several processes may open a fresh
file at once; schema migrations run under ``BEGIN IMMEDIATE``, so exactly one applies each step.

Calls are the volume, so their table is built for appending (schema version 2): a compact row
(`_codec.COMPACT_CALL_COLUMNS`), ``started_at`` as integer microseconds, and only the indexes reads
use, each keyed so that new rows land at its end: ``(started_at, id)``, unique, which also makes a
retried write idempotent, and ``(task_name, started_at)``. Rows go in 256 to a statement, and
``synchronous=FULL`` makes every committed transaction durable, so the writer's batches are what
amortise the sync.

A large write is a two-stage pipeline: the calling thread encodes the next 256 calls while a helper
thread runs the INSERT of the previous 256. ``sqlite3`` releases the GIL while SQLite executes a
statement, so on two cores SQLite's own work overlaps Python's encoding instead of adding to it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import chain
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from .._log import log
from ..errors import LedgerError
from ..usage import CallRecord, TaskRecord
from . import _codec
from ._files import make_private_dirs, make_private_file
from ._fork import ForkSafeConnection, inherited, mid_write_files
from .base import AlertRecord, RecordRefused, mask_secrets, mask_url, sqlite_path_from_url

__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "PRAGMAS", "SCHEMA_VERSION", "SQLiteLedger"]

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's transaction before giving up."""

PRAGMAS: tuple[str, ...] = (
    f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}",
    "PRAGMA page_size = 16384",  # a new file only: fewer pages, splits and WAL frames per appended row
    "PRAGMA synchronous = FULL",  # a committed record survives a power cut, not just a crash
    "PRAGMA cache_size = -16384",  # KiB: a large batch's pages stay in memory until it commits
    "PRAGMA wal_autocheckpoint = 2500",  # pages (40 MB): fewer checkpoints, each with its own sync
)
"""Set on every connection, before WAL is enabled."""

_USAGE_DDL = """
    input_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cache_write_long_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    cost TEXT,
    cost_uncached_input TEXT,
    cost_cache_read TEXT,
    cost_cache_write TEXT,
    cost_output TEXT,
    cost_storage TEXT,"""


def _insert_sql(table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    values = ", ".join([f"({', '.join('?' * len(columns))})"] * rows)
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES {values}"


CALLS_PER_INSERT = 256
"""Calls per multi-row INSERT (3,584 parameters) where SQLite allows that many (3.32 and later:
32,766), else `CALLS_PER_INSERT_OLD`. One statement is one hand-over to the pipeline's helper
thread: 256 calls are ~1 ms of work on either side, so the hand-overs cost little."""
CALLS_PER_INSERT_OLD = 64
"""...under the 999 parameters SQLite before 3.32 allows."""
_INSERT_CALL = _insert_sql("calls", _codec.WRITE_CALL_COLUMNS)
_INSERT_CALLS = {
    size: _insert_sql("calls", _codec.WRITE_CALL_COLUMNS, size)
    for size in (CALLS_PER_INSERT, CALLS_PER_INSERT_OLD)
}
_INSERT_TASK = _insert_sql("tasks", _codec.TASK_COLUMNS)
_INSERT_ALERT = _insert_sql("alerts", _codec.ALERT_COLUMNS)


_QUARANTINE_DDL = (
    "CREATE TABLE IF NOT EXISTS quarantine (id TEXT NOT NULL, kind TEXT NOT NULL, "
    "quarantined_at TEXT NOT NULL, error TEXT NOT NULL, record TEXT NOT NULL)"
)
"""Records the ledger refused (see ``writer.py``); created on first use, outside the versioned steps,
so it never collides with another change's migration."""
_INSERT_QUARANTINE = "INSERT INTO quarantine (id, kind, quarantined_at, error, record) VALUES (?, ?, ?, ?, ?)"
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)
"""SQLite errors about a record's values. ``ProgrammingError`` is one too (a value of a type it cannot
bind), unless it says the connection is closed."""


def _is_refusal(exc: BaseException) -> bool:
    if isinstance(exc, _REFUSED):
        return True
    return isinstance(exc, sqlite3.ProgrammingError) and "closed" not in str(exc)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock before any read) ... ``COMMIT``; rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _calls_per_insert(conn: sqlite3.Connection) -> int:
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    fits = CALLS_PER_INSERT * len(_codec.WRITE_CALL_COLUMNS) <= limit
    return CALLS_PER_INSERT if fits else CALLS_PER_INSERT_OLD


def _insert_calls(conn: sqlite3.Connection, rows: Sequence[_codec.CompactCallRow]) -> None:
    """Insert compact call rows in the caller's transaction; a row already stored is skipped."""
    done = 0
    for size in dict.fromkeys((_calls_per_insert(conn), CALLS_PER_INSERT_OLD)):
        whole = done + (len(rows) - done) // size * size
        if whole > done:
            chunks = [tuple(chain.from_iterable(rows[i : i + size])) for i in range(done, whole, size)]
            conn.executemany(_INSERT_CALLS[size], chunks)
            done = whole
    if done < len(rows):
        conn.executemany(_INSERT_CALL, rows[done:])


def _write_calls(conn: sqlite3.Connection, calls: Sequence[CallRecord]) -> None:
    """Encode and insert calls in the caller's transaction, overlapping the two when there are many.

    The calling thread encodes statement k+1 while a helper thread executes statement k. The hand-
    over is a rendezvous: after queueing a statement the encoder blocks (GIL released) until the
    helper has picked it up, which the helper does once statement k-1 is done. So each waits for the
    other only while it has nothing to do, and neither sits out a GIL switch interval (5 ms).
    An encoding or SQLite error stops both; the caller rolls the transaction back.
    """
    size = _calls_per_insert(conn)
    encode = _codec.call_to_compact_row
    whole = len(calls) - len(calls) % size
    if whole < 2 * size or sys.is_finalizing():  # nothing to overlap, or no thread may start
        _insert_calls(conn, [encode(r) for r in calls])
        return
    todo: SimpleQueue[list[Any] | None] = SimpleQueue()
    taken: SimpleQueue[None] = SimpleQueue()
    failed: list[BaseException] = []
    helper = threading.Thread(
        target=_execute_each, args=(conn, _INSERT_CALLS[size], todo, taken, failed),
        name="budgetclient-ledger-insert", daemon=True,
    )  # fmt: skip
    try:
        helper.start()
    except RuntimeError:  # interpreter shutting down: no new threads
        _insert_calls(conn, [encode(r) for r in calls])
        return
    try:
        for start in range(0, whole, size):
            params: list[Any] = []
            add = params.extend  # flat, as the statement takes them: cheaper than chaining tuples
            for record in calls[start : start + size]:
                add(encode(record))
            todo.put(params)
            taken.get()
            if failed:
                break
    finally:
        todo.put(None)
        helper.join()  # the connection is the caller's again (to roll back, or go on)
    if failed:
        raise failed[0]
    if whole < len(calls):
        _insert_calls(conn, [encode(r) for r in calls[whole:]])


def _execute_each(
    conn: sqlite3.Connection,
    sql: str,
    todo: SimpleQueue[list[Any] | None],
    taken: SimpleQueue[None],
    failed: list[BaseException],
) -> None:
    """The pipeline's helper: run ``sql`` with each queued set of parameters until None."""
    while (params := todo.get()) is not None:
        taken.put(None)
        if not failed:  # after a failure, only drain the queue: the caller stops and rolls back
            try:
                conn.execute(sql, params)
            except BaseException as exc:
                failed.append(exc)


_INSERT_V2_CALL = _insert_sql("calls", _codec.COMPACT_CALL_COLUMNS)
_SELECT_V1_CALLS = f"SELECT {', '.join(_codec.CALL_COLUMNS)} FROM calls_v1 ORDER BY rowid"


def _copy_calls_from_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 to 2: each call row read by the version-1 decoder and re-encoded, in rowid order
    (so calls that started at the same instant keep their order)."""
    rows = conn.execute(_SELECT_V1_CALLS)
    width = len(_codec.COMPACT_CALL_COLUMNS)  # the version-2 row: later steps add columns
    while chunk := rows.fetchmany(1000):
        encoded = [_codec.call_to_compact_row(_codec.call_from_row(row))[:width] for row in chunk]
        conn.executemany(_INSERT_V2_CALL, encoded)


_RECORD_COST = _codec.COMPACT_RECORD_FIELDS.index("cost")
_SET_MONEY = f"UPDATE calls SET {', '.join(f'{c} = ?' for c in _codec.MONEY_COLUMNS)} WHERE rowid = ?"
_UNFILLED = "SELECT rowid, record FROM calls WHERE m_from_record != 0 AND m_from_record = 1"
FILL_BATCH = 5000
"""Calls whose money columns one fill transaction computes (a few ms of other writers' wait)."""


_RECORD_MODEL = _codec.COMPACT_RECORD_FIELDS.index("model")
_UNFILLED_KIND = "SELECT rowid FROM calls WHERE drifted IS NULL"
_SET_KIND = (
    f"UPDATE calls SET model = json_extract(record, '$[{_RECORD_MODEL}]'), "
    f"operation = json_extract(record, '$[{_RECORD_MODEL + 1}]'), "
    f"drifted = json_extract(record, '$[{_codec.COMPACT_RECORD_FIELDS.index('drift')}]') IS NOT NULL "
    "WHERE rowid = ?"
)


def _fill_kind_columns(conn: sqlite3.Connection, limit: int) -> int:
    """`_codec.CALL_KIND_COLUMNS` of at most ``limit`` calls stored before schema 4, in the caller's
    transaction; returns how many."""
    rowids = conn.execute(f"{_UNFILLED_KIND} LIMIT {int(limit)}").fetchall()
    conn.executemany(_SET_KIND, rowids)
    return len(rowids)


def _fill_money_columns(conn: sqlite3.Connection, limit: int | None = None) -> int:
    """The exact money columns (`_codec.MONEY_COLUMNS`) of calls that have none yet, from their
    ``record``, in the caller's transaction: at most ``limit`` of them (None: all); returns how many."""
    rows = conn.execute(_UNFILLED if limit is None else f"{_UNFILLED} LIMIT {int(limit)}")
    filled = 0
    while chunk := rows.fetchmany(FILL_BATCH):
        updates = []
        for rowid, record in chunk:
            cost, buckets = json.loads(record)[_RECORD_COST : _RECORD_COST + 2]
            updates.append((*_codec.money_columns(cost, buckets), rowid))
        conn.executemany(_SET_MONEY, updates)
        filled += len(updates)
    return filled


Migration = str | Callable[[sqlite3.Connection], None]
"""A statement, or a function run on the connection inside the migration's transaction."""

# Ordered and append-only: a released step is never edited; a change is a new step.
MIGRATIONS: tuple[tuple[Migration, ...], ...] = (
    (
        f"""CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            duration_s REAL NOT NULL,
            task_id TEXT,
            task_name TEXT,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            operation TEXT NOT NULL,
            status TEXT NOT NULL,
            http_status INTEGER,
            error TEXT,{_USAGE_DDL}
            conversation TEXT,
            prefix_hash TEXT,
            response_id TEXT,
            request_bytes INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            batch INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            service_tier TEXT,
            drift TEXT,
            metadata TEXT NOT NULL
        )""",
        "CREATE INDEX calls_started_at ON calls (started_at)",
        "CREATE INDEX calls_task_name ON calls (task_name, started_at)",
        "CREATE INDEX calls_task_id ON calls (task_id)",
        f"""CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            parent_id TEXT,
            outcome TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT NOT NULL,
            duration_s REAL NOT NULL,{_USAGE_DDL}
            calls INTEGER NOT NULL,
            budget_usd TEXT,
            error TEXT,
            metadata TEXT NOT NULL
        )""",
        "CREATE INDEX tasks_started_at ON tasks (started_at)",
        "CREATE INDEX tasks_name ON tasks (name, started_at)",
        """CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            task_name TEXT,
            task_id TEXT,
            created_at TEXT NOT NULL,
            message TEXT NOT NULL,
            value REAL,
            threshold REAL,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX alerts_created_at ON alerts (created_at)",
        "CREATE INDEX alerts_task_name ON alerts (task_name, created_at)",
    ),
    (
        "ALTER TABLE calls RENAME TO calls_v1",
        """CREATE TABLE calls (
            id TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            task_id TEXT,
            task_name TEXT,
            duration_s REAL NOT NULL,
            input_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            cache_write_long_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            request_bytes INTEGER NOT NULL,
            record TEXT NOT NULL
        )""",
        _copy_calls_from_v1,
        "DROP TABLE calls_v1",  # and its indexes, whose names the new ones reuse
        "CREATE UNIQUE INDEX calls_started_at ON calls (started_at, id)",
        "CREATE INDEX calls_task_name ON calls (task_name, started_at)",
    ),
    (
        *(f"ALTER TABLE calls ADD COLUMN {column} INTEGER" for column in _codec.MONEY_COLUMNS[:-1]),
        # 1 = not filled yet: the writer leaves them to the next report (its hot path unchanged), and
        # so does this step (opening a large ledger stays quick; the first report fills its rows)
        "ALTER TABLE calls ADD COLUMN m_from_record INTEGER NOT NULL DEFAULT 1",
        "CREATE INDEX calls_money_from_record ON calls (started_at) WHERE m_from_record != 0",
    ),
    (
        # what each run's calls say to the signals and the checklist (`ledger_report.RunFacts`, JSON);
        # NULL until a report computes it from the calls, once per run
        "ALTER TABLE tasks ADD COLUMN facts TEXT",
        # model, operation and a drift flag beside the compact row (`_codec.CALL_KIND_COLUMNS`): the
        # writer fills them; older rows are filled by the next report, as the money columns are
        *(
            f"ALTER TABLE calls ADD COLUMN {column} {kind}"
            for column, kind in zip(_codec.CALL_KIND_COLUMNS, ("TEXT", "TEXT", "INTEGER"), strict=True)
        ),
        "CREATE INDEX calls_kind_unfilled ON calls (started_at) WHERE drifted IS NULL",
    ),
    (
        # the report's drift section reads the drifted calls only, not a scan of every call
        "CREATE INDEX calls_drifted ON calls (started_at) WHERE drifted = 1",
    ),
    (
        # what a report keeps of its own work up to a mark (`ledger.rollups`): the call sums up to a
        # rowid, each task name's replayed signals up to a run; a report checks a mark before use
        "CREATE TABLE rollups (name TEXT PRIMARY KEY, data TEXT NOT NULL)",
        # a name's runs in the order they ended: the runs after a rollup's mark, and its check; with
        # the cost, so the percentiles' read of every cost is a scan of this index alone
        "CREATE INDEX tasks_name_ended ON tasks (name, ended_at, started_at, cost)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_STORE_ROLLUP = (
    "INSERT INTO rollups (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data"
)


def _select_sql(table: str, columns: tuple[str, ...], time_column: str, filters: list[str]) -> str:
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    return f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY {time_column}, rowid"


class SQLiteLedger(_codec.RowReads, ForkSafeConnection):
    """A ledger in one SQLite file; one connection guarded by a lock, so threads can share it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(sqlite_path_from_url(url)).absolute()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._file_id: tuple[int, int] | None = None
        self._conn: sqlite3.Connection | None = None
        self._track_forks()  # before connecting: a fork must wait for the connect and migration too
        with self._lock:
            self._conn = self._connect()

    def __repr__(self) -> str:
        return f"SQLiteLedger({mask_url(self.url)!r})"

    def _fail(self, doing: str, exc: BaseException) -> LedgerError:
        return LedgerError(
            f"SQLite ledger {str(self.path)!r}: {doing} failed: "
            f"{type(exc).__name__}: {mask_secrets(str(exc))}. "
            "Check that the file and its directory are writable and the disk is not full, or point "
            "BUDGETCLIENT_LEDGER / bc.configure(ledger=...) elsewhere."
        )

    def _connect(self) -> sqlite3.Connection:
        try:
            make_private_dirs(self.path.parent)
            make_private_file(self.path)
            info = os.stat(self.path)
        except OSError as exc:
            raise self._fail("creating the database file", exc) from exc
        self._file_id = (info.st_dev, info.st_ino)
        if self._file_id in mid_write_files:  # a connection would wait for ever: see ledger/_fork.py
            raise LedgerError(
                f"SQLite ledger {str(self.path)!r}: this process was forked while its parent was writing "
                "this file, so SQLite's lock state here is not usable; records wait in memory and the "
                "spill file, and the next process writing this ledger stores them"
            )
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._fail("opening", exc) from exc
        conn.row_factory = sqlite3.Row
        try:
            for pragma in PRAGMAS:
                conn.execute(pragma)
            self._enable_wal(conn)
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, LedgerError):
                raise
            if isinstance(exc, sqlite3.Error):
                raise self._fail("preparing the schema", exc) from exc
            raise
        return conn

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment of exclusive access; on a fresh file several processes
        # may try at once, so retry briefly past "database is locked".
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT)"
            )
            (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            if current > SCHEMA_VERSION:
                raise LedgerError(
                    f"SQLite ledger {str(self.path)!r} has schema version {current}, newer than this "
                    f"budgetclient understands ({SCHEMA_VERSION}); upgrade budgetclient."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for step in MIGRATIONS[version - 1]:
                    if isinstance(step, str):
                        conn.execute(step)
                        continue
                    try:
                        step(conn)
                    except sqlite3.Error:
                        raise
                    except Exception as exc:  # a stored row the old decoder cannot read
                        raise LedgerError(
                            f"SQLite ledger {str(self.path)!r}: migrating to schema version {version} "
                            f"failed: {type(exc).__name__}: {mask_secrets(str(exc))[:300]}. The file is "
                            f"unchanged, at version {current}; a row was probably edited outside "
                            "budgetclient: fix or delete it, or point BUDGETCLIENT_LEDGER / "
                            "bc.configure(ledger=...) at a new file."
                        ) from exc
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, datetime('now'))", (version,)
                )

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise LedgerError(
                    f"SQLite ledger {str(self.path)!r} is closed; open a new one with open_ledger()"
                )
            if self._conn is None or self._pid != os.getpid():  # first use in a forked child
                if self._conn is not None:
                    inherited.append(self._conn)
                self._pid = os.getpid()
                self._conn = None
                self._conn = self._connect()
            yield self._conn

    def write(
        self,
        calls: Sequence[CallRecord] = (),
        tasks: Sequence[TaskRecord] = (),
        alerts: Sequence[AlertRecord] = (),
    ) -> None:
        if not (calls or tasks or alerts):
            return
        task_rows = [_codec.task_to_row(r) for r in tasks]
        alert_rows = [_codec.alert_to_row(r) for r in alerts]
        with self._connection() as conn:
            conn = self._same_file(conn)
            try:
                with _transaction(conn):
                    if calls:
                        _write_calls(conn, calls)
                    if task_rows:
                        conn.executemany(_INSERT_TASK, task_rows)
                    if alert_rows:
                        conn.executemany(_INSERT_ALERT, alert_rows)
            except sqlite3.Error as exc:
                count = len(calls) + len(task_rows) + len(alert_rows)
                error = self._fail(f"writing {count} records", exc)
                if _is_refusal(exc):
                    raise RecordRefused(str(error)) from exc
                raise error from exc

    def _same_file(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """``conn``, or a new connection when the file was deleted or replaced since it was opened.

        Called with the lock held, before each write: a connection to an unlinked file would
        "write" every later record into a file nobody can open again. The old connection is closed
        first, which checkpoints into the old file and removes its ``-wal``/``-shm``, so the new file
        never starts with a stale WAL.
        """
        try:
            info = os.stat(self.path)
            current: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            current = None
        except OSError:
            return conn  # cannot tell (permissions changed?): the write reports what is wrong
        if current == self._file_id:
            return conn
        log.warning(
            "ledger.file_replaced", path=str(self.path), change="deleted" if current is None else "replaced",
            detail="reopening the ledger; later records go to the file now at this path",
        )  # fmt: skip
        self._conn = None
        try:
            conn.close()
        except sqlite3.Error:
            pass
        self._conn = self._connect()
        return self._conn

    def quarantine(self, entries: Sequence[dict[str, Any]]) -> None:
        """Keep records the ledger refused in the ``quarantine`` table (created on first use)."""
        rows = [(e["id"], e["kind"], e["quarantined_at"], e["error"], e["record"]) for e in entries]
        with self._connection() as conn:
            try:
                with _transaction(conn):
                    conn.execute(_QUARANTINE_DDL)
                    conn.executemany(_INSERT_QUARANTINE, rows)
            except sqlite3.Error as exc:
                raise self._fail(f"quarantining {len(rows)} records", exc) from exc

    def read_calls(
        self, *, since: datetime | None = None, task_name: str | None = None, task_id: str | None = None
    ) -> list[CallRecord]:
        """Calls oldest first. ``task_id`` alone has no index (no report asks for it): it scans."""
        since_us = None if since is None else _codec.time_us(since)
        rows = self._select("calls", _codec.COMPACT_CALL_COLUMNS, "started_at", since_us,
                            task_name=task_name, task_id=task_id)  # fmt: skip
        return [_codec.call_from_compact_row(row) for row in rows]

    def _read(self, table: str, columns: tuple[str, ...], time_column: str, since: datetime | None,
              **equal: str | None) -> list[sqlite3.Row]:  # fmt: skip
        since_text = None if since is None else _codec.time_text(since)
        return self._select(table, columns, time_column, since_text, **equal)

    def _select(self, table: str, columns: tuple[str, ...], time_column: str, since: int | str | None,
                **equal: str | None) -> list[sqlite3.Row]:  # fmt: skip
        filters: list[str] = []
        params: list[Any] = []
        if since is not None:
            filters.append(f"{time_column} >= ?")
            params.append(since)
        for column, value in equal.items():  # column names come from this module, never from callers
            if value is not None:
                filters.append(f"{column} = ?")
                params.append(value)
        sql = _select_sql(table, columns, time_column, filters)
        with self._connection() as conn:
            try:
                return list(conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise self._fail(f"reading {table}", exc) from exc

    dialect = "sqlite"

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Plain tuples from one read-only query (``ledger.aggregate`` writes the SQL)."""
        with self._connection() as conn:
            try:
                cursor = conn.cursor()
                cursor.row_factory = None
                return cursor.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._fail("reading for a report", exc) from exc

    def fill_money_columns(self) -> int:
        """Fill the exact money columns of the calls stored since the last fill, `FILL_BATCH` to a
        transaction so writers wait only briefly; returns how many. Reports call it first."""
        filled = 0
        with self._connection() as conn:
            try:
                while True:
                    with _transaction(conn):
                        done = _fill_money_columns(conn, FILL_BATCH)
                        kinds = _fill_kind_columns(conn, FILL_BATCH)
                    filled += done
                    if done < FILL_BATCH and kinds < FILL_BATCH:
                        return filled
            except sqlite3.Error as exc:
                raise self._fail("filling the money columns", exc) from exc

    def store_task_facts(self, rows: Sequence[tuple[str, str]]) -> None:
        """Keep (task id, `ledger_report.RunFacts` JSON) pairs, so later reports need not read those
        runs' calls again."""
        with self._connection() as conn:
            try:
                with _transaction(conn):
                    conn.executemany("UPDATE tasks SET facts = ? WHERE id = ?", [(f, i) for i, f in rows])
            except sqlite3.Error as exc:
                raise self._fail(f"storing the facts of {len(rows)} runs", exc) from exc

    def store_rollups(self, rows: Sequence[tuple[str, str]]) -> None:
        """Keep (name, JSON) rollups of a report's work (`ledger.rollups`), replacing older ones."""
        with self._connection() as conn:
            try:
                with _transaction(conn):
                    conn.executemany(_STORE_ROLLUP, rows)
            except sqlite3.Error as exc:
                raise self._fail(f"storing {len(rows)} report rollups", exc) from exc

    def schema_version(self) -> int:
        with self._connection() as conn:
            (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        return int(version)

    def close(self) -> None:
        """Close the connection, first truncating the WAL (left as it is, it stays as large as the
        biggest burst of writes); another process still writing makes that a no-op, never a wait."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.execute("PRAGMA busy_timeout = 100")
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error:
                    pass
                conn.close()
            elif conn is not None:
                inherited.append(conn)

    def _close_inherited_after_fork(self, conn: Any) -> bool:
        """In a forked child: close the parent's connection if it was idle at the fork.

        SQLite keeps per-file lock state per process; a child that inherits a connection and opens
        another shares that state without holding the locks it describes, and finds the file
        "locked" forever (or the parent removes the WAL under it). Closing the inherited connection
        resets the state; it was idle (the fork waited for the ledger's lock), so nothing is rolled
        back, and as the parent keeps the file open the close neither checkpoints nor deletes.
        """
        conn.close()
        return True
