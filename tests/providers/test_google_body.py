"""The incremental decoding of Gemini request bodies (`_google_body`) and what it leaves on the wire.

Whatever body came before, a decoded body equals ``json.loads`` of the bytes; what is reused
from the previous call is exactly what did not change. Through the real SDK, the request on the
wire is byte-for-byte what the plain SDK sends when nothing needs rewriting, a managed cache's
rewrite is byte-for-byte ``json.dumps(rewrite_body(...))``, and the caller's objects are never
touched.
"""

from __future__ import annotations

import email.utils
import json
import threading
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import types as gtypes
from hypothesis import assume, given
from hypothesis import strategies as st

import budgetclient as bc
from budgetclient.formats.google.prefix import prefix_blocks
from budgetclient.providers import _google_rules
from budgetclient.providers._google_body import BodyHistory, WireBody, decode_body
from budgetclient.providers._google_rules import (
    GeminiRoute,
    ServerClock,
    content_digest,
    parse_route,
    rewrite_body,
)
from budgetclient.testing.fake_gemini import FakeGemini
from tests._hypothesis import FAST

from .test_google import API_KEY, MODEL, http_options


def sdk_bytes(body: dict[str, Any]) -> bytes:
    """How google-genai writes a body: ``json.dumps`` with its defaults."""
    return json.dumps(body).encode()


def content(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"text": text}]}


def conversation(turns: int, system: str = "Be brief.") -> dict[str, Any]:
    return {
        "contents": [content("user" if i % 2 == 0 else "model", f"turn {i} " * 20) for i in range(turns)],
        "systemInstruction": {"parts": [{"text": system}]},
        "tools": [{"functionDeclarations": [{"name": f"tool_{i}", "description": "d"} for i in range(3)]}],
        "generationConfig": {"temperature": 0.5},
    }


def decoded(content_bytes: bytes, previous: WireBody | None = None) -> WireBody:
    wire = decode_body(content_bytes, previous)
    assert wire is not None
    return wire


# -- exactly json.loads --------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
contents_strategy = st.lists(
    st.one_of(
        st.builds(content, st.sampled_from(["user", "model"]), st.text(max_size=12)),
        values,  # whatever a caller's own client might send
    ),
    max_size=5,
)
bodies = st.dictionaries(
    st.sampled_from(
        [
            "contents",
            "systemInstruction",
            "tools",
            "toolConfig",
            "generationConfig",
            "cachedContent",
            "k\u00e9y",
        ]
    ),
    st.one_of(values, contents_strategy),
    max_size=6,
)
layouts = st.sampled_from(
    [
        {},
        {"separators": (",", ":")},
        {"indent": 1},
        {"ensure_ascii": False},
        {"ensure_ascii": False, "indent": "\t"},
    ]
)


def grown(body: dict[str, Any], extra: list[Any]) -> dict[str, Any]:
    """The next call of an append-only conversation: the same body with more contents."""
    contents = body.get("contents")
    if not isinstance(contents, list):
        return body
    return {**body, "contents": [*contents, *extra]}


@FAST
@given(bodies, bodies, contents_strategy, layouts)
def test_decoding_equals_json_loads_whatever_came_before(
    first: dict[str, Any], other: dict[str, Any], extra: list[Any], layout: dict[str, Any]
) -> None:
    calls = [first, grown(first, extra), other, grown(grown(first, extra), extra)]
    previous: WireBody | None = None
    for body in calls:
        raw = json.dumps(body, **layout).encode()
        wire = decoded(raw, previous)
        assert wire.body == json.loads(raw)
        assert list(wire.body) == list(json.loads(raw))  # the same key order
        assert decoded(raw, wire).body == json.loads(raw)  # the same bytes again
        previous = wire


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2, "contents": [{"x": 1}]}',
        '{"contents": [{"x": 1}], "contents": 7}',
        '{"contents": [1, 22]}',
        '{"contents": [], "b": [1, {"c": "\\u00e9\\n"}]}',
        '{"k\\"ey": 1, "contents": [{"x": "\\ud83d\\ude00"}]}',
        '  {  "contents"  :  [  {"x": 1}  ,  {"y": 2}  ]  }  ',
        '{"n": NaN, "contents": [{"x": 1}]}',
    ],
)
def test_unusual_but_valid_bodies(text: str) -> None:
    raw = text.encode()
    first = decoded(raw)
    assert json.dumps(first.body) == json.dumps(json.loads(raw))
    longer = text.rstrip()[:-1] + ', "z": [{"q": 1}]}'
    again = decoded(longer.encode(), first)
    assert json.dumps(again.body) == json.dumps(json.loads(longer))


