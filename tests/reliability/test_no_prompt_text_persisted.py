"""Issue 17 item 8: no prompt text or secret reaches the ledger, drift excerpts included.

Every kind of secret is planted in a system prompt that drifts right before it, once per kind,
through each real SDK and the project's fake backends, into a SQLite ledger. Then the database
file's raw bytes (and its WAL) are searched: no planted secret and no prompt text. The warnings
and exceptions show the excerpts masked, and with ``drift_excerpts=False`` show none at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.genai import types as gtypes

import budgetclient as bc
from budgetclient.ledger import open_ledger
from budgetclient.ledger._codec import COMPACT_RECORD_FIELDS
from budgetclient.testing import FakeAnthropic, FakeGemini, FakeOpenAI
from tests.test_ledger import make_call

PEM_BODY = (
    "MIIEowIBAAKCAQEAx7Q2lz9Kf3pZ8sQWERTYuiopASDFghjklZXCVbnm1234567890",
    "qwertyUIOPasdfGHJKlzxcVBNM0987654321poiuYTREWQlkjhGFDSAmnbvcxz5678",
)
SECRETS: dict[str, str] = {
    # kind: the sensitive value (what must never be shown or stored)
    "password": "Hunter2Horse!",
    "email": "jane.doe@example.org",
    "card": "4111 1111 1111 1111",
    "pem_body": PEM_BODY[1],
    "bearer": "abcDEF123ghiJKL456mnoPQR",
    "url_password": "S3cr3tPassw0rd",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "gitlab": "glpat-xYz12AbC34dEf56GhI78",
    "huggingface": "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "anthropic": "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1HgFeDcBa0",
    "openai": "sk-proj-Qw3Er4Ty5Ui6Op7As8Df9Gh0JkLzXcVbNm",
}
CONTEXT: dict[str, str] = {
    # kind: how the secret sits in the prompt, after the counter ``v{v}`` that drifts
    "password": "v{v} db pwd={secret} ok",
    "email": "v{v} write to {secret} today",
    "card": "v{v} card {secret} exp 12/29",
    "pem_body": (
        "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY[0] + "\nv{v}\n{secret}\n-----END RSA PRIVATE KEY-----"
    ),
    "bearer": "v{v} Authorization: Bearer {secret}",
    "url_password": "v{v} postgres://admin:{secret}@db.internal/app",
}
PROMPT_MARKERS = ("Ornithopter", "quartermaster", "PROMPTMARKER")
FILLER = "Ornithopter quartermaster PROMPTMARKER handbook, section {}. "
USER_TEXT = "PROMPTMARKER user question about the quartermaster"
KINDS = tuple(SECRETS)


def system_prompt(versions: dict[str, int]) -> str:
    """One paragraph per kind; the counter just before each secret is what drifts."""
    parts = [FILLER.format(n) for n in range(40)]
    for kind in KINDS:
        context = CONTEXT.get(kind, "v{v} key {secret}")
        parts.append(f"[{kind}] " + context.format(v=versions[kind], secret=SECRETS[kind]) + "\n")
    return "".join(parts)


def pieces(secret: str, size: int = 6) -> set[str]:
    """Every ``size``-character piece of ``secret``: an excerpt that shows any of them leaks it."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def shown_secrets(text: str) -> list[str]:
    return [kind for kind, secret in SECRETS.items() if any(p in text for p in pieces(secret))]


Send = Callable[[str], None]


def anthropic_sender(drift: str) -> Send:
    fake = FakeAnthropic()
    client = bc.Anthropic(
        api_key="sk-ant-test", base_url="http://anthropic.test", http_client=fake.http_client(), drift=drift
    )

    def send(system: str) -> None:
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=16, system=system,
            messages=[{"role": "user", "content": USER_TEXT}],
        )  # fmt: skip

    return send


def openai_sender(drift: str) -> Send:
    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), drift=drift)

    def send(system: str) -> None:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": USER_TEXT}],
        )

    return send


def gemini_sender(drift: str) -> Send:
    fake = FakeGemini()
    options = gtypes.HttpOptions(client_args={"transport": fake.transport()})
    client = bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options, drift=drift)

    def send(system: str) -> None:
        config = gtypes.GenerateContentConfig(system_instruction=system)
        client.models.generate_content(model="gemini-2.5-flash", contents=USER_TEXT, config=config)

    return send


