"""The OpenAI body is planned before the SDK encodes it: wire bytes, retries, copies, the caller's objects.

``OpenAIMeter._as_sent`` meters a request that reached the HTTP layer without a plan (never
rewriting its bytes); every test that expects the pre-encode hook makes that path fail the test. Expected
bodies are built here from what a raw (unwrapped) SDK client sends for the same call, plus the
keys budgetclient documents adding, encoded as the SDK encodes JSON (compact, UTF-8).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pydantic
import pytest

import budgetclient as bc
from budgetclient.formats.openai.prefix import CHAT, build_prefix, prefix_cache_key, prompt_cache_key_for
from budgetclient.providers._openai_http import MeteredHttpClient
from budgetclient.providers._openai_meter import OpenAIMeter
from budgetclient.testing.fake_openai import FakeOpenAI

SYSTEM = "Vous êtes l'assistant de facturation. Suivez la politique de remboursement. " * 90
TOOL = {
    "type": "function",
    "function": {
        "name": "refund",
        "description": "Refund an order — in full or in part.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}, "amount": {"type": "number", "minimum": 0.5}},
            "required": ["order"],
        },
    },
}


class Answer(pydantic.BaseModel):
    text: str


def wire_bytes(body: dict[str, Any]) -> bytes:
    """JSON as the openai SDK encodes request bodies (compact separators, UTF-8, no ASCII escapes)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class Capture:
    """A fake backend that also keeps every request's raw body bytes."""

    def __init__(self) -> None:
        self.fake = FakeOpenAI()
        self.bodies: list[bytes] = []

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(request.read())
        return self.fake.handler(request)

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self._handle))

    def async_http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self._handle))


@pytest.fixture
def no_reencode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def fail(self: OpenAIMeter, request: httpx2.Request, operation: str) -> Any:
        raise AssertionError(f"{request.method} {request.url.path} reached the HTTP layer unplanned")

    monkeypatch.setattr(OpenAIMeter, "_as_sent", fail)
    yield


def key_of_prefix(body: dict[str, Any]) -> str:
    """The key of a request with a stable prefix: named by the prefix (tools, system messages)."""
    return prefix_cache_key(body["model"], build_prefix(body, CHAT)[1].prefix_hash(()) or "")


def raw_and_metered(
    call: Callable[[Any], Any], *, wrap: bool = False, **options: Any
) -> tuple[list[bytes], list[bytes], Any]:
    """The bodies a raw SDK client and a budgetclient client send for ``call``, and the task."""
    raw, metered = Capture(), Capture()
    call(openai.OpenAI(api_key="sk-test", http_client=raw.http_client()))
    if wrap:
        client: Any = bc.wrap(openai.OpenAI(api_key="sk-test", http_client=metered.http_client()), **options)
    else:
        client = bc.OpenAI(api_key="sk-test", http_client=metered.http_client(), **options)
    with bc.task("hook") as t:
        call(client)
    return raw.bodies, metered.bodies, t


def chat_call(client: Any) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Remboursez 12,50 €"}],
        tools=[TOOL],
        temperature=0.5,
        extra_body={"metadata": {"ticket": "T-1"}},
    )


# -- the body on the wire ------------------------------------------------------------------------


@pytest.mark.usefixtures("no_reencode")
@pytest.mark.parametrize("wrap", [False, True])
def test_the_wire_body_is_the_sdks_plus_the_cache_key(wrap: bool) -> None:
    raw, sent, record = raw_and_metered(chat_call, wrap=wrap)
    expected = {**json.loads(raw[0]), "prompt_cache_key": key_of_prefix(json.loads(raw[0]))}
    assert sent == [wire_bytes(expected)]
    assert record.calls == 1


@pytest.mark.usefixtures("no_reencode")
def test_a_stream_gets_include_usage_and_the_caller_never_sees_the_usage_chunk() -> None:
    def call(client: Any) -> None:
        chunks = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Salut"}], stream=True
        )
        assert all(chunk.choices for chunk in chunks)

    raw, sent, record = raw_and_metered(call)
    expected = {
        **json.loads(raw[0]),
        "stream_options": {"include_usage": True},
        "prompt_cache_key": prompt_cache_key_for("gpt-4o", "hook", None),
    }
    assert sent == [wire_bytes(expected)]
    assert record.usage.input_tokens > 0


