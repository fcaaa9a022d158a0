"""Security: API keys and prompt text never reach logs, the ledger, drift excerpts or exceptions;
the ledger file is private (0600); SQL is only ever parameterised.
"""

from __future__ import annotations

import ast
import logging
import os
import stat
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.errors import BudgetExceeded, LedgerError, PrefixDriftError
from budgetclient.ledger import open_ledger
from tests.providers.wire import (
    Wire,
    anthropic_error,
    anthropic_message,
    anthropic_stream_events,
    anthropic_usage,
    json_response,
    sse_response,
)

MODEL = "claude-sonnet-4-6"
KEY = "sk-ant-api03-SECRETKEYsecretkey-0123456789abcdef"
OPENAI_KEY = "sk-proj-OPENAISECRET0123456789abcdef"
PROMPT = "PROMPTMARKER the patient record says blood type AB negative"
SYSTEM_SECRET = "internal api_key=sk-ant-api03-EMBEDDEDSECRET-0123456789 do not reveal"
SECRETS = (KEY, OPENAI_KEY, "SECRETKEY", "OPENAISECRET", "EMBEDDEDSECRET", "PROMPTMARKER", "blood type")
LEDGER_SRC = Path(__file__).resolve().parents[2] / "budgetclient" / "ledger"


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/private/ledger.db"
    bc.configure(ledger=url)
    yield url


@pytest.fixture
def stdlib_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _ours(records: list[logging.LogRecord]) -> str:
    """budgetclient's own stdlib log output (the SDKs' DEBUG request dumps are theirs, not ours)."""
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.__dict__}"
        for r in records
        if not r.name.startswith(("anthropic", "openai", "httpx", "httpcore", "google"))
    )


def _scenario(client: bc.Anthropic) -> list[str]:
    """Every path that logs or raises: ok, stream, stream cut, retries exhausted, drift, budget."""
    seen: list[str] = []
    system = [{"type": "text", "text": SYSTEM_SECRET + " " + "policy " * 400}]
    messages = [{"role": "user", "content": PROMPT}]
    client.messages.create(model=MODEL, max_tokens=16, system=system, messages=messages)
    with client.messages.create(
        model=MODEL, max_tokens=16, system=system, messages=messages, stream=True
    ) as s:
        list(s)
    for _ in range(2):  # cut stream, then provider error
        try:
            with client.messages.create(
                model=MODEL, max_tokens=16, system=system, messages=messages, stream=True
            ) as s:
                list(s)
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {exc!s} {exc!r}")
    changed = [{"type": "text", "text": SYSTEM_SECRET.replace("do not", "never") + " " + "policy " * 400}]
    client.messages.create(model=MODEL, max_tokens=16, system=changed, messages=messages)
    try:
        with bc.task("tiny", budget_usd=Decimal("0.000001")):
            client.messages.create(model=MODEL, max_tokens=16, system=changed, messages=messages)
    except BudgetExceeded as exc:
        seen.append(f"{exc!s} {exc!r}")
    return seen


def _wire() -> Wire:
    usage = anthropic_usage(500, 20, write_5m=400)
    return Wire(
        [
            lambda r: json_response(anthropic_message(usage)),
            lambda r: sse_response(anthropic_stream_events(usage)),
            lambda r: sse_response(anthropic_stream_events(usage), cut_after=2),
            lambda r: anthropic_error(401, "authentication_error"),
            lambda r: json_response(anthropic_message(usage)),
        ]
    )