def test_a_body_extending_the_previous_content_is_read_again() -> None:
    """The previous body ended its contents with a number: ``1`` is a prefix of ``12``."""
    first = decoded(b'{"contents": [{"a": 1}, 1]}')
    assert decoded(b'{"contents": [{"a": 1}, 12]}', first).body == {"contents": [{"a": 1}, 12]}
    assert decoded(b'{"contents": [{"a": 1}, 1, 2]}', first).body == {"contents": [{"a": 1}, 1, 2]}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b'{"a": 1',
        b'{"a" 1}',
        b'{"a": 1} x',
        b'{"a": 1,}',
        b'{"contents": [{"a": 1},]}',
        b'{"contents": [{"a": 1}, {"a": 2}], "b": }',
        b'{"a": "\x01"}',
        b"{'a': 1}",
    ],
)
def test_invalid_json_raises_as_json_loads_does(raw: bytes) -> None:
    previous = decoded(b'{"contents": [{"a": 1}, {"a": 2}], "b": 3}')
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        decode_body(raw, previous)


def test_a_body_that_is_not_an_object_is_none() -> None:
    assert decode_body(b"[1, 2]") is None and decode_body(b"null") is None and decode_body(b'"x"') is None


# -- work proportional to what changed ---------------------------------------------------------


def test_unchanged_contents_and_prefix_are_shared_with_the_previous_call() -> None:
    body = conversation(6)
    first = decoded(sdk_bytes(body))
    prefix = first.prefix()
    assert first.opening()[1] == (content_digest(body["contents"][0]),)

    body["contents"] += [content("model", "answer"), content("user", "next")]
    second = decoded(sdk_bytes(body), first)
    assert second.body == body
    assert first.contents is not None and second.contents is not None
    assert all(a is b for a, b in zip(first.contents, second.contents[:6], strict=True))
    assert all(a is b for a, b in zip(first.body["contents"], second.body["contents"], strict=False))
    assert second.body["contents"] is not first.body["contents"]  # a list of its own
    assert second.member("tools") is first.member("tools")
    assert second.prefix() is prefix
    assert prefix.blocks == prefix_blocks({k: body[k] for k in ("systemInstruction", "tools")})


def test_an_edited_content_is_read_again_and_the_rest_still_shared() -> None:
    body = conversation(6)
    first = decoded(sdk_bytes(body))
    body["contents"][2] = content("user", "edited")
    second = decoded(sdk_bytes(body), first)
    assert second.body == body
    assert first.contents is not None and second.contents is not None
    assert second.contents[2] is not first.contents[2]
    assert [second.contents[i] is first.contents[i] for i in (0, 1, 3, 4, 5)] == [True] * 5


def test_a_changed_prefix_is_fingerprinted_again() -> None:
    first = decoded(sdk_bytes(conversation(2, system="Today is Monday.")))
    before = first.prefix()
    second = decoded(sdk_bytes(conversation(2, system="Today is Tuesday.")), first)
    after = second.prefix()
    assert after is not before and after.base_key != before.base_key
    assert after.blocks[0].raw == json.dumps({"text": "Today is Tuesday."}, separators=(",", ":")).encode()


# -- the managed cache's rewrite -----------------------------------------------------------------


