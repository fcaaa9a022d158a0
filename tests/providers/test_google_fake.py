"""The fake Gemini backend answers like the API: caching rules, limits, errors, streams, clock."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import errors
from google.genai import types as gtypes

from budgetclient.testing import FakeClock
from budgetclient.testing.fake_gemini import FakeGemini, fake_token_count, min_cache_tokens

MODEL = "gemini-2.5-flash"
BIG = "x" * 8000  # 2,000 tokens under the fake's rule


def sdk(fake: FakeGemini) -> genai.Client:
    return genai.Client(
        api_key="test-key",
        http_options=gtypes.HttpOptions(
            client_args={"transport": fake.transport()}, async_client_args={"transport": fake.transport()}
        ),
    )


def post(fake: FakeGemini, path: str, body: dict[str, Any]) -> httpx2.Response:
    with httpx2.Client(transport=fake.transport(), base_url="https://generativelanguage.googleapis.com") as c:
        return c.post(path, json=body)


def test_token_rule_and_minimums() -> None:
    assert fake_token_count("abcd") == 1 and fake_token_count("abcde") == 2
    assert fake_token_count({"role": "user", "parts": [{"text": "abcd"}, {"text": "abcdefgh"}]}) == 3
    assert (min_cache_tokens("gemini-2.5-pro"), min_cache_tokens("gemini-2.5-flash")) == (4096, 1024)


def test_usage_fields_and_date_header() -> None:
    clock = FakeClock(start=1_800_000_000)
    fake = FakeGemini(clock=clock, thoughts_tokens=5, tool_use_prompt_tokens=3, output_tokens=10)
    response = post(
        fake,
        f"/v1beta/models/{MODEL}:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "abcdefgh"}]}]},
    )
    meta = response.json()["usageMetadata"]
    assert meta["promptTokenCount"] == 2 and meta["candidatesTokenCount"] == 10
    assert meta["thoughtsTokenCount"] == 5 and meta["toolUsePromptTokenCount"] == 3
    assert meta["totalTokenCount"] == 2 + 10 + 5 + 3
    assert email.utils.parsedate_to_datetime(response.headers["date"]).timestamp() == 1_800_000_000


def test_implicit_caching_needs_a_repeated_prefix_above_the_minimum() -> None:
    fake = FakeGemini()
    body = {
        "systemInstruction": {"parts": [{"text": BIG}]},
        "contents": [{"role": "user", "parts": [{"text": "q"}]}],
    }
    first = post(fake, f"/v1/models/{MODEL}:generateContent", body).json()["usageMetadata"]
    second = post(fake, f"/v1/models/{MODEL}:generateContent", body).json()["usageMetadata"]
    assert "cachedContentTokenCount" not in first
    assert second["cachedContentTokenCount"] == second["promptTokenCount"] == 2001
    small = {"systemInstruction": {"parts": [{"text": "tiny"}]}, "contents": body["contents"]}
    post(fake, f"/v1/models/{MODEL}:generateContent", small)
    assert (
        "cachedContentTokenCount"
        not in post(fake, f"/v1/models/{MODEL}:generateContent", small).json()["usageMetadata"]
    )
    fake.advance(fake.implicit_ttl + 1)
    assert (
        "cachedContentTokenCount"
        not in post(fake, f"/v1/models/{MODEL}:generateContent", body).json()["usageMetadata"]
    )


def test_no_implicit_caching_before_gemini_2_5() -> None:
    fake = FakeGemini()
    body = {
        "systemInstruction": {"parts": [{"text": BIG}]},
        "contents": [{"role": "user", "parts": [{"text": "q"}]}],
    }
    for _ in range(2):
        meta = post(fake, "/v1beta/models/gemini-2.0-flash:generateContent", body).json()["usageMetadata"]
    assert "cachedContentTokenCount" not in meta


def test_cached_contents_lifecycle_on_the_clock() -> None:
    fake = FakeGemini()
    c = sdk(fake)
    cache = c.caches.create(
        model=MODEL, config=gtypes.CreateCachedContentConfig(system_instruction=BIG, ttl="300s")
    )
    assert cache.usage_metadata is not None and cache.usage_metadata.total_token_count == 2000
    assert cache.name is not None and cache.expire_time is not None and cache.create_time is not None
    assert (cache.expire_time - cache.create_time).total_seconds() == 300
    response = c.models.generate_content(
        model=MODEL, contents="hi", config=gtypes.GenerateContentConfig(cached_content=cache.name)
    )
    assert response.usage_metadata is not None
    assert response.usage_metadata.cached_content_token_count == 2000
    assert response.usage_metadata.prompt_token_count == 2001
    fake.advance(200)
    c.caches.update(name=cache.name, config=gtypes.UpdateCachedContentConfig(ttl="600s"))
    fake.advance(500)
    assert c.caches.get(name=cache.name).name == cache.name
    fake.advance(101)
    with pytest.raises(errors.ClientError) as info:
        c.caches.get(name=cache.name)
    assert info.value.code == 403
    assert fake.cache_lifetimes() == [(cache.name, 2000, 800.0)]


def test_cache_rules_of_the_api() -> None:
    fake = FakeGemini()
    c = sdk(fake)
    with pytest.raises(errors.ClientError, match="too small"):
        c.caches.create(model=MODEL, config=gtypes.CreateCachedContentConfig(system_instruction="tiny"))
    cache = c.caches.create(model=MODEL, config=gtypes.CreateCachedContentConfig(system_instruction=BIG))
    with pytest.raises(errors.ClientError, match="system_instruction, tools or tool_config"):
        c.models.generate_content(
            model=MODEL,
            contents="hi",
            config=gtypes.GenerateContentConfig(cached_content=cache.name, system_instruction="also this"),
        )
    with pytest.raises(errors.ClientError, match="does not match"):
        c.models.generate_content(
            model="gemini-2.5-pro",
            contents="hi",
            config=gtypes.GenerateContentConfig(cached_content=cache.name),
        )
    assert cache.name is not None
    c.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as info:
        c.models.generate_content(
            model=MODEL, contents="hi", config=gtypes.GenerateContentConfig(cached_content=cache.name)
        )
    assert info.value.code == 403


def test_stream_chunks_carry_running_totals() -> None:
    fake = FakeGemini(stream_chunks=3, output_tokens=30)
    c = sdk(fake)
    chunks = list(c.models.generate_content_stream(model=MODEL, contents="hello"))
    totals = [ch.usage_metadata.candidates_token_count for ch in chunks if ch.usage_metadata]
    assert totals == [10, 20, 30]
    raw = fake.requests[0]
    assert raw.url.params["alt"] == "sse"


def test_function_call_until_answered_and_fail_next() -> None:
    fake = FakeGemini()
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "lookup",
                    "parameters": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}, "q": {"type": "string"}},
                    },
                }
            ]
        }
    ]
    first = post(
        fake,
        f"/v1beta/models/{MODEL}:generateContent",
        {"tools": tools, "contents": [{"role": "user", "parts": [{"text": "go"}]}]},
    ).json()
    call = first["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call == {"name": "lookup", "args": {"n": 1, "q": "test"}}
    answered = post(
        fake,
        f"/v1beta/models/{MODEL}:generateContent",
        {
            "tools": tools,
            "contents": [
                {"role": "user", "parts": [{"text": "go"}]},
                {"role": "model", "parts": [{"functionCall": call}]},
                {
                    "role": "user",
                    "parts": [{"functionResponse": {"name": "lookup", "response": {"ok": True}}}],
                },
            ],
        },
    ).json()
    assert answered["candidates"][0]["content"]["parts"][0]["text"] == fake.reply_text
    fake.fail_next(429, count=2)
    assert [
        post(fake, f"/v1beta/models/{MODEL}:countTokens", {"contents": []}).status_code for _ in range(3)
    ] == [429, 429, 200]
    assert json.loads(fake.requests[0].content)["tools"] == tools


async def test_transport_serves_async_clients() -> None:
    fake = FakeGemini()
    c = sdk(fake)
    response = await c.aio.models.generate_content(model=MODEL, contents="hello")
    assert response.text == fake.reply_text
    texts = [ch.text async for ch in await c.aio.models.generate_content_stream(model=MODEL, contents="x")]
    assert "".join(t or "" for t in texts) == fake.reply_text


def test_vertex_paths() -> None:
    fake = FakeGemini()
    base = "/v1beta1/projects/p/locations/us-central1/"
    created = post(
        fake,
        base + "cachedContents",
        {
            "model": "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash",
            "systemInstruction": {"parts": [{"text": BIG}]},
        },
    ).json()
    assert created["name"].startswith("projects/p/locations/us-central1/cachedContents/")
    meta = post(
        fake,
        base + f"publishers/google/models/{MODEL}:generateContent",
        {"cachedContent": created["name"], "contents": [{"role": "user", "parts": [{"text": "q"}]}]},
    ).json()["usageMetadata"]
    assert meta["cachedContentTokenCount"] == 2000
