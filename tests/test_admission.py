"""One admission step for every provider (`budgetclient.admission`).

A request stopped on any path (``drift="raise"``, an SDK or transport error, a cancel, an
interrupt, a stream abandoned) leaves no budget held, and ``configure(allocation_check=...)``
checks every provider's requests. Each case drives the real SDK client over a mocked wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from decimal import Decimal
from typing import Any, Literal

import httpx2
import pytest
from google.genai import types as gtypes
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.plan import GUIDE_ALLOCATION
from budgetclient.testing.fake_gemini import FakeGemini
from budgetclient.testing.fake_openai import FakeOpenAI

from ._held import held
from .providers.wire import Wire, anthropic_message, anthropic_usage, json_response

SYSTEM = "You are a careful assistant for the billing team. " * 60
EDITED = "You are a careless assistant for the billing team. " * 60
CLAUDE, GPT, GEMINI = "claude-sonnet-4-5", "gpt-4o", "gemini-2.5-flash"
BUDGET = Decimal(5)
Drift = Literal["off", "warn", "raise"]
Handler = Callable[[httpx2.Request], httpx2.Response]


def _refuse(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


def _anthropic(drift: Drift, handler: Handler | None = None) -> bc.Anthropic:
    usage = anthropic_usage(900, 20, read=0, write_5m=0)
    wire = Wire(default=lambda r: json_response(anthropic_message(usage)))
    transport = httpx2.MockTransport(handler or wire)
    return bc.Anthropic(
        api_key="sk-ant-test-key",
        base_url="http://anthropic.test",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
        drift=drift,
    )


def _openai(drift: Drift, handler: Handler | None = None) -> bc.OpenAI:
    http = httpx2.Client(transport=httpx2.MockTransport(handler)) if handler else FakeOpenAI().http_client()
    return bc.OpenAI(api_key="sk-test", http_client=http, max_retries=0, drift=drift)


def _gemini(drift: Drift, handler: Handler | None = None) -> bc.GenAIClient:
    transport = httpx2.MockTransport(handler) if handler else FakeGemini(call_functions=False).transport()
    options = gtypes.HttpOptions(
        client_args={"transport": transport}, async_client_args={"transport": transport}
    )
    return bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options, drift=drift)


def _call(provider: str, client: Any, system: str) -> Any:
    if provider == "anthropic":
        return client.messages.create(
            model=CLAUDE, max_tokens=10, system=system, messages=[{"role": "user", "content": "hi"}]
        )
    if provider == "openai":
        return client.chat.completions.create(
            model=GPT, messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
        )
    config = gtypes.GenerateContentConfig(system_instruction=system)
    return client.models.generate_content(model=GEMINI, contents="hi", config=config)


CLIENTS: dict[str, Callable[..., Any]] = {"anthropic": _anthropic, "openai": _openai, "google": _gemini}


@pytest.mark.parametrize("provider", sorted(CLIENTS))
def test_drift_raise_holds_no_budget(provider: str) -> None:
    client = CLIENTS[provider]("raise")
    with bc.task("drift", budget_usd=BUDGET) as t:
        _call(provider, client, SYSTEM)
        with pytest.raises(bc.PrefixDriftError):
            _call(provider, client, EDITED)
        assert held(t) == Decimal(0)
        _call(provider, client, SYSTEM)  # the budget still admits the unchanged prefix
    assert t.calls == 2 and held(t) == Decimal(0)


def _overloaded(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        529 if "anthropic" in request.url.host else 503, json={"error": {"message": "busy"}}
    )


@pytest.mark.parametrize("failure", [_refuse, _overloaded], ids=["transport-error", "error-status"])
@pytest.mark.parametrize("provider", sorted(CLIENTS))
def test_sdk_error_holds_no_budget(provider: str, failure: Handler) -> None:
    client = CLIENTS[provider]("raise", failure)
    with bc.task("down", budget_usd=BUDGET) as t:
        with pytest.raises(Exception) as raised:
            _call(provider, client, SYSTEM)
        assert not isinstance(raised.value, bc.BudgetClientError)  # the SDK's own error
        assert held(t) == Decimal(0)
    assert t.calls >= 1 and all(r.status == "error" for r in t.records)


def _async_client(provider: str, handler: Callable[[httpx2.Request], Any]) -> Any:
    transport = httpx2.MockTransport(handler)
    if provider == "anthropic":
        return bc.AsyncAnthropic(
            api_key="sk-ant-test-key",
            base_url="http://anthropic.test",
            http_client=httpx2.AsyncClient(transport=transport),
            max_retries=0,
        )
    if provider == "openai":
        return bc.AsyncOpenAI(
            api_key="sk-test", http_client=httpx2.AsyncClient(transport=transport), max_retries=0
        )
    options = gtypes.HttpOptions(async_client_args={"transport": transport})
    return bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options).aio


async def _acall(provider: str, client: Any) -> Any:
    if provider == "anthropic":
        return await client.messages.create(
            model=CLAUDE, max_tokens=10, system=SYSTEM, messages=[{"role": "user", "content": "hi"}]
        )
    if provider == "openai":
        return await client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": SYSTEM}])
    return await client.models.generate_content(model=GEMINI, contents=SYSTEM)


@pytest.mark.parametrize("provider", sorted(CLIENTS))
def test_cancelled_call_holds_no_budget_on_every_provider(provider: str) -> None:
    async def run() -> tuple[Decimal, Decimal, bc.Task]:
        started = asyncio.Event()

        async def hang(request: httpx2.Request) -> httpx2.Response:
            started.set()
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        client = _async_client(provider, hang)
        with bc.task("cancel", budget_usd=BUDGET) as t:
            job = asyncio.ensure_future(_acall(provider, client))
            await started.wait()
            before = held(t)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            return before, held(t), t

    before, after, t = asyncio.run(run())
    assert before > 0 and after == Decimal(0)
    (record,) = t.records
    assert (record.status, record.error) == ("incomplete", "CancelledError")


def test_abandoned_stream_holds_no_budget() -> None:
    client = _anthropic("warn")
    with bc.task("abandon", budget_usd=BUDGET) as t:
        stream = client.messages.create(
            model=CLAUDE,
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        assert held(t) > 0
        stream.close()  # never read
        assert held(t) == Decimal(0)
    assert t.calls == 1


LONG = "policy " * 9_000  # far beyond the guide's 15% of a 32k window for system and tools
WINDOW = 32_000


def _long_request(provider: str, client: Any) -> Any:
    if provider == "openai-responses":
        return client.responses.create(model=GPT, instructions=LONG, input="hi")
    return _call(provider, client, LONG)


def _events(provider: str, client: Any, name: str) -> list[MutableMapping[str, Any]]:
    with capture_logs() as logs:
        _long_request(provider, client)
    return [e for e in logs if e["event"] == name]


@pytest.mark.parametrize("provider", ["anthropic", "openai", "openai-responses", "google"])
def test_allocation_check_acts_on_every_provider(provider: str) -> None:
    client = CLIENTS[provider.split("-")[0]]("off")
    assert not _events(provider, client, "plan.allocation_exceeded")
    bc.configure(allocation_check=True)
    with capture_logs() as logs:
        _long_request(provider, client)
    assert not [e for e in logs if e["event"] == "plan.allocation_check_failed"]
    exceeded = [e for e in logs if e["event"] == "plan.allocation_exceeded"]
    assert [e["component"] for e in exceeded] == ["system_and_tools"]
    assert exceeded[0]["provider"] == provider.split("-")[0]
    assert exceeded[0]["target_tokens"] == int(WINDOW * GUIDE_ALLOCATION["system_and_tools"] / 100)
    assert exceeded[0]["tokens"] >= LONG.count("policy")  # at least one token a word


def test_gemini_interrupt_while_creating_its_cache_holds_no_budget() -> None:
    """The budget is held before the managed cache is created: an interrupt there gives it back."""
    fake = FakeGemini(call_functions=False, implicit_caching=False)
    serve = fake.transport()

    def interrupt_cache_creation(request: httpx2.Request) -> httpx2.Response:
        if "cachedContents" in request.url.path:
            raise KeyboardInterrupt
        return serve.handle_request(request)

    transport = httpx2.MockTransport(interrupt_cache_creation)
    options = gtypes.HttpOptions(client_args={"transport": transport})
    client = bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options, cache="auto")
    config = gtypes.GenerateContentConfig(system_instruction="clause 7 applies to every ticket " * 5_000)
    with bc.task("interrupted", budget_usd=BUDGET) as t:
        with pytest.raises(KeyboardInterrupt):
            for turn in range(4):  # an entry is first worth creating on the 4th call
                client.models.generate_content(model=GEMINI, contents=f"turn {turn}", config=config)
        assert held(t) == Decimal(0)


def test_gemini_cancel_while_creating_its_cache_holds_no_budget() -> None:
    fake = FakeGemini(call_functions=False, implicit_caching=False)
    serve = fake.transport()

    def cancel_cache_creation(request: httpx2.Request) -> httpx2.Response:
        if "cachedContents" in request.url.path:
            raise asyncio.CancelledError
        request.read()
        return serve.handle_request(request)

    transport = httpx2.MockTransport(cancel_cache_creation)
    options = gtypes.HttpOptions(async_client_args={"transport": transport})
    client = bc.GenAIClient(api_key="AIza-test-key-0123456789", http_options=options, cache="auto")
    config = gtypes.GenerateContentConfig(system_instruction="clause 7 applies to every ticket " * 5_000)

    async def run() -> Decimal:
        with bc.task("cancelled", budget_usd=BUDGET) as t:
            with pytest.raises(asyncio.CancelledError):
                for turn in range(4):
                    await client.aio.models.generate_content(
                        model=GEMINI, contents=f"turn {turn}", config=config
                    )
            return held(t)

    assert asyncio.run(run()) == Decimal(0)


@pytest.mark.parametrize("provider", sorted(CLIENTS))
def test_a_budget_refuses_an_unpriced_model_before_sending(provider: str) -> None:
    sent: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return _refuse(request)

    client = CLIENTS[provider]("off", record)
    misspelt = {"anthropic": "claude-sonet-4-6", "openai": "gpt-4oo", "google": "gemini-2.5-flsh"}[provider]
    with bc.task("unpriced", budget_usd="0.01") as t, pytest.raises(bc.UnpricedModelError) as info:
        _call_model(provider, client, misspelt)
    assert not sent and t.calls == 0 and held(t) == 0
    assert repr(misspelt) in str(info.value) and "bc.configure(prices=" in str(info.value)
    with bc.task("allowed", budget_usd="0.01", on_unpriced="allow"), pytest.raises(Exception) as failed:
        _call_model(provider, client, misspelt)  # sent (and refused by the wire), as without a budget
    assert not isinstance(failed.value, bc.BudgetClientError) and sent


def _call_model(provider: str, client: Any, model: str) -> Any:
    if provider == "anthropic":
        return client.messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    if provider == "openai":
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return client.models.generate_content(model=model, contents="hi")
