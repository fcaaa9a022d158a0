"""Incremental request building: a conversation's next request reuses what did not change.

`build_request(body, previous=...)` must give exactly the blocks a fresh build gives (same bytes,
digests, paths, markers), while building only the new or changed parts; `estimate_input` must
equal `tokens.estimate_request` of the same body. A change the SDK's copies could hide (key
order, ``1`` vs ``1.0``, an in-place edit of the caller's own dicts) must still be seen.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetclient.blocks import Block
from budgetclient.estimate import EstimateMemo, estimate_request
from budgetclient.formats.anthropic.blocks import _message_prints, build_request
from budgetclient.formats.anthropic.estimate import estimate_input
from budgetclient.formats.anthropic.prepare import prepare_request
from budgetclient.lineage import LineageRegistry
from tests._hypothesis import FAST
from tests._sdk_copy import sdk_copy

MODEL = "claude-sonnet-4-6"


def _body(turns: int = 3) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} about the repository layout"})
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"plan {i}", "signature": "sig"},
                    {"type": "text", "text": f"answer {i}"},
                    {"type": "tool_use", "id": f"tu_{i}", "name": "read", "input": {"path": "a", "n": 1}},
                ],
            }
        )
        result = {"type": "tool_result", "tool_use_id": f"tu_{i}", "content": "ok " * 30}
        messages.append({"role": "user", "content": [result]})
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": [{"type": "text", "text": "You review code. " * 20}],
        "tools": [
            {
                "name": f"tool_{i}",
                "description": f"Tool {i} reads files",
                "input_schema": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "n": {"minimum": 0}},
                },
            }
            for i in range(4)
        ],
        "messages": messages,
    }


def _shape(block: Block) -> tuple[Any, ...]:
    return (
        block.path, block.section, block.raw, block.digest, block.tokens, block.markable, block.marker,
        block.message, block.content, block.role, block.shorthand,
    )  # fmt: skip


def _same_as_fresh(body: dict[str, Any], previous: Any) -> Any:
    built = build_request(body, previous=previous)
    fresh = build_request(copy.deepcopy(body))
    assert [_shape(b) for b in built.request.blocks] == [_shape(b) for b in fresh.request.blocks]
    assert built.request.params == fresh.request.params
    assert built.request.prefix_tokens == fresh.request.prefix_tokens
    return built


def test_an_appended_turn_reuses_every_earlier_block_and_builds_only_the_new_ones() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    body["messages"].append({"role": "assistant", "content": "done"})
    body["messages"].append({"role": "user", "content": "next"})
    second = _same_as_fresh(sdk_copy(body), first)
    old, new = first.request.blocks, second.request.blocks
    assert len(new) == len(old) + 2
    assert all(a is b for a, b in zip(old, new, strict=False))  # the same objects: nothing rebuilt
    assert [b.path for b in new[len(old) :]] == [
        f"messages[{len(body['messages']) - 2}].content",
        f"messages[{len(body['messages']) - 1}].content",
    ]


def test_an_edited_message_is_rebuilt_and_the_rest_reused() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    body["messages"][4]["content"][1]["text"] = "answer 1, revised"
    second = _same_as_fresh(sdk_copy(body), first)
    changed = [b.path for a, b in zip(first.request.blocks, second.request.blocks, strict=True) if a is not b]
    assert changed == ["messages[4].content[1]"]


def test_changes_that_compare_equal_in_python_are_still_changes() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    # 0 -> 0.0 and True -> 1 are equal in Python but serialise differently; so is a key order
    edits = [
        lambda b: b["tools"][2]["input_schema"]["properties"]["n"].__setitem__("minimum", 0.0),
        lambda b: b["messages"][1]["content"][2]["input"].__setitem__("n", True),
        lambda b: b["messages"][1]["content"][2].__setitem__(
            "input", dict(reversed(list(b["messages"][1]["content"][2]["input"].items())))
        ),
    ]
    for edit in edits:
        changed = copy.deepcopy(body)
        edit(changed)
        second = _same_as_fresh(sdk_copy(changed), first)
        assert second.request.digests() != first.request.digests()


def test_a_caller_editing_its_own_objects_in_place_is_seen() -> None:
    """Without the SDK's copies (a caller of prepare_request), the same dict edited in place."""
    body = _body()
    state = LineageRegistry().get("k")
    first = prepare_request(body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=0.0)
    body["messages"][0]["content"] = "question 0 about the test layout"
    second = prepare_request(body, cache="auto", cache_ttl="auto", drift="warn", state=state, now=1.0)
    assert second.drift is not None and second.drift.segment == "messages[0].content"
    assert first.blocks is not None and second.blocks is not None
    assert second.blocks.blocks[-1] is first.blocks.blocks[-1]  # later messages still reused