SENDERS = {"anthropic": anthropic_sender, "openai": openai_sender, "gemini": gemini_sender}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/ledger.db"
    bc.configure(ledger=url)
    yield url


def drift_once_per_kind(send: Send) -> list[tuple[str, Any]]:
    """A first call, then one call per kind that changes the counter just before its secret.
    Returns what each drifting call showed: ``(kind, warning or exception)``."""
    versions = dict.fromkeys(KINDS, 0)
    send(system_prompt(versions))
    shown: list[tuple[str, Any]] = []
    for kind in KINDS:
        versions[kind] += 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                send(system_prompt(versions))
            except bc.PrefixDriftError as exc:
                shown.append((kind, exc))
        shown += [(kind, w.message) for w in caught if isinstance(w.message, bc.PrefixDriftWarning)]
    return shown


def database_bytes(url: str) -> bytes:
    db = Path(url.removeprefix("sqlite:///"))
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]  # ledger.db, -wal, -shm
    assert db in files
    return b"".join(p.read_bytes() for p in files)


def assert_nothing_persisted(url: str) -> None:
    assert bc.flush(10)
    raw = database_bytes(url)
    for kind, secret in SECRETS.items():
        assert secret.encode() not in raw, kind
    for marker in (*PROMPT_MARKERS, "[password]", "BEGIN RSA", "db.internal"):
        assert marker.encode() not in raw, marker
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:  # and after a checkpoint, too
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = database_bytes(url)
    assert not [kind for kind, secret in SECRETS.items() if secret.encode() in raw]


@pytest.mark.parametrize("provider", SENDERS)
def test_no_secret_or_prompt_text_in_the_ledger_file_and_masked_excerpts(
    provider: str, sqlite_url: str
) -> None:
    shown = drift_once_per_kind(SENDERS[provider]("warn"))
    assert [kind for kind, _ in shown] == list(KINDS), "every planted change must be reported as drift"
    for kind, warning in shown:
        drift = warning.drift
        text = f"{warning!s} {drift.before} {drift.after}"
        assert not shown_secrets(text), (kind, text)
        assert "***" in drift.after, (kind, drift.after)  # the secret next to the change is masked
        assert drift.before_hash and drift.after_hash and drift.before_hash != drift.after_hash
    assert_nothing_persisted(sqlite_url)
    calls = open_ledger(sqlite_url).read_calls()
    drifted = [c.drift for c in calls if c.drift is not None]
    assert len(drifted) == len(KINDS) and len(calls) == len(KINDS) + 1
    for drift, (_, warning) in zip(drifted, shown, strict=True):  # where, why, how much: all kept
        stored = warning.drift
        assert (drift.before, drift.after) == ("", "")
        assert (drift.segment, drift.offset, drift.cause) == (stored.segment, stored.offset, stored.cause)
        assert (drift.before_hash, drift.after_hash) == (stored.before_hash, stored.after_hash)
        assert (drift.before_length, drift.after_length) == (stored.before_length, stored.after_length)


@pytest.mark.parametrize("provider", SENDERS)
def test_drift_raise_exception_masks_and_stores_nothing(provider: str, sqlite_url: str) -> None:
    shown = drift_once_per_kind(SENDERS[provider]("raise"))
    assert [kind for kind, _ in shown] == list(KINDS)
    for kind, exc in shown:
        assert isinstance(exc, bc.PrefixDriftError)
        assert not shown_secrets(f"{exc!s} {exc!r}"), kind
        assert "***" in exc.drift.after
    assert_nothing_persisted(sqlite_url)


@pytest.mark.parametrize("provider", SENDERS)
def test_drift_excerpts_false_shows_no_prompt_text(provider: str, sqlite_url: str) -> None:
    bc.configure(drift_excerpts=False)
    for mode in ("warn", "raise"):
        shown = drift_once_per_kind(SENDERS[provider](mode))
        assert [kind for kind, _ in shown] == list(KINDS)
        for kind, reported in shown:
            drift = reported.drift
            text = f"{reported!s} {reported!r}"
            assert (drift.before, drift.after) == ("", ""), kind
            assert "***" not in text and "v1" not in text and kind not in text, text  # no excerpt at all
            assert f"{drift.before_length} -> {drift.after_length} bytes" in text
    assert_nothing_persisted(sqlite_url)


