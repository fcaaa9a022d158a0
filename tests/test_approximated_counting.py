"""Claude's and Gemini's short texts are counted by a rule of their length, never by tiktoken.

Their tokenizers are not public; o200k_base stands in for them. A short text's stand-in count is
no closer to Claude's than a rule of its length, and tiktoken on the pre-call path releases the
GIL (background threads then run inside the caller's call). The expected counts are the rule
written out here (`tests._approximated_counts`) and tiktoken's own count for long texts and for the
models whose tokenizer o200k_base is.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import tiktoken

import budgetclient as bc
from budgetclient.blocks import TokenCounter
from budgetclient.estimate import estimate_request
from budgetclient.formats.anthropic.blocks import tools_print
from budgetclient.formats.anthropic.estimate import estimate_input
from budgetclient.formats.anthropic.prepare import prepare_request
from budgetclient.lineage import LineageRegistry
from budgetclient.tokens import SHORT_TEXT_CHARS, count_each, count_text, encoding_for

from ._approximated_counts import approximated_tokens
from .providers.test_anthropic import MODEL, USAGE, async_client, cost_of, json_wire, sync_client

TEXTS = [
    "",
    "a",
    "Hi there",
    "What changed in the March invoice, and why was I charged twice?",
    "日本語のテキストを数える",
    "café crème brûlée",
    "🙂 ok",
    "lone \ud800 surrogate",
    "x" * (SHORT_TEXT_CHARS - 1),
]


def _o200k(text: str) -> int:
    return len(tiktoken.Encoding.encode_ordinary(encoding_for("gpt-4o"), text))


def test_the_threshold_is_the_documented_one() -> None:
    assert SHORT_TEXT_CHARS == 1024


@pytest.mark.parametrize("text", TEXTS)
def test_a_short_claude_text_is_counted_by_its_length(text: str) -> None:
    extra = len(text.encode("utf-8", "surrogatepass")) - len(text)
    assert count_text(text, "claude-sonnet-4-6") == -(-len(text) // 4) + extra // 2
    assert count_each(encoding_for("claude-haiku-4-5"), [text, text]) == [approximated_tokens(text)] * 2


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "us.anthropic.claude-opus-4-1-20250805-v1:0"])
def test_a_long_claude_text_keeps_o200k_base(model: str) -> None:
    text = "def f(x):\n    return {'a': [x, x * 2]}\n" * 40
    assert len(text) >= SHORT_TEXT_CHARS
    assert count_text(text, model) == _o200k(text)


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-3-flash-preview"])
def test_a_short_gemini_text_is_counted_by_its_length(model: str) -> None:
    for text in TEXTS:
        assert count_text(text, model) == approximated_tokens(text)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5", "o3", ""])
def test_other_models_count_short_texts_exactly(model: str) -> None:
    for text in TEXTS[:-1]:
        assert count_text(text, model) == _o200k(text)


def test_an_exact_count_memoised_for_another_model_is_not_claudes() -> None:
    text = "A reply long enough for the token memo, counted for gpt-4o first. " * 2
    assert count_text(text, "gpt-4o") == _o200k(text)
    assert count_text(text, "claude-sonnet-4-6") == approximated_tokens(text)
    assert count_each(encoding_for("claude-sonnet-4-6"), [text]) == [approximated_tokens(text)]
    assert count_text(text, "gpt-4o") == _o200k(text)  # and the other way round


def test_the_estimate_of_a_claude_body_uses_the_rule() -> None:
    long = "Background document. " * 80
    body = {
        "model": MODEL,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": long}, {"role": "assistant", "content": "Sure."}],
    }
    plain = estimate_request("anthropic", {**body, "model": "gpt-4o"})  # same overheads, exact texts
    ruled = estimate_request("anthropic", body)
    exact_short = _o200k("Be brief.") + _o200k("Sure.")
    ruled_short = approximated_tokens("Be brief.") + approximated_tokens("Sure.")
    assert ruled.raw_tokens - plain.raw_tokens == ruled_short - exact_short


@pytest.fixture
def tiktoken_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The length of every text tiktoken encodes while the test runs."""
    calls: list[int] = []
    real = tiktoken.Encoding.encode_ordinary

    def spy(self: tiktoken.Encoding, text: str) -> list[int]:
        calls.append(len(text))
        return real(self, text)

    monkeypatch.setattr(tiktoken.Encoding, "encode_ordinary", spy)
    yield calls


