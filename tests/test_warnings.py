"""Warnings as errors (``-W error``, pytest ``filterwarnings = error``) never cost the caller a call.

budgetclient's warnings are then logged instead of raised; what they report stays on the record
and in the log, and ``drift="raise"`` / ``assert_cache_stable`` remain the ways to fail on drift.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from google.genai import types as gtypes
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient._warnings import emit_warning
from budgetclient.testing import FakeOpenAI
from budgetclient.testing.fake_gemini import FakeGemini

from .providers.wire import Wire, anthropic_message, anthropic_usage, json_response

SYSTEM = "You are the support desk of Acme. Today is 2026-12-06. " * 30
EDITED = SYSTEM.replace("2026-12-06", "2026-12-07")


@pytest.fixture
def warnings_as_errors() -> Iterator[list[dict[str, Any]]]:
    """What a suite with ``filterwarnings = error`` runs under, plus the captured log."""
    with warnings.catch_warnings(), capture_logs() as logs:
        warnings.simplefilter("error")
        yield logs


def filtered(logs: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "budgetclient.warning" and e["category"] == category]


def test_anthropic_drift_under_warnings_as_errors_is_sent_and_recorded(
    warnings_as_errors: list[dict[str, Any]],
) -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(anthropic_usage(900, 10), msg_id="msg_2")))
    client = bc.Anthropic(api_key="sk-ant-test", base_url="http://anthropic.test", http_client=wire.client())
    with bc.task("t") as t:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=SYSTEM,
                               messages=[{"role": "user", "content": "a"}])  # fmt: skip
        reply = client.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=EDITED,
                                       messages=[{"role": "user", "content": "a"}])  # fmt: skip
    assert reply.id == "msg_2" and len(wire.requests) == 2
    drift = t.records[1].drift
    assert drift is not None and drift.cause == "timestamp"
    assert [e["segment"] for e in warnings_as_errors if e["event"] == "cache.drift"] == [drift.segment]
    (logged,) = filtered(warnings_as_errors, "PrefixDriftWarning")
    assert logged["raised_by_filter"] is True and logged["detail"] == "see cache.drift"
    assert drift.after and drift.after not in repr(warnings_as_errors)  # excerpts never reach the logs


def test_openai_drift_under_warnings_as_errors_is_sent_and_recorded(
    warnings_as_errors: list[dict[str, Any]],
) -> None:
    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client())
    with bc.task("t") as t:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": SYSTEM}])
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": EDITED}]
        )
    assert reply.choices[0].message.content and len(fake.requests) == 2
    drift = t.records[1].drift
    assert drift is not None and drift.segment == "messages[0].content"
    assert len(filtered(warnings_as_errors, "PrefixDriftWarning")) == 1


def test_gemini_drift_under_warnings_as_errors_is_sent_and_recorded(
    warnings_as_errors: list[dict[str, Any]],
) -> None:
    fake = FakeGemini()
    options = gtypes.HttpOptions(client_args={"transport": fake.transport()})
    client = bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options)
    with bc.task("t") as t:
        for system in (SYSTEM, EDITED):
            config = gtypes.GenerateContentConfig(system_instruction=system)
            reply = client.models.generate_content(model="gemini-2.5-flash", contents="a", config=config)
    assert reply.text and len(fake.generations) == 2
    drift = t.records[1].drift
    assert drift is not None and drift.cause == "timestamp"
    assert len(filtered(warnings_as_errors, "PrefixDriftWarning")) == 1


def test_drift_raise_and_assert_cache_stable_still_fail(warnings_as_errors: list[dict[str, Any]]) -> None:
    fake = FakeOpenAI()
    strict = bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), drift="raise")
    with bc.task("raise"):
        strict.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": SYSTEM}])
        with pytest.raises(bc.PrefixDriftError):
            strict.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": EDITED}])
    assert len(fake.requests) == 1
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client())

    def drifting() -> None:
        with bc.task("stable"):
            for system in (SYSTEM, EDITED):
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "system", "content": system}]
                )

    with pytest.raises(AssertionError, match="drift"):
        bc.testing.assert_cache_stable(drifting)
    assert len(fake.requests) == 3


def test_unknown_price_and_budget_warnings_under_warnings_as_errors(
    warnings_as_errors: list[dict[str, Any]],
) -> None:
    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client())
    with bc.task("unpriced") as unpriced:
        client.chat.completions.create(model="gpt-unknown-2099", messages=[{"role": "user", "content": "a"}])
    assert unpriced.calls == 1 and unpriced.cost is None
    assert len(filtered(warnings_as_errors, "UnknownPriceWarning")) == 1
    with bc.task("budget", budget_usd=1, warn_at=1e-9) as budgeted:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a"}])
    assert budgeted.calls == 1 and budgeted.cost is not None and budgeted.cost > 0
    assert len(filtered(warnings_as_errors, "BudgetWarning")) == 1


def test_other_filters_see_the_warning_as_warnings_warn_delivers_it() -> None:
    def caller() -> None:
        emit_warning(bc.BudgetClientWarning("hello"))  # stacklevel 2: attributed to whoever calls caller

    with pytest.warns(bc.BudgetClientWarning, match="hello") as caught:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        caller()
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a budgetclient warning is a UserWarning
        caller()  # logged, not raised
        with pytest.raises(UserWarning):
            warnings.warn("someone else's warning", stacklevel=1)