@pytest.mark.parametrize("leading", [0, 1, 3])
@pytest.mark.parametrize("cached_key", [False, True])
def test_rewrite_is_the_bytes_json_dumps_would_give(leading: int, cached_key: bool) -> None:
    body = conversation(5)
    if cached_key:
        body = {"cachedContent": None, **body}
    wire = decoded(sdk_bytes(body))
    expected = rewrite_body(json.loads(sdk_bytes(body)), "cachedContents/abc", leading)
    assert wire.rewritten("cachedContents/abc", leading) == json.dumps(expected).encode()


@FAST
@given(bodies, layouts, st.integers(0, 3))
def test_rewrite_of_any_body_decodes_to_rewrite_body(
    body: dict[str, Any], layout: dict[str, Any], leading: int
) -> None:
    # a rewrite is only planned for a body whose contents are a list (a cache holds a prefix of it)
    assume(isinstance(body.get("contents", []), list))
    raw = json.dumps(body, **layout).encode()
    wire = decoded(raw)
    expected = rewrite_body(json.loads(raw), "cachedContents/x\u00e9", leading)
    rewritten = json.loads(wire.rewritten("cachedContents/x\u00e9", leading))
    assert rewritten == expected and list(rewritten) == list(expected)


# -- the history of bodies -----------------------------------------------------------------------


def test_history_keeps_the_last_body_per_conversation_within_bounds() -> None:
    history = BodyHistory(max_bodies=2, max_chars=10_000)
    for name in "abc":
        history.decode(name, sdk_bytes(conversation(4, system=name)))
    assert list(history._bodies) == ["b", "c"]  # "a", the least recently used, is forgotten
    history.decode("a", sdk_bytes(conversation(5, system="a")))
    assert list(history._bodies) == ["c", "a"]
    big = history.decode("big", sdk_bytes(conversation(4, system="x" * 20_000)))
    assert "big" not in history._bodies and history._last is big  # too big to keep per conversation
    assert sum(w.size for w in history._bodies.values()) <= 10_000


