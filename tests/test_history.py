"""bc.history: coarse, cache-stable trimming that never splits a tool_use from its tool_result."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import anthropic
import pytest

import budgetclient as bc
from budgetclient import history
from budgetclient.testing import FakeAnthropic, FakeClock, block_tokens
from budgetclient.testing.traces import Trace, TraceCall, run_trace


def fake_count(message: Mapping[str, Any]) -> int:
    content = message["content"]
    if isinstance(content, str):
        return block_tokens(content)
    return sum(block_tokens(b) for b in content)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "ledger", "cache"]) for _ in range(n))


def _conversation(turns: int, seed: int = 3) -> list[list[dict[str, Any]]]:
    """Per call, the messages appended since the previous call: a user turn or a tool step."""
    rng = random.Random(seed)
    steps: list[list[dict[str, Any]]] = [[{"role": "user", "content": _words(rng, 150)}]]
    use = 0
    for _ in range(turns):
        if rng.random() < 0.6:  # a tool step (sometimes two parallel calls)
            ids = [f"toolu_{use + k}" for k in range(rng.choice([1, 2]))]
            use += len(ids)
            steps.append(
                [
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": _words(rng, 20)},
                            *(
                                {
                                    "type": "tool_use",
                                    "id": i,
                                    "name": "search",
                                    "input": {"q": _words(rng, 3)},
                                }
                                for i in ids
                            ),
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": i,
                                "content": _words(rng, rng.randint(100, 400)),
                            }
                            for i in ids
                        ],
                    },
                ]
            )
        else:  # the answer, then the user's next message
            steps.append(
                [
                    {"role": "assistant", "content": [{"type": "text", "text": _words(rng, 120)}]},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": _words(rng, rng.randint(30, 200))}],
                    },
                ]
            )
    return steps


def _assert_pairs_whole(messages: Sequence[Mapping[str, Any]]) -> None:
    assert messages and messages[0]["role"] == "user"
    for i, message in enumerate(messages):
        blocks = message["content"] if isinstance(message["content"], list) else []
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if results:
            previous = messages[i - 1] if i else None
            assert previous is not None and previous["role"] == "assistant"
            uses = {b["id"] for b in previous["content"] if b.get("type") == "tool_use"}
            assert set(results) == uses


def test_window_keeps_tool_pairs_and_trims_in_coarse_steps() -> None:
    window = history.HistoryWindow(4_000, trim_to=0.5, count=fake_count)
    conversation: list[dict[str, Any]] = []
    outputs: list[list[Mapping[str, Any]]] = []
    trims_at = []
    for step in _conversation(80):
        conversation.extend(step)
        before = window.trims
        sent = window.apply(conversation)
        _assert_pairs_whole(sent)
        single_turn = not any(history.is_turn_start(m) for m in sent[1:])
        assert sum(fake_count(m) for m in sent) <= 4_000 or single_turn
        if window.trims != before:
            trims_at.append(len(outputs))
            # down to trim_to of the window, unless the last turn alone is bigger (a turn is never split)
            assert sum(fake_count(m) for m in sent) <= 2_000 or not any(
                history.is_turn_start(m) for m in sent[1:]
            )
        outputs.append(sent)
    assert trims_at, "the conversation is long enough to need trimming"
    total = sum(fake_count(m) for m in conversation)
    assert len(trims_at) <= total // 1_500  # each trim frees about half the window
    for k in range(1, len(outputs)):
        if k not in trims_at:  # between trims each call extends the previous one: same prefix
            assert outputs[k][: len(outputs[k - 1])] == outputs[k - 1]


def test_window_is_cache_stable_on_the_fake_backend() -> None:
    window = history.HistoryWindow(6_000, trim_to=0.5, count=fake_count)
    system = [{"type": "text", "text": _words(random.Random(9), 1_200)}]
    conversation: list[dict[str, Any]] = []
    calls: list[TraceCall] = []
    trimmed = []
    for step in _conversation(60, seed=5):
        conversation.extend(step)
        before = window.trims
        messages = window.apply(conversation)
        trimmed.append(window.trims != before)
        body = {"model": "claude-sonnet-4-6", "max_tokens": 256, "system": system, "messages": messages}
        calls.append(TraceCall(body, 0.0 if not calls else 10.0))
    run = run_trace(Trace("windowed", "history window", tuple(calls)), "budgetclient")
    assert any(trimmed)
    for k, usage in enumerate(run.usages[1:], 1):
        assert usage["cache_read_input_tokens"] > 0
        if not trimmed[k]:  # the whole previous call was cached: reads cover at least its history
            previous = sum(fake_count(m) for m in calls[k - 1].body["messages"])
            assert usage["cache_read_input_tokens"] >= 1_200 + previous - 400


def test_summaries_replace_dropped_turns_once_per_trim() -> None:
    seen: list[tuple[str | None, int]] = []

    def summarize(previous: str | None, dropped: Sequence[Mapping[str, Any]]) -> str:
        seen.append((previous, len(dropped)))
        return f"summary {len(seen)}"

    window = history.HistoryWindow(3_000, summarize=summarize, count=fake_count)
    conversation: list[dict[str, Any]] = []
    for step in _conversation(50, seed=11):
        conversation.extend(step)
        sent = window.apply(conversation)
        if window.trims:
            assert sent[0] == {"role": "user", "content": history.SUMMARY_PREFIX + f"summary {window.trims}"}
            assert sent[1:] == conversation[window.cut :]
            _assert_pairs_whole(sent[1:])
    assert len(seen) == window.trims >= 2
    assert seen[0][0] is None and seen[1][0] == "summary 1"


def test_trim_history_is_stateless_and_keeps_pairs() -> None:
    conversation = [m for step in _conversation(40, seed=2) for m in step]
    kept = history.trim_history(conversation, 2_500, count=fake_count)
    _assert_pairs_whole(kept)
    assert sum(fake_count(m) for m in kept) <= 2_500
    assert kept == conversation[len(conversation) - len(kept) :]
    assert history.trim_history(conversation[:1], 10, count=fake_count) == conversation[:1]


def test_window_validates_arguments() -> None:
    with pytest.raises(bc.ConfigurationError):
        history.HistoryWindow(0)
    with pytest.raises(bc.ConfigurationError):
        history.HistoryWindow(100, trim_to=1.5)


def test_summarizer_call_is_metered_under_the_task() -> None:
    fake = FakeAnthropic(clock=FakeClock(), output_tokens=40, reply_text="the user asked about invoices")
    client = bc.Anthropic(api_key="test", http_client=fake.http_client())
    window = history.HistoryWindow(
        1_500, summarize=history.summarizer(client, "claude-haiku-4-5"), count=fake_count
    )
    conversation: list[dict[str, Any]] = []
    with bc.task("support") as task:
        for step in _conversation(20, seed=4):
            conversation.extend(step)
            sent = window.apply(conversation)
    assert window.trims >= 1
    assert sent[0]["content"].startswith(history.SUMMARY_PREFIX + "the user asked about invoices")
    assert task.calls == window.trims
    assert isinstance(client, anthropic.Anthropic)
