"""PostgreSQL ledger (psycopg 3) for fleets of workers writing one store.

The tables and columns of the SQLite ledger's schema version 1, one per record field, with
PostgreSQL types: money as ``NUMERIC`` (exact), times as ``TIMESTAMPTZ``, nested values as JSON text.
(SQLite's version 2 packs calls into a compact row for write speed; PostgreSQL keeps the typed
columns, which SQL on a fleet's ledger can sum and filter directly.) Tables live in their
own schema, ``budgetclient`` by default (``?schema=NAME`` in the URL picks another; it is removed
before the URL reaches libpq), so they never collide with an application's tables. Migrations run
under a transaction-scoped advisory lock: any number of processes may open a fresh database at
once and exactly one applies each step.

PostgreSQL text cannot hold NUL characters; a NUL in a stored string becomes U+FFFD rather than
making the record unstorable (which would block every record queued behind it).

Writes are multi-row ``INSERT … ON CONFLICT (id) DO NOTHING`` statements of up to `ROWS_PER_INSERT`
rows (one round trip and one plan for hundreds of records, where ``executemany`` of one-row inserts
paid a round trip each). A value the server refuses (SQLSTATE class 22 data exception, 23 integrity,
54 program limit, e.g. an index entry too large) raises `RecordRefused`, which the writer bisects
and quarantines; connection, lock and other server errors raise `LedgerError` and are retried.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import LedgerError
from ..usage import CallRecord, TaskRecord
from . import _codec
from ._fork import ForkSafeConnection, inherited
from .base import AlertRecord, RecordRefused, mask_secrets, mask_url

__all__ = ["DEFAULT_SCHEMA", "MIGRATIONS", "SCHEMA_VERSION", "PostgresLedger", "open_postgres_ledger"]

DEFAULT_SCHEMA = "budgetclient"
CONNECT_TIMEOUT_S = 10
ROWS_PER_INSERT = 500
"""Rows per multi-row INSERT, within PostgreSQL's 65,535 parameters for the widest table (34 columns)."""
_REFUSED_CLASSES = ("22", "23", "54")
"""SQLSTATE classes about a statement's values: data exception, integrity, program limit exceeded."""

_USAGE_DDL = """
    input_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cache_write_long_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    cost NUMERIC,
    cost_uncached_input NUMERIC,
    cost_cache_read NUMERIC,
    cost_cache_write NUMERIC,
    cost_output NUMERIC,
    cost_storage NUMERIC,"""

