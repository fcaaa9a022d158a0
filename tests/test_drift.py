"""Prefix drift: each cause located to the right segment and byte, excerpts, diagnostics, hooks, lineages.

Offsets are recomputed here from the bytes each test builds; costs from the published Claude
Sonnet 4.6 rates ($3.75 5m write, $0.30 cache read per million tokens).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from decimal import Decimal
from typing import Any

import pytest

from budgetclient.blocks import PrefixPrint
from budgetclient.drift import PrefixDrift, add_drift_listener, excerpt, mask_secrets, notify_drift
from budgetclient.formats.anthropic.blocks import request_blocks
from budgetclient.formats.anthropic.prepare import observe_response, prepare_request
from budgetclient.lineage import (
    LineageRegistry,
    LineageState,
    conversation,
    current_conversation,
    lineage_key,
)
from budgetclient.testing import FakeAnthropic, FakeClock, assert_cache_stable, collect_drifts
from budgetclient.testing.traces import send, usage_of
from budgetclient.usage import Usage

MODEL = "claude-sonnet-4-6"
UUID_A = "3f2a9c1e-7b4d-4e2a-9f10-6c5d4b3a2e1f"
UUID_B = "8e1b2d3c-4a5f-4b6e-8c7d-9e0f1a2b3c4d"


def text(n: int, seed: int = 0) -> str:
    vocabulary = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    return " ".join(vocabulary[(i * 5 + seed) % len(vocabulary)] for i in range(n))


def base_body() -> dict[str, Any]:
    tools = [
        {
            "name": f"tool_{i}",
            "description": f"Tool {i}. " + text(40, i),
            "input_schema": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["q"],
            },
        }
        for i in range(4)
    ]
    tools[2]["description"] = f"Session {UUID_A}. " + text(40, 2)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "start " + text(30)}]
    for k in range(3):
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": f"step {k} " + text(20, k)}]}
        )
        messages.append({"role": "user", "content": [{"type": "text", "text": f"result {k} " + text(25, k)}]})
    return {
        "model": MODEL,
        "max_tokens": 64,
        "tools": tools,
        "system": [
            {
                "type": "text",
                "text": "You are a careful agent. Current time: 2026-01-05T10:00:00Z. " + text(600),
            },
            {"type": "text", "text": "Safety: never reveal secrets. " + text(50, 1)},
        ],
        "messages": messages,
    }


def first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def drift_between(before: dict[str, Any], after: dict[str, Any], **options: Any) -> PrefixDrift | None:
    state = LineageState("t")
    kwargs = {"cache": "auto", "cache_ttl": "auto", "drift": "warn", **options}
    prepare_request(before, state=state, now=0.0, **kwargs)
    return prepare_request(after, state=state, now=5.0, **kwargs).drift


def with_new_turn(body: dict[str, Any]) -> dict[str, Any]:
    """The next call of the conversation: everything before plus one more exchange."""
    body = copy.deepcopy(body)
    body["messages"] += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}]
    return body


def test_timestamp_in_the_system_prompt() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["system"][0]["text"] = after["system"][0]["text"].replace("10:00:00", "10:05:00")
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "system[0].text"
    assert drift.offset == first_difference(
        before["system"][0]["text"].encode(), after["system"][0]["text"].encode()
    )
    assert drift.cause == "timestamp"
    assert "10:00" in drift.before and "10:05" in drift.after


def test_uuid_in_a_tool_description() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["tools"][2]["description"] = after["tools"][2]["description"].replace(UUID_A, UUID_B)
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "tools[2].description"
    old, new = before["tools"][2]["description"].encode(), after["tools"][2]["description"].encode()
    assert drift.offset == first_difference(old, new) == len("Session ")
    assert drift.cause == "uuid"


def test_key_order_change_in_a_tool_schema() -> None:
    before = base_body()
    after = with_new_turn(before)
    schema = after["tools"][3]["input_schema"]
    schema["properties"] = {"limit": schema["properties"]["limit"], "q": schema["properties"]["q"]}
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "tools[3].input_schema"
    assert drift.offset == first_difference(compact(before["tools"][3]["input_schema"]), compact(schema))
    assert drift.cause == "key-order"


def test_whitespace_change() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["system"][1]["text"] = after["system"][1]["text"].replace("Safety: never", "Safety:  never")
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "system[1].text"
    assert drift.offset == len("Safety: ")
    assert drift.cause == "whitespace"


def test_two_tools_reordered() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["tools"][0], after["tools"][1] = after["tools"][1], after["tools"][0]
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "tools[0]"
    assert drift.offset == first_difference(compact(before["tools"][0]), compact(after["tools"][0]))
    assert drift.cause == "reordered"


def test_an_earlier_message_edited() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["messages"][4]["content"][0]["text"] = after["messages"][4]["content"][0]["text"].replace(
        "result 1", "result one"
    )
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "messages[4].content[0]"
    assert drift.offset == first_difference(
        compact(before["messages"][4]["content"][0]), compact(after["messages"][4]["content"][0])
    )
    assert drift.cause == "edited"


def test_other_content_change_and_its_cost() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["system"][1]["text"] = after["system"][1]["text"].replace("never reveal", "always guard")
    drift = drift_between(before, after)
    assert drift is not None
    assert (drift.segment, drift.cause) == ("system[1].text", "content")
    assert drift.offset == len("Safety: ")
    # everything from system[1] to the end of the previous call's repeated part is lost
    previous = request_blocks(before)
    from_system_1 = sum(b.tokens for b in previous.blocks[5:-1])  # the last message is the open turn
    assert drift.tokens_at_risk == from_system_1
    assert drift.est_extra_cost == Decimal(drift.tokens_at_risk) * (Decimal("3.75") - Decimal("0.30")) / 10**6


def test_a_changed_tool_choice_is_named() -> None:
    before = base_body()
    before["tool_choice"] = {"type": "auto"}
    after = with_new_turn(before)
    after["tool_choice"] = {"type": "any"}
    drift = drift_between(before, after)
    assert drift is not None
    assert drift.segment == "tool_choice"
    assert drift.offset == first_difference(b'{"type":"auto"}', b'{"type":"any"}')


def test_appending_is_not_drift_and_a_stable_loop_of_fifty_calls_reports_none() -> None:
    state = LineageState("loop")
    body = base_body()
    with collect_drifts() as seen:
        for k in range(50):
            prepared = prepare_request(
                body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=float(k)
            )
            assert prepared.drift is None
            body = with_new_turn(prepared.body)  # even resending our own marked body is stable
    assert seen == []


def test_drift_off_checks_nothing_and_raise_keeps_the_previous_call() -> None:
    before = base_body()
    after = with_new_turn(before)
    after["system"][1]["text"] += "!"
    assert drift_between(before, after, drift="off") is None
    state = LineageState("raise")
    prepare_request(before, cache="auto", cache_ttl="auto", drift="raise", state=state, now=0.0)
    for attempt in range(2):  # the request is not sent, so a retry is compared with the same call
        prepared = prepare_request(
            after, cache="auto", cache_ttl="auto", drift="raise", state=state, now=1.0 + attempt
        )
        assert prepared.drift is not None and prepared.drift.segment == "system[1].text"


def test_excerpts_are_short_and_never_show_credentials() -> None:
    secret = "sk-ant-api03-" + "Q" * 40
    before = base_body()
    before["system"][1]["text"] = (
        f"Call the API with key {secret} and header Authorization: Bearer abcdefgh12345678."
    )
    after = with_new_turn(before)
    after["system"][1]["text"] = before["system"][1]["text"].replace("with key", "using key")
    drift = drift_between(before, after)
    assert drift is not None
    for shown in (drift.before, drift.after):
        assert "QQQQ" not in shown and "sk-ant" not in shown and "abcdefgh12345678" not in shown
        assert len(shown) <= 24 + 40 + 2 + 3 * 2
    long_text = ("x" * 100 + "AIzaSyA1234567890abcdefghijklmnop" + "y" * 100).encode()
    shown = excerpt(long_text, 110)  # the excerpt starts inside the key
    assert "1234567890" not in shown and shown.startswith("…") and shown.endswith("…")
    assert mask_secrets('{"api_key": "abc123secret"}') == '{"api_key": "***"}'
    assert mask_secrets("token=sk-proj-abcdefghijkl") == "token=***"


def test_diagnostics_from_the_api_are_merged() -> None:
    fake = FakeAnthropic(clock=FakeClock())
    state = LineageState("diag")
    before = base_body()
    results = []
    for body in (before, with_new_turn(before)):
        if body is not before:
            body["system"][1]["text"] += " Updated."
        prepared = prepare_request(
            body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=fake.clock.now()
        )
        message = send(fake, prepared.body)
        results.append(
            (
                prepared,
                message,
                observe_response(state, prepared, usage_of(message["usage"]), message, now=fake.clock.now()),
            )
        )
    prepared, message, merged = results[1]
    reason = message["diagnostics"]["cache_miss_reason"]
    assert reason["type"] == "system_changed"
    assert merged is not None and prepared.drift is not None
    assert merged.segment == prepared.drift.segment == "system[1].text"
    assert merged.provider_reason == "system_changed"
    assert merged.provider_missed_tokens == reason["cache_missed_input_tokens"]
    assert results[0][2] is None


def test_a_provider_reason_alone_becomes_a_drift_unless_it_is_the_learned_tail() -> None:
    state = LineageState("provider")
    prepared = prepare_request(
        base_body(), cache="auto", cache_ttl="auto", drift="warn", state=state, now=0.0
    )
    message = {
        "id": "msg_2",
        "usage": {},
        "diagnostics": {"cache_miss_reason": {"type": "tools_changed", "cache_missed_input_tokens": 1234}},
    }
    drift = observe_response(state, prepared, Usage(requests=1), message, now=1.0)
    assert drift is not None
    assert (drift.segment, drift.provider_reason, drift.tokens_at_risk) == ("tools", "tools_changed", 1234)
    assert drift.est_extra_cost == Decimal(1234) * (Decimal("3.75") - Decimal("0.30")) / 10**6
    assert state.response_id == "msg_2"
    pending = {"id": "msg_3", "diagnostics": {"cache_miss_reason": None}}
    assert observe_response(state, prepared, Usage(requests=1), pending, now=2.0) is None
    # the latest user turn rewritten (documents dropped) is the volatile tail, not drift
    before = base_body()
    before["messages"][-1]["content"].append({"type": "text", "text": "retrieved " + text(100)})
    after = copy.deepcopy(before)
    after["messages"][-1]["content"].pop()
    after["messages"] += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}]
    tail_state = LineageState("tail")
    prepare_request(before, cache="auto", cache_ttl="auto", drift="warn", state=tail_state, now=0.0)
    second = prepare_request(after, cache="auto", cache_ttl="auto", drift="warn", state=tail_state, now=1.0)
    assert second.drift is None and second.expected_divergence
    reason = {
        "id": "m",
        "diagnostics": {"cache_miss_reason": {"type": "messages_changed", "cache_missed_input_tokens": 10}},
    }
    assert observe_response(tail_state, second, Usage(requests=1), reason, now=2.0) is None


def test_a_block_changing_every_call_stops_being_cached_past_it() -> None:
    state = LineageState("clock")
    body = base_body()
    drifts = []
    for minute in range(4):
        body = with_new_turn(body)
        body["system"][1]["text"] = f"Safety: it is 10:0{minute} now. " + text(50, 1)
        prepared = prepare_request(
            body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=float(minute)
        )
        drifts.append(prepared.drift)
    assert [d.cause if d else None for d in drifts] == [None, "timestamp", "timestamp", "timestamp"]
    # seen twice at the same place: only the prefix before the changing block is marked
    assert [m.role for m in prepared.markers] == ["stable"]
    assert prepared.breakpoints == ("system[0]",)


def test_assert_cache_stable_collects_reported_drifts() -> None:
    drift = PrefixDrift("system[0].text", 12, "a", "b", "timestamp", 100, None)

    def drifting() -> str:
        notify_drift(drift)
        return "done"

    with pytest.raises(AssertionError, match=r"system\[0\]\.text changed at byte 12 \(timestamp\)"):
        assert_cache_stable(drifting)
    assert assert_cache_stable(lambda: "clean") == "clean"
    assert assert_cache_stable(drifting, allow=lambda d: d.cause == "timestamp") == "done"
    # listeners are removed afterwards
    with collect_drifts() as seen:
        notify_drift(drift)
    assert seen == [drift]


def test_assert_cache_stable_with_async_functions_and_threads() -> None:
    drift = PrefixDrift("tools[1]", 0, "", "", "reordered", 5, None)

    async def drifting() -> int:
        await asyncio.sleep(0)
        notify_drift(drift)
        return 1

    with pytest.raises(AssertionError, match="tools"):
        assert_cache_stable(drifting)  # no running loop: run to completion here
    thread = threading.Thread(target=notify_drift, args=(drift,))
    with pytest.raises(AssertionError):
        assert_cache_stable(lambda: (thread.start(), thread.join()))


async def test_assert_cache_stable_is_awaitable_inside_a_running_loop() -> None:
    async def clean() -> str:
        return "ok"

    assert await assert_cache_stable(clean) == "ok"
    drift = PrefixDrift("system", 3, "", "", "content", 5, None)

    async def drifting() -> None:
        notify_drift(drift)

    with pytest.raises(AssertionError):
        await assert_cache_stable(drifting)


def test_a_failing_listener_never_breaks_notification() -> None:
    def broken(_: PrefixDrift) -> None:
        raise RuntimeError("listener bug")

    remove = add_drift_listener(broken)
    try:
        with collect_drifts() as seen:
            notify_drift(PrefixDrift("system", 0, "", "", "content", 0, None))
        assert len(seen) == 1
    finally:
        remove()
    remove()  # removing twice is harmless


def test_conversation_scope_and_lineage_keys() -> None:
    assert current_conversation() is None
    with conversation("ticket-1"):
        assert current_conversation() == "ticket-1"
        with conversation("inner"):
            assert current_conversation() == "inner"
        assert current_conversation() == "ticket-1"
    assert current_conversation() is None
    with pytest.raises(ValueError, match="non-empty"), conversation(""):
        pass
    by_task = lineage_key("c1", "anthropic", MODEL, "task-9", None)
    by_conversation = lineage_key("c1", "anthropic", MODEL, "task-9", "ticket-1")
    assert by_task != by_conversation
    assert by_conversation == lineage_key("c1", "anthropic", MODEL, "task-10", "ticket-1")
    assert lineage_key("c1", "anthropic", MODEL, None, None) != lineage_key(
        "c2", "anthropic", MODEL, None, None
    )


async def test_conversation_scope_follows_asyncio_tasks() -> None:
    async def read() -> str | None:
        await asyncio.sleep(0)
        return current_conversation()

    with conversation("outer"):
        task = asyncio.create_task(read())
    assert await task == "outer"


def test_registry_is_bounded_by_count_and_bytes() -> None:
    registry = LineageRegistry(max_lineages=2)
    first = registry.get("a")
    assert registry.get("a") is first
    registry.get("b")
    registry.get("c")
    assert "a" not in registry and len(registry) == 2
    tight = LineageRegistry(max_bytes=10)
    state = tight.get("x")
    body = base_body()
    with state.lock:
        prepare_request(body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=0.0)
    assert state.prefix is not None and not state.prefix.has_bytes and tight.stored_bytes == 0
    after = with_new_turn(body)
    after["system"][1]["text"] += " changed"
    drift = prepare_request(after, cache="auto", cache_ttl="auto", drift="warn", state=state, now=1.0).drift
    # the change is still found from the hashes; without the old bytes there is no excerpt
    assert drift is not None and drift.segment == "system[1]" and drift.before == ""
    roomy = LineageRegistry()
    kept = roomy.get("y")
    prepare_request(body, cache="auto", cache_ttl="auto", drift="warn", state=kept, now=0.0)
    assert isinstance(kept.prefix, PrefixPrint)
    # the prefix bytes plus the fingerprints the next call is compared with (both accounted)
    assert kept.built is not None and kept.built_bytes > 0
    assert roomy.stored_bytes == kept.prefix.stored_bytes + kept.built_bytes
    with pytest.raises(ValueError):
        LineageRegistry(max_lineages=0)


def test_server_held_thread_continuations_are_left_alone() -> None:
    state = LineageState("thread")
    first = base_body()
    first["thread"] = {"type": "create"}
    assert prepare_request(
        first, cache="auto", cache_ttl="auto", drift="warn", state=state, now=0.0
    ).breakpoints
    follow_up = {
        "model": MODEL,
        "max_tokens": 64,
        "thread": {"type": "continue", "previous_message_id": "m1"},
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}]}
        ],
    }
    prepared = prepare_request(follow_up, cache="auto", cache_ttl="auto", drift="warn", state=state, now=1.0)
    assert prepared.drift is None and prepared.breakpoints == () and prepared.body == follow_up
    # a full request afterwards is not compared with the prompt from before the thread
    again = prepare_request(base_body(), cache="auto", cache_ttl="auto", drift="warn", state=state, now=2.0)
    assert again.drift is None


def test_another_set_of_tools_starts_a_new_segment_not_drift() -> None:
    """A tool runner changing what the model may call is not drift of the prompt (it is compared
    from then on); the same tools redefined or reordered still are."""
    before = base_body()
    extra = {"name": "extra", "description": "new", "input_schema": {"type": "object"}}
    removed = with_new_turn(before)
    removed["tools"].pop(1)
    assert drift_between(before, removed) is None
    added = with_new_turn(before)
    added["tools"].insert(0, extra)
    assert drift_between(before, added) is None
    swapped = with_new_turn(before)
    swapped["tools"][3] = extra
    assert drift_between(before, swapped) is None
    redefined = with_new_turn(before)
    redefined["tools"][3] = {**redefined["tools"][3], "description": "Tool 3, rewritten."}
    drift = drift_between(before, redefined)
    assert drift is not None and drift.segment == "tools[3].description"
    reordered = with_new_turn(before)
    reordered["tools"][0], reordered["tools"][1] = reordered["tools"][1], reordered["tools"][0]
    drift = drift_between(before, reordered)
    assert drift is not None and drift.cause == "reordered"
    # the new segment is what the next call is compared with, and asks for no diagnosis of the change
    state = LineageState("t")
    prepare_request(before, cache="auto", cache_ttl="auto", drift="warn", state=state, now=0.0)
    segment = prepare_request(added, cache="auto", cache_ttl="auto", drift="warn", state=state, now=5.0)
    assert segment.new_segment and "diagnostics" not in segment.body
    edited = with_new_turn(added)
    edited["system"][0]["text"] += " Be terse."
    drift = prepare_request(edited, cache="auto", cache_ttl="auto", drift="warn", state=state, now=9.0).drift
    assert drift is not None and drift.segment == "system[0].text"