def test_a_trimmed_history_matches_a_fresh_build() -> None:
    body = _body(4)
    first = build_request(sdk_copy(body))
    del body["messages"][0:3]
    _same_as_fresh(sdk_copy(body), first)
    body["tools"].pop()
    _same_as_fresh(sdk_copy(body), first)


def test_the_incremental_estimate_equals_the_whole_body_estimate() -> None:
    body = _body()
    body["messages"][-1]["content"].append(
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    )
    built = build_request(sdk_copy(body))
    assert built.estimable
    assert estimate_input(built).raw_tokens == estimate_request("anthropic", body).raw_tokens
    for i in range(3):
        body["messages"].append({"role": "assistant", "content": [{"type": "thinking", "thinking": f"t{i}"}]})
        body["messages"].append({"role": "user", "content": f"go on {i}"})
        built = build_request(sdk_copy(body), previous=built)
        # only the last assistant message's thinking counts: moving it on changes the count
        assert estimate_input(built).raw_tokens == estimate_request("anthropic", body).raw_tokens


def test_a_new_tool_result_is_tokenized_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Placement counts a tool result's content, not its JSON, and the budget estimate then
    finds that count: an agent's new tool output goes through the tokenizer once."""
    from budgetclient import tokens

    body = _body()
    built = build_request(sdk_copy(body))
    estimate_input(built)
    output = "def handler(event):\n    return {'status': 200}\n" * 40  # a file the agent read
    call = {"type": "tool_use", "id": "tu_new", "name": "read", "input": {"path": "h.py"}}
    body["messages"].append({"role": "assistant", "content": [call]})
    result = {"type": "tool_result", "tool_use_id": "tu_new", "content": output}
    body["messages"].append({"role": "user", "content": [result]})
    encoding = tokens.encoding_for(MODEL)
    seen: list[str] = []
    real = type(encoding).encode_ordinary

    def spy(self: Any, text: str) -> list[int]:
        if self is encoding:
            seen.append(text)
        return real(self, text)

    # on the class: an instance attribute would be left behind by `undo` (as the bound method),
    # hiding a later test's spy on `tiktoken.Encoding`
    monkeypatch.setattr(type(encoding), "encode_ordinary", spy)
    built = build_request(sdk_copy(body), previous=built)
    estimate = estimate_input(built)
    assert seen.count(output) == 1
    assert not [t for t in seen if "tool_result" in t]  # the block's JSON is never tokenized
    assert len(seen) == len(set(seen))
    result = built.request.blocks[-1]
    assert result.path == f"messages[{len(body['messages']) - 1}].content[0]"
    assert result.tokens == len(real(encoding, output))
    monkeypatch.undo()
    assert estimate.raw_tokens == estimate_request("anthropic", body).raw_tokens


def test_an_unusual_body_falls_back_to_the_whole_body_estimate() -> None:
    body = _body()
    body["messages"].append("not a message")
    assert not build_request(body).estimable


def test_a_new_conversation_with_the_same_tools_takes_their_blocks_whole_and_sees_edits() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    tools = len(body["tools"])
    again = build_request(sdk_copy(body))  # no previous: a new conversation or task
    old, new = first.request.blocks[:tools], again.request.blocks[:tools]
    assert all(a is b for a, b in zip(old, new, strict=True))
    body["tools"][2]["input_schema"]["properties"]["n"]["minimum"] = 1  # edited in place
    edited = build_request(sdk_copy(body))
    expected = json.dumps(body["tools"][2], ensure_ascii=False, separators=(",", ":")).encode()
    assert edited.request.blocks[2].raw == expected != first.request.blocks[2].raw
    assert edited.request.blocks[2].digest == hashlib.blake2b(b"t" + expected, digest_size=16).digest()


