"""Contracts with google-genai's private hooks, and the fallback when one is missing.

budgetclient/providers/google.py relies on google-genai internals (see its docstring). Each test
below checks one of them against the installed release and fails with a message naming the hook
and the version, so an SDK upgrade that moves one is caught here first. The last tests simulate a
missing hook and check that calls keep working, with one logged warning.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import _api_client
from google.genai import types as gtypes
from google.genai._api_client import BaseApiClient
from google.genai.client import AsyncClient
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.providers import _hooks
from budgetclient.providers import google as google_provider
from budgetclient.testing.fake_gemini import FakeGemini

MODEL = "gemini-2.5-flash"
API_KEY = "AIza-test-key-0123456789"
VERSION = google_provider.sdk_version()


def broken(hook: str, what: str) -> str:
    return (
        f"google-genai {VERSION}: private hook {hook} {what}; "
        "budgetclient/providers/google.py relies on it (update the hook or its fallback)"
    )


def options(fake: FakeGemini) -> gtypes.HttpOptions:
    return gtypes.HttpOptions(
        client_args={"transport": fake.transport()}, async_client_args={"transport": fake.transport()}
    )


def raw_client(fake: FakeGemini) -> genai.Client:
    return genai.Client(api_key=API_KEY, http_options=options(fake))


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_hooks, "_warned", set())
    yield


# -- contracts: one per private hook -------------------------------------------------------------------


def test_hook_client_api_client() -> None:
    hook = f"Client.{google_provider.API_CLIENT}"
    client = raw_client(FakeGemini())
    api = vars(client).get(google_provider.API_CLIENT)
    assert isinstance(api, BaseApiClient), broken(hook, "is not a BaseApiClient attribute of genai.Client")
    assert vars(client.aio).get(google_provider.API_CLIENT) is api, broken(hook, "is not shared with .aio")


@pytest.mark.parametrize("is_async", [False, True])
def test_hook_api_client_httpx_clients(is_async: bool) -> None:
    """The SDK sends every model request through the API client's httpx2 client attributes."""
    name = google_provider.ASYNC_CLIENT if is_async else google_provider.SYNC_CLIENT
    hook = f"BaseApiClient.{name}"
    fake = FakeGemini()
    client = raw_client(fake)
    api = client._api_client
    current = getattr(api, name, None)
    expected = httpx2.AsyncClient if is_async else httpx2.Client
    assert isinstance(current, expected), broken(hook, f"is not an {expected.__name__} attribute")
    sent: list[str] = []

    class Recording(httpx2.Client):
        def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
            sent.append(request.url.path)
            return super().send(request, **kwargs)

    class AsyncRecording(httpx2.AsyncClient):
        async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
            sent.append(request.url.path)
            return await super().send(request, **kwargs)

    recorder = AsyncRecording if is_async else Recording
    setattr(api, name, recorder(transport=fake.transport()))
    if is_async:
        asyncio.run(client.aio.models.generate_content(model=MODEL, contents="hi"))
    else:
        client.models.generate_content(model=MODEL, contents="hi")
    assert sent and sent[0].endswith(":generateContent"), broken(
        hook, "is not what requests are sent through"
    )


def test_hook_async_httpx_client_args() -> None:
    hook = f"BaseApiClient.{google_provider.ASYNC_CLIENT_ARGS}"
    api = raw_client(FakeGemini())._api_client
    args = getattr(api, google_provider.ASYNC_CLIENT_ARGS, None)
    assert isinstance(args, Mapping), broken(hook, "is not the mapping the async httpx2 client is built from")
    assert isinstance(httpx2.AsyncClient(**args), httpx2.AsyncClient), broken(
        hook, "are not httpx2 arguments"
    )


def test_hook_async_httpx2_client_class() -> None:
    hook = "_api_client.AsyncHttpx2Client"
    cls = getattr(_api_client, "AsyncHttpx2Client", None)
    assert inspect.isclass(cls) and issubclass(cls, httpx2.AsyncClient), broken(
        hook, "is not an httpx2 client"
    )


