"""The messages' seal (`formats.anthropic.blocks._seal`): an append-only tool loop proves its earlier
messages unchanged with one pickle, its long texts referred to by identity. Every build through
it must equal a fresh build of the same body, and any change to an earlier message must still be
seen (and still raise with ``drift="raise"``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import budgetclient as bc
from budgetclient.errors import PrefixDriftError
from budgetclient.formats.anthropic.blocks import _SEEDED_CHARS, BuiltRequest, build_request
from tests._hypothesis import FAST
from tests._sdk_copy import sdk_copy
from tests.providers.wire import Wire, anthropic_message, anthropic_usage, json_response
from tests.test_incremental import _shape

MODEL = "claude-sonnet-4-6"
WORDS = ["files", "reads", "the", "step", "plans", "review", "écrit", "数据"]


def _long(seed: int) -> str:
    """A text long enough to be seeded (a new object each time)."""
    words = [WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(_SEEDED_CHARS // 3)]
    return " ".join(words) + f" #{seed}"


def _tool_loop(rounds: int, salt: int = 0) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": _long(salt)}]}]
    for k in range(rounds):
        messages.append(_assistant(k, salt))
        messages.append(_result(k, salt))
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": "You review code.",
        "tools": [{"name": "read", "input_schema": {"type": "object"}}],
        "messages": messages,
    }


def _assistant(k: int, salt: int) -> dict[str, Any]:
    call = {"type": "tool_use", "id": f"tu_{k}", "name": "read", "input": {"path": f"f{k}", "n": 1}}
    return {"role": "assistant", "content": [{"type": "text", "text": f"step {k}"}, call]}


def _result(k: int, salt: int) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": f"tu_{k}", "content": _long(salt + k + 1)}],
    }


def _same_as_fresh(body: dict[str, Any], previous: BuiltRequest | None) -> BuiltRequest:
    built = build_request(sdk_copy(body), previous=previous)
    fresh = build_request(copy.deepcopy(body))
    assert [_shape(b) for b in built.request.blocks] == [_shape(b) for b in fresh.request.blocks]
    assert built.request.prefix_tokens == fresh.request.prefix_tokens
    return built


def _edits(body: dict[str, Any]) -> list[Any]:
    """Changes to earlier messages that a seal must not miss (some compare equal in Python)."""
    first_text = body["messages"][0]["content"][0]
    call = body["messages"][1]["content"][1]
    result = body["messages"][2]["content"][0]
    return [
        lambda: first_text.__setitem__("text", first_text["text"] + "!"),  # a seeded text changed
        lambda: result.__setitem__("content", result["content"][:-1] + "x"),
        lambda: call["input"].__setitem__("n", 1.0),  # 1 -> 1.0: equal in Python, not in JSON
        lambda: call["input"].__setitem__("n", True),
        lambda: call.__setitem__("input", dict(reversed(list(call["input"].items())))),  # key order
        lambda: result.__setitem__("is_error", False),  # a key added to an earlier block
        lambda: body["messages"][1]["content"].append({"type": "text", "text": "more"}),
        lambda: body["messages"].__setitem__(1, {**body["messages"][1], "role": "user"}),
        lambda: body["messages"].pop(2),
    ]


def test_an_appended_tool_loop_uses_the_seal_and_equals_a_fresh_build() -> None:
    body = _tool_loop(3)
    built = _same_as_fresh(body, None)
    assert built.seal is not None
    for k in range(3, 8):
        body["messages"] += [_assistant(k, 0), _result(k, 0)]
        nxt = _same_as_fresh(body, built)
        assert nxt.seal is not None and nxt.seal[1] is built.seal[1]  # the same seed: the seal path ran
        assert nxt.messages[: len(built.messages)] == built.messages
        built = nxt


def test_an_equal_text_that_is_another_object_costs_a_rebuild_not_a_wrong_answer() -> None:
    body = _tool_loop(3)
    built = _same_as_fresh(body, None)
    result = body["messages"][2]["content"][0]
    result["content"] = "".join(list(result["content"]))  # equal, but not the seeded object
    body["messages"].append(_assistant(3, 0))
    _same_as_fresh(body, built)


@pytest.mark.parametrize(
    "before, after",
    [
        ([], [{"type": "text", "text": "x"}]),  # an empty list's pickle could be continued by a dict
        ({}, {"type": "text"}),
        ("text", [{"type": "text", "text": "text"}]),
    ],
)
def test_a_message_that_is_not_a_dict_never_lets_the_seal_miss_a_change(before: Any, after: Any) -> None:
    body = _tool_loop(2)
    body["messages"].append(before)
    built = _same_as_fresh(body, None)
    body["messages"][-1] = after
    body["messages"].append(_assistant(9, 0))
    _same_as_fresh(body, built)


@pytest.mark.parametrize("which", range(9))
def test_a_change_to_an_earlier_message_is_seen_through_the_seal(which: int) -> None:
    body = _tool_loop(3)
    built = build_request(sdk_copy(body))
    nxt = copy.deepcopy(body)
    # deepcopy keeps the strings: the seal's seeded texts are the same objects
    assert nxt["messages"][0]["content"][0]["text"] is body["messages"][0]["content"][0]["text"]
    _edits(nxt)[which]()
    nxt["messages"] += [_assistant(3, 0), _result(3, 0)]
    again = _same_as_fresh(nxt, built)
    assert again.request.digests()[: len(built.request)] != built.request.digests()


@pytest.mark.parametrize("which", [0, 2, 3, 4])
def test_drift_raise_still_raises_before_sending_after_the_seal_proved_earlier_calls(which: int) -> None:
    usage = anthropic_usage(1000, 20, read=0, write_5m=0)
    wire = Wire(default=lambda r: json_response(anthropic_message(usage)))
    client = bc.Anthropic(
        api_key="sk-ant-test-key", base_url="http://anthropic.test", http_client=wire.client(),
        max_retries=0, drift="raise",
    )  # fmt: skip
    body = _tool_loop(3)
    for k in (3, 4):  # the second call's earlier messages are proved unchanged by the seal
        client.messages.create(**copy.deepcopy(body))
        body["messages"] += [_assistant(k, 0), _result(k, 0)]
    sent = len(wire.requests)
    _edits(body)[which]()
    with pytest.raises(PrefixDriftError):
        client.messages.create(**body)
    assert len(wire.requests) == sent  # nothing sent


_texts = st.one_of(
    st.sampled_from(WORDS),
    st.integers(0, 50).map(_long),  # seeded lengths
)
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.floats(-1, 1, allow_nan=False), _texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=5,
)
_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _texts),
    st.builds(lambda v: {"type": "tool_use", "id": "tu", "name": "read", "input": {"v": v}}, _values),
    st.builds(lambda c: {"type": "tool_result", "tool_use_id": "tu", "content": c}, _texts),
    _values,
)
_messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant"]),
        "content": st.one_of(_texts, st.lists(_blocks, max_size=3)),
    }
)


@FAST
@given(
    st.lists(_messages, min_size=2, max_size=6),
    st.lists(st.lists(_messages, max_size=2), max_size=3),
    st.data(),
)
def test_any_sequence_of_calls_through_the_seal_equals_fresh_builds(
    opening: list[dict[str, Any]], rounds: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": opening}
    built = _same_as_fresh(body, None)
    for appended in rounds:
        body = copy.deepcopy(body)  # fresh containers around the same strings
        body["messages"] += appended
        if data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(body["messages"]) - 1))
            body["messages"][i] = data.draw(_messages)  # an edit anywhere, or the same value again
        built = _same_as_fresh(body, built)
