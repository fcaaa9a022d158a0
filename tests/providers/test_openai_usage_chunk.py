"""The usage-only chunk budgetclient asks for stays hidden, however the caller's suite mocks the wire.

A user's suite mocks OpenAI with respx (``respx_mock``, httpcore2 targets as in ``conftest.py``;
respx builds its responses with ``httpx``) or ``httpx2.MockTransport`` returning
``content=b"data: ..."`` (a body read before the SDK sees it), often with no content type. Each
wire answers as the API does, with a usage chunk only when the request asks for one; the caller
reads ``chunk.choices[0]`` on every chunk, as code written against the plain SDK does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import openai
import pytest
import respx

import budgetclient as bc

from .openai_wire import WORDS, chat_reply, expected_usage, usage_fields

URL = "https://api.openai.com/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Bonjour"}]
MODERATION = {"input": {"flagged": False}, "output": {"flagged": False}}


def _answer(request: httpx2.Request, extra: dict[str, Any] | None = None) -> httpx2.Response:
    content_type, data = chat_reply(json.loads(request.content), extra_on_usage_chunk=extra)
    return httpx2.Response(200, headers={"content-type": content_type}, content=data)


def _respx_answer(request: httpx.Request, extra: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(200, content=chat_reply(json.loads(request.content), extra_on_usage_chunk=extra)[1])


def _clients(is_async: bool, http_client: Callable[[], Any] | None = None) -> dict[str, Any]:
    sdk: Any = openai.AsyncOpenAI if is_async else openai.OpenAI
    ours: Any = bc.AsyncOpenAI if is_async else bc.OpenAI
    kwargs = (lambda: {"http_client": http_client()}) if http_client else dict
    return {
        "raw": sdk(api_key="sk-test", **kwargs()),
        "bc": ours(api_key="sk-test", **kwargs()),
        "wrap": bc.wrap(sdk(api_key="sk-test", **kwargs())),
    }


def _read(chunks: list[Any]) -> list[Any]:
    return [(chunk.choices[0].index, chunk.choices[0].delta.content) for chunk in chunks]


@pytest.mark.parametrize("body", ["side_effect", "return_value"])
def test_respx_sync_stream_never_shows_the_usage_chunk(respx_mock: respx.MockRouter, body: str) -> None:
    if body == "side_effect":
        respx_mock.post(URL).mock(side_effect=_respx_answer)
    seen = {}
    for name, client in _clients(is_async=False).items():
        if body == "return_value":  # a fixed body, as the API answers this client's request
            asks = name != "raw"
            payload = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": asks}}
            content = chat_reply(payload)[1]
            respx_mock.post(URL).mock(return_value=httpx.Response(200, content=content))
        with bc.task(name) as t:
            chunks = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            seen[name] = _read(list(chunks))
        if name != "raw":
            assert usage_fields(t.usage) == expected_usage()
    assert seen["bc"] == seen["wrap"] == seen["raw"] == [(0, word) for word in WORDS]


async def test_respx_async_stream_never_shows_the_usage_chunk(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(URL).mock(side_effect=_respx_answer)
    seen = {}
    for name, client in _clients(is_async=True).items():
        async with bc.task(name) as t:
            stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            seen[name] = _read([chunk async for chunk in stream])
        if name != "raw":
            assert usage_fields(t.usage) == expected_usage()
    assert seen["bc"] == seen["wrap"] == seen["raw"] == [(0, word) for word in WORDS]


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_pre_read_body_is_rewritten_with_its_content_length(is_async: bool) -> None:
    transport = httpx2.MockTransport(_answer)
    factory = (lambda: httpx2.AsyncClient(transport=transport)) if is_async else (
        lambda: httpx2.Client(transport=transport)
    )
    seen = {}
    for name, client in _clients(is_async, factory).items():
        async with bc.task(name) as t:
            create = client.chat.completions.with_raw_response.create
            raw = create(model="gpt-4o", messages=MESSAGES, stream=True)
            raw = await raw if is_async else raw
            stream = raw.parse()
            seen[name] = _read([c async for c in stream] if is_async else list(stream))
            http = raw.http_response
            assert int(http.headers["content-length"]) == len(http.content)
            assert b'"choices": []' not in http.content
        if name != "raw":
            assert usage_fields(t.usage) == expected_usage()
    assert seen["bc"] == seen["wrap"] == seen["raw"]


def test_the_caller_who_asked_for_usage_gets_the_usage_chunk(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(URL).mock(side_effect=_respx_answer)
    seen = {}
    for name, client in _clients(is_async=False).items():
        with bc.task(name) as t:
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                )
            )
        seen[name] = [(c.choices, c.usage) for c in chunks[-1:]]
        if name != "raw":
            assert usage_fields(t.usage) == expected_usage()
    assert seen["bc"] == seen["wrap"] == seen["raw"]
    assert seen["raw"][0][0] == [] and seen["raw"][0][1].prompt_tokens == expected_usage()["input_tokens"]


def test_a_usage_chunk_carrying_moderation_is_kept_without_its_usage(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(URL).mock(side_effect=lambda request: _respx_answer(request, {"moderation": MODERATION}))
    seen = {}
    for name, client in _clients(is_async=False).items():
        with bc.task(name) as t:
            chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        last = chunks[-1]
        moderation = last.moderation.model_dump(exclude_none=True) if last.moderation else None
        seen[name] = (len(chunks), last.choices, last.usage, moderation)
        if name != "raw":
            assert usage_fields(t.usage) == expected_usage()
    assert seen["bc"] == seen["wrap"] == seen["raw"] == (len(WORDS) + 1, [], None, MODERATION)
