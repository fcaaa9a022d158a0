"""bc.GenAIClient over a mocked wire: every call path, sync and async, usage and cost exact.

The real google-genai SDK talks to ``budgetclient.testing.fake_gemini`` through an httpx2
MockTransport. Expected figures are computed here from the usage fields the fake put on the wire
and the published Gemini 2.5 Flash rates, never read back from budgetclient.
"""

from __future__ import annotations

import types as pytypes
import warnings
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import _api_client, errors
from google.genai import types as gtypes

import budgetclient as bc
from budgetclient.ledger import open_ledger
from budgetclient.providers import _google_meter
from budgetclient.providers import google as google_provider
from budgetclient.providers._google_cache import ManagedCaches
from budgetclient.testing.fake_gemini import FakeGemini

from .._sdk import assert_same_outcome, drain

MODEL = "gemini-2.5-flash"
MTOK = Decimal(1_000_000)
# Published Gemini 2.5 Flash rates, USD per million tokens (ai.google.dev/gemini-api/docs/pricing).
INPUT, CACHED, OUTPUT = Decimal("0.30"), Decimal("0.03"), Decimal("2.50")
API_KEY = "AIza-test-key-0123456789"
SYSTEM = " ".join(f"policy{i}" for i in range(300))  # well under the caching minimum


def cost_of(meta: dict[str, Any]) -> Decimal:
    """Cost of one request from Gemini's own usage fields."""
    prompt = meta["promptTokenCount"] + meta.get("toolUsePromptTokenCount", 0)
    cached = meta.get("cachedContentTokenCount", 0)
    output = meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0)
    return ((prompt - cached) * INPUT + cached * CACHED + output * OUTPUT) / MTOK


def usage_of(meta: dict[str, Any]) -> bc.Usage:
    thoughts = meta.get("thoughtsTokenCount", 0)
    return bc.Usage(
        input_tokens=meta["promptTokenCount"] + meta.get("toolUsePromptTokenCount", 0),
        cache_read_tokens=meta.get("cachedContentTokenCount", 0),
        output_tokens=meta["candidatesTokenCount"] + thoughts,
        reasoning_tokens=thoughts,
        requests=1,
    )


def http_options(fake: FakeGemini) -> gtypes.HttpOptions:
    return gtypes.HttpOptions(
        client_args={"transport": fake.transport()}, async_client_args={"transport": fake.transport()}
    )


def client(fake: FakeGemini, **options: Any) -> bc.GenAIClient:
    return bc.GenAIClient(api_key=API_KEY, http_options=http_options(fake), **options)


def config(**kw: Any) -> gtypes.GenerateContentConfig:
    return gtypes.GenerateContentConfig(system_instruction=SYSTEM, **kw)


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


# -- construction ------------------------------------------------------------------------------------


def test_is_a_genai_client_with_aio_and_options() -> None:
    c = client(FakeGemini(), cache="off", drift="raise")
    assert isinstance(c, genai.Client)
    assert isinstance(c.aio, genai.client.AsyncClient)
    assert c.aio._api_client is c._api_client
    assert c.budget_options == bc.ClientOptions(cache="off", drift="raise")


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cache_tll"):
        bc.GenAIClient(api_key=API_KEY, cache_tll="1h")


# -- plain generate_content ----------------------------------------------------------------------------


def test_generate_content_normalises_thoughts_tool_use_and_cache() -> None:
    fake = FakeGemini(thoughts_tokens=40, tool_use_prompt_tokens=9, implicit_caching=False)
    c = client(fake)
    with bc.task("t") as t:
        response = c.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert isinstance(response, gtypes.GenerateContentResponse)
    assert response.text == fake.reply_text
    (log,) = fake.generations
    meta = log.usage_metadata
    assert t.usage == usage_of(meta)
    assert t.usage.output_tokens == meta["candidatesTokenCount"] + 40
    assert t.usage.reasoning_tokens == 40
    assert t.usage.input_tokens == meta["promptTokenCount"] + 9
    assert t.cost == cost_of(meta)
    (record,) = t.records
    assert (record.provider, record.model, record.status, record.http_status) == ("google", MODEL, "ok", 200)
    assert record.response_id is not None and not record.stream


