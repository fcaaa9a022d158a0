"""Contracts with the private parts of the openai SDK (and httpx2) that budgetclient relies on.

Each test names the hook and the installed SDK version when it fails. budgetclient checks the one
hook that shapes requests, ``_build_request``, at run time too: when it changed, calls go through
untouched and are metered as sent, with one logged warning (tested below with clients whose hook
takes different arguments).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai._models import FinalRequestOptions
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.providers import _hooks
from budgetclient.providers import openai as bc_openai
from budgetclient.providers._openai_hook import _OPTION_FIELDS, build_hook_problem

from .openai_wire import chat_reply, expected_usage, usage_fields

SDK = f"openai {openai.__version__}"
MESSAGES = [{"role": "user", "content": "q"}]


def _hook(name: str) -> str:
    return f"{SDK}: private hook {name}"


class Wire:
    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        content_type, data = chat_reply(json.loads(request.content))
        return httpx2.Response(200, headers={"content-type": content_type}, content=data)

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self))

    def async_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))


# -- the contracts -------------------------------------------------------------------------------


CLASSES = [openai.OpenAI, openai.AsyncOpenAI, openai.AzureOpenAI, openai.AsyncAzureOpenAI]


@pytest.mark.parametrize("cls", CLASSES)
def test_build_request_takes_options_and_retries_taken(cls: type[Any]) -> None:
    problem = build_hook_problem(cls._build_request)
    assert problem is None, f"{_hook(f'{cls.__name__}._build_request')} changed: {problem}"


def test_build_request_is_called_per_attempt_with_fresh_options_then_prepare_request() -> None:
    calls: list[tuple[str, Any]] = []

    class Spy(openai.OpenAI):
        def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
            calls.append(("build", (id(options), retries_taken)))
            return super()._build_request(options, retries_taken=retries_taken)

        def _prepare_request(self, request: httpx2.Request) -> None:
            calls.append(("prepare", request.headers.get("x-stainless-retry-count")))

    answers = iter([httpx2.Response(503, json={}), httpx2.Response(200, json={"object": "list"})])
    http_client = httpx2.Client(transport=httpx2.MockTransport(lambda request: next(answers)))
    client = Spy(api_key="sk-test", http_client=http_client, max_retries=1)
    client._sleep_for_retry = lambda **_: None  # type: ignore[method-assign]
    client.models.list()
    kinds = [kind for kind, _ in calls]
    assert kinds == ["build", "prepare"] * 2, f"{_hook('_build_request, _prepare_request')}: {calls}"
    (first_id, first_retry), (second_id, second_retry) = calls[0][1], calls[2][1]
    assert (first_retry, second_retry) == (0, 1), _hook("_build_request(retries_taken=...)")
    assert first_id != second_id, _hook("_build_request given fresh options per attempt")
    assert [calls[1][1], calls[3][1]] == ["0", "1"], _hook("x-stainless-retry-count header (attempt numbers)")


def test_request_options_carry_the_fields_the_plan_reads_and_extra_body_merges_shallowly() -> None:
    options = FinalRequestOptions.construct(
        method="post", url="/chat/completions", json_data={"a": 1, "b": {"x": 1}}, extra_json={"b": 2}
    )
    missing = [name for name in _OPTION_FIELDS if not hasattr(options, name)]
    assert not missing, f"{_hook('FinalRequestOptions')} lacks {missing}"
    request = openai.OpenAI(api_key="sk-test")._build_request(options)
    assert json.loads(request.content) == {"a": 1, "b": 2}, _hook("_build_request merge of extra_json")


def test_client_attribute_is_the_http_client_and_copies_share_it() -> None:
    http_client = httpx2.Client()
    client = openai.OpenAI(api_key="sk-test", http_client=http_client, default_headers={"X-Team": "a"})
    assert client._client is http_client, _hook("OpenAI._client")
    assert client.copy(timeout=3)._client is http_client, _hook("copy() passing self._client on")
    other = httpx2.Client()
    assert client.with_options(http_client=other)._client is other, _hook("copy(http_client=...)")
    assert client._custom_headers.get("X-Team") == "a", _hook("OpenAI._custom_headers")


@pytest.mark.parametrize("package", ["httpx2", "httpx"])
async def test_a_read_response_is_served_from_its_content_attribute(package: str) -> None:
    module = pytest.importorskip(package)
    for is_async in (False, True):
        response = module.Response(200, content=b"data: 1\n\n")
        where = f"{package} {module.__version__}: Response._content"
        assert response._content == b"data: 1\n\n", where
        response._content = b"data: 2\n\n"
        read = b"".join([c async for c in response.aiter_bytes()] if is_async else response.iter_bytes())
        assert read == response.content == b"data: 2\n\n", where


# -- the fallback --------------------------------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_hooks, "_warned", set())
    yield


def _changed_build(original: Any) -> Any:
    """A ``_build_request`` whose first parameter is no longer ``options`` (as a new SDK might have it)."""

    def _build_request(self: Any, request_options: Any, *, retries_taken: int = 0, trace: Any = None) -> Any:
        return original(self, request_options, retries_taken=retries_taken)

    return _build_request


class ChangedOpenAI(openai.OpenAI):
    _build_request = _changed_build(openai.OpenAI._build_request)  # type: ignore[assignment]


def _hook_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "sdk.hook_unavailable"]


@pytest.mark.usefixtures("fresh_warnings")
def test_wrap_of_a_client_with_a_changed_hook_meters_as_sent_and_warns_once() -> None:
    raw_wire, wire = Wire(), Wire()
    ChangedOpenAI(api_key="sk-test", http_client=raw_wire.client()).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    with capture_logs() as logs, bc.task("changed") as t:
        for _ in range(2):
            client = bc.wrap(ChangedOpenAI(api_key="sk-test", http_client=wire.client()))
            result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert result.choices[0].message.content
    # sent as the SDK built it
    assert [r.content for r in wire.requests] == [raw_wire.requests[0].content] * 2
    assert usage_fields(t.usage) == expected_usage(requests=2)
    (warning,) = _hook_warnings(logs)
    assert warning["hook"] == "_build_request" and warning["sdk_version"] == openai.__version__
    assert warning["log_level"] == "warning"


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("is_async", [False, True])
async def test_bc_client_on_an_sdk_whose_hook_changed_meters_as_sent_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, is_async: bool
) -> None:
    sdk_cls: Any = openai.AsyncOpenAI if is_async else openai.OpenAI
    monkeypatch.setattr(sdk_cls, "_build_request", _changed_build(sdk_cls._build_request))
    wire = Wire()
    ours: Any = bc.AsyncOpenAI if is_async else bc.OpenAI
    client = ours(api_key="sk-test", http_client=wire.async_client() if is_async else wire.client())
    with capture_logs() as logs:
        async with bc.task("changed") as t:
            for stream in (False, True):
                result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
                result = await result if is_async else result
                if stream:
                    chunks = [c async for c in result] if is_async else list(result)
                    assert all(c.choices for c in chunks)
    bodies = [json.loads(r.content) for r in wire.requests]
    assert all("prompt_cache_key" not in body and "stream_options" not in body for body in bodies)
    assert len(_hook_warnings(logs)) == 1
    assert [r.status for r in t.records] == ["ok", "ok"]
    assert usage_fields(t.records[0].usage) == expected_usage()  # a stream without include_usage has none


@pytest.mark.usefixtures("fresh_warnings")
def test_an_sdk_without_the_client_attribute_gives_plain_clients_with_one_warning() -> None:
    class Elsewhere:
        """An SDK client whose HTTP client is no longer ``_client``."""

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def copy(self) -> Elsewhere:
            return Elsewhere(**self.kwargs)

    with capture_logs() as logs:
        for _ in range(2):
            client = Elsewhere()
            bc_openai._init(client, client.__init__, {"api_key": "sk-test", "cache": "off"})
            assert client.kwargs == {"api_key": "sk-test"} and not hasattr(client, "_client")
            assert type(bc_openai.wrap_openai(client, bc.ClientOptions())) is Elsewhere
    (warning,) = _hook_warnings(logs)
    assert warning["hook"] == "_client"