def _turns(salt: str) -> Iterator[list[dict[str, Any]]]:
    """An agent's conversation: one long first turn (new to the token memo), then short turns."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"Read this first ({salt}). " * 200}]
    for i in range(6):
        messages = [*messages, {"role": "user", "content": f"Question {i}: what does step {i} do?"}]
        yield messages
        messages = [*messages, {"role": "assistant", "content": f"Step {i} checks the invoice lines."}]


def test_an_agent_loop_counts_only_its_long_text_with_tiktoken(tiktoken_calls: list[int]) -> None:
    wire = json_wire()
    client = sync_client(wire)
    with bc.task("loop", budget_usd=5) as t:
        for messages in _turns("sync"):
            client.messages.create(model=MODEL, max_tokens=64, system="Answer briefly.", messages=messages)
    assert len(wire.requests) == 6
    assert tiktoken_calls and all(n >= SHORT_TEXT_CHARS for n in tiktoken_calls)  # the first turn only
    assert t.cost == 6 * cost_of(USAGE)


async def test_an_async_agent_loop_counts_only_its_long_text_with_tiktoken(tiktoken_calls: list[int]) -> None:
    wire = json_wire()
    client = async_client(wire)
    with bc.task("loop", budget_usd=5) as t:
        for messages in _turns("async"):
            await client.messages.create(
                model=MODEL, max_tokens=64, system="Answer briefly.", messages=messages
            )
    assert len(wire.requests) == 6
    assert tiktoken_calls and all(n >= SHORT_TEXT_CHARS for n in tiktoken_calls)
    assert t.cost == 6 * cost_of(USAGE)
    assert isinstance(t.cost, Decimal)


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gemini-2.5-pro"])
def test_placement_counts_short_texts_by_the_rule_within_its_budget(model: str) -> None:
    counter = TokenCounter(model, budget_chars=400)
    short = ["Hi there", "日本語のテキストを数える", "x" * 250]
    counts = [counter(text) for text in short]
    assert counts == [approximated_tokens(text) for text in short]
    rest = "café " * 100  # past the budget: the density of what was counted
    density = sum(counts) / sum(map(len, short))
    assert counter(rest) == round(len(rest) * density)
    long_text = "The quick brown fox. " * 60  # 1,260 characters: o200k_base's count
    assert TokenCounter(model)(long_text) == approximated_tokens(long_text) == _o200k(long_text)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5", ""])
def test_placement_counts_other_models_short_texts_exactly(model: str) -> None:
    counter = TokenCounter(model)
    for text in TEXTS[1:-1]:
        assert counter(text) == _o200k(text)


def test_a_new_short_turn_block_and_the_estimate_count_it_by_the_rule() -> None:
    state = LineageRegistry().get("k")
    first = "Read this first. " * 100  # long: o200k_base
    messages: list[dict[str, Any]] = [{"role": "user", "content": first}]
    for i in range(4):
        body = {"model": MODEL, "max_tokens": 64, "system": "Short.", "tools": [], "messages": messages}
        prepared = prepare_request(
            body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=float(i),
            tools=tools_print(body),
        )  # fmt: skip
        assert prepared.blocks is not None and prepared.built is not None
        last = messages[-1]["content"]
        assert prepared.blocks.blocks[-1].tokens == approximated_tokens(last)
        assert estimate_input(prepared.built).raw_tokens == estimate_request("anthropic", body).raw_tokens
        messages = [
            *messages,
            {"role": "assistant", "content": f"Step {i} checks the invoice lines."},
            {"role": "user", "content": f"Question {i}: what does step {i} do? " + "é" * i},
        ]