def test_implicit_cache_hit_is_a_cache_read() -> None:
    fake = FakeGemini()  # implicit caching on: the second identical prefix hits
    big = " ".join(f"rule{i}" for i in range(3000))
    c = client(fake, cache="off")
    with bc.task("t") as t:
        for question in ("first?", "second?"):
            c.models.generate_content(
                model=MODEL, contents=question, config=gtypes.GenerateContentConfig(system_instruction=big)
            )
    first, second = (g.usage_metadata for g in fake.generations)
    assert "cachedContentTokenCount" not in first and second["cachedContentTokenCount"] > 1024
    assert t.usage == usage_of(first) + usage_of(second)
    assert t.usage.cache_read_tokens == second["cachedContentTokenCount"]
    assert t.cost == cost_of(first) + cost_of(second)


async def test_async_generate_content() -> None:
    fake = FakeGemini(thoughts_tokens=11)
    c = client(fake)
    async with bc.task("t") as t:
        response = await c.aio.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert response.text == fake.reply_text
    (log,) = fake.generations
    assert t.usage == usage_of(log.usage_metadata)
    assert t.cost == cost_of(log.usage_metadata)


# -- streams -----------------------------------------------------------------------------------------


def test_stream_takes_the_last_running_total() -> None:
    fake = FakeGemini(stream_chunks=4, thoughts_tokens=6)
    c = client(fake)
    with bc.task("t") as t:
        chunks = list(c.models.generate_content_stream(model=MODEL, contents="Hello", config=config()))
    assert "".join(ch.text or "" for ch in chunks) == fake.reply_text
    running = [ch.usage_metadata.candidates_token_count for ch in chunks if ch.usage_metadata]
    assert len(running) == 4 and running == sorted(running)
    (log,) = fake.generations
    final = log.usage_metadata
    assert t.usage == usage_of(final)  # the last chunk's totals...
    assert t.usage.output_tokens != sum(running) + 6 * len(running)  # ...never a sum of chunks
    assert t.cost == cost_of(final)
    (record,) = t.records
    assert record.stream and record.status == "ok"


async def test_async_stream_takes_the_last_running_total() -> None:
    fake = FakeGemini(stream_chunks=3)
    c = client(fake)
    async with bc.task("t") as t:
        texts = [
            ch.text
            async for ch in await c.aio.models.generate_content_stream(
                model=MODEL, contents="Hello", config=config()
            )
        ]
    assert "".join(x or "" for x in texts) == fake.reply_text
    (log,) = fake.generations
    assert t.usage == usage_of(log.usage_metadata)
    assert t.cost == cost_of(log.usage_metadata)


def test_stream_abandoned_early_is_recorded_incomplete() -> None:
    fake = FakeGemini(stream_chunks=4)
    c = client(fake)
    with bc.task("t") as t:
        stream = c.models.generate_content_stream(model=MODEL, contents="Hello", config=config())
        first = next(iter(stream))
        stream.close()
    assert first.text
    (record,) = t.records
    assert record.status == "incomplete"
    assert record.usage.input_tokens == fake.generations[0].usage_metadata["promptTokenCount"]


def test_stream_cut_by_the_network_records_what_was_reported() -> None:
    raw_fake, fake = FakeGemini(stream_chunks=4), FakeGemini(stream_chunks=4)  # the same wire twice
    raw_fake.cut_next_stream(after_events=2)
    fake.cut_next_stream(after_events=2)

    def stream(c: Any) -> Any:
        return c.models.generate_content_stream(model=MODEL, contents="Hello", config=config())

    raw, ours = genai.Client(api_key=API_KEY, http_options=http_options(raw_fake)), client(fake)
    expected = drain(lambda: stream(raw))
    with bc.task("t") as t:
        got = drain(lambda: stream(ours))
    assert isinstance(expected.transport_error, httpx2.ReadError)
    assert_same_outcome(got, expected)  # what the installed SDK raises, after the same chunks
    (record,) = t.records
    assert record.status == "incomplete" and record.stream
    meta = fake.generations[0].usage_metadata
    assert record.usage.input_tokens == meta["promptTokenCount"]
    assert 0 < record.usage.output_tokens < meta["candidatesTokenCount"]  # the running total reached


# -- automatic function calling --------------------------------------------------------------------------


def test_afc_two_hops_record_two_requests() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    with bc.task("t") as t:
        response = c.models.generate_content(
            model=MODEL, contents="Weather in Paris?", config=config(tools=[get_weather])
        )
    assert response.text == fake.reply_text
    hop1, hop2 = fake.generations
    assert hop1.function_call and not hop2.function_call
    # the SDK reports only the last hop...
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == hop2.usage_metadata["promptTokenCount"]
    # ...budgetclient meters both
    assert t.usage.requests == 2
    assert [r.usage for r in t.records] == [usage_of(hop1.usage_metadata), usage_of(hop2.usage_metadata)]
    assert t.cost == cost_of(hop1.usage_metadata) + cost_of(hop2.usage_metadata)


