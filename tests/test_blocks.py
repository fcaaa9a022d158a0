"""A request as cacheable blocks: order, paths, bytes as sent, markers, and copy-on-write marking."""

from __future__ import annotations

import copy
import json

from budgetclient.blocks import (
    BYTES_PER_TOKEN,
    PrefixPrint,
    RequestBlocks,
    TokenCounter,
    block_digest,
    canonical_bytes,
    count_tokens,
    first_divergence,
    raw_bytes,
)
from budgetclient.formats.anthropic.blocks import request_blocks
from budgetclient.formats.anthropic.markers import apply_markers
from budgetclient.placement import Marker
from budgetclient.testing import prompt_blocks


def _body() -> dict:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "tools": [
            {"name": "search", "description": "Search the web", "input_schema": {"type": "object"}},
            {
                "name": "fetch",
                "description": "Fetch a page",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Be safe."}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "hello"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "x", "a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "found"},
                    {"type": "text", "text": ""},
                ],
            },
        ],
    }


def test_blocks_follow_cache_order_with_request_paths() -> None:
    request = request_blocks(_body())
    assert [b.path for b in request.blocks] == [
        "tools[0]",
        "tools[1]",
        "system[0]",
        "system[1]",
        "messages[0].content",
        "messages[1].content[0]",
        "messages[1].content[1]",
        "messages[1].content[2]",
        "messages[2].content[0]",
        "messages[2].content[1]",
    ]
    assert [b.section for b in request.blocks[:5]] == ["tools", "tools", "system", "system", "messages"]
    assert request.fixed_end == 4
    assert request.message_count == 3
    assert request.message_start(1) == 5
    # the fake backend (which follows Anthropic's documented order) sees the same blocks
    assert [b.segment for b in prompt_blocks(_body())] == [b.path for b in request.blocks]


def test_raw_bytes_are_the_bytes_sent_without_markers_in_the_callers_key_order() -> None:
    body = _body()
    request = request_blocks(body)
    fetch = body["tools"][1]
    expected = json.dumps(
        {k: v for k, v in fetch.items() if k != "cache_control"}, separators=(",", ":")
    ).encode()
    assert request.blocks[1].raw == expected
    tool_use = request.blocks[7]
    assert tool_use.raw == b'{"type":"tool_use","id":"t1","name":"search","input":{"q":"x","a":1}}'
    assert tool_use.canonical() == b'{"id":"t1","input":{"a":1,"q":"x"},"name":"search","type":"tool_use"}'
    # a string message is its one-text-block form, so marking it (which makes it a list) is no change
    assert request.blocks[4].raw == b'{"type":"text","text":"hello"}'
    assert request.blocks[4].shorthand


def test_markers_never_change_digests_but_key_order_does() -> None:
    body = _body()
    marked = copy.deepcopy(body)
    marked["system"][1]["cache_control"] = {"type": "ephemeral"}
    assert request_blocks(body).digests() == request_blocks(marked).digests()
    reordered = copy.deepcopy(body)
    reordered["messages"][1]["content"][2]["input"] = {"a": 1, "q": "x"}
    before, after = request_blocks(body), request_blocks(reordered)
    assert first_divergence(before.blocks, after.blocks) == 7
    assert before.blocks[7].canonical() == after.blocks[7].canonical()


def test_markability_and_caller_markers() -> None:
    body = _body()
    body["cache_control"] = {"type": "ephemeral"}
    request = request_blocks(body)
    assert not request.blocks[5].markable  # thinking
    assert not request.blocks[9].markable  # empty text
    assert all(b.markable for i, b in enumerate(request.blocks) if i not in (5, 9))
    assert request.blocks[1].marker == "1h"
    assert request.top_level_ttl == "5m"
    # the automatic marker lands on the last markable block, walking back past the empty text
    assert request.automatic_index == 8
    assert request.caller_markers() == {1: "1h", 8: "5m"}


def test_params_are_folded_in_where_they_invalidate() -> None:
    body = _body()
    body["speed"] = "fast"
    request = request_blocks(body)
    assert dict((name, position) for name, position, _ in request.params) == {"speed": 2, "tool_choice": 4}


def test_apply_markers_copies_on_write_and_never_mutates_the_caller() -> None:
    body = _body()
    body["system"] = "You are terse."
    original = copy.deepcopy(body)
    request = request_blocks(body)
    markers = [Marker(2, "1h", "stable"), Marker(3, "5m", "intermediate"), Marker(7, "5m", "rolling")]
    sent = apply_markers(body, request, markers, extra={"diagnostics": {"previous_message_id": None}})
    assert body == original
    assert sent["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}
    ]
    assert sent["messages"][2]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][1] is body["messages"][1]  # untouched message shared, not copied
    assert sent["tools"] is body["tools"]
    assert sent["diagnostics"] == {"previous_message_id": None}
    # marking changed no block as the fake backend's cache sees it
    assert [b.key for b in prompt_blocks(sent)] == [b.key for b in prompt_blocks(body)]


def test_token_memo_counts_each_block_once_per_conversation() -> None:
    memo: dict[bytes, int] = {}
    first = request_blocks(_body(), memo=memo)
    assert set(memo) == set(first.digests())
    memo[first.blocks[2].digest] = 999  # a remembered count is reused, not recounted
    second = request_blocks(_body(), memo=memo)
    assert second.blocks[2].tokens == 999
    assert second.prefix_tokens[2] == first.prefix_tokens[1] + 999


def test_token_counter_is_exact_within_budget_then_extrapolates() -> None:
    counter = TokenCounter("claude-sonnet-4-6", budget_chars=1000)
    text = "the quick brown fox jumps over the lazy dog " * 20  # 880 characters
    exact = count_tokens(text, "claude-sonnet-4-6")
    assert counter(text) == exact
    long_text = text * 10
    assert counter(long_text) == round(len(long_text) * exact / len(text))
    assert BYTES_PER_TOKEN == 4


def test_prefix_print_can_drop_bytes_and_keep_hashes() -> None:
    request = request_blocks(_body())
    prefix = PrefixPrint.of(request)
    assert prefix.stored_bytes == sum(len(b.raw) for b in request.blocks)
    light = prefix.without_bytes()
    assert light.stored_bytes == 0 and light.digests() == prefix.digests()


def test_helpers() -> None:
    assert raw_bytes({"b": 1, "a": 2, "cache_control": {"type": "ephemeral"}}) == b'{"b":1,"a":2}'
    assert canonical_bytes(b'{"b":1,"a":2}') == b'{"a":2,"b":1}'
    assert canonical_bytes(b"not json") == b"not json"
    assert block_digest(b"x") == block_digest(b"x") != block_digest(b"y")
    empty = RequestBlocks(model="m", blocks=())
    assert empty.total_tokens == 0 and empty.automatic_index is None and empty.message_count == 0
