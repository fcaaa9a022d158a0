"""bc.instrument(): SDK clients built anywhere after the call behave as bc.wrap(client) would.

The client classes are imported at the top, before instrument() runs, as a framework's would be:
rebinding module attributes would miss them. Costs are computed here from the fakes' own usage
fields and published rates (`_fake_costs`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic import Anthropic, AsyncAnthropic
from google import genai
from google.genai import types as gtypes
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.providers import _hooks, _instrument
from budgetclient.providers.anthropic import BudgetMiddleware
from budgetclient.providers.google import meter_of
from budgetclient.testing import FakeAnthropic, FakeGemini, FakeOpenAI, FakeReply

from ._fake_costs import CLAUDE, GEMINI, GPT, anthropic_cost, gemini_cost, openai_cost, total

SYSTEM = "You are a careful weather assistant. Answer in one sentence. " * 200  # > 1,024 tokens
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
SDK_SIGNATURE = inspect.signature(Anthropic)
SDK_INITS = {
    cls: cls.__dict__["__init__"] for cls in (Anthropic, AsyncAnthropic, openai.OpenAI, genai.Client)
}


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    bc.uninstrument()


def budget_middlewares(client: Any) -> list[Any]:
    return [m for m in client._middleware if isinstance(m, BudgetMiddleware)]


def messages_usages(fake: FakeAnthropic) -> list[dict[str, Any]]:
    return [r.usage for r in fake.requests if r.path.endswith("/v1/messages") and r.usage is not None]


def test_a_client_class_imported_before_instrument_is_metered_and_cached() -> None:
    fake = FakeAnthropic()
    bc.instrument()
    client = Anthropic(api_key="test", http_client=fake.http_client())
    assert type(client) is Anthropic  # the SDK's own class, as the framework asked for
    with bc.task("imported-before") as t:
        for question in ("Paris?", "Rome?"):
            client.messages.create(
                model=CLAUDE, max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": question}]
            )
    usages = messages_usages(fake)
    assert t.calls == 2 and t.cost == total(anthropic_cost(u) for u in usages)
    assert usages[1]["cache_read_input_tokens"] > 0  # breakpoints were placed: the prefix was reused
    assert t.usage.cache_read_tokens == usages[1]["cache_read_input_tokens"]


async def test_an_async_tool_loop_on_scripted_tool_use_is_metered_every_hop() -> None:
    fake = FakeAnthropic(
        replies=[FakeReply(tool_calls=(("get_weather", {"city": "Paris"}),)), "Sunny in Paris."]
    )
    bc.instrument()
    client = AsyncAnthropic(api_key="test", http_client=fake.async_http_client())
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    async with bc.task("tool-loop") as t:
        while True:
            reply = await client.messages.create(
                model=CLAUDE, max_tokens=256, system=SYSTEM, tools=[WEATHER_TOOL], messages=messages
            )
            messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
            if reply.stop_reason != "tool_use":
                break
            results = [
                {"type": "tool_result", "tool_use_id": b.id, "content": f"18C in {b.input['city']}"}
                for b in reply.content
                if b.type == "tool_use"
            ]
            messages.append({"role": "user", "content": results})
    assert reply.content[0].text == "Sunny in Paris."
    usages = messages_usages(fake)
    assert len(usages) == 2 and t.calls == 2
    assert t.cost == total(anthropic_cost(u) for u in usages)


def test_streamed_tool_use_arrives_whole() -> None:
    fake = FakeAnthropic(
        replies=[FakeReply(text="Checking.", tool_calls=(("get_weather", {"city": "Oslo"}),))]
    )
    bc.instrument()
    client = Anthropic(api_key="test", http_client=fake.http_client())
    with (
        bc.task("stream") as t,
        client.messages.stream(
            model=CLAUDE, max_tokens=64, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "Oslo?"}]
        ) as stream,
    ):
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None),
        ("tool_use", {"city": "Oslo"}),
    ]
    assert t.cost == total(anthropic_cost(u) for u in messages_usages(fake))


async def test_openai_sync_async_and_azure_clients_are_metered() -> None:
    fake = FakeOpenAI()
    bc.instrument()
    clients = [
        openai.OpenAI(api_key="test", http_client=fake.http_client()),
        openai.AzureOpenAI(
            api_key="test",
            api_version="2026-01-01",
            azure_endpoint="https://x",
            http_client=fake.http_client(),
        ),
    ]
    aclient = openai.AsyncOpenAI(api_key="test", http_client=fake.async_http_client())
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
    with bc.task("openai") as t:
        for client in clients:
            client.chat.completions.create(model=GPT, messages=chat)  # type: ignore[arg-type]
        await aclient.chat.completions.create(model=GPT, messages=chat)  # type: ignore[arg-type]
    assert t.calls == 3 and t.cost == total(openai_cost(u) for u in fake.usages)


async def test_genai_clients_and_aio_are_metered() -> None:
    fake = FakeGemini()
    bc.instrument()
    client = genai.Client(
        api_key="test-key",
        http_options=gtypes.HttpOptions(
            client_args={"transport": fake.transport()}, async_client_args={"transport": fake.transport()}
        ),
    )
    with bc.task("gemini") as t:
        client.models.generate_content(model=GEMINI, contents="Hello")
    async with bc.task("gemini-aio") as at:
        await client.aio.models.generate_content(model=GEMINI, contents="Hello again")
    first, second = (g.usage_metadata for g in fake.generations)
    assert (t.cost, at.cost) == (gemini_cost(first), gemini_cost(second))
    assert meter_of(client).options == bc.ClientOptions()


def test_budgetclient_clients_and_copies_are_not_wrapped_twice() -> None:
    fake = FakeAnthropic()
    bc.instrument(cache="off")
    ours = bc.Anthropic(api_key="test", http_client=fake.http_client())
    assert len(budget_middlewares(ours)) == 1 and ours.budget_options == bc.ClientOptions()
    plain = Anthropic(api_key="test", http_client=fake.http_client())
    copied = plain.with_options(max_retries=1)
    assert [len(budget_middlewares(c)) for c in (plain, copied)] == [1, 1]
    assert budget_middlewares(copied)[0] is budget_middlewares(plain)[0]  # the same conversations
    wrapped = bc.wrap(plain)
    assert len(budget_middlewares(wrapped)) == 1
    oai = bc.OpenAI(api_key="test", http_client=FakeOpenAI().http_client(), drift="off")
    assert oai.budget_options == bc.ClientOptions(drift="off")
    with bc.task("once") as t:
        copied.messages.create(model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert t.calls == 1 and t.cost == anthropic_cost(messages_usages(fake)[0])


def test_instrument_is_idempotent_and_takes_wrap_options() -> None:
    bc.instrument()
    bc.instrument(cache_ttl="1h", drift="off")
    assert _instrument.instrumented_options() == bc.ClientOptions(cache_ttl="1h", drift="off")
    client = Anthropic(api_key="test")
    (middleware,) = budget_middlewares(client)
    assert middleware.options == bc.ClientOptions(cache_ttl="1h", drift="off")
    oai = openai.OpenAI(api_key="test")
    assert oai._client.meter.options == bc.ClientOptions(cache_ttl="1h", drift="off")
    with pytest.raises(TypeError, match="unknown budgetclient option"):
        bc.instrument(cache_size=3)


def test_uninstrument_restores_the_sdk_classes() -> None:
    bc.instrument()
    assert Anthropic.__dict__["__init__"] is not SDK_INITS[Anthropic]
    assert inspect.signature(Anthropic) == SDK_SIGNATURE  # IDEs see the SDK's
    bc.uninstrument()
    assert {cls: cls.__dict__["__init__"] for cls in SDK_INITS} == SDK_INITS
    assert budget_middlewares(Anthropic(api_key="test")) == []
    assert type(openai.OpenAI(api_key="test")._client).__module__.startswith("openai")
    bc.uninstrument()  # twice is harmless
    bc.instrument()
    assert len(budget_middlewares(Anthropic(api_key="test"))) == 1


def test_a_budget_refuses_the_call_before_it_is_sent() -> None:
    fake = FakeAnthropic()
    bc.instrument()
    client = Anthropic(api_key="test", http_client=fake.http_client())
    with pytest.raises(bc.BudgetExceeded), bc.task("capped", budget_usd=0.000001):
        client.messages.create(model=CLAUDE, max_tokens=4096, messages=[{"role": "user", "content": "x"}])
    assert messages_usages(fake) == []


# -- contract: the SDK privates instrument() relies on -----------------------------------------


def test_contract_sdk_hooks_instrument_uses() -> None:
    """If this fails, an SDK release moved what `_instrument` touches (it then builds clients
    unmetered and logs one ``sdk.hook_unavailable``): update `_instrument`."""
    assert "middleware" in inspect.signature(Anthropic).parameters
    assert (
        "__init__" in vars(Anthropic)
        and "__init__" in vars(openai.OpenAI)
        and "__init__" in vars(genai.Client)
    )
    client = openai.OpenAI(api_key="test")
    assert hasattr(
        client, _instrument._OPENAI_HTTP_CLIENT
    )  # openai: the HTTP client, swapped for a metered one
    assert "_api_client" in vars(genai.Client(api_key="test-key"))  # google-genai: the API client
    assert openai.AzureOpenAI.__mro__[1:].count(openai.OpenAI) == 1  # Azure reaches OpenAI.__init__


def test_a_missing_openai_hook_builds_a_working_unmetered_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_hooks, "_warned", set())
    monkeypatch.setattr(_instrument, "_OPENAI_HTTP_CLIENT", "_http_client_renamed")
    fake = FakeOpenAI()
    bc.instrument()
    with capture_logs() as logs, bc.task("unmetered") as t:
        client = openai.OpenAI(api_key="test", http_client=fake.http_client())
        openai.OpenAI(api_key="test", http_client=fake.http_client())
        reply = client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content and len(fake.usages) == 1
    assert t.calls == 0  # sent as the SDK would, not metered
    warnings = [e for e in logs if e["event"] == "sdk.hook_unavailable"]
    assert len(warnings) == 1 and warnings[0]["provider"] == "openai"


def test_platform_clients_are_instrumented_without_diagnostics() -> None:
    bc.instrument()
    bedrock = anthropic.AnthropicBedrock(
        aws_access_key="AKIA", aws_secret_key="secret", aws_region="us-east-1"
    )
    (middleware,) = budget_middlewares(bedrock)
    assert middleware.diagnostics is False  # Bedrock strips unknown body fields, as with wrap()


def test_uninstrument_keeps_a_wrapper_another_instrumentor_put_on_top() -> None:
    bc.instrument()
    ours = Anthropic.__dict__["__init__"]
    calls: list[str] = []

    def theirs(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append("theirs")
        ours(self, *args, **kwargs)

    Anthropic.__init__ = theirs  # type: ignore[method-assign]
    try:
        bc.uninstrument()
        assert Anthropic.__dict__["__init__"] is theirs
        client = Anthropic(api_key="test")
        assert calls == ["theirs"] and budget_middlewares(client) == []  # ours passes calls through
        bc.instrument()
        assert len(budget_middlewares(Anthropic(api_key="test"))) == 1  # once, not twice
    finally:
        bc.uninstrument()
        Anthropic.__init__ = SDK_INITS[Anthropic]  # type: ignore[method-assign]


def test_the_sdk_tool_runner_runs_offline_on_scripted_tool_use() -> None:
    fake = FakeAnthropic(replies=[FakeReply(tool_calls=(("get_weather", {"city": "Paris"}),)), "Sunny."])
    bc.instrument()
    client = Anthropic(api_key="test", http_client=fake.http_client())

    @anthropic.beta_tool
    def get_weather(city: str) -> str:
        """Current weather for a city.

        Args:
            city: the city's name
        """
        return f"18C in {city}"

    with bc.task("tool-runner") as t:
        runner = client.beta.messages.tool_runner(
            model=CLAUDE,
            max_tokens=100,
            tools=[get_weather],
            messages=[{"role": "user", "content": "Paris?"}],
        )
        stops = [message.stop_reason for message in runner]
    assert stops == ["tool_use", "end_turn"]
    sent = fake.requests[1].body or {}
    assert sent["messages"][-1]["content"][0]["content"] == "18C in Paris"  # the tool really ran
    assert t.calls == 2 and t.cost == total(anthropic_cost(u) for u in messages_usages(fake))
