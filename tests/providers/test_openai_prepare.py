"""Pure parts of the OpenAI provider: usage normalisation, request preparation, the usage-chunk filter."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import pytest

import budgetclient as bc
from budgetclient.formats.openai.prefix import (
    CHAT,
    COMPACT,
    EMBEDDINGS,
    RESPONSES,
    build_prefix,
    classify,
    prefix_cache_key,
    prepare_request,
    prompt_cache_key_for,
    stable_prefix,
)
from budgetclient.formats.openai.usage import (
    supports_prompt_cache_breakpoints,
    usage_from_chat,
    usage_from_openai,
    usage_from_responses,
)
from budgetclient.providers._openai_stream import _Filter, _without_usage


def test_chat_usage_is_cache_inclusive() -> None:
    wire = {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "total_tokens": 2300,
        "prompt_tokens_details": {"cached_tokens": 1280, "cache_write_tokens": 512, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }
    assert usage_from_chat(wire) == bc.Usage(
        input_tokens=2000,
        cache_read_tokens=1280,
        cache_write_tokens=512,
        output_tokens=300,
        reasoning_tokens=120,
        requests=1,
    )
    assert usage_from_chat(wire).uncached_input_tokens == 2000 - 1280 - 512


def test_chat_usage_with_missing_or_null_details() -> None:
    wire = {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None},
    }
    assert usage_from_chat(wire) == bc.Usage(input_tokens=10, output_tokens=2, requests=1)
    assert usage_from_chat(None) == bc.Usage(requests=1)


def test_responses_usage_with_ttl_details() -> None:
    wire = {
        "input_tokens": 5000,
        "input_tokens_details": {
            "cached_tokens": 3000,
            "cache_write_tokens": 1500,
            "cache_write_tokens_details": {"ttl_12h_tokens": 1000, "ttl_30m_tokens": 500},
        },
        "output_tokens": 400,
        "output_tokens_details": {"reasoning_tokens": 250},
        "total_tokens": 5400,
    }
    assert usage_from_responses(wire) == bc.Usage(
        input_tokens=5000,
        cache_read_tokens=3000,
        cache_write_tokens=1500,
        cache_write_long_tokens=1000,
        output_tokens=400,
        reasoning_tokens=250,
        requests=1,
    )
    assert usage_from_openai(wire) == usage_from_responses(wire)


def test_responses_writes_from_ttl_details_when_the_total_is_missing() -> None:
    wire = {
        "input_tokens": 100,
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "input_tokens_details": {
            "cached_tokens": 0,
            "cache_write_tokens_details": {"ttl_12h_tokens": 40, "ttl_30m_tokens": 20},
        },
    }
    usage = usage_from_responses(wire)
    assert (usage.cache_write_tokens, usage.cache_write_long_tokens) == (60, 40)


def test_inconsistent_counts_are_clamped_to_subsets() -> None:
    usage = usage_from_chat(
        {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 90, "cache_write_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": 9},
        }
    )
    assert (usage.cache_read_tokens, usage.cache_write_tokens, usage.reasoning_tokens) == (90, 10, 5)


@pytest.mark.parametrize(
    ("model", "supported"),
    [
        ("gpt-4o", False),
        ("gpt-5.5", False),
        ("gpt-5.6-terra", True),
        ("gpt-6-sol", True),
        ("gpt-6.2-astra", True),
        ("o3", False),
        ("my-azure-deployment", False),
    ],
)
def test_breakpoint_support_by_model(model: str, supported: bool) -> None:
    assert supports_prompt_cache_breakpoints(model) is supported


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/openai/deployments/prod/chat/completions", CHAT),
        ("POST", "/v1/responses", RESPONSES),
        ("POST", "/v1/responses/compact", COMPACT),
        ("POST", "/v1/embeddings", EMBEDDINGS),
        ("POST", "/v1/responses/input_tokens", None),
        ("GET", "/v1/responses/resp_1", None),
        ("POST", "/v1/responses/resp_1/cancel", None),
        ("POST", "/v1/files", None),
    ],
)
def test_classify(method: str, path: str, operation: str | None) -> None:
    assert classify(method, path) == operation


def test_prompt_cache_key_depends_on_names_not_runs() -> None:
    key = prompt_cache_key_for("gpt-4o", "triage", None)
    assert key == prompt_cache_key_for("gpt-4o", "triage", None)
    assert (
        len(
            {
                key,
                prompt_cache_key_for("gpt-4o", "other", None),
                prompt_cache_key_for("gpt-5", "triage", None),
                prompt_cache_key_for("gpt-4o", "triage", "ticket-9"),
            }
        )
        == 4
    )


def test_prepare_never_mutates_the_callers_body() -> None:
    body: dict[str, Any] = {
        "model": "gpt-5.6-terra",
        "messages": [{"role": "system", "content": "word " * 1500}, {"role": "user", "content": "q"}],
        "stream": True,
        "stream_options": {"include_obfuscation": False},
    }
    snapshot = copy.deepcopy(body)
    prepared = prepare_request(
        body, CHAT, bc.ClientOptions(), cache_key="bc-k", count_block=lambda digest, text: len(text.split())
    )
    assert body == snapshot
    assert prepared.changed and prepared.hide_usage_chunk
    assert prepared.body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    # the key is the stable prefix's, not the conversation's fallback
    assert prepared.body["prompt_cache_key"] == prefix_cache_key(
        "gpt-5.6-terra", build_prefix(body, CHAT)[1].prefix_hash(()) or ""
    )
    assert prepared.breakpoints == ("messages[0].content[0]",)


def test_an_unchanged_body_is_returned_as_is() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}], "prompt_cache_key": "mine"}
    prepared = prepare_request(body, CHAT, bc.ClientOptions(), cache_key="bc-k")
    assert prepared.body is body and not prepared.changed and prepared.prompt_cache_key is None


def test_stable_prefix_blocks() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    body = {
        "tools": [tool],
        "messages": [
            {"role": "system", "content": "rules"},
            {
                "role": "developer",
                "content": [
                    {"type": "text", "text": "more", "prompt_cache_breakpoint": {"mode": "explicit"}},
                ],
            },
            {"role": "user", "content": "q"},
            {"role": "system", "content": "late system message: not prefix"},
        ],
    }
    blocks = stable_prefix(body, CHAT, count=lambda digest, text: len(text.split()))
    assert [(b.path, b.section, b.raw, b.tokens, b.shorthand) for b in blocks] == [
        ("tools[0]", "tools", json.dumps(tool, separators=(",", ":")).encode(), 1, False),
        ("messages[0].content", "system", b'{"type":"text","text":"rules"}', 1, True),
        ("messages[1].content[0]", "system", b'{"type":"text","text":"more"}', 1, False),  # markers stripped
    ]
    (instructions,) = stable_prefix({"instructions": "be kind", "input": "q"}, RESPONSES)
    assert instructions.path == "instructions"
    assert instructions.raw == b'{"type":"input_text","text":"be kind"}'


def sse(document: Any) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def test_the_filter_drops_only_the_usage_chunk_even_when_gzipped() -> None:
    events = [
        sse({"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}),
        sse({"id": "c", "choices": [], "obfuscation": "x", "moderation": None, "usage": {"total_tokens": 3}}),
        b"data: [DONE]\n\n",
    ]
    assert [_without_usage(e) for e in events] == [events[0], b"", events[2]]
    raw = gzip.compress(b"".join(events))
    stream_filter = _Filter("gzip")
    out = b"".join(stream_filter.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + stream_filter.end()
    assert out == events[0] + events[2]


def test_a_usage_chunk_with_a_payload_of_its_own_is_kept_without_its_usage() -> None:
    moderation = {"input": {"flagged": False}, "output": {"flagged": True, "categories": ["x"]}}
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [], "moderation": moderation}
    event = b"event: chunk\r\n" + sse({**chunk, "usage": {"prompt_tokens": 3}}).replace(b"\n", b"\r\n")
    kept = _without_usage(event)
    assert kept.startswith(b"event: chunk\r\ndata: ") and kept.endswith(b"\r\n\r\n")
    assert json.loads(kept.split(b"data: ", 1)[1]) == chunk


def test_usage_subsets_are_capped_and_odd_values_read_as_zero() -> None:
    wire = {
        "prompt_tokens": 100,
        "completion_tokens": True,  # a bool is not a count
        "prompt_tokens_details": {"cached_tokens": 150, "cache_write_tokens": 7},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    usage = usage_from_chat(wire)
    # cached capped at the prompt, nothing left to write; no output, so no reasoning
    expected = bc.Usage(input_tokens=100, cache_read_tokens=100, requests=1)
    assert usage == expected and type(usage) is bc.Usage and hash(usage) == hash(expected)
    wire = {"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": -3}}
    wire["completion_tokens_details"] = {"reasoning_tokens": 8}
    assert usage_from_chat(wire) == bc.Usage(input_tokens=50, output_tokens=5, reasoning_tokens=5, requests=1)
