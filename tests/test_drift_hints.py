"""Drift a person can act on: a fix hint per cause, the warning at the user's own line, one report
per drift, and an inserted timestamp called ``timestamp``. Driven through the real SDKs on the fakes."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import pytest
from google.genai import types as gtypes
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.drift import fix_hint
from budgetclient.testing import FakeAnthropic, FakeGemini, FakeOpenAI

MODEL = "claude-sonnet-4-6"
POLICY = "You are the support desk of Acme. Answer from the handbook only. " * 120
TOOL = {
    "name": "lookup_order",
    "description": "Look up an order by id. " * 30,
    "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}},
                     "required": ["order_id"]},
}
REORDERED_KEYS_TOOL = json.loads(json.dumps(dict(reversed(list(TOOL.items())))))


def ask(client: Any, system: str, tools: list[dict[str, Any]] | None = None) -> Any:
    extra = {"tools": tools} if tools else {}
    return client.messages.create(model=MODEL, max_tokens=20, system=system,
                                  messages=[{"role": "user", "content": "where is my order?"}], **extra)


def anthropic_client() -> Any:
    return bc.Anthropic(api_key="offline", http_client=FakeAnthropic().http_client())


def test_an_inserted_timestamp_is_cause_timestamp_with_its_fix() -> None:
    client = anthropic_client()
    with bc.task("t") as t, pytest.warns(bc.PrefixDriftWarning) as caught:
        ask(client, POLICY)
        ask(client, "Today is 2026-12-07. " + POLICY)  # the first call had no date at all
    drift = t.records[1].drift
    assert drift is not None and drift.cause == "timestamp"
    assert drift.hint == fix_hint("timestamp", drift.segment)
    assert "after the last cache breakpoint" in drift.hint and "user turn" in drift.hint
    (warning,) = caught
    assert str(warning.message).endswith(f"Fix: {drift.hint}")


def test_key_order_drift_says_sort_the_keys() -> None:
    client = anthropic_client()
    with bc.task("t") as t, pytest.warns(bc.PrefixDriftWarning):
        ask(client, POLICY, [TOOL])
        ask(client, POLICY, [REORDERED_KEYS_TOOL])
    drift = t.records[1].drift
    assert drift is not None and drift.cause == "key-order"
    assert "sorted keys" in drift.hint and "sort_keys=True" in drift.hint


def test_an_edit_near_but_outside_a_date_stays_content() -> None:
    client = anthropic_client()
    dated = "Handbook of 2026-01-05. Rule A applies. " + POLICY
    with bc.task("t") as t, pytest.warns(bc.PrefixDriftWarning):
        ask(client, dated)
        ask(client, dated.replace("Rule A applies", "Rule B applies, with the exceptions listed below"))
    drift = t.records[1].drift
    assert drift is not None and drift.cause == "content"


def test_every_cause_has_its_own_hint() -> None:
    causes = ("timestamp", "uuid", "key-order", "whitespace", "reordered", "edited", "content")
    hints = {cause: fix_hint(cause, "system[0].text") for cause in causes}
    assert len(set(hints.values())) == len(causes)
    assert fix_hint("content", "tools[2].description") != hints["content"]  # tools: define them once
    assert "bc.conversation" in fix_hint("content", "tool_choice")  # a parameter, not a prompt block


def test_the_warning_points_at_the_users_call_anthropic() -> None:
    client = anthropic_client()
    ask(client, POLICY)
    with pytest.warns(bc.PrefixDriftWarning) as caught:
        ask(client, POLICY + " Updated.")
    assert [w.filename for w in caught] == [__file__]


async def test_the_warning_points_at_the_users_call_async_anthropic() -> None:
    client = bc.AsyncAnthropic(api_key="offline", http_client=FakeAnthropic().async_http_client())
    await client.messages.create(model=MODEL, max_tokens=20, system=POLICY,
                                 messages=[{"role": "user", "content": "hi"}])
    with pytest.warns(bc.PrefixDriftWarning) as caught:
        await client.messages.create(model=MODEL, max_tokens=20, system=POLICY + " Updated.",
                                     messages=[{"role": "user", "content": "hi"}])
    assert [w.filename for w in caught] == [__file__]


def test_the_warning_points_at_the_users_call_openai() -> None:
    client = bc.OpenAI(api_key="offline", http_client=FakeOpenAI().http_client())
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": POLICY}])
    with pytest.warns(bc.PrefixDriftWarning) as caught:
        client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "system", "content": POLICY + " v2"}])
    assert [w.filename for w in caught] == [__file__]


def test_the_warning_points_at_the_users_call_gemini() -> None:
    fake = FakeGemini()
    client = bc.GenAIClient(api_key="offline",
                            http_options=gtypes.HttpOptions(client_args={"transport": fake.transport()}))

    def config(text: str) -> gtypes.GenerateContentConfig:
        return gtypes.GenerateContentConfig(system_instruction=text)

    client.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config(POLICY))
    with pytest.warns(bc.PrefixDriftWarning) as caught:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                       config=config(POLICY + " v2"))
    assert [w.filename for w in caught] == [__file__]


def test_each_drift_is_reported_once_at_warning_level() -> None:
    """One warning; the ``cache.drift`` event beside it is INFO (for log pipelines), not a second report."""
    client = anthropic_client()
    with capture_logs() as logs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ask(client, POLICY)
        ask(client, POLICY + " Updated.")
    assert [type(w.message) for w in caught] == [bc.PrefixDriftWarning]
    at_warning = [e for e in logs if logging.getLevelName(e["log_level"].upper()) >= logging.WARNING]
    assert at_warning == []
    (event,) = [e for e in logs if e["event"] == "cache.drift"]
    drift = caught[0].message.drift  # type: ignore[union-attr]
    assert event["log_level"] == "info" and event["cause"] == drift.cause and event["hint"] == drift.hint


def test_an_unknown_price_warning_points_at_the_users_call_too() -> None:
    client = anthropic_client()
    with pytest.warns(bc.UnknownPriceWarning) as caught:
        client.messages.create(model="claude-house-finetune-7", max_tokens=20,
                               messages=[{"role": "user", "content": "hi"}])
    assert [w.filename for w in caught] == [__file__]
