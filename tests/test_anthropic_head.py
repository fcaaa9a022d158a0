"""`conversation_head` and `build_request` take shortcuts on the call path: a string or plain-text
turn's digest is looked up by its strings, and the tools are printed once per request for both.
Each shortcut must give exactly what the whole computation gives (the digest of the section's
pickle, the tools' of their compact JSON, markers stripped), and must never answer for different
content."""

from __future__ import annotations

import hashlib
import json
import pickle
from typing import Any

from budgetclient.formats.anthropic.blocks import build_request, conversation_head, tools_print

MODEL = "claude-sonnet-4-6"


def _digest(value: Any) -> bytes:
    """The section digest computed here from its definition: blake2b-16 of the value's pickle."""
    return hashlib.blake2b(pickle.dumps(value, 5), digest_size=16).digest()


def _tools_digest(tools: Any) -> bytes:
    """The tools' digest computed here from its definition: blake2b-16 of their compact JSON."""
    raw = json.dumps(tools, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.blake2b(raw, digest_size=16).digest()


def _tools() -> list[dict[str, Any]]:
    return [
        {"name": f"tool_{i}", "description": f"does {i}", "input_schema": {"type": "object"}}
        for i in range(3)
    ]


def _body(system: str = "You are terse.", first: str = "hello", tools: Any = None) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": system,
        "tools": _tools() if tools is None else tools,
        "messages": [{"role": "user", "content": first}, {"role": "assistant", "content": "hi"}],
    }


def test_the_head_is_the_digest_of_each_sections_pickle_whether_or_not_looked_up_before() -> None:
    body = _body()
    expected = (
        (_tools_digest(body["tools"]), _digest(body["system"])),
        (_digest(body["messages"][0]), _digest(body["messages"][1])),
    )
    for _ in range(2):  # the second time from the strings' lookup
        head = conversation_head(body)
        assert (head.fixed, head.opening) == expected
    assert block_equal_copy(body) == expected


def block_equal_copy(body: dict[str, Any]) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """The head of an equal body built from new string objects (what another caller sends)."""
    messages = [{"role": m["role"], "content": "".join(list(m["content"]))} for m in body["messages"]]
    fresh = {**body, "system": "".join(list(body["system"])), "messages": messages}
    head = conversation_head(fresh)
    return head.fixed, head.opening


def test_a_changed_system_prompt_or_turn_gives_another_head() -> None:
    base = conversation_head(_body())
    assert conversation_head(_body(system="You are verbose.")).fixed != base.fixed
    changed = conversation_head(_body(first="hello!"))
    assert changed.opening[0] != base.opening[0] and changed.opening[1] == base.opening[1]
    # the same text under another role is another turn
    swapped = _body()
    swapped["messages"][0] = {"role": "assistant", "content": "hello"}
    assert conversation_head(swapped).opening[0] != base.opening[0]
    # a string prompt and the same text as a one-element list are different sections
    listed = _body()
    listed["system"] = [{"type": "text", "text": "You are terse."}]
    assert conversation_head(listed).fixed[1] == _digest(listed["system"]) != base.fixed[1]


def test_the_tools_print_given_gives_the_same_head_and_build() -> None:
    body = _body()
    given = tools_print(body)
    assert given == json.dumps(body["tools"], ensure_ascii=False, separators=(",", ":")).encode()
    for _ in range(2):  # the second time looked up by the print
        assert conversation_head(body, tools=given) == conversation_head(body)
        assert conversation_head(body, tools=given).fixed[0] == _tools_digest(body["tools"])
    edited = _body()
    edited["tools"][0]["description"] = "does 0 better"
    assert conversation_head(edited, tools=tools_print(edited)).fixed[0] == _tools_digest(edited["tools"])
    assert _tools_digest(edited["tools"]) != _tools_digest(body["tools"])
    with_print = build_request(body, tools=given)
    without = build_request(body)
    assert with_print.tools == without.tools
    assert [(b.raw, b.digest) for b in with_print.request.blocks] == [
        (b.raw, b.digest) for b in without.request.blocks
    ]


def test_marked_tools_are_digested_without_their_markers_even_with_a_print_given() -> None:
    tools = _tools()
    tools[-1] = {**tools[-1], "cache_control": {"type": "ephemeral"}}
    body = _body(tools=tools)
    head = conversation_head(body, tools=tools_print(body))
    assert head.fixed[0] == _tools_digest(_tools())
    assert conversation_head(body).fixed[0] == _tools_digest(_tools())  # no print given


def test_tools_that_alternate_or_differ_only_in_type_never_get_the_last_ones_digest() -> None:
    """The last call's tools answer by byte equality of their print (`_tools_digest`): lists that
    alternate, that `==` calls equal (1, 1.0, True), or that carry a marker each get their own."""
    plain = _tools()
    wider = [*_tools(), {"name": "tool_x", "description": "does x", "input_schema": {"type": "object"}}]
    ones = [{**t, "input_schema": {"type": "object", "maxItems": 1}} for t in _tools()]
    floats = [{**t, "input_schema": {"type": "object", "maxItems": 1.0}} for t in _tools()]
    trues = [{**t, "input_schema": {"type": "object", "maxItems": True}} for t in _tools()]
    assert ones == floats == trues  # what == cannot tell apart
    marked = [*_tools()[:-1], {**_tools()[-1], "cache_control": {"type": "ephemeral"}}]
    sequence = [plain, wider, plain, ones, floats, trues, ones, marked, plain, marked, wider, wider]
    for tools in sequence:
        body = _body(tools=tools)
        unmarked = [{k: v for k, v in t.items() if k != "cache_control"} for t in tools]
        assert conversation_head(body, tools=tools_print(body)).fixed[0] == _tools_digest(unmarked)
    assert len({_tools_digest(t) for t in (plain, wider, ones, floats, trues)}) == 5