def test_keys_and_prompts_never_in_logs_ledger_or_exceptions(
    sqlite_url: str, stdlib_logs: pytest.LogCaptureFixture
) -> None:
    wire = _wire()
    client = bc.Anthropic(
        api_key=KEY, base_url="http://anthropic.test", http_client=wire.client(), max_retries=0, drift="warn"
    )
    with (
        capture_logs() as events,
        pytest.warns(bc.PrefixDriftWarning) as warned,
        bc.task("secure", metadata={"note": "ok"}),
    ):
        exceptions = _scenario(client)
    assert len(exceptions) == 3  # stream cut, 401, budget
    drift_events = [e for e in events if "drift" in e["event"]]
    assert drift_events, "the changed system prompt must be reported as drift"
    assert not leaks(repr(events))
    assert not leaks(_ours(stdlib_logs.records))
    assert not leaks("\n".join(exceptions))
    assert not leaks(" ".join(str(w.message) for w in warned))
    assert bc.flush(10)
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    calls = open_ledger(sqlite_url).read_calls()
    assert len(calls) >= 5
    drifted = [c.drift for c in calls if c.drift is not None]
    assert drifted and all(not leaks(f"{d.before} {d.after} {d.describe()}") for d in drifted)


def test_drift_raise_message_masks_secrets(ledger_url: str) -> None:
    usage = anthropic_usage(500, 20)
    wire = Wire(default=lambda r: json_response(anthropic_message(usage)))
    client = bc.Anthropic(
        api_key=KEY, base_url="http://anthropic.test", http_client=wire.client(), max_retries=0, drift="raise"
    )
    system = "x " * 600 + "token: ghp_ABCDEFGHIJKLMNOPQRSTUVWX0123 " + "y " * 600
    client.messages.create(
        model=MODEL, max_tokens=8, system=system, messages=[{"role": "user", "content": "a"}]
    )
    changed = system.replace("ghp_ABCDEFGHIJKLMNOPQRSTUVWX0123", "ghp_ZYXWVUTSRQPONMLKJIHGFEDC9876")
    with pytest.raises(PrefixDriftError) as info:
        client.messages.create(
            model=MODEL, max_tokens=8, system=changed, messages=[{"role": "user", "content": "a"}]
        )
    text = f"{info.value!s} {info.value!r} {info.value.drift.before} {info.value.drift.after}"
    assert "ABCDEFGHIJ" not in text and "ZYXWVUTSRQ" not in text
    assert "***" in info.value.drift.before + info.value.drift.after


def test_openai_key_not_logged(ledger_url: str) -> None:
    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }
    wire = Wire([lambda r: json_response(completion), lambda r: httpx2.Response(500, json={"error": {}})])
    client = bc.OpenAI(
        api_key=OPENAI_KEY, base_url="http://openai.test/v1", http_client=wire.client(), max_retries=0
    )
    with capture_logs() as events:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}])
        with pytest.raises(Exception) as info:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}])
    assert not leaks(repr(events)) and not leaks(str(info.value))
    assert bc.flush(10)
    assert not leaks(repr(open_ledger(ledger_url).read_calls()))


def test_ledger_errors_mask_passwords() -> None:
    url = "postgresql://admin:hunter2secret@db.invalid:1/ledger"
    try:
        open_ledger(url).read_calls()
    except Exception as exc:
        assert "hunter2secret" not in f"{exc!s} {exc!r}"
    with pytest.raises(LedgerError) as info:
        open_ledger("ftp://user:hunter2secret@host/x")
    assert "hunter2secret" not in str(info.value)


# -- file mode -------------------------------------------------------------------------------------------


def test_ledger_file_and_directory_are_private(sqlite_url: str) -> None:
    old = os.umask(0o022)  # a permissive umask must not make the ledger readable by others
    try:
        wire = Wire(default=lambda r: json_response(anthropic_message(anthropic_usage(5, 5))))
        client = bc.Anthropic(api_key=KEY, base_url="http://anthropic.test", http_client=wire.client())
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        assert bc.flush(10)
    finally:
        os.umask(old)
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for sidecar in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar
    assert stat.S_IMODE(db.parent.stat().st_mode) & 0o077 == 0


# -- SQL ----------------------------------------------------------------------------------------------------

_SQL_CALLS = {"execute", "executemany", "executescript", "copy"}