@pytest.mark.parametrize("name", google_provider.SDK_SWITCHES)
def test_hook_sdk_switches_are_consulted(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each method budgetclient overrides exists and is asked when a client is built or sends."""
    hook = f"BaseApiClient.{name}"
    original = getattr(BaseApiClient, name, None)
    assert callable(original), broken(hook, "is not a method")
    asked: list[str] = []

    def recording(self: Any) -> Any:
        asked.append(name)
        return original(self)

    monkeypatch.setattr(BaseApiClient, name, recording)
    fake = FakeGemini()
    client = raw_client(fake)
    client.models.generate_content(model=MODEL, contents="hi")
    asyncio.run(client.aio.models.generate_content(model=MODEL, contents="hi", config={"candidate_count": 1}))
    assert asked, broken(hook, "is never consulted, so overriding it changes nothing")


def test_hook_class_swap_and_close() -> None:
    """An API client's class can be swapped for a subclass whose close()/aclose() the client calls."""
    hook = "BaseApiClient.__class__"
    client = raw_client(FakeGemini())
    api = client._api_client
    closed: list[str] = []

    class Probe(type(api)):  # type: ignore[misc]
        def close(self) -> None:
            closed.append("close")
            super().close()

        async def aclose(self) -> None:
            closed.append("aclose")
            await super().aclose()

    try:
        api.__class__ = Probe
    except TypeError as exc:
        pytest.fail(broken(hook, f"cannot be assigned a subclass ({exc})"))
    client.close()
    asyncio.run(client.aio.aclose())
    assert closed == ["close", "aclose"], broken(
        "BaseApiClient.close/aclose", "are not called by the clients"
    )


def test_hook_resources_hold_the_api_client() -> None:
    """``wrap`` rebinds the client's ``vars()``: every resource reaches the API client through them."""
    hook = f"Client resources' {google_provider.API_CLIENT}"
    fake = FakeGemini()
    original = raw_client(fake)
    wrapped = bc.wrap(original)
    new_api = wrapped._api_client
    assert new_api is not original._api_client
    for owner, label in ((wrapped, "Client"), (wrapped.aio, "AsyncClient")):
        for name in ("models", "caches", "batches", "files", "tunings", "operations", "file_search_stores"):
            resource = getattr(owner, name, None)
            assert resource is not None, broken(f"{label}.{name}", "is gone")
            assert resource._api_client is new_api, broken(
                hook, f"{label}.{name} is not reached through vars()"
            )
        held = [v for v in vars(owner).values() if getattr(v, google_provider.API_CLIENT, None) is not None]
        assert all(v._api_client is new_api for v in held), broken(hook, f"{label} keeps the old API client")
    with bc.task("t") as t:
        wrapped.models.generate_content(model=MODEL, contents="hi")
        original.models.generate_content(model=MODEL, contents="hi")
    assert t.calls == 1 and len(fake.generations) == 2


@pytest.mark.parametrize("cls", [genai.Client, AsyncClient])
def test_hook_nextgen_client_instance(cls: type[Any]) -> None:
    hook = f"{cls.__name__}.{google_provider.NEXTGEN_CLIENT}"
    client = raw_client(FakeGemini())
    owner = client if cls is genai.Client else client.aio
    assert google_provider.NEXTGEN_CLIENT in vars(owner), broken(hook, "is not an attribute")
    assert getattr(owner, google_provider.NEXTGEN_CLIENT) is None, broken(hook, "is not built lazily")
    built = owner._nextgen_client
    assert getattr(owner, google_provider.NEXTGEN_CLIENT) is built, broken(
        hook, "does not cache the next-gen client"
    )
    wrapped = bc.wrap(client)
    rebound = wrapped if cls is genai.Client else wrapped.aio
    assert getattr(rebound, google_provider.NEXTGEN_CLIENT) is None, broken(
        hook, "is not rebuilt after wrap()"
    )


def test_public_seam_http_options_clients() -> None:
    """The fallback's seam: ``HttpOptions(httpx_client=..., httpx_async_client=...)`` is sent through."""
    fake = FakeGemini()
    inner = httpx2.Client(transport=fake.transport())
    client = genai.Client(api_key=API_KEY, http_options=gtypes.HttpOptions(httpx_client=inner))
    client.models.generate_content(model=MODEL, contents="hi")
    assert len(fake.generations) == 1, f"google-genai {VERSION}: HttpOptions(httpx_client=...) is not used"


# -- run-time fallbacks: a missing hook never breaks a call ----------------------------------------------


def hook_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "sdk.hook_unavailable"]