async def test_async_afc_two_hops_record_two_requests() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    async with bc.task("t") as t:
        await c.aio.models.generate_content(
            model=MODEL, contents="Weather in Paris?", config=config(tools=[get_weather])
        )
    hop1, hop2 = fake.generations
    assert t.usage == usage_of(hop1.usage_metadata) + usage_of(hop2.usage_metadata)
    assert t.usage.requests == 2
    assert t.cost == cost_of(hop1.usage_metadata) + cost_of(hop2.usage_metadata)


def test_chat_send_message_is_metered() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    with bc.task("t") as t:
        chat = c.chats.create(model=MODEL, config=config())
        chat.send_message("one")
        chat.send_message("two")
    assert t.usage == sum(usage_of(g.usage_metadata) for g in fake.generations)
    assert t.cost == sum(cost_of(g.usage_metadata) for g in fake.generations)


# -- aiohttp -----------------------------------------------------------------------------------------


def test_async_path_stays_on_httpx2_when_aiohttp_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With aiohttp importable the SDK sends async requests through aiohttp, past any httpx hook."""
    monkeypatch.setattr(_api_client, "has_aiohttp", True)
    plain = genai.Client(api_key=API_KEY)
    assert plain._api_client._use_aiohttp()  # what the SDK would do on its own
    c = bc.GenAIClient(api_key=API_KEY)
    assert not c._api_client._use_aiohttp()
    assert isinstance(c._api_client._async_httpx_client, httpx2.AsyncClient)


async def test_async_call_is_metered_when_aiohttp_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGemini()
    c = client(fake)
    monkeypatch.setattr(_api_client, "has_aiohttp", True)
    # a stand-in module: the SDK only touches aiohttp names on the aiohttp path, which is not taken
    monkeypatch.setattr(
        _api_client, "aiohttp", pytypes.SimpleNamespace(ClientResponse=type("R", (), {})), raising=False
    )
    async with bc.task("t") as t:
        await c.aio.models.generate_content(model=MODEL, contents="Hello", config=config())
    (log,) = fake.generations
    assert t.usage == usage_of(log.usage_metadata)


# -- wrap() ------------------------------------------------------------------------------------------


def test_wrap_returns_same_class_and_leaves_the_original_untouched() -> None:
    fake = FakeGemini()
    original = genai.Client(api_key=API_KEY, http_options=http_options(fake))
    sdk_http_class = type(original._api_client._httpx_client)
    wrapped = bc.wrap(original)
    assert type(wrapped) is genai.Client
    assert wrapped is not original and wrapped._api_client is not original._api_client
    assert type(original._api_client) is _api_client.BaseApiClient
    assert type(original._api_client._httpx_client) is sdk_http_class
    assert wrapped.models._api_client is wrapped._api_client
    assert wrapped.aio.models._api_client is wrapped._api_client
    with bc.task("t") as t:
        original.models.generate_content(model=MODEL, contents="unmetered", config=config())
        wrapped.models.generate_content(model=MODEL, contents="metered", config=config())
    assert t.usage == usage_of(fake.generations[1].usage_metadata)
    wrapped.close()
    original.models.generate_content(model=MODEL, contents="still works", config=config())


async def test_wrapped_aio_is_metered() -> None:
    fake = FakeGemini()
    wrapped = bc.wrap(genai.Client(api_key=API_KEY, http_options=http_options(fake)), cache="off")
    async with bc.task("t") as t:
        await wrapped.aio.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert t.usage == usage_of(fake.generations[0].usage_metadata)


def test_wrap_of_a_client_with_its_own_httpx_clients() -> None:
    fake = FakeGemini()
    own = httpx2.Client(transport=fake.transport())
    original = genai.Client(
        api_key=API_KEY,
        http_options=gtypes.HttpOptions(
            httpx_client=own, httpx_async_client=httpx2.AsyncClient(transport=fake.transport())
        ),
    )
    wrapped = bc.wrap(original)
    with bc.task("t") as t:
        wrapped.models.generate_content(model=MODEL, contents="Hello", config=config())
    wrapped.close()
    assert t.usage.requests == 1
    assert not own.is_closed  # the caller's client is the caller's to close


# -- failures ----------------------------------------------------------------------------------------


def test_api_error_is_raised_unchanged_and_recorded() -> None:
    fake = FakeGemini()
    fake.fail_next(503)
    c = client(fake)
    with bc.task("t") as t, pytest.raises(errors.ServerError):
        c.models.generate_content(model=MODEL, contents="Hello", config=config())
    (record,) = t.records
    assert (record.status, record.http_status, record.cost) == ("error", 503, Decimal(0))
    assert t.usage.requests == 0


def test_metering_faults_never_break_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGemini()
    c = client(fake)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("metering bug")

    monkeypatch.setattr(_google_meter, "usage_from_gemini", boom)
    with bc.task("t", budget_usd=1) as t:
        response = c.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert response.text == fake.reply_text
    (record,) = t.records  # kept, flagged, and the budget reservation released
    assert record.status == "incomplete" and t.spent_usd == Decimal(0)
    monkeypatch.setattr(ManagedCaches, "check_prefix", boom)
    response = c.models.generate_content(model=MODEL, contents="Hello again", config=config())
    assert response.text == fake.reply_text
    chunks = list(c.models.generate_content_stream(model=MODEL, contents="Hi", config=config()))
    assert "".join(ch.text or "" for ch in chunks) == fake.reply_text
    assert len(fake.generations) == 3


def test_pricing_fault_keeps_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGemini()
    c = client(fake)
    from budgetclient import pricing

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("price table broken")

    monkeypatch.setattr(pricing, "price_call", boom)
    with bc.task("t") as t:
        response = c.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert response.text == fake.reply_text
    assert t.usage == usage_of(fake.generations[0].usage_metadata)
    assert t.cost is None


def test_budget_exceeded_sends_nothing() -> None:
    fake = FakeGemini()
    c = client(fake)
    with bc.task("t", budget_usd="0.0000001") as t, pytest.raises(bc.BudgetExceeded):
        c.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert fake.requests == []
    assert t.calls == 0


def test_count_tokens_and_other_methods_pass_through_unmetered() -> None:
    fake = FakeGemini()
    c = client(fake)
    with bc.task("t") as t:
        counted = c.models.count_tokens(model=MODEL, contents="hello world")
    assert counted.total_tokens == 3
    assert t.calls == 0


def test_unknown_model_cost_none_tokens_kept() -> None:
    fake = FakeGemini()
    c = client(fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bc.task("t") as t:
            c.models.generate_content(model="gemini-future-9", contents="Hello")
    assert t.cost is None
    assert t.usage == usage_of(fake.generations[0].usage_metadata)
    assert any(isinstance(w.message, bc.UnknownPriceWarning) for w in caught)


def test_records_reach_the_ledger_without_prompt_text_or_key(ledger_url: str) -> None:
    fake = FakeGemini()
    c = client(fake)
    secret = "my secret prompt 98765"
    c.models.generate_content(model=MODEL, contents=secret, config=config())
    assert bc.flush(10)
    (record,) = open_ledger(ledger_url).read_calls()
    assert record.usage == usage_of(fake.generations[0].usage_metadata)
    assert record.task_id is None
    assert secret not in repr(record) and API_KEY not in repr(record)


# -- drift -------------------------------------------------------------------------------------------


def test_changed_system_instruction_is_reported_as_drift() -> None:
    fake = FakeGemini()
    c = client(fake)
    prefix = "You are a support agent. Today is "
    with bc.task("t") as t:
        c.models.generate_content(
            model=MODEL,
            contents="a",
            config=gtypes.GenerateContentConfig(system_instruction=prefix + "2026-01-01. Be brief."),
        )
        with pytest.warns(bc.PrefixDriftWarning) as caught:
            c.models.generate_content(
                model=MODEL,
                contents="b",
                config=gtypes.GenerateContentConfig(system_instruction=prefix + "2026-01-02. Be brief."),
            )
    drift = caught[0].message.drift  # type: ignore[union-attr]
    assert drift.segment == "systemInstruction.parts[0].text"
    assert drift.offset == len(prefix) + len("2026-01-0")
    assert drift.cause == "timestamp"
    assert t.records[1].drift == drift and t.records[0].drift is None


def _edited_get_weather() -> Any:
    def get_weather(city: str) -> str:
        """Tomorrow's forecast for a city."""
        return f"rain in {city}"

    return get_weather