def test_drift_excerpts_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from budgetclient import config

    for value, expected in (("0", False), ("off", False), ("False", False), ("1", True), ("", True)):
        monkeypatch.setenv(config.DRIFT_EXCERPTS_ENV, value)
        config.reset_settings()
        assert bc.get_settings().drift_excerpts is expected, value
    assert bc.configure(drift_excerpts=True).drift_excerpts is True


def test_an_old_ledger_with_stored_excerpts_still_reads(tmp_path: Path) -> None:
    """Ledgers written before this change hold excerpts in the drift JSON: read, but not shown."""
    url = f"sqlite:///{tmp_path}/old.db"
    ledger = open_ledger(url)
    drift = bc.PrefixDrift(segment="system[0].text", offset=7, before="old text", after="new text",
                           cause="edited", tokens_at_risk=12, est_extra_cost=None)  # fmt: skip
    ledger.write(calls=[make_call(1, drift=drift)])
    ledger.close()
    old_drift = {"segment": "system[0].text", "offset": 7, "before": "old text", "after": "new text",
                 "cause": "edited", "tokens_at_risk": 12, "est_extra_cost": None, "provider_reason": None,
                 "provider_missed_tokens": None}  # fmt: skip
    with sqlite3.connect(tmp_path / "old.db") as conn:  # what an older writer stored (schema v2)
        (record,) = conn.execute("SELECT record FROM calls").fetchone()
        assert '"before"' not in record and "old text" not in record
        fields = json.loads(record)
        fields[COMPACT_RECORD_FIELDS.index("drift")] = old_drift
        conn.execute("UPDATE calls SET record = ?", (json.dumps(fields),))
    (call,) = open_ledger(url).read_calls()
    assert call.drift is not None
    assert (call.drift.segment, call.drift.offset, call.drift.cause) == ("system[0].text", 7, "edited")
    assert (call.drift.before, call.drift.after) == ("", "")
    assert (call.drift.before_length, call.drift.before_hash) == (0, "")


POSTGRES_URL = os.environ.get("BUDGETCLIENT_TEST_POSTGRES_URL", "")


@pytest.mark.skipif(not POSTGRES_URL, reason="BUDGETCLIENT_TEST_POSTGRES_URL is not set (.ci/postgres.sh)")
def test_no_secret_or_prompt_text_in_postgres_rows() -> None:
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    bc.configure(ledger=f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}")
    try:
        shown = drift_once_per_kind(anthropic_sender("warn"))
        assert [kind for kind, _ in shown] == list(KINDS)
        assert bc.flush(10)
        with psycopg.connect(POSTGRES_URL) as conn:
            rows = conn.execute(f'SELECT c::text FROM "{schema}".calls AS c').fetchall()
        stored = "\n".join(text for (text,) in rows)
        assert len(rows) == len(KINDS) + 1 and '"after_hash"' in stored
        assert not [kind for kind, secret in SECRETS.items() if secret in stored]
        assert not [marker for marker in PROMPT_MARKERS if marker in stored]
        assert '"before"' not in stored and '"after"' not in stored
    finally:
        bc.configure(ledger=None)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_an_old_row_with_excerpts_reads_through_the_column_codec() -> None:
    """The per-column form (PostgreSQL, SQLite schema v1 before migrating) tolerates them too."""
    from budgetclient.ledger._codec import CALL_COLUMNS, call_from_row, call_to_row

    drift = bc.PrefixDrift(segment="tools[0]", offset=3, before="", after="", cause="content",
                           tokens_at_risk=5, est_extra_cost=None, before_length=40, after_length=41,
                           before_hash="a" * 16, after_hash="b" * 16)  # fmt: skip
    row = dict(zip(CALL_COLUMNS, call_to_row(make_call(2, drift=drift)), strict=True))
    assert "before_hash" in row["drift"] and '"before"' not in row["drift"]
    old = json.loads(row["drift"]) | {"before": "old prompt text", "after": "new prompt text"}
    row["drift"] = json.dumps(old)
    read = call_from_row(row)
    assert read.drift == drift  # every stored fact back, the excerpts dropped