@pytest.mark.usefixtures("no_reencode")
def test_the_breakpoint_is_placed_in_the_encoded_body() -> None:
    def call(client: Any) -> None:
        client.chat.completions.create(
            model="gpt-5.6-terra",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Bonjour"}],
        )

    raw, sent, _ = raw_and_metered(call)
    original = json.loads(raw[0])
    system, user = original["messages"]
    marked = [{"type": "text", "text": SYSTEM, "prompt_cache_breakpoint": {"mode": "explicit"}}]
    expected = {
        **original,
        "messages": [{**system, "content": marked}, user],
        "prompt_cache_key": key_of_prefix(original),
        "prompt_cache_options": {"mode": "implicit"},
    }
    assert sent == [wire_bytes(expected)]


@pytest.mark.usefixtures("no_reencode")
def test_extra_body_is_merged_as_the_sdk_merges_it_and_the_caller_still_wins() -> None:
    def call(client: Any) -> None:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "q"}],
            extra_body={
                "prompt_cache_key": "mine",
                "seed": 7,
                "messages": [{"role": "user", "content": "r"}],
            },
        )

    raw, sent, record = raw_and_metered(call)
    assert sent == raw  # the caller's key: nothing to add, nothing re-encoded
    assert json.loads(sent[0])["messages"] == [{"role": "user", "content": "r"}]
    assert "prompt_cache_key" not in record.records[0].metadata


@pytest.mark.usefixtures("no_reencode")
def test_cache_off_sends_exactly_what_the_sdk_sends() -> None:
    raw, sent, record = raw_and_metered(chat_call, cache="off")
    assert sent == raw
    assert record.calls == 1


@pytest.mark.usefixtures("no_reencode")
def test_embeddings_are_metered_and_sent_unchanged() -> None:
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    data = [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}]
    reply = {"object": "list", "data": data, "model": "text-embedding-3-small", "usage": usage}
    bodies: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(request.read())
        return httpx2.Response(200, json=reply)

    def client_of(wrapper: Callable[[openai.OpenAI], Any]) -> Any:
        http_client = httpx2.Client(transport=httpx2.MockTransport(handler))
        return wrapper(openai.OpenAI(api_key="sk-test", http_client=http_client))

    kwargs: dict[str, Any] = {
        "model": "text-embedding-3-small",
        "input": "bonjour",
        "encoding_format": "float",
    }
    client_of(lambda c: c).embeddings.create(**kwargs)
    with bc.task("embed") as t:
        client_of(bc.wrap).embeddings.create(**kwargs)
    assert bodies[1] == bodies[0]
    assert t.calls == 1 and t.records[0].operation == "embeddings"
    assert t.usage == bc.Usage(input_tokens=3, requests=1)


# -- every call path takes the hook ---------------------------------------------------------------


def _every_sync_path(client: Any) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}]
    client.chat.completions.create(model="gpt-4o", messages=messages)
    for _ in client.chat.completions.create(model="gpt-4o", messages=messages, stream=True):
        pass
    client.chat.completions.parse(model="gpt-4o", messages=messages, response_format=Answer)
    with client.chat.completions.stream(model="gpt-4o", messages=messages) as stream:
        stream.until_done()
    client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages).parse()
    streaming = client.chat.completions.with_streaming_response
    with streaming.create(model="gpt-4o", messages=messages) as response:
        response.read()
    client.responses.create(model="gpt-4o", instructions=SYSTEM, input="q")
    for _ in client.responses.create(model="gpt-4o", input="q", stream=True):
        pass
    with client.responses.stream(model="gpt-4o", input="q") as events:
        events.until_done()
    client.responses.parse(model="gpt-4o", input="q", text_format=Answer)
    client.with_options(timeout=9).chat.completions.create(model="gpt-4o", messages=messages)


