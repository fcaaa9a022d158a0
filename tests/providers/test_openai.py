"""bc.OpenAI / bc.AsyncOpenAI / bc.wrap: every call path metered over a mocked wire, sync and async.

The real openai SDK talks to `budgetclient.testing.fake_openai.FakeOpenAI` through
``httpx2.MockTransport`` (and once through respx). Expected usage and cost are computed here from
the usage fields the fake put on the wire and from the published per-million rates below.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pydantic
import pytest
import respx

import budgetclient as bc
from budgetclient import pricing
from budgetclient.metering import add_call_hook
from budgetclient.providers import _openai_meter
from budgetclient.providers.openai import wrap_openai
from budgetclient.testing._sse import ChunkStream
from budgetclient.testing.fake_openai import FakeOpenAI, FakeReply

from .._sdk import adrain, assert_same_outcome, drain

MILLION = Decimal(1_000_000)
# Published OpenAI rates, USD per million tokens (as in genai-prices).
RATES = {
    "gpt-4o": {"input": Decimal("2.50"), "cache_read": Decimal("1.25"), "output": Decimal("10")},
    "gpt-5.6-terra": {
        "input": Decimal("2"),
        "cache_read": Decimal("0.20"),
        "cache_write": Decimal("2.50"),
        "output": Decimal("12"),
    },
}
SYSTEM = "You are a careful assistant. Answer briefly and cite the policy. " * 120  # 1,440 tokens
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class City(pydantic.BaseModel):
    city: str


def usage_of(wire: Mapping[str, Any]) -> bc.Usage:
    """OpenAI usage fields → bc.Usage, by hand: prompt/input tokens already include cached ones."""
    if "prompt_tokens" in wire:
        details = wire.get("prompt_tokens_details") or {}
        return bc.Usage(
            input_tokens=wire["prompt_tokens"],
            cache_read_tokens=details.get("cached_tokens") or 0,
            cache_write_tokens=details.get("cache_write_tokens") or 0,
            output_tokens=wire["completion_tokens"],
            reasoning_tokens=(wire.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
            requests=1,
        )
    details = wire["input_tokens_details"]
    return bc.Usage(
        input_tokens=wire["input_tokens"],
        cache_read_tokens=details["cached_tokens"],
        cache_write_tokens=details["cache_write_tokens"],
        cache_write_long_tokens=(details.get("cache_write_tokens_details") or {}).get("ttl_12h_tokens", 0),
        output_tokens=wire["output_tokens"],
        reasoning_tokens=wire["output_tokens_details"]["reasoning_tokens"],
        requests=1,
    )


def cost_of(usage: bc.Usage, model: str) -> Decimal:
    rate = RATES[model]
    uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    return (
        uncached * rate["input"]
        + usage.cache_read_tokens * rate["cache_read"]
        + usage.cache_write_tokens * rate.get("cache_write", rate["input"])
        + usage.output_tokens * rate["output"]
    ) / MILLION


def expected(fake: FakeOpenAI, model: str) -> tuple[bc.Usage, Decimal]:
    usages = [usage_of(u) for u in fake.usages]
    return sum(usages, bc.Usage()), sum((cost_of(u, model) for u in usages), Decimal(0))


def chat(user: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def client(fake: FakeOpenAI) -> bc.OpenAI:
    return bc.OpenAI(api_key="sk-test", http_client=fake.http_client())


@pytest.fixture
def aclient(fake: FakeOpenAI) -> bc.AsyncOpenAI:
    return bc.AsyncOpenAI(api_key="sk-test", http_client=fake.async_http_client())


# -- chat.completions.create ---------------------------------------------------------------------


def test_chat_create_meters_exact_usage_and_cost(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    with bc.task("chat") as t:
        first = client.chat.completions.create(model="gpt-4o", messages=chat("What is the refund window?"))
        second = client.chat.completions.create(model="gpt-4o", messages=chat("And for gift cards?"))
    assert isinstance(first, openai.types.chat.ChatCompletion)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert (second.usage.prompt_tokens_details.cached_tokens or 0) > 0  # the shared system prompt was cached
    usage, cost = expected(fake, "gpt-4o")
    assert usage.cache_read_tokens == second.usage.prompt_tokens_details.cached_tokens
    assert t.usage == usage
    assert t.cost == cost
    assert t.calls == 2
    assert [r.operation for r in t.records] == ["chat.completions", "chat.completions"]
    assert all(r.provider == "openai" and r.status == "ok" and r.http_status == 200 for r in t.records)


async def test_async_chat_create_meters_exact_usage_and_cost(
    fake: FakeOpenAI, aclient: bc.AsyncOpenAI
) -> None:
    async with bc.task("chat") as t:
        await aclient.chat.completions.create(model="gpt-4o", messages=chat("What is the refund window?"))
        await aclient.chat.completions.create(model="gpt-4o", messages=chat("And for gift cards?"))
    usage, cost = expected(fake, "gpt-4o")
    assert usage.cache_read_tokens > 0
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)


def test_reasoning_tokens_are_part_of_output(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    fake.reply(FakeReply(text="Forty-two.", reasoning_tokens=37))
    with bc.task("think") as t:
        client.chat.completions.create(model="gpt-4o", messages=chat("Think hard."))
    wire = fake.usages[0]
    assert t.usage.reasoning_tokens == wire["completion_tokens_details"]["reasoning_tokens"] == 37
    assert t.usage.output_tokens == wire["completion_tokens"]
    assert t.cost == cost_of(usage_of(wire), "gpt-4o")


# -- chat streams --------------------------------------------------------------------------------


def test_chat_stream_caller_loop_works_and_task_gets_exact_usage(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    fake.reply("The refund window is thirty days from delivery.")
    pieces: list[str] = []
    with bc.task("stream") as t:
        stream = client.chat.completions.create(model="gpt-4o", messages=chat("Refund window?"), stream=True)
        for chunk in stream:  # code written against the plain SDK: choices[0] on every chunk
            pieces.append(chunk.choices[0].delta.content or "")
            assert chunk.usage is None
    assert "".join(pieces) == "The refund window is thirty days from delivery."
    sent = fake.requests[0].body
    assert sent["stream_options"] == {"include_usage": True}  # sent for metering, hidden from the caller
    usage, cost = expected(fake, "gpt-4o")
    assert usage.output_tokens > 0
    assert (t.usage, t.cost) == (usage, cost)
    assert t.records[0].stream and t.records[0].status == "ok"


async def test_async_chat_stream_caller_loop_works(fake: FakeOpenAI, aclient: bc.AsyncOpenAI) -> None:
    async with bc.task("stream") as t:
        stream = await aclient.chat.completions.create(
            model="gpt-4o", messages=chat("Refund window?"), stream=True
        )
        async for chunk in stream:
            assert chunk.choices[0].index == 0
            assert chunk.usage is None
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


def test_callers_own_include_usage_still_sees_the_usage_chunk(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    with bc.task("stream") as t:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=chat("Refund window?"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert usage_of(chunks[-1].usage.model_dump()) == t.usage  # counted once, exactly
    assert t.cost == cost_of(t.usage, "gpt-4o")


def test_other_stream_options_are_kept(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    with bc.task("stream"):
        list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=chat("Hi"),
                stream=True,
                stream_options={"include_obfuscation": False},
            )
        )
    assert fake.requests[0].body["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_chat_stream_helper(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    helper = client.chat.completions.stream(model="gpt-4o", messages=chat("Why?"))
    with bc.task("helper") as t, helper as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.usage is None  # exactly what the plain SDK returns without include_usage
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


async def test_async_chat_stream_helper(fake: FakeOpenAI, aclient: bc.AsyncOpenAI) -> None:
    helper = aclient.chat.completions.stream(model="gpt-4o", messages=chat("Why?"))
    async with bc.task("helper") as t, helper as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


def test_chat_parse(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    fake.reply('{"city": "Paris"}')
    with bc.task("parse") as t:
        parsed = client.chat.completions.parse(model="gpt-4o", messages=chat("Where?"), response_format=City)
    assert parsed.choices[0].message.parsed == City(city="Paris")
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


async def test_async_chat_parse(fake: FakeOpenAI, aclient: bc.AsyncOpenAI) -> None:
    fake.reply('{"city": "Oslo"}')
    async with bc.task("parse") as t:
        parsed = await aclient.chat.completions.parse(
            model="gpt-4o", messages=chat("Where?"), response_format=City
        )
    assert parsed.choices[0].message.parsed == City(city="Oslo")
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


# -- responses -----------------------------------------------------------------------------------


def test_responses_create_stream_and_parse(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    fake.reply("Thirty days.", "Ninety days.", '{"city": "Rome"}')
    with bc.task("responses") as t:
        created = client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Refund window?")
        with client.responses.stream(
            model="gpt-5.6-terra", instructions=SYSTEM, input="Gift cards?"
        ) as stream:
            for _ in stream:
                pass
            streamed = stream.get_final_response()
        # a text.format added by parse() reads a cache entry of its own: another conversation, not drift
        parsed = client.responses.parse(
            model="gpt-5.6-terra", instructions=SYSTEM, input="Where?", text_format=City
        )
    assert created.output_text == "Thirty days."
    assert streamed.output_text == "Ninety days."
    assert parsed.output_parsed == City(city="Rome")
    usage, cost = expected(fake, "gpt-5.6-terra")
    assert usage.cache_write_tokens > 0 and usage.cache_read_tokens > 0
    assert (t.usage, t.cost, t.calls) == (usage, cost, 3)
    assert [r.response_id for r in t.records] == [created.id, streamed.id, parsed.id]


async def test_async_responses_create_stream_and_parse(fake: FakeOpenAI, aclient: bc.AsyncOpenAI) -> None:
    fake.reply("Thirty days.", "Ninety days.", '{"city": "Rome"}')
    async with bc.task("responses") as t:
        await aclient.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Refund window?")
        async with aclient.responses.stream(
            model="gpt-5.6-terra", instructions=SYSTEM, input="Gift?"
        ) as stream:
            async for _ in stream:
                pass
        parsed = await aclient.responses.parse(
            model="gpt-5.6-terra", instructions=SYSTEM, input="Where?", text_format=City
        )
    assert parsed.output_parsed == City(city="Rome")
    assert [r.drift for r in t.records] == [None, None, None]
    assert t.records[2].conversation != t.records[0].conversation == t.records[1].conversation
    usage, cost = expected(fake, "gpt-5.6-terra")
    assert (t.usage, t.cost, t.calls) == (usage, cost, 3)


def test_responses_create_stream_true(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    with bc.task("responses") as t:
        events = list(client.responses.create(model="gpt-4o", input="Hello there", stream=True))
    assert events[-1].type == "response.completed"
    assert usage_of(events[-1].response.usage.model_dump()) == t.usage  # type: ignore[union-attr]
    assert t.cost == cost_of(t.usage, "gpt-4o")


# -- raw and streaming responses -----------------------------------------------------------------


def test_with_raw_response(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    with bc.task("raw") as t:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=chat("Hi"))
        completion = raw.parse()
        raw_r = client.responses.with_raw_response.create(model="gpt-4o", input="Hi")
        response = raw_r.parse()
    assert completion.usage is not None and response.usage is not None
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)


def test_with_streaming_response_hides_the_usage_chunk_from_raw_lines(
    fake: FakeOpenAI, client: bc.OpenAI
) -> None:
    with bc.task("raw") as t:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=chat("Hi"), stream=True
        ) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: {")]
        with client.responses.with_streaming_response.create(model="gpt-4o", input="Hi") as response:
            body = json.loads(response.read())
    chunks = [json.loads(line[len("data: ") :]) for line in lines]
    assert chunks and all(chunk["choices"] for chunk in chunks)  # no usage-only chunk reaches the caller
    assert body["usage"]["input_tokens"] > 0
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)


async def test_async_raw_and_streaming_responses(fake: FakeOpenAI, aclient: bc.AsyncOpenAI) -> None:
    async with bc.task("raw") as t:
        raw = await aclient.chat.completions.with_raw_response.create(model="gpt-4o", messages=chat("Hi"))
        raw.parse()
        async with aclient.responses.with_streaming_response.create(
            model="gpt-4o", input="Hi", stream=True
        ) as response:
            lines = [line async for line in response.iter_lines()]
    assert any("response.completed" in line for line in lines)
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)


# -- copies, options and wrap --------------------------------------------------------------------


def test_with_options_and_copy_stay_metered(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    copy = client.with_options(timeout=5, max_retries=0)
    assert type(copy) is bc.OpenAI and isinstance(copy, openai.OpenAI)
    with bc.task("copies") as t:
        copy.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
        client.copy(default_headers={"x-team": "a"}).responses.create(model="gpt-4o", input="Hi")
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)
    assert fake.requests[1].headers["x-team"] == "a"


def test_client_options_are_validated_and_kept_by_copies(fake: FakeOpenAI) -> None:
    with pytest.raises(bc.ConfigurationError, match="cache='sometimes'"):
        bc.OpenAI(api_key="sk-test", cache="sometimes")
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), cache="off", drift="raise")
    assert client.with_options(timeout=3).budget_options == bc.ClientOptions(cache="off", drift="raise")


def test_wrap_returns_same_class_and_leaves_the_original_untouched(fake: FakeOpenAI) -> None:
    original = openai.OpenAI(api_key="sk-test", http_client=fake.http_client())
    wrapped = bc.wrap(original, drift="off")
    assert type(wrapped) is openai.OpenAI and wrapped is not original
    with bc.task("wrap") as t:
        original.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
        assert t.calls == 0  # the original is not instrumented
        assert "prompt_cache_key" not in fake.requests[0].body
        wrapped.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
        wrapped.with_options(timeout=9).chat.completions.create(model="gpt-4o", messages=chat("Again"))
    assert t.calls == 2
    assert t.usage == sum((usage_of(u) for u in fake.usages[1:]), bc.Usage())


async def test_wrap_async_client(fake: FakeOpenAI) -> None:
    original = openai.AsyncOpenAI(api_key="sk-test", http_client=fake.async_http_client())
    wrapped = bc.wrap(original)
    assert type(wrapped) is openai.AsyncOpenAI
    async with bc.task("wrap") as t:
        stream = await wrapped.chat.completions.create(model="gpt-4o", messages=chat("Hi"), stream=True)
        async for chunk in stream:
            assert chunk.choices
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


def test_wrap_azure_clients(fake: FakeOpenAI) -> None:
    azure = openai.AzureOpenAI(
        api_key="azure-key",
        api_version="2026-10-01",
        azure_endpoint="https://example-resource.openai.azure.com",
        http_client=fake.http_client(),
    )
    wrapped = bc.wrap(azure)
    assert type(wrapped) is openai.AzureOpenAI
    with bc.task("azure") as t:
        wrapped.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert fake.requests[0].path == "/openai/deployments/gpt-4o/chat/completions"
    assert fake.requests[0].headers["api-key"] == "azure-key"
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


async def test_wrap_async_azure_client(fake: FakeOpenAI) -> None:
    azure = openai.AsyncAzureOpenAI(
        api_key="azure-key",
        api_version="2026-10-01",
        azure_endpoint="https://example-resource.openai.azure.com",
        http_client=fake.async_http_client(),
    )
    wrapped = bc.wrap(azure)
    assert type(wrapped) is openai.AsyncAzureOpenAI
    async with bc.task("azure") as t:
        await wrapped.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


def test_wrap_of_an_instrumented_client_does_not_meter_twice(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    again = wrap_openai(client, bc.ClientOptions(cache="off"))
    with bc.task("twice") as t:
        again.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert t.calls == 1
    assert "prompt_cache_key" not in fake.requests[0].body  # the new options apply


def test_calls_outside_a_task_are_still_metered(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    records: list[bc.CallRecord] = []
    remove = add_call_hook(records.append)
    try:
        client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    finally:
        remove()
    assert len(records) == 1 and records[0].task_id is None
    assert records[0].usage == usage_of(fake.usages[0])


# -- failures ------------------------------------------------------------------------------------


def test_retried_attempts_are_recorded_as_errors(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    fake.fail_next(500, count=2)
    with bc.task("retry") as t:
        client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert [(r.status, r.http_status, r.attempt) for r in t.records] == [
        ("error", 500, 0),
        ("error", 500, 1),
        ("ok", 200, 2),
    ]
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


async def test_client_error_is_recorded_and_raised_unchanged(
    fake: FakeOpenAI, aclient: bc.AsyncOpenAI
) -> None:
    fake.fail_next(400, message="bad request")
    async with bc.task("bad") as t:
        with pytest.raises(openai.BadRequestError):
            await aclient.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert [(r.status, r.http_status) for r in t.records] == [("error", 400)]
    assert t.usage == bc.Usage()


def test_stream_cut_midway_is_recorded_incomplete(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    raw_fake = FakeOpenAI()  # the same wire, for the raw SDK
    raw = openai.OpenAI(api_key="sk-test", http_client=raw_fake.http_client())
    for each in (raw_fake, fake):
        each.cut_next_stream(after_events=2)

    def create(c: Any) -> Any:
        return c.chat.completions.create(model="gpt-4o", messages=chat("Hi"), stream=True)

    expected = drain(lambda: create(raw))
    with bc.task("cut") as t:
        got = drain(lambda: create(client))
    assert isinstance(expected.transport_error, httpx2.ReadError)
    assert_same_outcome(got, expected)  # what the installed SDK raises, after the same chunks
    assert all(chunk.choices for chunk in got.items)
    assert [(r.status, r.error) for r in t.records] == [("incomplete", "ReadError")]
    assert t.usage == bc.Usage(requests=1)  # nothing was reported before the cut


async def test_responses_stream_cut_midway_is_recorded_incomplete(
    fake: FakeOpenAI, aclient: bc.AsyncOpenAI
) -> None:
    raw_fake = FakeOpenAI()  # the same wire, for the raw SDK
    raw = openai.AsyncOpenAI(api_key="sk-test", http_client=raw_fake.async_http_client())
    for each in (raw_fake, fake):
        each.cut_next_stream(after_events=3)

    async def events(c: Any) -> Any:
        async with c.responses.stream(model="gpt-4o", input="Hi") as stream:
            async for event in stream:
                yield event

    expected = await adrain(lambda: events(raw))
    async with bc.task("cut") as t:
        got = await adrain(lambda: events(aclient))
    assert isinstance(expected.transport_error, httpx2.ReadError)
    assert_same_outcome(got, expected, contents=False)  # the response echoes our prompt_cache_key
    assert [r.status for r in t.records] == ["incomplete"]


def test_stream_closed_early_by_the_caller_is_incomplete(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    fake.reply("one two three four five six seven eight nine ten")
    with bc.task("early") as t:
        stream = client.chat.completions.create(model="gpt-4o", messages=chat("Count"), stream=True)
        next(iter(stream))
        stream.close()
    assert [r.status for r in t.records] == ["incomplete"]


def test_metering_fault_never_breaks_the_call(
    fake: FakeOpenAI, client: bc.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("price table on fire")

    monkeypatch.setattr(pricing, "price_call", broken)
    with bc.task("fault") as t:
        completion = client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert completion.choices[0].message.content
    assert t.records[0].cost is None and t.usage == usage_of(fake.usages[0])

    with monkeypatch.context() as patch:
        patch.setattr(_openai_meter, "usage_from_chat", broken)
        with bc.task("fault"):
            pieces = [
                c.choices[0].delta.content
                for c in client.chat.completions.create(model="gpt-4o", messages=chat("Hi"), stream=True)
            ]
    assert "".join(p or "" for p in pieces)

    monkeypatch.setattr(_openai_meter, "prepare_request", broken)
    with bc.task("fault") as t:
        client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert t.calls == 1 and "prompt_cache_key" not in fake.requests[-1].body


def test_budget_exceeded_before_sending(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    with pytest.raises(bc.BudgetExceeded), bc.task("tiny", budget_usd="0.000001"):
        client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert fake.requests == []


# -- respx ---------------------------------------------------------------------------------------


def test_respx_mocked_wire(respx_mock_sdk: respx.MockRouter) -> None:
    import httpx  # respx hands side effects httpx (v1) requests and wants httpx responses back

    fake = FakeOpenAI()

    def answer(request: httpx.Request) -> httpx.Response:
        reply = fake.handler(
            httpx2.Request(
                request.method, str(request.url), headers=request.headers.raw, content=request.content
            )
        )
        return httpx.Response(reply.status_code, headers=reply.headers.raw, content=reply.read())

    respx_mock_sdk.post("https://api.openai.com/v1/chat/completions").mock(side_effect=answer)
    respx_mock_sdk.post("https://api.openai.com/v1/responses").mock(side_effect=answer)
    client = bc.OpenAI(api_key="sk-test")  # the SDK's own default http client
    with bc.task("respx") as t:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=chat("Hi"), stream=True):
            assert chunk.choices
        client.responses.create(model="gpt-4o", input="Hi")
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)


def test_types_are_the_sdks(fake: FakeOpenAI, client: bc.OpenAI) -> None:
    assert isinstance(client, openai.OpenAI)
    assert isinstance(bc.AsyncOpenAI(api_key="sk-test"), openai.AsyncOpenAI)
    raw = openai.OpenAI(api_key="sk-test", http_client=fake.http_client())
    assert isinstance(client._client, type(raw._client))  # what the SDK keeps for the same argument


def test_gzipped_stream_is_decoded_filtered_and_metered(fake: FakeOpenAI) -> None:
    def gzipping(request: httpx2.Request) -> httpx2.Response:
        answer = fake.handler(request)
        body = gzip.compress(answer.read())
        headers = [(k, v) for k, v in answer.headers.items() if k.lower() != "content-length"]
        return httpx2.Response(
            answer.status_code,
            headers=[*headers, ("content-encoding", "gzip")],
            stream=ChunkStream([body[:20], body[20:]]),
        )

    client = bc.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(gzipping)))
    fake.reply("Packed and shipped.")
    with bc.task("gzip") as t:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-4o", messages=chat("Status?"), stream=True)
        )
    assert text == "Packed and shipped."
    usage, cost = expected(fake, "gpt-4o")
    assert (t.usage, t.cost) == (usage, cost)


def test_background_response_is_billed_once_to_the_task_that_created_it(
    fake: FakeOpenAI, client: bc.OpenAI
) -> None:
    fake.background_polls = 2
    with bc.task("background") as t:
        queued = client.responses.create(model="gpt-4o", input="Summarise the quarter.", background=True)
    assert queued.status == "queued" and t.usage == bc.Usage()
    statuses = []
    for _ in range(4):  # polled later, outside the task, as job runners do
        statuses.append(client.responses.retrieve(queued.id).status)
    assert statuses == ["in_progress", "in_progress", "completed", "completed"]
    usage, cost = expected(fake, "gpt-4o")
    assert usage.input_tokens > 0
    assert (t.usage, t.cost, t.calls) == (usage, cost, 2)  # the queued create, then the finished response


def test_with_options_given_a_new_http_client_keeps_metering(fake: FakeOpenAI) -> None:
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), drift="off")
    proxied = client.with_options(http_client=FakeOpenAI().http_client())
    assert proxied.budget_options == bc.ClientOptions(drift="off")
    with bc.task("proxied") as t:
        proxied.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert t.calls == 1


async def test_concurrent_tasks_each_get_exactly_their_own_usage(
    fake: FakeOpenAI, aclient: bc.AsyncOpenAI
) -> None:
    async def ticket(n: int) -> tuple[bc.Task, str]:
        async with bc.task(f"ticket-{n}") as t:
            question = "word " * n + "?"
            stream = await aclient.chat.completions.create(
                model="gpt-4o", messages=chat(question), stream=True
            )
            async for chunk in stream:
                assert chunk.choices
        return t, question

    results = await asyncio.gather(*(ticket(n) for n in range(1, 31)))
    by_question = {r.body["messages"][1]["content"]: r.usage for r in fake.requests}
    for t, question in results:
        assert t.usage == usage_of(by_question[question])
        assert t.calls == 1


def test_the_callers_http_client_settings_still_apply(fake: FakeOpenAI) -> None:
    seen: list[str] = []
    http = httpx2.Client(
        transport=fake.transport(),
        event_hooks={"request": [lambda request: seen.append(request.url.path)]},
        headers={"x-proxy-auth": "secret"},
    )
    client = bc.OpenAI(api_key="sk-test", http_client=http)
    with bc.task("hooks") as t:
        client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert seen == ["/v1/chat/completions"]
    assert fake.requests[0].headers["x-proxy-auth"] == "secret"
    assert t.calls == 1
    client.close()
    assert http.is_closed and client.is_closed()


def test_a_fault_tapping_the_response_keeps_the_call_and_its_record(
    fake: FakeOpenAI, client: bc.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tap on fire")

    monkeypatch.setattr(_openai_meter, "tap_response", broken)
    # a body the SDK has read already
    monkeypatch.setattr(_openai_meter.OpenAIMeter, "_record_read", broken)
    with bc.task("fault", budget_usd=1) as t:
        completion = client.chat.completions.create(model="gpt-4o", messages=chat("Hi"))
    assert completion.choices[0].message.content == "ok: Hi"
    (record,) = t.records  # recorded once, flagged, and the hold released
    assert record.status == "incomplete" and t.spent_usd == 0


@pytest.mark.parametrize("reported_model", ["gpt-4o-2024-08-06", "gpt-4o", "not-a-gpt"])
def test_the_estimate_is_calibrated_by_what_openai_counted(reported_model: str) -> None:
    # with the record (off the call path) when the reported model is of the requested family,
    # else at once by the requested model: the same calibration either way
    from budgetclient.estimate import estimate_request
    from budgetclient.tokens import calibration_factor, reset_calibration

    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": reported_model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1234, "completion_tokens": 5, "total_tokens": 1239},
        }
        return httpx2.Response(200, json=body)

    reset_calibration()
    client = bc.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with bc.task("calibrated", budget_usd=10):
        client.chat.completions.create(model="gpt-4o", messages=chat("Hi " * 200))
    bc.flush()
    raw = estimate_request("openai", sent[0], "gpt-4o").raw_tokens
    assert calibration_factor("openai", "gpt-4o") == pytest.approx(1234 / raw)
    reset_calibration()