def run_both(client: Any) -> None:
    client.models.generate_content(model=MODEL, contents="hi")
    asyncio.run(client.aio.models.generate_content(model=MODEL, contents="hi"))


@pytest.mark.parametrize("name", ["SYNC_CLIENT", "ASYNC_CLIENT", "API_CLIENT"])
def test_gen_ai_client_falls_back_to_the_public_seam(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(google_provider, name, "_renamed_by_a_future_release")  # the hook is missing
    fake = FakeGemini()
    with capture_logs() as logs, bc.task("t") as t:
        client = bc.GenAIClient(api_key=API_KEY, http_options=options(fake))
        run_both(client)
        bc.GenAIClient(api_key=API_KEY, http_options=options(fake))  # warned once, not per client
    assert len(fake.generations) == 2 and t.calls == 2  # sent, answered and metered, sync and async
    assert t.usage.input_tokens == sum(g.usage_metadata["promptTokenCount"] for g in fake.generations)
    (warning,) = hook_warnings(logs)
    assert "_renamed_by_a_future_release" in warning["hook"] and warning["sdk_version"] == VERSION
    assert "HttpOptions" in warning["fallback"]
    assert google_provider.meter_of(client).options.drift == "warn"


@pytest.mark.parametrize("name", ["SYNC_CLIENT", "API_CLIENT"])
def test_wrap_falls_back_to_the_client_unmetered(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(google_provider, name, "_renamed_by_a_future_release")
    fake = FakeGemini()
    original = raw_client(fake)
    with capture_logs() as logs, bc.task("t") as t:
        wrapped = bc.wrap(original)
        run_both(wrapped)
    assert wrapped is original and len(fake.generations) == 2 and t.calls == 0
    (warning,) = hook_warnings(logs)
    assert warning["sdk_version"] == VERSION and "not metered" in warning["fallback"]


def test_a_failed_class_swap_still_meters(monkeypatch: pytest.MonkeyPatch) -> None:
    class Incompatible:  # a layout an API client cannot be given: the assignment raises TypeError
        __slots__ = ("x",)

    monkeypatch.setattr(google_provider, "_budget_class", lambda cls: Incompatible)
    fake = FakeGemini()
    with capture_logs() as logs, bc.task("t") as t:
        client = bc.GenAIClient(api_key=API_KEY, http_options=options(fake))
        run_both(client)
    assert t.calls == len(fake.generations) == 2
    (warning,) = hook_warnings(logs)
    assert warning["hook"] == "BaseApiClient.__class__"


def test_missing_switches_and_async_args_are_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGemini()
    api = raw_client(fake)._api_client
    monkeypatch.delattr(BaseApiClient, "_use_aiohttp")
    monkeypatch.delattr(api, google_provider.ASYNC_CLIENT_ARGS)
    with capture_logs() as logs:
        built = google_provider._async_client_for(api)
        google_provider._swap_class(api)
        google_provider._swap_class(api)
    assert isinstance(built, httpx2.AsyncClient)
    assert sorted(w["hook"] for w in hook_warnings(logs)) == [
        "BaseApiClient._async_httpx_client_args",
        "BaseApiClient._use_aiohttp",
    ]