@pytest.mark.usefixtures("no_reencode")
@pytest.mark.parametrize("wrap", [False, True])
def test_every_sync_call_path_is_planned_before_encoding(wrap: bool) -> None:
    capture = Capture()
    if wrap:
        client: Any = bc.wrap(openai.OpenAI(api_key="sk-test", http_client=capture.http_client()))
    else:
        client = bc.OpenAI(api_key="sk-test", http_client=capture.http_client())
    capture.fake.reply(*['{"text": "x"}'] * 11)
    with bc.task("paths") as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)  # response formats change the cache key
        _every_sync_path(client)
    assert t.calls == len(capture.bodies) == 11
    assert all(b'"prompt_cache_key":"bc-' in body for body in capture.bodies)


async def _every_async_path(client: Any, messages: list[dict[str, Any]]) -> None:
    await client.chat.completions.create(model="gpt-4o", messages=messages)
    async for _ in await client.chat.completions.create(model="gpt-4o", messages=messages, stream=True):
        pass
    await client.chat.completions.parse(model="gpt-4o", messages=messages, response_format=Answer)
    async with client.chat.completions.stream(model="gpt-4o", messages=messages) as stream:
        await stream.until_done()
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    raw.parse()
    async with client.responses.with_streaming_response.create(model="gpt-4o", input="q") as response:
        await response.read()
    await client.responses.create(model="gpt-4o", instructions=SYSTEM, input="q")
    async with client.responses.stream(model="gpt-4o", input="q") as events:
        await events.until_done()
    await client.responses.parse(model="gpt-4o", input="q", text_format=Answer)
    await client.with_options(timeout=9).chat.completions.create(model="gpt-4o", messages=messages)


@pytest.mark.usefixtures("no_reencode")
@pytest.mark.parametrize("wrap", [False, True])
async def test_every_async_call_path_is_planned_before_encoding(wrap: bool) -> None:
    capture = Capture()
    if wrap:
        client: Any = bc.wrap(openai.AsyncOpenAI(api_key="sk-test", http_client=capture.async_http_client()))
    else:
        client = bc.AsyncOpenAI(api_key="sk-test", http_client=capture.async_http_client())
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}]
    capture.fake.reply(*['{"text": "x"}'] * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)  # response formats change the cache key
        async with bc.task("paths") as t:
            await _every_async_path(client, messages)
    assert t.calls == len(capture.bodies) == 10
    assert all(b'"prompt_cache_key":"bc-' in body for body in capture.bodies)


@pytest.mark.usefixtures("no_reencode")
@pytest.mark.parametrize("azure_cls", [openai.AzureOpenAI, openai.AsyncAzureOpenAI])
async def test_azure_clients_are_planned_before_encoding(azure_cls: type[Any]) -> None:
    capture = Capture()
    is_async = azure_cls is openai.AsyncAzureOpenAI
    azure = azure_cls(
        api_key="azure-key",
        api_version="2026-10-01",
        azure_endpoint="https://example-resource.openai.azure.com",
        http_client=capture.async_http_client() if is_async else capture.http_client(),
    )
    wrapped = bc.wrap(azure)
    assert type(wrapped) is azure_cls
    async with bc.task("azure") as t:
        result = wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
        if is_async:
            await result
    assert capture.fake.requests[0].path == "/openai/deployments/gpt-4o/chat/completions"
    assert capture.fake.requests[0].body["prompt_cache_key"] == prompt_cache_key_for("gpt-4o", "azure", None)
    assert t.calls == 1


@pytest.mark.usefixtures("no_reencode")
def test_copies_of_a_wrapped_client_keep_the_hook_and_the_sdk_class() -> None:
    capture = Capture()
    original = openai.OpenAI(api_key="sk-test", http_client=capture.http_client())
    wrapped = bc.wrap(original)
    copies = [wrapped.with_options(timeout=3), wrapped.copy(max_retries=1).with_options(timeout=4)]
    assert all(type(c) is openai.OpenAI for c in copies)
    assert "_build_request" not in vars(original)  # the caller's client is untouched
    with bc.task("copies") as t:
        for c in copies:
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert t.calls == 2


@pytest.mark.usefixtures("no_reencode")
def test_a_copy_of_a_wrapped_client_given_its_own_http_client_keeps_the_meter() -> None:
    first, second = Capture(), Capture()
    wrapped = bc.wrap(openai.OpenAI(api_key="sk-test", http_client=first.http_client()), cache_ttl="1h")
    other = wrapped.with_options(http_client=second.http_client())
    assert type(other) is openai.OpenAI
    with bc.task("own-client") as t:
        other.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert (len(first.bodies), len(second.bodies), t.calls) == (0, 1, 1)
    assert other._client.meter is wrapped._client.meter


