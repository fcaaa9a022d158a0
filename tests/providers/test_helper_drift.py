"""The SDKs' own helpers change requests between turns: none of that is drift of the user's prompt.

Driven through the real helpers over a mocked wire: anthropic's tool runner (tools added and
removed, a compaction), ``messages.parse()`` and the refusal fallback middleware; openai's
``chat.completions.parse()`` and a caller's own ``prompt_cache_key``. Each runs with
``drift="raise"`` (a drift would abort the call) and with warnings recorded; real drift next to
the helpers is still reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import anthropic
import pydantic
import pytest
from anthropic import beta_tool

import budgetclient as bc
from budgetclient.testing import FakeOpenAI

from .wire import Wire, anthropic_error, anthropic_message, anthropic_usage, json_response

MODEL = "claude-sonnet-4-6"
SYSTEM = "You are the weather desk of Acme. Answer in one sentence. " * 40
USAGE = anthropic_usage(400, 30)


class City(pydantic.BaseModel):
    city: str


@beta_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


@beta_tool
def get_time(city: str) -> str:
    """Local time in a city."""
    return "noon"


@pytest.fixture
def drift_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def drifts(caught: list[warnings.WarningMessage]) -> list[bc.PrefixDrift]:
    return [w.message.drift for w in caught if isinstance(w.message, bc.PrefixDriftWarning)]


def anthropic_client(wire: Wire, **options: Any) -> bc.Anthropic:
    return bc.Anthropic(
        api_key="sk-ant-test-key", base_url="http://anthropic.test", http_client=wire.client(), max_retries=0,
        **options,
    )  # fmt: skip


def tool_use(turn: int) -> Any:
    block = {"type": "tool_use", "id": f"toolu_{turn}", "name": "get_weather", "input": {"city": "Paris"}}
    message = anthropic_message(USAGE, content=[block], stop_reason="tool_use", msg_id=f"msg_{turn}")
    return lambda request: json_response(message)


def answer(msg_id: str, text: str = "Sunny.", **kw: Any) -> Any:
    message = anthropic_message(USAGE, content=[{"type": "text", "text": text}], msg_id=msg_id, **kw)
    return lambda request: json_response(message)


# -- anthropic -------------------------------------------------------------------------------------


def test_tool_runner_adding_removing_tools_and_compacting_is_not_drift(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    summary = anthropic_message(
        USAGE, content=[{"type": "compaction", "content": "Asked about Paris: sunny."}],
        stop_reason="compaction", msg_id="msg_c",
    )  # fmt: skip
    wire = Wire(
        responders=[tool_use(1), tool_use(2), tool_use(3), lambda r: json_response(summary), tool_use(4)],
        default=answer("msg_end"),
    )
    client = anthropic_client(wire, drift="raise")
    with bc.task("agent") as t:
        runner = client.beta.messages.tool_runner(
            model=MODEL, max_tokens=100, system=SYSTEM, tools=[get_weather], thread=False,
            messages=[{"role": "user", "content": "Weather in Paris?"}], betas=["compact-2026-09-04"],
        )  # fmt: skip
        for turn, _ in enumerate(runner):
            # set_messages_params (given a function of the current params): the runner's way to change tools
            if turn == 0:
                runner.set_messages_params(lambda p: {**p, "tools": [*p["tools"], get_time.to_dict()]})
            elif turn == 1:
                runner.set_messages_params(lambda p: {**p, "tools": list(p["tools"])[:1]})
            elif turn == 2:
                runner.compact_before_next_turn()
    bodies = wire.bodies()
    # what the helpers did between turns, as sent
    assert [[tool["name"] for tool in body["tools"]] for body in bodies][:3] == [
        ["get_weather"], ["get_weather", "get_time"], ["get_weather"],
    ]  # fmt: skip
    assert "compaction" in bodies[3] and bodies[4]["messages"][0]["content"][0]["type"] == "compaction"
    assert t.calls == len(bodies) == 6
    assert [r.drift for r in t.records] == [None] * 6
    assert drifts(drift_warnings) == []
    # the compaction request is a conversation of its own; the compacted history goes on in the first
    conversations = [r.conversation for r in t.records]
    assert conversations[3] not in conversations[:3] + conversations[4:]
    assert len(set(conversations[:3] + conversations[4:])) == 1


def test_tool_runner_still_reports_an_edited_system_prompt(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    wire = Wire(responders=[tool_use(1)], default=answer("msg_end"))
    client = anthropic_client(wire)
    with bc.task("agent") as t:
        runner = client.beta.messages.tool_runner(
            model=MODEL, max_tokens=100, system=SYSTEM + "Today is 2026-12-06.", tools=[get_weather],
            thread=False, messages=[{"role": "user", "content": "Weather in Paris?"}],
        )  # fmt: skip
        for turn, _ in enumerate(runner):
            if turn == 0:
                runner.set_messages_params(lambda p: {**p, "system": SYSTEM + "Today is 2026-12-07."})
    (drift,) = drifts(drift_warnings)
    assert (drift.segment, drift.cause) == ("system", "timestamp")
    assert t.records[1].drift == drift


def test_reordered_tools_are_still_drift(drift_warnings: list[warnings.WarningMessage]) -> None:
    wire = Wire(default=answer("msg_1"))
    client = anthropic_client(wire)
    tools = [get_weather.to_dict(), get_time.to_dict()]
    history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    with bc.task("agent") as t:
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, tools=tools, messages=history)
        history += [{"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Time?"}]
        client.messages.create(
            model=MODEL, max_tokens=100, system=SYSTEM, tools=tools[::-1], messages=history
        )
    (drift,) = drifts(drift_warnings)
    assert (drift.segment, drift.cause) == ("tools[0]", "reordered")
    assert t.records[1].drift == drift


def test_parse_between_plain_calls_is_another_conversation(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    wire = Wire(
        responders=[
            answer("msg_1"),
            answer("msg_2", text='{"city": "Rome"}'),
            answer("msg_3"),
            answer("msg_4"),
        ]
    )
    client = anthropic_client(wire, drift="raise")
    history: list[dict[str, Any]] = [{"role": "user", "content": "Where is the Colosseum?"}]
    with bc.task("parse") as t:
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=history)
        parsed = client.messages.parse(
            model=MODEL, max_tokens=100, system=SYSTEM, messages=history, output_format=City
        )
        history += [{"role": "assistant", "content": "Rome."}, {"role": "user", "content": "And the Louvre?"}]
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=history)
        edited = [{**history[0], "content": "Where is the Colosseum, please?"}, *history[1:]]
        with pytest.raises(bc.PrefixDriftError) as raised:
            client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=edited)
    assert parsed.parsed_output == City(city="Rome")
    assert "format" in wire.bodies()[1]["output_config"]
    assert [r.drift for r in t.records] == [None] * 3 and drifts(drift_warnings) == []
    # the plain calls stay one conversation, compared with each other across the parse() call
    assert t.records[0].conversation == t.records[2].conversation != t.records[1].conversation
    assert raised.value.drift.segment == "messages[0].content"


def test_refusal_fallback_re_sends_are_not_drift(drift_warnings: list[warnings.WarningMessage]) -> None:
    fallback = "claude-opus-4-8"
    refusal = anthropic_message(
        USAGE, content=[{"type": "text", "text": "I can't help."}], stop_reason="refusal", msg_id="msg_r"
    )
    wire = Wire(
        responders=[
            lambda r: json_response(refusal),
            answer("msg_1", model=fallback),
            lambda r: json_response(refusal),
            answer("msg_2", model=fallback),
        ]
    )
    client = anthropic_client(
        wire, drift="raise", middleware=[anthropic.BetaRefusalFallbackMiddleware([{"model": fallback}])]
    )
    history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    with bc.task("fallback") as t:
        first = client.beta.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=history)
        history += [
            {"role": "assistant", "content": first.to_param()["content"]},
            {"role": "user", "content": "And Rome?"},
        ]
        second = client.beta.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=history)
    assert (first.id, second.id) == ("msg_1", "msg_2")
    assert [body["model"] for body in wire.bodies()] == [MODEL, fallback] * 2
    assert [r.drift for r in t.records] == [None] * len(t.records) and drifts(drift_warnings) == []


def test_a_fallback_resending_without_speed_is_not_drift(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    """The refusal fallback re-sends a fast request rejected for capacity without ``speed``: the same
    messages with other settings, a re-send rather than drift (on either side of the re-send)."""
    fallback = "claude-opus-4-8"
    wire = Wire(
        responders=[
            lambda r: anthropic_error(429, "rate_limit_error"),
            answer("msg_1", model=fallback),
            lambda r: anthropic_error(429, "rate_limit_error"),
            answer("msg_2", model=fallback),
        ]
    )
    client = anthropic_client(
        wire, drift="raise", middleware=[anthropic.BetaRefusalFallbackMiddleware([{"model": fallback}])]
    )
    pinned = anthropic.BetaFallbackState()
    pinned.index = 0  # pinned to the fallback: its requests start there, fast
    question: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    with bc.task("fast") as t, pinned:
        for _ in range(2):
            client.beta.messages.create(
                model=MODEL, max_tokens=100, system=SYSTEM, messages=question, speed="fast"
            )
    assert [body.get("speed") for body in wire.bodies()] == ["fast", None, "fast", None]
    assert [r.drift for r in t.records] == [None] * 4 and drifts(drift_warnings) == []


def test_a_rewound_history_is_not_drift_but_an_edit_is(drift_warnings: list[warnings.WarningMessage]) -> None:
    """A request that stops short of the previous one (a turn retried from an earlier point, a new
    conversation opening the same way) sends nothing that differs from what was sent."""
    wire = Wire(default=answer("msg_1"))
    client = anthropic_client(wire)
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "And Rome?"},
    ]
    with bc.task("rewind") as t:
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=turns)
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=turns[:1])
        edited = [turns[0], {"role": "assistant", "content": "Rainy."}, turns[2]]
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=edited)
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=[*turns[:2], turns[2]])
    (drift,) = drifts(drift_warnings)
    assert (drift.segment, drift.cause) == ("messages[1].content", "edited")
    assert [r.drift for r in t.records] == [None, None, None, drift]


def test_a_completed_prefill_is_not_drift(drift_warnings: list[warnings.WarningMessage]) -> None:
    """A request ending with an assistant message is continued by the model: the next turn sends
    it completed (as a fallback's continuation does), which is not an edit of the history."""
    wire = Wire(default=answer("msg_1", text=" sunny."))
    client = anthropic_client(wire, drift="raise")
    question = {"role": "user", "content": "Weather in Paris?"}
    with bc.task("prefill") as t:
        client.messages.create(
            model=MODEL, max_tokens=100, system=SYSTEM,
            messages=[question, {"role": "assistant", "content": "It is"}],
        )  # fmt: skip
        follow_up = {"role": "user", "content": "Rome?"}
        completed = [question, {"role": "assistant", "content": "It is sunny."}, follow_up]
        client.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=completed)
    assert t.calls == 2 and [r.drift for r in t.records] == [None, None]
    assert drifts(drift_warnings) == []


