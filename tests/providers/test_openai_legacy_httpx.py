"""A legacy ``httpx`` client, which openai 3.x still accepts as ``http_client``, is metered like httpx2.

The same wire (an ``httpx.MockTransport``, bodies read up front or streamed) answers a raw
``openai.OpenAI(http_client=httpx.Client(...))``, ``bc.OpenAI`` and ``bc.wrap``: same results,
and a record whose tokens are the usage fields the wire sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import pytest

import budgetclient as bc

from .openai_wire import chat_reply, expected_usage, usage_fields

httpx = pytest.importorskip("httpx")

MESSAGES = [{"role": "user", "content": "Bonjour"}]


class _Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):  # type: ignore[misc]
    """A body delivered in pieces, read lazily like a socket."""

    def __init__(self, data: bytes) -> None:
        self.pieces = [data[i : i + 23] for i in range(0, len(data), 23)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class LegacyWire:
    def __init__(self, streamed: bool) -> None:
        self.streamed = streamed
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        body = json.loads(request.read())
        self.bodies.append(body)
        content_type, data = chat_reply(body)
        headers = {"content-type": content_type}
        if self.streamed:
            return httpx.Response(200, headers=headers, stream=_Chunks(data))
        return httpx.Response(200, headers=headers, content=data)

    def client(self, is_async: bool) -> Any:
        transport = httpx.MockTransport(self)
        return httpx.AsyncClient(transport=transport) if is_async else httpx.Client(transport=transport)


def _clients(streamed: bool, is_async: bool) -> list[tuple[str, LegacyWire, Any]]:
    sdk_cls: Callable[..., Any] = openai.AsyncOpenAI if is_async else openai.OpenAI
    ours_cls: Callable[..., Any] = bc.AsyncOpenAI if is_async else bc.OpenAI
    wires = [LegacyWire(streamed) for _ in range(3)]
    return [
        ("raw", wires[0], sdk_cls(api_key="sk-test", http_client=wires[0].client(is_async))),
        ("bc", wires[1], ours_cls(api_key="sk-test", http_client=wires[1].client(is_async))),
        ("wrap", wires[2], bc.wrap(sdk_cls(api_key="sk-test", http_client=wires[2].client(is_async)))),
    ]


def _outcome(result: Any) -> Any:
    if isinstance(result, list):  # stream chunks: what a caller reads from each
        return [(c.choices[0].delta.content, c.usage) for c in result]
    return (result.choices[0].message.content, result.usage.prompt_tokens, result.usage.completion_tokens)


@pytest.mark.parametrize("streamed", [False, True], ids=["read", "streamed"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_sync_legacy_httpx_client_same_result_and_metered(streamed: bool, stream: bool) -> None:
    outcomes = {}
    for name, _, client in _clients(streamed, is_async=False):
        assert isinstance(client._client, httpx.Client)  # as the SDK's own legacy-httpx test checks
        with bc.task(name) as t:
            result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
            outcomes[name] = _outcome(list(result) if stream else result)
        if name == "raw":
            assert t.calls == 0
        else:
            assert [r.status for r in t.records] == ["ok"]
            assert usage_fields(t.usage) == expected_usage()
    assert outcomes["bc"] == outcomes["wrap"] == outcomes["raw"]


@pytest.mark.parametrize("streamed", [False, True], ids=["read", "streamed"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_async_legacy_httpx_client_same_result_and_metered(streamed: bool, stream: bool) -> None:
    outcomes = {}
    for name, _, client in _clients(streamed, is_async=True):
        assert isinstance(client._client, httpx.AsyncClient)
        async with bc.task(name) as t:
            result = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
            outcomes[name] = _outcome([c async for c in result] if stream else result)
        if name != "raw":
            assert [r.status for r in t.records] == ["ok"]
            assert usage_fields(t.usage) == expected_usage()
    assert outcomes["bc"] == outcomes["wrap"] == outcomes["raw"]


def test_copies_of_a_legacy_client_stay_metered_and_legacy() -> None:
    _, wire, client = _clients(streamed=False, is_async=False)[1]
    other = LegacyWire(streamed=False)
    copies = [client.with_options(timeout=5), client.copy(http_client=other.client(is_async=False))]
    with bc.task("copies") as t:
        for c in copies:
            assert isinstance(c._client, httpx.Client)
            c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert t.calls == 2 and len(wire.bodies) == len(other.bodies) == 1
    assert all("prompt_cache_key" in body for body in wire.bodies + other.bodies)


def test_budgetclient_never_imports_httpx_itself() -> None:
    code = (
        "import sys, budgetclient as bc, httpx2\n"
        "c = bc.OpenAI(api_key='k', http_client=httpx2.Client())\n"
        "bc.wrap(c)\n"
        "assert 'httpx' not in sys.modules, 'httpx imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