# Ordered and append-only: a released step is never edited; a change is a new step. Step 1 is the
# SQLite ledger's step 1; SQLite's step 2 (compact calls rows) has no counterpart here.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE calls (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            id TEXT PRIMARY KEY,
            started_at TIMESTAMPTZ NOT NULL,
            duration_s DOUBLE PRECISION NOT NULL,
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
            request_bytes BIGINT NOT NULL,
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
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            parent_id TEXT,
            outcome TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ NOT NULL,
            duration_s DOUBLE PRECISION NOT NULL,{_USAGE_DDL}
            calls BIGINT NOT NULL,
            budget_usd NUMERIC,
            error TEXT,
            metadata TEXT NOT NULL
        )""",
        "CREATE INDEX tasks_started_at ON tasks (started_at)",
        "CREATE INDEX tasks_name ON tasks (name, started_at)",
        """CREATE TABLE alerts (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            task_name TEXT,
            task_id TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            message TEXT NOT NULL,
            value DOUBLE PRECISION,
            threshold DOUBLE PRECISION,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX alerts_created_at ON alerts (created_at)",
        "CREATE INDEX alerts_task_name ON alerts (task_name, created_at)",
    ),
    (
        # reads order by (time, seq): indexes in that order, so rows stream from the index unsorted
        "DROP INDEX calls_started_at",
        "CREATE INDEX calls_started_at ON calls (started_at, seq)",
        "DROP INDEX calls_task_name",
        "CREATE INDEX calls_task_name ON calls (task_name, started_at, seq)",
        "DROP INDEX tasks_started_at",
        "CREATE INDEX tasks_started_at ON tasks (started_at, seq)",
        "DROP INDEX tasks_name",
        "CREATE INDEX tasks_name ON tasks (name, started_at, seq)",
        "DROP INDEX alerts_created_at",
        "CREATE INDEX alerts_created_at ON alerts (created_at, seq)",
        "DROP INDEX alerts_task_name",
        "CREATE INDEX alerts_task_name ON alerts (task_name, created_at, seq)",
    ),
    (
        # what each run's calls say to the signals and the checklist (`ledger_report.RunFacts`, JSON);
        # NULL until a report computes it from the calls, once per run
        "ALTER TABLE tasks ADD COLUMN facts TEXT",
    ),
    (
        # what a report keeps of its own work up to a mark (`ledger.rollups`): each task name's
        # replayed signals up to a run; a report checks a mark before use
        "CREATE TABLE rollups (name TEXT PRIMARY KEY, data TEXT NOT NULL)",
        # a name's runs in the order they ended: the runs after a rollup's mark, and its check
        "CREATE INDEX tasks_name_ended ON tasks (name, ended_at, started_at, seq)",
        # a name's costs in rank order (ties by end): the report's percentiles, two probes a name
        "CREATE INDEX tasks_name_cost ON tasks (name, cost, ended_at, started_at, seq)",
        # the report's drift section reads the drifted calls only, not a scan of every call
        "CREATE INDEX calls_drifted ON calls (started_at, seq) WHERE drift IS NOT NULL",
        # the calls after the call sums' mark, and the check of the rows up to it
        "CREATE INDEX calls_seq ON calls (seq)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_READ_BATCH = 2000
"""Rows a read fetches from the server at a time."""
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TIME_COLUMNS = frozenset({"started_at", "ended_at", "created_at"})


def split_url(url: str) -> tuple[str, str]:
    """``(libpq URL, schema)``: the ``schema`` query parameter is budgetclient's, not libpq's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.match(schema):
        raise LedgerError(
            f"ledger URL {mask_url(url)!r}: schema={schema!r} is not a plain identifier; use letters, digits "
            "and underscores (at most 63), e.g. ?schema=budgetclient"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    scheme = "postgresql" if parts.scheme.lower() in {"postgres", "postgresql"} else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def _lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for this schema's migrations."""
    digest = hashlib.sha256(f"budgetclient-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _clean(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _insert_sql(schema: str, table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    row = f"({', '.join(['%s'] * len(columns))})"
    return (
        f'INSERT INTO "{schema}".{table} ({", ".join(columns)}) VALUES {", ".join([row] * rows)} '
        "ON CONFLICT (id) DO NOTHING"
    )


def _is_refusal(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _REFUSED_CLASSES or isinstance(exc, UnicodeError)


class PostgresLedger(_codec.RowReads, ForkSafeConnection):
    """A ledger in a PostgreSQL schema; one connection guarded by a lock, reopened after a failure."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise LedgerError(
                f"cannot open ledger {mask_url(url)!r}: PostgreSQL support needs psycopg 3 ({exc}). "
                "Install it with: pip install 'budgetclient[postgres]'"
            ) from None
        self._psycopg = psycopg
        self.url = url
        self._dsn, self.schema = split_url(url)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._conn: Any = None
        self._columns = {
            "calls": _codec.CALL_COLUMNS, "tasks": _codec.TASK_COLUMNS, "alerts": _codec.ALERT_COLUMNS,
        }  # fmt: skip
        self._insert = {
            table: _insert_sql(self.schema, table, columns, ROWS_PER_INSERT)
            for table, columns in self._columns.items()
        }
        self._track_forks()  # before connecting: a fork must wait for the connect and migration too
        with self._connection():  # connect and migrate now, so a bad URL fails at open
            pass

    def __repr__(self) -> str:
        return f"PostgresLedger({mask_url(self.url)!r}, schema={self.schema!r})"

    def _fail(self, doing: str, exc: BaseException) -> LedgerError:
        return LedgerError(
            f"PostgreSQL ledger {mask_url(self.url)!r}: {doing} failed: {type(exc).__name__}: "
            f"{mask_secrets(str(exc)).strip()}. Check that the server is reachable, the database exists "
            "and the user may create tables in it, or point BUDGETCLIENT_LEDGER / bc.configure(ledger=...) "
            "elsewhere."
        )

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(
                self._dsn,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="budgetclient",
                autocommit=False,
            )
        except psycopg.Error as exc:
            raise self._fail("connecting", exc) from None
        try:
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self._fail("preparing the schema", exc) from None
            raise
        return conn

    def _migrate(self, conn: Any) -> None:
        schema = self.schema
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            cur.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_version '
                "(version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur.execute(f'SELECT COALESCE(MAX(version), 0) FROM "{schema}".schema_version')
            (current,) = cur.fetchone()
            if current > SCHEMA_VERSION:
                raise LedgerError(
                    f"PostgreSQL ledger {mask_url(self.url)!r} (schema {schema!r}) has schema version "
                    f"{current}, newer than this budgetclient understands ({SCHEMA_VERSION}); "
                    "upgrade budgetclient."
                )
            cur.execute(f'SET LOCAL search_path TO "{schema}"')
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        with self._lock:
            if self._closed:
                raise LedgerError(
                    f"PostgreSQL ledger {mask_url(self.url)!r} is closed; open a new one with open_ledger()"
                )
            if self._conn is not None and self._pid != os.getpid():  # first use in a forked child
                inherited.append(self._conn)
                self._conn = None
            self._pid = os.getpid()
            if self._conn is None or self._conn.closed or self._conn.broken:
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
        batches = (
            ("calls", [tuple(map(_clean, _codec.call_to_row(r))) for r in calls]),
            ("tasks", [tuple(map(_clean, _codec.task_to_row(r))) for r in tasks]),
            ("alerts", [tuple(map(_clean, _codec.alert_to_row(r))) for r in alerts]),
        )
        with self._connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    for table, rows in batches:
                        for start in range(0, len(rows), ROWS_PER_INSERT):
                            chunk = rows[start : start + ROWS_PER_INSERT]
                            sql = (
                                self._insert[table]
                                if len(chunk) == ROWS_PER_INSERT
                                else _insert_sql(self.schema, table, self._columns[table], len(chunk))
                            )
                            cur.execute(sql, [value for row in chunk for value in row])
            except (self._psycopg.Error, UnicodeError) as exc:
                count = sum(len(rows) for _, rows in batches)
                error = self._fail(f"writing {count} records", exc)
                psycopg = self._psycopg
                if _is_refusal(exc) or isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):
                    raise RecordRefused(str(error)) from None
                raise error from None

    def quarantine(self, entries: Sequence[dict[str, Any]]) -> None:
        """Keep records the ledger refused in the ``quarantine`` table (created on first use)."""
        keys = ("id", "kind", "quarantined_at", "error", "record")
        rows = [tuple(_clean(e[k]) for k in keys) for e in entries]
        schema = self.schema
        with self._connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
                    cur.execute(
                        f'CREATE TABLE IF NOT EXISTS "{schema}".quarantine (id TEXT NOT NULL, '
                        "kind TEXT NOT NULL, quarantined_at TIMESTAMPTZ NOT NULL, error TEXT NOT NULL, "
                        "record TEXT NOT NULL)"
                    )
                    cur.executemany(
                        f'INSERT INTO "{schema}".quarantine (id, kind, quarantined_at, error, record) '
                        "VALUES (%s, %s, %s, %s, %s)",
                        rows,
                    )
            except self._psycopg.Error as exc:
                raise self._fail(f"quarantining {len(rows)} records", exc) from None

    def _read(
        self,
        table: str,
        columns: tuple[str, ...],
        time_column: str,
        since: datetime | None,
        **equal: str | None,
    ) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        filters: list[str] = []
        params: list[Any] = []
        if since is not None:
            filters.append(f"{time_column} >= %s")
            params.append(since if since.tzinfo else since.replace(tzinfo=UTC))  # naive means UTC
        for column, value in equal.items():  # column names come from this module, never from callers
            if value is not None:
                filters.append(f"{column} = %s")
                params.append(_clean(value))
        where = f" WHERE {' AND '.join(filters)}" if filters else ""
        sql = f'SELECT {", ".join(columns)} FROM "{self.schema}".{table}{where} ORDER BY {time_column}, seq'
        with self._connection() as conn:
            try:
                # a server-side cursor streams the rows in batches; typed values (timestamps, NUMERIC)
                # go to the shared decoder as they are
                with conn.transaction(), conn.cursor(name="budgetclient_read", row_factory=dict_row) as cur:
                    cur.itersize = _READ_BATCH
                    cur.execute(sql, params)
                    return list(cur)
            except self._psycopg.Error as exc:
                raise self._fail(f"reading {table}", exc) from None

    dialect = "postgres"

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Plain tuples of typed values from one read-only query (``ledger.aggregate`` writes the SQL;
        ``{schema}`` in it names this ledger's schema)."""
        with self._connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    # a report's queries are many and short: compiling them (the server's JIT, for plans
                    # it guesses costly) takes longer than running them
                    cur.execute("SET LOCAL jit = off")
                    cur.execute(sql.replace("{schema}", f'"{self.schema}"'), [_clean(p) for p in params])
                    return list(cur.fetchall())
            except self._psycopg.Error as exc:
                raise self._fail("reading for a report", exc) from None

    def store_rollups(self, rows: Sequence[tuple[str, str]]) -> None:
        """Keep (name, JSON) rollups of a report's work (`ledger.rollups`), replacing older ones."""
        with self._connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        f'INSERT INTO "{self.schema}".rollups (name, data) VALUES (%s, %s) '
                        "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                        list(rows),
                    )
            except self._psycopg.Error as exc:
                raise self._fail(f"storing {len(rows)} report rollups", exc) from None

    def store_task_facts(self, rows: Sequence[tuple[str, str]]) -> None:
        """Keep (task id, `ledger_report.RunFacts` JSON) pairs, so later reports need not read those
        runs' calls again (psycopg pipelines the statements: one round trip, not one per run)."""
        with self._connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        f'UPDATE "{self.schema}".tasks SET facts = %s WHERE id = %s',
                        [(facts, task_id) for task_id, facts in rows],
                    )
            except self._psycopg.Error as exc:
                raise self._fail(f"storing the facts of {len(rows)} runs", exc) from None

    def schema_version(self) -> int:
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(f'SELECT COALESCE(MAX(version), 0) FROM "{self.schema}".schema_version')
            (version,) = cur.fetchone()
        return int(version)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except Exception:
                    pass
            elif conn is not None:
                inherited.append(conn)


def open_postgres_ledger(url: str) -> PostgresLedger:
    """The factory ``open_ledger`` uses for ``postgresql://`` and ``postgres://`` URLs."""
    return PostgresLedger(url)