# -- openai ----------------------------------------------------------------------------------------


def openai_messages(user: str, system: str = SYSTEM) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_openai_parse_then_create_with_the_same_messages_is_not_drift(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    fake = FakeOpenAI()
    fake.reply('{"city": "Rome"}', "Rome.", '{"city": "Paris"}')
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), drift="raise")
    messages = openai_messages("Where is the Colosseum?")
    with bc.task("parse") as t:
        parsed = client.chat.completions.parse(model="gpt-4o", messages=messages, response_format=City)
        plain = client.chat.completions.create(model="gpt-4o", messages=messages)
        again = client.chat.completions.parse(model="gpt-4o", messages=messages, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="Rome")
    assert plain.choices[0].message.content == "Rome."
    assert again.choices[0].message.parsed == City(city="Paris")
    sent = [request.body for request in fake.requests]
    assert "response_format" in sent[0] and "response_format" not in sent[1]
    assert [r.drift for r in t.records] == [None] * 3 and drifts(drift_warnings) == []


def test_openai_a_callers_own_prompt_cache_key_is_not_drift(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), drift="raise")
    with bc.task("keys") as t:
        client.chat.completions.create(model="gpt-4o", messages=openai_messages("a"))
        client.chat.completions.create(
            model="gpt-4o", messages=openai_messages("b"), prompt_cache_key="tenant-7"
        )
        client.chat.completions.create(model="gpt-4o", messages=openai_messages("c"))
    keys = [request.body["prompt_cache_key"] for request in fake.requests]
    assert keys[1] == "tenant-7" and keys[0] == keys[2] != "tenant-7"
    assert [r.drift for r in t.records] == [None] * 3 and drifts(drift_warnings) == []