def test_a_new_conversation_resending_the_same_turns_takes_their_blocks_whole_and_sees_edits() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    again = build_request(sdk_copy(body))  # no previous: a subagent or a retry in a new task
    listed = [i for i, b in enumerate(first.request.blocks) if b.section == "messages" and not b.shorthand]
    assert listed and all(first.request.blocks[i] is again.request.blocks[i] for i in listed)
    body["messages"][2]["content"][0]["content"] = "not ok"  # the caller edits its own dict in place
    edited = build_request(sdk_copy(body))
    block = next(b for b in edited.request.blocks if b.path == "messages[2].content[0]")
    result = body["messages"][2]["content"][0]
    expected = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
    assert block.raw == expected
    assert block.digest == hashlib.blake2b(b"m2:user:" + expected, digest_size=16).digest()


_any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@FAST
@given(_any_text, st.sampled_from(["user", "assistant"]))
def test_a_string_turn_is_the_text_block_the_api_reads(text: str, role: str) -> None:
    """A ``"content": "..."`` turn is keyed and counted as ``[{"type": "text", "text": ...}]``: the
    same bytes the SDK's JSON encoder writes for that block (control characters, quotes, non-ASCII)."""
    built = build_request({"model": MODEL, "system": text, "messages": [{"role": role, "content": text}]})
    expected = json.dumps({"type": "text", "text": text}, ensure_ascii=False, separators=(",", ":")).encode()
    system, turn = built.request.blocks
    assert system.raw == turn.raw == expected
    assert system.digest == hashlib.blake2b(b"s" + expected, digest_size=16).digest()
    assert turn.digest == hashlib.blake2b(f"m0:{role}:".encode() + expected, digest_size=16).digest()
    assert turn.shorthand and turn.markable == bool(text)


def test_a_build_lets_go_of_the_callers_values_once_estimated_or_superseded() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    assert first.values  # held only until the estimate reads them
    estimate_input(first)
    assert first.values is None
    second = build_request(sdk_copy(body), previous=first)
    third = build_request(sdk_copy(body), previous=second)
    assert second.values is None and third.values is not None


# -- property: any next request, built from the previous one, equals a fresh build ----------------------

words = st.sampled_from(["alpha", "beta", "é", "🚀", "\n", '"', "0", "1.0"])
texts = st.lists(words, min_size=1, max_size=8).map(" ".join)
leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.floats(-1, 1, allow_nan=False), texts)
value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=6,
)
block = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, texts),
    st.builds(lambda v: {"type": "tool_use", "id": "tu", "name": "read", "input": {"v": v}}, value),
    st.builds(
        lambda c: {"type": "tool_result", "tool_use_id": "tu", "content": c},
        st.one_of(texts, st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), max_size=2)),
    ),
    value,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(texts, st.lists(block, max_size=3))}
)
system_blocks = st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), max_size=2)
tool_lists = st.lists(st.builds(lambda n, v: {"name": n, "input_schema": v}, texts, value), max_size=3)
bodies = st.fixed_dictionaries(
    {"model": st.just(MODEL)},
    optional={
        "system": st.one_of(texts, system_blocks),
        "tools": tool_lists,
        "messages": st.lists(message, max_size=5),
    },
)


@FAST
@given(bodies, st.lists(message, max_size=3), st.data())
def test_any_next_request_built_incrementally_equals_a_fresh_build(
    first: dict[str, Any], appended: list[dict[str, Any]], data: st.DataObject
) -> None:
    previous = build_request(sdk_copy(first))
    if previous.estimable and data.draw(st.booleans()):
        estimate_input(previous)  # the next estimate may then start from this one's sum
    nxt = copy.deepcopy(first)
    nxt["messages"] = [*nxt.get("messages", []), *appended]
    if nxt["messages"] and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(nxt["messages"]) - 1))
        nxt["messages"][i] = data.draw(message)  # an edit anywhere, or the same value again
    if data.draw(st.booleans()):
        nxt["tools"] = data.draw(tool_lists)
    built = _same_as_fresh(sdk_copy(nxt), previous)
    if built.estimable:
        assert estimate_input(built).raw_tokens == estimate_request("anthropic", nxt).raw_tokens