def test_history_from_many_threads_decodes_every_body_exactly() -> None:
    history = BodyHistory()
    failures: list[str] = []

    def run(name: str) -> None:
        body = conversation(2, system=name)
        for i in range(30):
            body["contents"].append(content("model" if i % 2 else "user", f"{name} {i}"))
            raw = sdk_bytes(body)
            wire = history.decode(name if i % 3 else "shared", raw)
            if wire is None or wire.body != json.loads(raw):
                failures.append(f"{name} {i}")

    threads = [threading.Thread(target=run, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# -- through the SDK: the wire and the caller's objects ------------------------------------------


def capture() -> tuple[list[httpx2.Request], httpx2.MockTransport]:
    """A transport that logs requests and answers like the fake."""
    fake = FakeGemini(call_functions=False)
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        request.read()
        seen.append(request)
        return fake.handler(request)

    return seen, httpx2.MockTransport(handler)


def sdk_pair(**options: Any) -> tuple[genai.Client, list[httpx2.Request], Any, list[httpx2.Request]]:
    raw_seen, raw_transport = capture()
    wrapped_seen, wrapped_transport = capture()
    raw = genai.Client(
        api_key=API_KEY,
        http_options=gtypes.HttpOptions(
            client_args={"transport": raw_transport}, async_client_args={"transport": raw_transport}
        ),
    )
    wrapped = bc.GenAIClient(
        api_key=API_KEY,
        http_options=gtypes.HttpOptions(
            client_args={"transport": wrapped_transport}, async_client_args={"transport": wrapped_transport}
        ),
        **options,
    )
    return raw, raw_seen, wrapped, wrapped_seen


def tool_config() -> gtypes.GenerateContentConfig:
    return gtypes.GenerateContentConfig(
        system_instruction="You answer questions about the weather.",
        tools=[
            gtypes.Tool(
                function_declarations=[
                    gtypes.FunctionDeclaration(name="get_weather", description="Weather in a city.")
                ]
            )
        ],
        temperature=0.2,
    )


@pytest.mark.parametrize("cache", ["off", "auto"])
async def test_the_wire_is_what_the_plain_sdk_sends(cache: str) -> None:
    raw, raw_seen, wrapped, wrapped_seen = sdk_pair(cache=cache)
    history: list[gtypes.Content] = []
    config = tool_config()
    with bc.task("t", budget_usd=10):
        for i in range(4):
            history.append(gtypes.Content(role="user", parts=[gtypes.Part(text=f"question {i} " * 30)]))
            for client in (raw, wrapped):
                client.models.generate_content(model=MODEL, contents=history, config=config)
                for _ in client.models.generate_content_stream(model=MODEL, contents=history, config=config):
                    pass
                await client.aio.models.generate_content(model=MODEL, contents=history, config=config)
            history.append(gtypes.Content(role="model", parts=[gtypes.Part(text=f"answer {i}")]))
    assert len(wrapped_seen) == len(raw_seen) == 12
    for sent, plain in zip(wrapped_seen, raw_seen, strict=True):
        assert (sent.method, sent.url, sent.content) == (plain.method, plain.url, plain.content)


def test_a_rewritten_request_is_the_callers_body_reading_the_cache_and_objects_stay_untouched() -> None:
    fake = FakeGemini(implicit_caching=False, call_functions=False)
    plain_seen, plain_transport = capture()
    plain = genai.Client(
        api_key=API_KEY, http_options=gtypes.HttpOptions(client_args={"transport": plain_transport})
    )
    wrapped = bc.GenAIClient(api_key=API_KEY, http_options=http_options(fake))
    config = gtypes.GenerateContentConfig(system_instruction="policy " * 12_000, temperature=0.1)
    config_before = config.model_dump()
    history: list[gtypes.Content] = []
    with bc.task("conversation"):
        for i in range(5):
            history.append(gtypes.Content(role="user", parts=[gtypes.Part(text=f"question {i}")]))
            snapshot = [c.model_dump() for c in history]
            wrapped.models.generate_content(model=MODEL, contents=history, config=config)
            plain.models.generate_content(model=MODEL, contents=history, config=config)
            assert [c.model_dump() for c in history] == snapshot and config.model_dump() == config_before
            history.append(gtypes.Content(role="model", parts=[gtypes.Part(text=f"answer {i}")]))
            fake.advance(30)
        wrapped.close()
    generate = [r for r in fake.requests if r.url.path.endswith(":generateContent")]
    rewritten = [
        (sent, caller)
        for sent, caller in zip(generate, plain_seen, strict=True)
        if b"cachedContent" in sent.content
    ]
    assert rewritten, "the conversation should have read a managed cache"
    for sent, caller in rewritten:
        name = json.loads(sent.content)["cachedContent"]
        assert sent.content == json.dumps(rewrite_body(json.loads(caller.content), name, 0)).encode()
        assert sent.headers["content-length"] == str(len(sent.content))


# -- small memos on the per-call path -----------------------------------------------------------


def test_server_clock_reads_each_date_header_and_tracks_the_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    local = [1_000.0]
    monkeypatch.setattr(_google_rules.time, "time", lambda: local[0])
    clock = ServerClock()
    first = "Sun, 29 Nov 2026 09:00:00 GMT"
    at = email.utils.parsedate_to_datetime(first).timestamp()
    assert clock.observe(first) == at and clock.now() == at
    local[0] += 0.5  # the same header again, half a second later on the local clock
    assert clock.observe(first) == at and clock.now() == at
    second = "Sun, 29 Nov 2026 09:00:01 GMT"
    assert clock.observe(second) == at + 1 and clock.now() == at + 1
    assert clock.observe("not a date") == clock.now() == at + 1
    assert clock.observe(first) == at  # an older header is read again, not mistaken for the last


def test_routes_are_parsed_alike_however_often_a_path_is_seen() -> None:
    url = httpx2.URL(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    first, again = parse_route(url), parse_route(url)
    assert (
        first
        == again
        == GeminiRoute("generateContent", "gemini-2.5-flash", "models/gemini-2.5-flash", "/v1beta/", "")
    )
    assert parse_route(httpx2.URL("https://example.test/v1beta/files")) is None