def test_openai_drift_is_still_found_within_each_shape(drift_warnings: list[warnings.WarningMessage]) -> None:
    fake = FakeOpenAI()
    fake.reply('{"city": "Rome"}', "Rome.", '{"city": "Rome"}')
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client())
    with bc.task("parse") as t:
        client.chat.completions.parse(
            model="gpt-4o",
            messages=openai_messages("q", SYSTEM + "Today is 2026-12-06."),
            response_format=City,
        )
        client.chat.completions.create(
            model="gpt-4o", messages=openai_messages("q", SYSTEM + "Today is 2026-12-06.")
        )
        client.chat.completions.parse(
            model="gpt-4o",
            messages=openai_messages("q", SYSTEM + "Today is 2026-12-07."),
            response_format=City,
        )
    (drift,) = drifts(drift_warnings)
    assert (drift.segment, drift.cause) == ("messages[0].content", "timestamp")
    assert [r.drift for r in t.records] == [None, None, drift]


def test_openai_tools_added_by_a_loop_are_not_drift_but_edited_tools_are(
    drift_warnings: list[warnings.WarningMessage],
) -> None:
    def tool(name: str, description: str = "Look something up.") -> dict[str, Any]:
        schema = {"type": "object", "properties": {"q": {"type": "string"}}}
        return {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": schema},
        }

    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client())
    with bc.task("tools") as t:
        client.chat.completions.create(model="gpt-4o", messages=openai_messages("a"), tools=[tool("lookup")])
        client.chat.completions.create(
            model="gpt-4o", messages=openai_messages("b"), tools=[tool("lookup"), tool("search")]
        )
        client.chat.completions.create(model="gpt-4o", messages=openai_messages("c"), tools=[tool("search")])
        client.chat.completions.create(
            model="gpt-4o", messages=openai_messages("d"), tools=[tool("search", "Search the web.")]
        )
    (drift,) = drifts(drift_warnings)
    assert drift.segment.startswith("tools[0]")
    assert [r.drift for r in t.records] == [None, None, None, drift]