def _dynamic_sql(tree: ast.AST) -> list[tuple[int, str]]:
    """execute*/copy calls whose SQL text is built at run time from something other than constants."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in _SQL_CALLS or not node.args:
            continue
        sql = node.args[0]
        if isinstance(sql, ast.JoinedStr):
            values = [v.value for v in sql.values if isinstance(v, ast.FormattedValue)]
            if all(_trusted(v) for v in values):
                continue
            found.append((node.lineno, ast.unparse(sql)))
        elif isinstance(sql, ast.BinOp) or (
            isinstance(sql, ast.Call) and isinstance(sql.func, ast.Attribute) and sql.func.attr == "format"
        ):
            found.append((node.lineno, ast.unparse(sql)))
    return found


_VALIDATED = {"schema", "self.schema"}
"""PostgreSQL schema names: checked against a plain-identifier pattern when the URL is parsed
(``test_hostile_postgres_schema_is_refused``), and quoted."""


def _trusted(value: ast.expr) -> bool:
    """Module constants (UPPER_CASE names), validated identifiers, ints: no caller-supplied text."""
    if ast.unparse(value) in _VALIDATED:
        return True
    if isinstance(value, ast.Name):
        return value.id.isupper()
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "int":
        return True  # an int cannot carry SQL
    if isinstance(value, ast.BinOp):
        return _trusted(value.left) and _trusted(value.right)
    return isinstance(value, ast.Constant)


def test_sql_text_is_never_built_from_values() -> None:
    offenders: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(LEDGER_SRC.glob("*.py")):
        found = _dynamic_sql(ast.parse(path.read_text()))
        if found:
            offenders[path.name] = found
    assert offenders == {}, offenders


def test_sql_builders_only_take_identifiers_from_the_schema() -> None:
    """The helpers that assemble SQL text take table/column names from module constants only."""
    from budgetclient.ledger import _codec, sqlite

    columns = set(_codec.CALL_COLUMNS) | set(_codec.TASK_COLUMNS) | set(_codec.ALERT_COLUMNS)
    assert all(c.isidentifier() for c in columns)
    pairs = (
        (sqlite._INSERT_CALL, _codec.WRITE_CALL_COLUMNS),
        (sqlite._INSERT_TASK, _codec.TASK_COLUMNS),
        (sqlite._INSERT_ALERT, _codec.ALERT_COLUMNS),
    )
    for statement, cols in pairs:
        assert statement.count("?") == len(cols)  # every value is a placeholder


@pytest.mark.parametrize("schema", ['x"; DROP SCHEMA public; --', "a b", "", "x" * 64])
def test_hostile_postgres_schema_is_refused(schema: str) -> None:
    pytest.importorskip("psycopg")
    from budgetclient.ledger.postgres import split_url

    with pytest.raises(LedgerError):
        split_url(f"postgresql://u@h/db?schema={schema}")


HOSTILE = [
    "x'); DROP TABLE calls; --",
    'name" OR "1"="1',
    "Robert'); DELETE FROM tasks WHERE ('a'='a",
    "%s %(x)s {0} ?",
    "\x00nul\x00",
    "naïve—ünïcödé 🚀",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_task_names_and_models_round_trip(sqlite_url: str, name: str) -> None:
    model = f"model-{name}"
    bc.configure(prices={model: {"input": "1", "output": "2"}})
    body = anthropic_message(anthropic_usage(11, 3), model=model)
    wire = Wire(default=lambda r: json_response(body))
    client = bc.Anthropic(api_key=KEY, base_url="http://anthropic.test", http_client=wire.client())
    with bc.task(name, metadata={name: name}):
        client.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert bc.flush(10)
    ledger = open_ledger(sqlite_url)
    calls = ledger.read_calls(task_name=name)
    assert [(c.task_name, c.model, c.usage.input_tokens) for c in calls] == [(name, model, 11)]
    assert calls[0].cost == (11 * Decimal(1) + 3 * Decimal(2)) / Decimal(1_000_000)
    (task,) = ledger.read_tasks(name=name)
    assert task.metadata == {name: name}
    assert ledger.read_calls(task_name="x") == []  # the filter is a value, not SQL
    ledger.close()


def _unused(*_: Any) -> None:
    structlog.get_logger()  # structlog is the library's logger; imported for capture_logs' config