def test_a_request_built_without_the_hook_is_metered_as_sent_never_rewritten() -> None:
    def call(client: Any) -> None:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])

    raw, metered = Capture(), Capture()
    call(openai.OpenAI(api_key="sk-test", http_client=raw.http_client()))
    # an SDK client handed a metered HTTP client directly: its requests arrive already encoded
    http_client = MeteredHttpClient(metered.http_client(), OpenAIMeter())
    client = openai.OpenAI(api_key="sk-test", http_client=http_client)
    with bc.task("as-sent") as t:
        call(client)
    assert metered.bodies == raw.bodies
    usage = metered.fake.usages[0]
    assert t.calls == 1 and t.records[0].model == "gpt-4o"
    assert t.usage.input_tokens == usage["prompt_tokens"]
    assert t.usage.output_tokens == usage["completion_tokens"]


# -- retries and the caller's objects -------------------------------------------------------------


@pytest.mark.usefixtures("no_reencode")
def test_a_retried_request_is_rewritten_once_per_attempt_from_the_callers_body() -> None:
    capture = Capture()
    client = bc.OpenAI(api_key="sk-test", http_client=capture.http_client(), max_retries=2)
    capture.fake.fail_next(503, count=2)
    with bc.task("retry") as t:
        client.chat.completions.create(
            model="gpt-5.6-terra",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}],
        )
    assert len(capture.bodies) == 3
    first, *others = capture.bodies
    assert all(body == first for body in others)  # the SDK re-encodes each attempt: same bytes
    sent = json.loads(first)
    assert first.count(b'"prompt_cache_breakpoint"') == 1 and first.count(b'"prompt_cache_key"') == 1
    assert sent["messages"][0]["content"][0]["prompt_cache_breakpoint"] == {"mode": "explicit"}
    assert [r.status for r in t.records] == ["error", "error", "ok"]
    assert [r.attempt for r in t.records] == [0, 1, 2]


@pytest.mark.usefixtures("no_reencode")
def test_the_callers_objects_are_never_mutated() -> None:
    capture = Capture()
    client = bc.OpenAI(api_key="sk-test", http_client=capture.http_client())
    system = {"role": "system", "content": SYSTEM}
    messages: list[dict[str, Any]] = [system, {"role": "user", "content": "q"}]
    tools = [copy.deepcopy(TOOL)]
    stream_options = {"include_obfuscation": False}
    extra = {"metadata": {"ticket": "T-2"}}
    snapshot = copy.deepcopy((messages, tools, stream_options, extra))
    with bc.task("pure"):
        for model in ("gpt-4o", "gpt-5.6-terra"):
            for _ in client.chat.completions.create(
                model=model,
                messages=messages,
                tools=tools,
                stream=True,
                stream_options=stream_options,
                extra_body=extra,
            ):
                pass
    assert (messages, tools, stream_options, extra) == snapshot
    assert messages[0] is system and system["content"] is SYSTEM
    sent = json.loads(capture.bodies[1])
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert isinstance(sent["messages"][0]["content"], list)  # the breakpoint went on a copy


# -- the prefix is rebuilt only where it changed --------------------------------------------------


def _count(digest: bytes, text: str) -> int:
    return len(text.split())


def test_an_unchanged_prefix_reuses_the_previous_blocks() -> None:
    body = {"model": "gpt-4o", "tools": [TOOL], "messages": [{"role": "system", "content": SYSTEM}]}
    first, memo = build_prefix(body, CHAT, _count)
    again = copy.deepcopy(body)  # equal values, new objects (as the SDK's copy of the caller's body)
    second, memo2 = build_prefix(again, CHAT, _count, memo)
    assert second is first and memo2 is memo