get_forecast = _edited_get_weather()
"""The same tool (``get_weather``) with an edited description: drift, not another set of tools."""


def test_drift_raise_sends_nothing() -> None:
    fake = FakeGemini(call_functions=False)
    c = client(fake, drift="raise")
    c.models.generate_content(model=MODEL, contents="a", config=config(tools=[get_weather]))
    with pytest.raises(bc.PrefixDriftError) as info:
        c.models.generate_content(model=MODEL, contents="b", config=config(tools=[get_forecast]))
    assert info.value.drift.segment.startswith("tools[0].functionDeclarations[0].")
    with pytest.raises(bc.PrefixDriftError):  # refused, so still compared with what was sent last
        c.models.generate_content(model=MODEL, contents="b", config=config(tools=[get_forecast]))
    assert len(fake.generations) == 1


def test_appending_a_tool_is_not_drift() -> None:
    """What was sent before is still a prefix of what is sent now (the shared drift rule)."""
    fake = FakeGemini(call_functions=False)
    c = client(fake, drift="raise")
    c.models.generate_content(model=MODEL, contents="a", config=config())
    c.models.generate_content(model=MODEL, contents="b", config=config(tools=[get_weather]))
    assert len(fake.generations) == 2


def test_same_prefix_in_another_conversation_is_not_drift() -> None:
    fake = FakeGemini()
    c = client(fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bc.PrefixDriftWarning)
        with bc.task("a"):
            c.models.generate_content(model=MODEL, contents="a", config=config())
        with bc.task("b") as b:
            c.models.generate_content(
                model=MODEL, contents="b", config=gtypes.GenerateContentConfig(system_instruction="other")
            )
    assert not [w for w in caught if issubclass(w.category, bc.PrefixDriftWarning)]
    assert b.records[0].drift is None