# -- Gemini: the estimate memo by object identity --------------------------------------------------------


def _gemini_body(turns: int) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": "You review code carefully. " * 10}]},
        "contents": [
            {"role": "user" if i % 2 == 0 else "model", "parts": [{"text": f"turn {i} " + "words " * 40}]}
            for i in range(turns)
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {"name": f"tool_{i}", "description": f"reads files {i}", "parameters": {"type": "OBJECT"}}
                    for i in range(5)
                ]
            }
        ],
    }


def test_gemini_estimate_memo_gives_the_same_estimate_and_walks_only_new_contents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from budgetclient.formats.google import reader as google_reader

    memo = EstimateMemo()
    body = _gemini_body(4)
    first = estimate_request("google", body, "gemini-2.5-flash", memo=memo)
    plain = estimate_request("google", copy.deepcopy(body), "gemini-2.5-flash")
    assert first.raw_tokens == plain.raw_tokens
    walked: list[Any] = []
    real = google_reader._google_content
    monkeypatch.setattr(
        google_reader, "_google_content", lambda out, c: (walked.append(c), real(out, c))[1]
    )
    # the next body reuses the unchanged contents (the same objects) and adds two
    nxt = {**body, "contents": [*body["contents"], *_gemini_body(6)["contents"][4:]]}
    second = estimate_request("google", nxt, "gemini-2.5-flash", memo=memo)
    assert walked == nxt["contents"][4:]
    walked.clear()
    plain = estimate_request("google", copy.deepcopy(nxt), "gemini-2.5-flash")
    assert second.raw_tokens == plain.raw_tokens
    assert len(walked) == 7  # without a memo: the system instruction and all six contents


def test_gemini_estimate_memo_never_answers_for_another_object() -> None:

    memo = EstimateMemo()
    body = _gemini_body(2)
    estimate_request("google", body, "gemini-2.5-flash", memo=memo)
    edited = copy.deepcopy(body)
    edited["contents"][1]["parts"][0]["text"] += " and much more text " * 20
    expected = estimate_request("google", copy.deepcopy(edited), "gemini-2.5-flash").raw_tokens
    assert estimate_request("google", edited, "gemini-2.5-flash", memo=memo).raw_tokens == expected


def test_what_a_build_keeps_is_accounted_whether_built_fresh_or_extended() -> None:
    body = _body()
    first = build_request(sdk_copy(body))
    body["messages"].append({"role": "assistant", "content": "done " * 50})
    extended = build_request(sdk_copy(body), previous=first)
    fresh = build_request(sdk_copy(body))
    assert extended.stored_bytes == fresh.stored_bytes > first.stored_bytes


_key = st.sampled_from(["role", "content", "name"])
_value = st.one_of(st.sampled_from(["user", "assistant", "hi"]), st.integers(0, 2), st.none())
_odd_message = st.one_of(
    st.dictionaries(_key, _value, max_size=3),
    st.lists(st.sampled_from(["role", "content"]), max_size=2),
    st.just("role"),
)


@FAST
@given(st.lists(st.one_of(st.builds(lambda r, c: {"role": r, "content": c}, _value, _value), _odd_message),
                max_size=6))  # fmt: skip
def test_messages_are_printed_as_plain_text_exactly_when_each_is_a_role_then_content_pair_of_strings(
    messages: list[Any],
) -> None:
    plain = all(
        type(m) is dict and list(m) == ["role", "content"] and all(type(v) is str for v in m.values())
        for m in messages
    )
    prints, said_plain = _message_prints(messages)
    assert said_plain == plain
    if plain:
        assert prints == [(m["role"], m["content"]) for m in messages]