def test_only_the_changed_block_is_rebuilt() -> None:
    other = {**TOOL, "function": {**TOOL["function"], "name": "cancel"}}
    body = {"tools": [TOOL, other], "messages": [{"role": "system", "content": SYSTEM}]}
    first, memo = build_prefix(body, CHAT, _count)
    edited = {**body, "tools": [TOOL, {**other, "function": {**other["function"], "description": "Cancel."}}]}
    second, _ = build_prefix(edited, CHAT, _count, memo)
    assert second[0] is first[0] and second[2] is first[2]
    assert second[1] is not first[1]
    assert second[1].raw == json.dumps(edited["tools"][1], ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda p: {"required": p["required"], "type": p["type"], "properties": p["properties"]},  # key order
        lambda p: {**p, "properties": {**p["properties"], "amount": {"type": "number", "minimum": 1}}},
        lambda p: {**p, "additionalProperties": 0},
    ],
    ids=["key-order", "float-to-int", "new-key"],
)
def test_changes_equal_values_hide_are_still_seen(change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    tool = copy.deepcopy(TOOL)
    body = {"tools": [tool]}
    first, memo = build_prefix(body, CHAT, _count)
    changed = {**tool, "function": {**tool["function"], "parameters": change(tool["function"]["parameters"])}}
    (block,), _ = build_prefix({"tools": [changed]}, CHAT, _count, memo)
    assert block.raw == json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()
    assert block.raw != first[0].raw


def test_a_key_order_change_in_a_tool_is_reported_as_drift() -> None:
    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="sk-test", http_client=fake.http_client())
    reordered = copy.deepcopy(TOOL)
    parameters = reordered["function"]["parameters"]
    reordered["function"]["parameters"] = {k: parameters[k] for k in reversed(list(parameters))}
    with bc.task("drift") as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)
        for tool in (TOOL, TOOL, reordered):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "q"}], tools=[tool]
            )
    drifts = [r.drift for r in t.records]
    assert drifts[:2] == [None, None]
    assert drifts[2] is not None and drifts[2].segment.startswith("tools[0]")
    assert drifts[2].cause == "key-order"


def test_a_memo_without_token_counts_does_not_serve_a_counted_call() -> None:
    body = {"messages": [{"role": "system", "content": SYSTEM}]}
    uncounted, memo = build_prefix(body, CHAT)
    counted, _ = build_prefix(body, CHAT, _count, memo)
    assert uncounted[0].tokens == 0 and counted[0].tokens == len(SYSTEM.split())


def test_a_plain_system_message_written_in_another_key_order_is_rebuilt() -> None:
    body = {"messages": [{"role": "system", "content": SYSTEM}]}
    (first,), memo = build_prefix(body, CHAT, _count)
    swapped = {"messages": [{"content": SYSTEM, "role": "system"}]}
    (second,), _ = build_prefix(swapped, CHAT, _count, memo)
    assert first.raw == second.raw == json.dumps(
        {"type": "text", "text": SYSTEM}, ensure_ascii=False, separators=(",", ":")
    ).encode()  # a string content is recorded as its text part either way
    (again,), _ = build_prefix(copy.deepcopy(body), CHAT, _count, memo)
    assert again is first


@pytest.mark.parametrize("value", [1.0, True, "1"])
def test_the_conversation_head_tells_tools_apart_that_compare_equal(value: Any) -> None:
    from budgetclient.formats.openai.prefix import conversation_head

    def body(limit: Any) -> dict[str, Any]:
        tool = copy.deepcopy(TOOL)
        tool["function"]["parameters"]["maxItems"] = limit
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}]
        return {"tools": [tool], "messages": messages}

    head = conversation_head(body(1), CHAT)
    assert conversation_head(body(1), CHAT) == head  # equal values, new objects: the same head
    other = conversation_head(body(value), CHAT)
    assert other.fixed[0] != head.fixed[0] and other.fixed[1:] == head.fixed[1:]
    assert other.opening == head.opening


def test_the_conversation_head_tells_apart_messages_in_another_key_order() -> None:
    from budgetclient.formats.openai.prefix import conversation_head

    plain = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q"}]}
    swapped = {"messages": [{"content": SYSTEM, "role": "system"}, {"content": "q", "role": "user"}]}
    a, b = conversation_head(plain, CHAT), conversation_head(swapped, CHAT)
    assert a.fixed != b.fixed and a.opening != b.opening
