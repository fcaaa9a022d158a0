"""Anthropic on Bedrock over a mocked wire: the real ``AnthropicBedrock`` clients, wrapped.

Bedrock streams a Messages response as AWS event-stream frames, not SSE; its usage is in the same
``message_start`` / ``message_delta`` events, base64-encoded inside each frame. AWS bills by the
model id the caller names: a regional id (``us.anthropic.…``) costs 10% more than a global one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest

import budgetclient as bc

from .._sdk import assert_same_outcome, drain
from .test_anthropic import MESSAGES, STANDARD, USAGE, cost_of, expected_usage
from .wire import (
    Wire,
    anthropic_message,
    anthropic_stream_events,
    anthropic_usage,
    bedrock_stream_response,
    json_response,
    sse_response,
)

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-6-v1:0"
GLOBAL_MODEL = "global.anthropic.claude-sonnet-4-6-v1:0"
# AWS's published Bedrock prices for Claude Sonnet 4.6 (USD per million tokens): global endpoints
# at Anthropic's own rates, regional ones 10% above them.
GLOBAL = STANDARD
REGIONAL = {
    "input": Decimal("3.30"),
    "output": Decimal("16.50"),
    "read": Decimal("0.33"),
    "write_5m": Decimal("4.125"),
    "write_1h": Decimal("6.60"),
}

pytest.importorskip("botocore")  # the Bedrock clients sign requests with it


def bedrock(wire: Wire, *, asynchronous: bool = False, wrapped: bool = True) -> Any:
    cls = anthropic.AsyncAnthropicBedrock if asynchronous else anthropic.AnthropicBedrock
    http_client = wire.async_client() if asynchronous else wire.client()
    client = cls(
        aws_access_key="AKIATESTKEY", aws_secret_key="test-secret", aws_region="us-east-1",
        http_client=http_client, max_retries=0,
    )  # fmt: skip
    return bc.wrap(client) if wrapped else client


def stream_wire(usage: dict[str, Any] = USAGE, **kw: Any) -> Wire:
    return Wire(default=lambda r: bedrock_stream_response(anthropic_stream_events(usage), **kw))


def test_bedrock_invoke_is_metered() -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(USAGE)))
    with bc.task("t") as t:
        bedrock(wire).messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES)
    assert wire.requests[0].url.path == f"/model/{BEDROCK_MODEL}/invoke"
    assert t.usage == expected_usage(USAGE)
    (record,) = t.records
    assert record.model == BEDROCK_MODEL  # the response says claude-sonnet-4-6: not what AWS bills
    assert t.cost == cost_of(USAGE, REGIONAL)


def test_a_global_bedrock_id_is_priced_at_global_rates() -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(USAGE)))
    with bc.task("t") as t:
        bedrock(wire).messages.create(model=GLOBAL_MODEL, max_tokens=10, messages=MESSAGES)
    assert t.cost == cost_of(USAGE, GLOBAL)


def test_a_bedrock_call_is_held_to_the_task_budget() -> None:
    wire = Wire(default=lambda r: json_response(anthropic_message(USAGE)))
    with bc.task("t", budget_usd=Decimal("0.0000001")) as t, pytest.raises(bc.BudgetExceeded):
        bedrock(wire).messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES)
    assert wire.requests == [] and t.calls == 0


@pytest.mark.parametrize("chunk", [7, 4096])
def test_bedrock_stream_is_metered_from_its_event_stream(chunk: int) -> None:
    c = bedrock(stream_wire(chunk=chunk))
    with bc.task("t") as t:
        events = list(c.messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES, stream=True))
        with c.messages.stream(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    # the caller gets the SDK's own events, unchanged
    sent = [name for name, _ in anthropic_stream_events(USAGE) if name != "ping"]
    assert [e.type for e in events if e.type != "ping"] == sent and text == "Hello"
    assert final.usage.output_tokens == USAGE["output_tokens"]
    assert t.calls == 2
    assert t.usage == expected_usage(USAGE) + expected_usage(USAGE)
    assert t.cost == 2 * cost_of(USAGE, REGIONAL)
    assert [(r.status, r.stream, r.model) for r in t.records] == [("ok", True, BEDROCK_MODEL)] * 2


async def test_async_bedrock_stream_is_metered() -> None:
    c = bedrock(stream_wire(), asynchronous=True)
    with bc.task("t") as t:
        stream = await c.messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        async with c.messages.stream(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES) as helper:
            await helper.get_final_message()
    assert t.usage == expected_usage(USAGE) + expected_usage(USAGE)
    assert t.cost == 2 * cost_of(USAGE, REGIONAL)
    assert [r.status for r in t.records] == ["ok", "ok"]


def test_bedrock_stream_cut_mid_way_records_what_arrived_flagged_incomplete() -> None:
    usage = anthropic_usage(70, 5, read=100)
    # 40-byte pieces: the first frame (message_start) is whole after a few, the cut lands later
    wire = stream_wire(usage, chunk=40, cut_after=30)

    def create(client: Any) -> Any:
        return client.messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES, stream=True)

    expected = drain(lambda: create(bedrock(wire, wrapped=False)))
    with bc.task("t") as t:
        got = drain(lambda: create(bedrock(wire)))
    assert isinstance(expected.transport_error, httpx2.ReadError) and expected.items
    assert_same_outcome(got, expected)  # whatever the installed SDK raises, after the same events
    (record,) = t.records
    assert (record.status, record.error) == ("incomplete", "ReadError")
    assert record.usage == bc.Usage(input_tokens=170, cache_read_tokens=100, output_tokens=1, requests=1)


def test_bedrock_exception_frame_mid_stream_raises_as_raw_and_records_what_arrived() -> None:
    usage = anthropic_usage(70, 5, read=100)
    events = anthropic_stream_events(usage)[:4]  # message_start .. a content delta, then throttled

    def wire() -> Wire:
        return Wire(default=lambda r: bedrock_stream_response(events, exception="throttlingException"))

    def consume(client: Any) -> type[BaseException]:
        with pytest.raises(Exception) as raised:
            list(client.messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES, stream=True))
        return raised.type

    with bc.task("t") as t:
        # the same error as the raw SDK's (whose call is not metered: one record)
        assert consume(bedrock(wire())) is consume(bedrock(wire(), wrapped=False))
    (record,) = t.records
    assert record.status == "incomplete"
    assert record.usage == bc.Usage(input_tokens=170, cache_read_tokens=100, output_tokens=1, requests=1)


def test_bedrock_stream_ending_inside_a_frame_is_incomplete() -> None:
    c = bedrock(stream_wire(truncate=5))  # message_stop's frame is cut short
    with bc.task("t") as t:
        try:
            list(c.messages.create(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES, stream=True))
        except Exception:
            pass  # whatever the raw SDK does with a truncated body, the record says what arrived
    (record,) = t.records
    assert record.status == "incomplete"
    assert record.usage.input_tokens == expected_usage(USAGE).input_tokens
    assert record.usage.output_tokens == USAGE["output_tokens"]  # the last message_delta arrived


def test_bedrock_mantle_streams_sse_and_is_priced_by_its_bedrock_id() -> None:
    # Bedrock's Messages-API endpoint: first-party paths and SSE, AWS ids and billing
    wire = Wire(default=lambda r: sse_response(anthropic_stream_events(USAGE)))
    c = bc.wrap(
        anthropic.AnthropicBedrockMantle(
            api_key="test-bedrock-key", aws_region="us-east-1", base_url="http://mantle.test/anthropic",
            http_client=wire.client(), max_retries=0,
        )
    )  # fmt: skip
    with bc.task("t") as t, c.messages.stream(model=BEDROCK_MODEL, max_tokens=10, messages=MESSAGES) as s:
        s.get_final_message()
    assert wire.requests[0].url.path == "/anthropic/v1/messages"
    (record,) = t.records
    assert (record.status, record.model) == ("ok", BEDROCK_MODEL)
    assert t.usage == expected_usage(USAGE)
    assert t.cost == cost_of(USAGE, REGIONAL)


def test_event_stream_frames_without_the_marker_are_dropped_unparsed() -> None:
    from budgetclient.providers._sse import _AWSFrames

    events = anthropic_stream_events(USAGE)
    body = bedrock_stream_response(events, chunk=1 << 20).read()
    kept = _AWSFrames(b"message_").feed(body)
    assert [kind for kind, _ in kept] == [name for name, _ in events if name and name.startswith("message_")]
    assert len(_AWSFrames().feed(body)) == len(events)
