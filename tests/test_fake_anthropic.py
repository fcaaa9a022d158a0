"""The fake Anthropic backend: caching rules, wire shapes, and the real SDK driving it.

Every expected number is computed here from token counts of text built to a known length
(``words(n)`` is exactly n tokens under the fake's tokenizer) and the documented caching rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from budgetclient.testing import (
    FakeAnthropic,
    FakeClock,
    block_tokens,
    count_tokens,
    min_cacheable_tokens,
    prompt_blocks,
    serve,
)
from tests._sdk import anthropic_cut_stream_error, drain

MODEL = "claude-sonnet-4-6"  # minimum cacheable prefix: 1,024 tokens
EPHEMERAL = {"type": "ephemeral"}
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}


def words(n: int, tag: str = "w") -> str:
    """Text of exactly n tokens (one word run each)."""
    return " ".join(f"{tag}{i}" for i in range(n))


def text(n: int, tag: str = "w", marker: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": words(n, tag)}
    if marker is not None:
        block["cache_control"] = marker
    return block


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def usage_of(input_tokens: int, *, read: int = 0, write_5m: int = 0, write_1h: int = 0,
             output: int = 20, tier: str = "standard") -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": output,
        "service_tier": tier,
    }


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=httpx2.Client(transport=fake.transport())) as sdk:
        yield sdk


def create(client: anthropic.Anthropic, **params: Any) -> dict[str, Any]:
    """One non-streaming call through the SDK; returns the usage as the API sent it."""
    params.setdefault("model", MODEL)
    params.setdefault("max_tokens", 64)
    message = client.messages.create(**params)
    return message.usage.model_dump(exclude_none=True)


# -- tokenizer -------------------------------------------------------------------------------

def test_tokenizer_counts_words_and_punctuation() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("word " * 1100) == 1100
    assert count_tokens(words(37)) == 37
    assert count_tokens("") == 0
    # A marker never changes a block's count; plain strings count as one text block.
    assert block_tokens(text(5, marker=EPHEMERAL)) == block_tokens(text(5)) == block_tokens(words(5)) == 5


def test_prompt_blocks_follow_tools_system_messages_order() -> None:
    tool = {"name": "lookup", "description": "find a record", "input_schema": {"type": "object"}}
    body = {"model": MODEL, "tools": [tool], "system": words(7),
            "messages": [{"role": "user", "content": words(3)}, assistant(text(2), text(4))]}
    blocks = prompt_blocks(body)
    assert [b.segment for b in blocks] == ["tools[0]", "system", "messages[0].content",
                                           "messages[1].content[0]", "messages[1].content[1]"]
    tool_tokens = count_tokens(json.dumps(tool, separators=(",", ":")))
    assert [b.tokens for b in blocks] == [tool_tokens, 7, 3, 2, 4]
    assert blocks[-1].prefix_tokens == tool_tokens + 7 + 3 + 2 + 4
    # Markers do not change keys; the model does.
    marked = {**body, "system": [text(7, marker=EPHEMERAL)]}
    assert [b.key for b in prompt_blocks(marked)] == [b.key for b in blocks]
    assert prompt_blocks({**body, "model": "claude-opus-4-1"})[0].key != blocks[0].key


def test_minimum_cacheable_length_table_and_overrides() -> None:
    assert min_cacheable_tokens("claude-sonnet-4-6") == 1024
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    assert min_cacheable_tokens("claude-opus-4-1-20250805") == 1024
    assert min_cacheable_tokens("claude-opus-4-5") == 4096
    assert min_cacheable_tokens("claude-opus-4-6") == 4096
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-opus-4-7") == 2048
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2048
    assert min_cacheable_tokens("us.anthropic.claude-haiku-4-5-20251001-v1:0") == 4096
    assert min_cacheable_tokens("some-unknown-model") == 1024
    assert min_cacheable_tokens("claude-sonnet-4-6", {"claude-sonnet": 10}) == 10
    assert min_cacheable_tokens("claude-opus-4-6", {"*": 1}) == 1
    assert FakeAnthropic(min_cacheable={"claude-sonnet-4-6": 50}).min_cacheable_tokens(MODEL) == 50


# -- caching rules ---------------------------------------------------------------------------

def test_no_breakpoints_bills_everything_as_input(client: anthropic.Anthropic) -> None:
    params = {"system": words(1500, "s"), "messages": [user(text(30))]}
    first = create(client, **params)
    second = create(client, **params)
    assert first == second == usage_of(1500 + 30)


def test_system_breakpoint_writes_then_reads(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    system = [text(1100, "s", EPHEMERAL)]
    first = create(client, system=system, messages=[user(text(12))])
    second = create(client, system=system, messages=[user(text(9, "q"))])
    assert first == usage_of(12, write_5m=1100)
    assert second == usage_of(9, read=1100)
    assert [r.usage for r in fake.requests] == [first, second]


def test_rolling_breakpoint_in_an_append_only_loop(client: anthropic.Anthropic) -> None:
    system = [text(1100, "s", EPHEMERAL)]
    history: list[dict[str, Any]] = []
    turns = [(7, 5), (11, 6), (4, 8)]  # (user tokens, assistant tokens) per turn
    usages = []
    for turn, (asked, answered) in enumerate(turns):
        # Only the newest user block carries the rolling marker, as an agent loop would send it.
        messages = [*history, user(text(asked, f"u{turn}_", EPHEMERAL))]
        usages.append(create(client, system=system, messages=messages))
        history += [user(text(asked, f"u{turn}_")), assistant(text(answered, f"a{turn}_"))]
    # Call 1 writes system and first question; later calls read up to the previous question
    # (found by looking back from the new tail) and write the new tail.
    assert usages[0] == usage_of(0, write_5m=1100 + 7)
    assert usages[1] == usage_of(0, read=1100 + 7, write_5m=5 + 11)
    assert usages[2] == usage_of(0, read=1100 + 7 + 5 + 11, write_5m=6 + 4)


def _lookback_messages(n_small: int, marked: set[int]) -> list[dict[str, Any]]:
    """Message 0 is 1,100 tokens; messages 1..n_small are 2 tokens each; one block per message."""
    messages = [user(text(1100, "base", EPHEMERAL if 0 in marked else None))]
    for i in range(1, n_small + 1):
        block = text(2, f"m{i}_", EPHEMERAL if i in marked else None)
        messages.append(assistant(block) if i % 2 else user(block))
    return messages


@pytest.mark.parametrize(("tail", "reads"), [(19, True), (20, False), (25, False)])
def test_lookback_reaches_20_blocks_counting_the_breakpoint(tail: int, reads: bool) -> None:
    fake = FakeAnthropic()
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=fake.http_client()) as sdk:
        assert create(sdk, messages=_lookback_messages(0, {0})) == usage_of(0, write_5m=1100)
        got = create(sdk, messages=_lookback_messages(tail, {tail}))
    total = 1100 + 2 * tail
    if reads:  # block `tail` looks back over blocks tail..tail-19, which includes block 0
        assert got == usage_of(0, read=1100, write_5m=total - 1100)
    else:
        assert got == usage_of(0, write_5m=total)


def test_intermediate_breakpoint_keeps_the_previous_write_in_reach(client: anthropic.Anthropic) -> None:
    assert create(client, messages=_lookback_messages(0, {0})) == usage_of(0, write_5m=1100)
    # 25 blocks added: the tail alone would miss; a breakpoint at block 10 finds block 0.
    got = create(client, messages=_lookback_messages(25, {10, 25}))
    assert got == usage_of(0, read=1100, write_5m=2 * 25)


def test_prefix_below_minimum_writes_nothing() -> None:
    fake = FakeAnthropic()
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=fake.http_client()) as sdk:
        system = [text(2000, "s", EPHEMERAL)]
        # Haiku 4.5 needs 4,096 tokens: nothing is written, so nothing is read either.
        for _ in range(2):
            got = create(sdk, model="claude-haiku-4-5", system=system, messages=[user(text(10))])
            assert got == usage_of(2000 + 10)
        assert fake.cache.entries() == []
        # The same prefix on Sonnet 4.6 (1,024) is cached.
        assert create(sdk, system=system, messages=[user(text(10))]) == usage_of(10, write_5m=2000)


def test_five_breakpoints_is_a_400(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    messages = [user(*[text(300, f"b{i}_", EPHEMERAL) for i in range(5)])]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert "maximum of 4 blocks with cache_control" in body["error"]["message"]
    assert "Found 5" in body["error"]["message"]
    assert fake.requests[-1].status == 400
    assert fake.cache.entries() == []


def test_top_level_cache_control_marks_the_last_block_and_takes_a_slot(client: anthropic.Anthropic) -> None:
    system = [text(1100, "s")]
    first = create(client, system=system, messages=[user(text(8))], cache_control=EPHEMERAL)
    assert first == usage_of(0, write_5m=1100 + 8)
    grown = [user(text(8)), assistant(text(3, "a")), user(text(6, "q"))]
    second = create(client, system=system, messages=grown, cache_control=EPHEMERAL)
    assert second == usage_of(0, read=1100 + 8, write_5m=3 + 6)

    four = [user(*[text(300, f"b{i}_", EPHEMERAL) for i in range(3)], text(5, "t"), text(5, "u", EPHEMERAL))]
    # Four explicit markers, the last one on the last block with the same TTL: no-op, accepted.
    create(client, messages=four, cache_control=EPHEMERAL)
    # The same TTL conflicts, or a fifth slot is needed: 400.
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=5, messages=four, cache_control=ONE_HOUR)
    unmarked_tail = [user(*[text(300, f"b{i}_", EPHEMERAL) for i in range(4)], text(5, "t"))]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=5, messages=unmarked_tail, cache_control=EPHEMERAL)
    assert "maximum of 4 blocks" in str(caught.value)


def test_one_hour_after_five_minutes_is_a_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=5, system=[text(1100, "s", EPHEMERAL)],
                               messages=[user(text(5, marker=ONE_HOUR))])
    assert "ttl='1h'" in str(caught.value)


def test_mixed_ttls_split_the_write_and_only_1h_survives_ten_minutes() -> None:
    clock = FakeClock()
    fake = FakeAnthropic(clock=clock)
    params = {"system": [text(1200, "s", ONE_HOUR)], "messages": [user(text(300, "d", EPHEMERAL), text(7))]}
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=fake.http_client()) as sdk:
        # A = nothing, B = system (1h), C = the document block (5m).
        assert create(sdk, **params) == usage_of(7, write_1h=1200, write_5m=300)
        clock.advance(600)
        # The 5m entry has expired; looking back from it finds the 1h system entry.
        assert create(sdk, **params) == usage_of(7, read=1200, write_5m=300)
        clock.advance(3599)  # 4,199 s after the write: alive only because that hit refreshed it
        assert create(sdk, **params) == usage_of(7, read=1200, write_5m=300)
        assert create(sdk, **params) == usage_of(7, read=1200 + 300)


def test_hits_refresh_the_ttl_and_expiry_is_measured_from_request_start() -> None:
    clock = FakeClock()
    fake = FakeAnthropic(clock=clock)
    params = {"system": [text(1100, "s", EPHEMERAL)], "messages": [user(text(4))]}
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=fake.http_client()) as sdk:
        assert create(sdk, **params) == usage_of(4, write_5m=1100)
        for _ in range(3):  # 4 minutes apart: each hit keeps the entry alive past its first 5 minutes
            clock.advance(240)
            assert create(sdk, **params) == usage_of(4, read=1100)
        clock.advance(300)  # exactly 5 minutes since the last hit: expired
        assert create(sdk, **params) == usage_of(4, write_5m=1100)


def test_no_read_of_own_writes_and_model_is_part_of_the_key(client: anthropic.Anthropic) -> None:
    messages = [user(text(1100, "a", EPHEMERAL), text(50, "b", EPHEMERAL))]
    assert create(client, messages=messages) == usage_of(0, write_5m=1150)
    assert create(client, model="claude-opus-4-1", messages=messages) == usage_of(0, write_5m=1150)
    assert create(client, messages=messages) == usage_of(0, read=1150)


def test_tool_choice_change_invalidates_messages_but_not_tools_and_system(
        client: anthropic.Anthropic) -> None:
    tool = {"name": "lookup", "description": "find a record", "input_schema": {"type": "object"},
            "cache_control": EPHEMERAL}
    tool_tokens = block_tokens(tool)
    assert tool_tokens < 1024  # the tools breakpoint alone is below the minimum and writes nothing
    params: dict[str, Any] = {"tools": [tool], "system": [text(1100, "s", EPHEMERAL)],
                              "messages": [user(text(5, marker=EPHEMERAL))]}
    assert create(client, **params) == usage_of(0, write_5m=tool_tokens + 1100 + 5)
    first = client.messages.create(model=MODEL, max_tokens=64, **params)
    changed = client.messages.create(model=MODEL, max_tokens=64, tool_choice={"type": "any"}, **params,
                                     diagnostics={"previous_message_id": first.id})
    assert changed.usage.model_dump(exclude_none=True) == usage_of(0, read=tool_tokens + 1100, write_5m=5)
    assert changed.diagnostics is not None and changed.diagnostics.cache_miss_reason is not None
    assert changed.diagnostics.cache_miss_reason.type == "unavailable"


def test_accounting_is_exposed_without_touching_the_cache(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 5, "system": [text(1100, "s", EPHEMERAL)],
            "messages": [user(text(3))]}
    predicted = fake.accounting(body)
    assert predicted.cache_write_5m_tokens == 1100
    assert (predicted.input_tokens, predicted.total_input_tokens) == (3, 1100 + 3)
    assert fake.cache.entries() == []
    assert fake.accounting(body) == predicted


# -- wire shapes, streaming, async, server ---------------------------------------------------

def test_json_message_shape_and_lazy_body(fake: FakeAnthropic) -> None:
    with httpx2.Client(transport=fake.transport()) as http:
        body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
        with http.stream("POST", "http://fake/v1/messages", json=body) as response:
            assert not response.is_stream_consumed  # served lazily, like a socket
            document = json.loads(response.read())
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    assert document["id"].startswith("msg_")
    assert {k: v for k, v in document.items() if k != "id"} == {
        "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": usage_of(1),
    }
    eager = FakeAnthropic(eager_json=True)
    with httpx2.Client(transport=eager.transport()) as http:
        assert http.post("http://fake/v1/messages", json=body).json()["usage"] == usage_of(1)


def test_max_tokens_caps_the_reported_output(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=3, messages=[user(text(2))])
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_sse_events_carry_usage_like_the_real_api(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 64, "stream": True,
            "system": [text(1100, "s", EPHEMERAL)], "messages": [user(text(6))]}
    with httpx2.Client(transport=fake.transport()) as http:
        raw = http.post("http://fake/v1/messages", json=body).text
    events = [chunk.split("\n") for chunk in raw.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert data[0]["message"]["usage"] == usage_of(6, write_5m=1100, output=1)
    assert data[5]["usage"] == {"input_tokens": 6, "cache_creation_input_tokens": 1100,
                                "cache_read_input_tokens": 0, "output_tokens": 20}


def test_stream_and_non_stream_bill_identically() -> None:
    conversations = [
        {"system": [text(1100, "s", EPHEMERAL)], "messages": [user(text(9, marker=EPHEMERAL))]},
        {"system": [text(1100, "s", EPHEMERAL)],
         "messages": [user(text(9)), assistant(text(4, "a")), user(text(5, "q", EPHEMERAL))]},
    ]
    plain, streamed = FakeAnthropic(), FakeAnthropic()
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=plain.http_client()) as a, \
         anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=streamed.http_client()) as b:
        for params in conversations:
            expected = create(a, **params)
            with b.messages.stream(model=MODEL, max_tokens=64, **params) as stream:
                final = stream.get_final_message()
            assert final.usage.model_dump(exclude_none=True) == expected
            assert final.content[0].type == "text" and final.content[0].text == "ok"
            raw = b.messages.create(model=MODEL, max_tokens=64, stream=True, **params)
            events = list(raw)
            assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert [r.usage for r in plain.requests] == [usage_of(0, write_5m=1100 + 9),
                                                 usage_of(0, read=1100 + 9, write_5m=4 + 5)]
    assert [r.stream for r in streamed.requests] == [True] * 4


def test_cut_stream_ends_without_message_stop(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.reply_text = "one two three four"
    fake.cut_next_stream(after_events=4)
    messages = [user(text(3))]
    cut = drain(lambda: client.messages.create(model=MODEL, max_tokens=64, stream=True, messages=messages))
    # a read error on the wire, raised as the installed SDK raises one mid-stream
    assert isinstance(cut.transport_error, httpx2.ReadError)
    assert cut.error_type is anthropic_cut_stream_error(httpx2.ReadError)
    assert [e.type for e in cut.items] == ["message_start", "content_block_start", "content_block_delta"]
    # Only the next stream is cut.
    events = list(client.messages.create(model=MODEL, max_tokens=64, stream=True, messages=[user(text(3))]))
    assert events[-1].type == "message_stop"


async def test_async_client_through_the_transport() -> None:
    fake = FakeAnthropic()
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "system": [text(1100, "s", EPHEMERAL)],
                              "messages": [user(text(5))]}
    async with anthropic.AsyncAnthropic(api_key="test", base_url="http://fake", max_retries=0,
                                        http_client=httpx2.AsyncClient(transport=fake.transport())) as sdk:
        first = await sdk.messages.create(**params)
        async with sdk.messages.stream(**params) as stream:
            second = await stream.get_final_message()
    assert first.usage.model_dump(exclude_none=True) == usage_of(5, write_5m=1100)
    assert second.usage.model_dump(exclude_none=True) == usage_of(5, read=1100)


def test_local_server_over_a_real_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    fake = FakeAnthropic(reply_text="served over a socket")
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "system": [text(1100, "s", EPHEMERAL)],
                              "messages": [user(text(5))]}
    with serve(fake) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        with anthropic.Anthropic(api_key="test", base_url=base_url, max_retries=0) as sdk:
            first = sdk.messages.create(**params)
            with sdk.messages.stream(**params) as stream:
                second = stream.get_final_message()
            fake.cut_next_stream(after_events=2)
            cut = drain(lambda: sdk.messages.create(stream=True, **params))
            # the chunked body ends without its last chunk: a transport error, raised as the SDK raises one
            assert cut.transport_error is not None and len(cut.items) == 2
            assert cut.error_type is anthropic_cut_stream_error(type(cut.transport_error))
            with pytest.raises(anthropic.BadRequestError):
                sdk.messages.create(model=MODEL, max_tokens=5,
                                    messages=[user(*[text(3, f"b{i}_", EPHEMERAL) for i in range(5)])])
    assert first.content[0].type == "text" and first.content[0].text == "served over a socket"
    assert first.usage.model_dump(exclude_none=True) == usage_of(5, write_5m=1100)
    assert second.usage.model_dump(exclude_none=True) == usage_of(5, read=1100)


# -- diagnostics, count_tokens, batches, failures --------------------------------------------

def test_diagnostics_explain_a_system_change(client: anthropic.Anthropic) -> None:
    system = [text(1100, "s", EPHEMERAL)]
    first = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=[user(text(4))],
                                   diagnostics={"previous_message_id": None})
    assert first.diagnostics is not None and first.diagnostics.cache_miss_reason is None
    appended = [user(text(4)), assistant(text(2, "a")), user(text(3, "q"))]
    second = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=appended,
                                    diagnostics={"previous_message_id": first.id})
    assert second.diagnostics is not None and second.diagnostics.cache_miss_reason is None
    changed = [text(1100, "changed", EPHEMERAL)]
    third = client.messages.create(model=MODEL, max_tokens=5, system=changed, messages=appended,
                                   diagnostics={"previous_message_id": second.id})
    assert third.diagnostics is not None
    reason = third.diagnostics.cache_miss_reason
    assert reason is not None and reason.type == "system_changed"
    assert reason.cache_missed_input_tokens == 1100  # what the second call had cached: the system
    gone = client.messages.create(model=MODEL, max_tokens=5, messages=[user(text(1))],
                                  diagnostics={"previous_message_id": "msg_unknown"})
    assert gone.diagnostics is not None and gone.diagnostics.cache_miss_reason is not None
    assert gone.diagnostics.cache_miss_reason.type == "previous_message_not_found"
    rewritten = [user(text(4)), assistant(text(2, "edited")), user(text(3, "q"))]
    edited = client.messages.create(model=MODEL, max_tokens=5, system=changed, messages=rewritten,
                                    diagnostics={"previous_message_id": third.id})
    assert edited.diagnostics is not None and edited.diagnostics.cache_miss_reason is not None
    assert edited.diagnostics.cache_miss_reason.type == "messages_changed"
    other_model = client.messages.create(model="claude-opus-4-1", max_tokens=5, system=changed,
                                         messages=[user(text(4))],
                                         diagnostics={"previous_message_id": third.id})
    assert other_model.diagnostics is not None and other_model.diagnostics.cache_miss_reason is not None
    assert other_model.diagnostics.cache_miss_reason.type == "model_changed"
    no_diagnostics = client.messages.create(model=MODEL, max_tokens=5, messages=[user(text(1))])
    assert no_diagnostics.diagnostics is None


def test_count_tokens(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    counted = client.messages.count_tokens(model=MODEL, system=words(40, "s"),
                                           messages=[user(text(12)), assistant(text(3))])
    assert counted.input_tokens == 40 + 12 + 3
    assert fake.cache.entries() == []


def test_batch_results_carry_usage_by_the_same_rules(client: anthropic.Anthropic) -> None:
    system = [text(1100, "s", EPHEMERAL)]
    requests: list[Any] = [
        {"custom_id": "first", "params": {"model": MODEL, "max_tokens": 64, "system": system,
                                          "messages": [user(text(6))]}},
        {"custom_id": "second", "params": {"model": MODEL, "max_tokens": 64, "system": system,
                                           "messages": [user(text(8, "q"))]}},
        {"custom_id": "broken", "params": {"model": MODEL, "max_tokens": 64, "messages": [
            user(*[text(3, f"b{i}_", EPHEMERAL) for i in range(5)])]}},
    ]
    batch = client.messages.batches.create(requests=requests)
    assert batch.processing_status == "in_progress"
    done = client.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended"
    assert (done.request_counts.succeeded, done.request_counts.errored) == (2, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    first, second, broken = results["first"], results["second"], results["broken"]
    assert first.type == "succeeded" and second.type == "succeeded"
    assert first.message.usage.model_dump(exclude_none=True) == usage_of(6, write_5m=1100, tier="batch")
    assert second.message.usage.model_dump(exclude_none=True) == usage_of(8, read=1100, tier="batch")
    assert broken.type == "errored" and broken.error.error.type == "invalid_request_error"


def test_fail_next_answers_api_errors(fake: FakeAnthropic) -> None:
    fake.fail_next(529)
    with httpx2.Client(transport=fake.transport()) as http:
        body = {"model": MODEL, "max_tokens": 5, "messages": [user(text(2))]}
        response = http.post("http://fake/v1/messages", json=body)
        assert response.status_code == 529
        assert response.headers["retry-after"] == "0"
        assert response.json()["type"] == "error"
        assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        assert http.post("http://fake/v1/messages", json=body).status_code == 200

    fake.fail_next(429, count=2)
    with anthropic.Anthropic(api_key="test", base_url="http://fake", max_retries=0,
                             http_client=fake.http_client()) as sdk:
        with pytest.raises(anthropic.RateLimitError) as caught:
            sdk.messages.create(model=MODEL, max_tokens=5, messages=[user(text(2))])
        assert caught.value.type == "rate_limit_error"
        # The SDK retries the second failure and then succeeds.
        message = sdk.with_options(max_retries=2).messages.create(model=MODEL, max_tokens=5,
                                                                  messages=[user(text(2))])
    assert message.usage.input_tokens == 2
    assert [r.status for r in fake.requests] == [529, 200, 429, 429, 200]
    fake.fail_next(500, error_type="api_error")
    with httpx2.Client(transport=fake.transport()) as http:
        failed = http.post("http://fake/v1/messages", json=body)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "api_error"