def test_wrap_of_an_instrumented_client_applies_new_options() -> None:
    fake = FakeGemini()
    first = client(fake, drift="raise")
    # (bc.wrap dispatches on the SDK's module name, so it is called directly here)
    second = google_provider.wrap_genai(first, bc.ClientOptions(drift="off"))
    assert type(second) is bc.GenAIClient
    assert second.budget_options.drift == "off" and first.budget_options.drift == "raise"
    with bc.task("t") as t:
        second.models.generate_content(model=MODEL, contents="a", config=config())
        second.models.generate_content(model=MODEL, contents="b", config=config(tools=[get_weather]))
    assert t.usage.requests == 3  # one call, then two function-calling hops; no drift raised, metered once


def test_usage_normalisation_reads_sdk_snake_case_too() -> None:
    meta = {
        "prompt_token_count": 100,
        "cached_content_token_count": 40,
        "tool_use_prompt_token_count": 3,
        "candidates_token_count": 10,
        "thoughts_token_count": 5,
    }
    assert google_provider.usage_from_gemini(meta) == bc.Usage(
        input_tokens=103, cache_read_tokens=40, output_tokens=15, reasoning_tokens=5, requests=1
    )
    assert google_provider.usage_from_gemini(None) == bc.Usage(requests=1)


def test_a_fault_tapping_the_response_keeps_the_call_and_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGemini()
    c = client(fake)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tap bug")

    monkeypatch.setattr(_google_meter, "tap_response", boom)
    with bc.task("t", budget_usd=1) as t:
        response = c.models.generate_content(model=MODEL, contents="Hello", config=config())
    assert response.text == fake.reply_text
    (record,) = t.records  # recorded once, flagged, and the hold released
    assert record.status == "incomplete" and t.spent_usd == Decimal(0)


def test_implicit_cache_share_counts_the_prefix_split_as_the_full_read_does() -> None:
    from budgetclient.estimate import estimate_request
    from budgetclient.formats.google.prefix import PREFIX_FIELDS

    fake = FakeGemini()
    c = client(fake)
    history: list[Any] = []
    for turn in range(4):
        question = gtypes.Part(text=f"question {turn} " * (20 + turn))
        history.append(gtypes.Content(role="user", parts=[question]))
        c.models.generate_content(model=MODEL, contents=history, config=config())
        history.append(gtypes.Content(role="model", parts=[gtypes.Part(text=fake.reply_text)]))
    expected = 0
    for body, generation in list(zip(fake.bodies(":generateContent"), fake.generations, strict=True))[1:]:
        fields = {k: body[k] for k in PREFIX_FIELDS if k in body}
        prefix = estimate_request("google", fields, MODEL).raw_tokens
        rest = estimate_request("google", {"contents": body["contents"]}, MODEL).raw_tokens
        expected += max(round(generation.usage_metadata["promptTokenCount"] * prefix / (prefix + rest)), 1)
    (stats,) = c._api_client._httpx_client._meter.caches._stats.values()
    assert stats.seen == 4 and stats.implicit_prompt == expected
