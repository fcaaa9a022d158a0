"""The fake Anthropic backend scripts tool calls as the OpenAI fake does (replies, reply(), responder)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from budgetclient.testing import FakeAnthropic, FakeReply

MODEL = "claude-sonnet-4-6"
TOOL = {"name": "add", "description": "Add two numbers.", "input_schema": {"type": "object"}}


def test_scripted_replies_then_responder_then_reply_text() -> None:
    seen: list[Mapping[str, Any]] = []

    def responder(body: Mapping[str, Any]) -> FakeReply | str:
        seen.append(body)
        return FakeReply(tool_calls=(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})))

    fake = FakeAnthropic(replies=["first"], responder=responder, output_tokens=7)
    fake.reply(FakeReply(text="second"))
    client = anthropic.Anthropic(api_key="test", http_client=fake.http_client())

    def ask() -> Any:
        return client.messages.create(
            model=MODEL, max_tokens=50, tools=[TOOL], messages=[{"role": "user", "content": "1+2, 3+4?"}]
        )

    texts = [ask().content[0].text for _ in range(2)]
    parallel = ask()
    assert texts == ["first", "second"] and len(seen) == 1 and seen[0]["tools"] == [TOOL]
    assert parallel.stop_reason == "tool_use" and parallel.usage.output_tokens == 7
    calls = [(b.name, b.input) for b in parallel.content if b.type == "tool_use"]
    assert calls == [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})]
    ids = [b.id for b in parallel.content if b.type == "tool_use"]
    assert len(set(ids)) == 2 and all(i.startswith("toolu_") for i in ids)


def test_a_truncated_tool_call_reports_max_tokens() -> None:
    fake = FakeAnthropic(replies=[FakeReply(tool_calls=(("add", {"a": 1}),))], output_tokens=20)
    client = anthropic.Anthropic(api_key="test", http_client=fake.http_client())
    reply = client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert (reply.stop_reason, reply.usage.output_tokens) == ("max_tokens", 5)
