"""The fake OpenAI backend follows OpenAI's documented caching and streaming rules.

Expectations are computed by hand from the rules: one token per word or punctuation mark, one
marker token per message/tool/instructions; automatic caching from 1,024 tokens in 128-token
steps; explicit breakpoints (gpt-5.6+) cache exactly up to the marked part.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from budgetclient.testing.fake_openai import FakeClock, FakeOpenAI, FakeReply, tokenize

WORDS = "alpha beta gamma delta " * 300  # 1,200 tokens


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeOpenAI:
    return FakeOpenAI(clock)


def post(fake: FakeOpenAI, path: str, body: dict[str, Any]) -> httpx2.Response:
    with fake.http_client() as http:
        response = http.post(f"https://api.openai.com/v1{path}", json=body)
        response.read()
        return response


def chat_usage(fake: FakeOpenAI, system: str, user: str, **extra: Any) -> dict[str, Any]:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        **extra,
    }
    usage: dict[str, Any] = post(fake, "/chat/completions", body).json()["usage"]
    return usage


def test_prompt_tokens_follow_the_tokenizer(fake: FakeOpenAI) -> None:
    usage = chat_usage(fake, "Be brief.", "Hello, world!")
    assert usage["prompt_tokens"] == (1 + 3) + (1 + 4)
    assert usage["completion_tokens"] == len(tokenize("ok: Hello, world!"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_automatic_caching_in_128_token_steps(fake: FakeOpenAI) -> None:
    chat_usage(fake, WORDS, "first question")
    second = chat_usage(fake, WORDS, "another question")
    shared = 1 + 1200 + 1  # system marker + words + the user marker
    assert second["prompt_tokens_details"]["cached_tokens"] == 1024 + (shared - 1024) // 128 * 128 == 1152
    assert "cache_write_tokens" not in second["prompt_tokens_details"]  # free and unreported before gpt-5.6


def test_no_caching_below_1024_tokens(fake: FakeOpenAI) -> None:
    short = "alpha beta " * 400  # 800 tokens
    chat_usage(fake, short, "q")
    assert chat_usage(fake, short, "q")["prompt_tokens_details"]["cached_tokens"] == 0


def test_cache_is_routed_by_model_and_prompt_cache_key(fake: FakeOpenAI) -> None:
    chat_usage(fake, WORDS, "q", prompt_cache_key="a")
    assert chat_usage(fake, WORDS, "q", prompt_cache_key="b")["prompt_tokens_details"]["cached_tokens"] == 0
    assert (
        chat_usage(fake, WORDS, "q", prompt_cache_key="a")["prompt_tokens_details"]["cached_tokens"] == 1152
    )


def test_entries_expire_after_ten_idle_minutes(fake: FakeOpenAI, clock: FakeClock) -> None:
    chat_usage(fake, WORDS, "q")
    clock.advance(599)
    assert chat_usage(fake, WORDS, "q")["prompt_tokens_details"]["cached_tokens"] == 1152  # a hit refreshes
    clock.advance(599)
    assert chat_usage(fake, WORDS, "q")["prompt_tokens_details"]["cached_tokens"] == 1152
    clock.advance(601)
    assert chat_usage(fake, WORDS, "q")["prompt_tokens_details"]["cached_tokens"] == 0


def test_24h_retention(fake: FakeOpenAI, clock: FakeClock) -> None:
    chat_usage(fake, WORDS, "q", prompt_cache_retention="24h")
    clock.advance(86_000)
    usage = chat_usage(fake, WORDS, "q", prompt_cache_retention="24h")
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1152


def responses_usage(fake: FakeOpenAI, body: dict[str, Any]) -> dict[str, Any]:
    usage: dict[str, Any] = post(fake, "/responses", {"model": "gpt-5.6-terra", **body}).json()["usage"]
    return usage


def marked_input(user: str, ttl: str | None = None) -> list[dict[str, Any]]:
    marker = {"mode": "explicit", **({"ttl": ttl} if ttl else {})}
    return [
        {
            "role": "developer",
            "content": [{"type": "input_text", "text": WORDS, "prompt_cache_breakpoint": marker}],
        },
        {"role": "user", "content": user},
    ]


def test_explicit_breakpoints_cache_exactly_to_the_mark(fake: FakeOpenAI) -> None:
    first = responses_usage(fake, {"input": marked_input("one two three")})
    prefix = 1 + 1200  # developer marker + words: the breakpoint position
    total = prefix + 1 + 3
    assert first["input_tokens"] == total
    # written: up to the furthest new breakpoint (the implicit one at the end of the input)
    assert first["input_tokens_details"]["cache_write_tokens"] == total
    assert first["input_tokens_details"]["cached_tokens"] == 0
    second = responses_usage(fake, {"input": marked_input("four five")})
    assert second["input_tokens_details"]["cached_tokens"] == prefix  # not rounded to 128
    assert second["input_tokens_details"]["cache_write_tokens"] == (prefix + 1 + 2) - prefix


def test_12h_ttl_writes_are_reported_apart(fake: FakeOpenAI) -> None:
    usage = responses_usage(fake, {"input": marked_input("one", ttl="12h")})
    details = usage["input_tokens_details"]
    assert details["cache_write_tokens_details"] == {"ttl_12h_tokens": 1201, "ttl_30m_tokens": 2}
    assert details["cache_write_tokens"] == 1203


def test_explicit_mode_without_breakpoints_caches_nothing(fake: FakeOpenAI) -> None:
    body = {"input": [{"role": "user", "content": WORDS}], "prompt_cache_options": {"mode": "explicit"}}
    assert responses_usage(fake, body)["input_tokens_details"]["cache_write_tokens"] == 0
    assert responses_usage(fake, body)["input_tokens_details"]["cached_tokens"] == 0


def test_implicit_breakpoint_extends_a_conversation(fake: FakeOpenAI) -> None:
    turn = [{"role": "user", "content": WORDS}]
    responses_usage(fake, {"input": turn})
    longer = responses_usage(fake, {"input": [*turn, {"role": "user", "content": "more"}]})
    assert longer["input_tokens_details"]["cached_tokens"] == 1 + 1200


def test_previous_response_id_carries_the_conversation(fake: FakeOpenAI) -> None:
    first = post(
        fake, "/responses", {"model": "gpt-4o", "instructions": "Be brief.", "input": "Hello there"}
    ).json()
    second = post(
        fake,
        "/responses",
        {
            "model": "gpt-4o",
            "instructions": "Be brief.",
            "input": "Again",
            "previous_response_id": first["id"],
        },
    ).json()
    conversation = (1 + 2) + 1 + first["usage"]["output_tokens"]  # user turn, assistant marker, output
    assert second["usage"]["input_tokens"] == (1 + 3) + conversation + (1 + 1)


def test_diagnostics_compare_with_the_named_response(fake: FakeOpenAI) -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    base = {"input": marked_input("one"), "tools": tools}
    first = post(fake, "/responses", {"model": "gpt-5.6-terra", **base}).json()

    def diagnose(**change: Any) -> dict[str, Any]:
        options = {"comparison_response_id": change.pop("compare", first["id"])}
        body = {"model": "gpt-5.6-terra", **base, **change, "prompt_cache_options": options}
        result: dict[str, Any] = post(fake, "/responses", body).json()["prompt_cache_diagnostics"]
        return result

    assert diagnose() == {"type": "cache_hit"}
    assert diagnose(compare="resp_missing") == {"type": "comparison_response_not_found"}
    assert diagnose(model="gpt-6-sol")["reason"] == "model_changed"
    assert diagnose(tools=[])["reason"] == "tools_changed"
    changed = diagnose(input=[{"role": "developer", "content": "other " + WORDS}])
    assert changed["reason"] == "input_changed"
    tool_tokens = 1 + len(tokenize(json.dumps(tools[0], sort_keys=True)))  # marker + its sorted JSON
    unchanged = tool_tokens + 1  # the tool and the developer marker still match
    assert changed["cache_missed_tokens"] == first["usage"]["input_tokens"] - unchanged


def stream_chunks(fake: FakeOpenAI, **extra: Any) -> list[dict[str, Any]]:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "count to five"}],
        "stream": True,
        **extra,
    }
    text = post(fake, "/chat/completions", body).text
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_chat_stream_usage_only_with_include_usage(fake: FakeOpenAI) -> None:
    assert all("usage" not in chunk for chunk in stream_chunks(fake))
    chunks = stream_chunks(fake, stream_options={"include_usage": True})
    assert all(chunk["usage"] is None and chunk["choices"] for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1 + 3
    assert fake.requests[0].usage == chunks[-1]["usage"]  # the log keeps usage even when unsent


def test_responses_stream_events(fake: FakeOpenAI) -> None:
    client = openai.OpenAI(api_key="sk-test", http_client=fake.http_client())
    fake.reply(FakeReply(text="Sunny.", tool_calls=(("get_weather", {"city": "Paris"}),)))
    with client.responses.stream(model="gpt-4o", input="Weather?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "Sunny."
    assert final.output[1].type == "function_call" and json.loads(final.output[1].arguments) == {
        "city": "Paris"
    }
    assert final.usage is not None and final.usage.output_tokens == len(tokenize("Sunny. get_weather")) + len(
        tokenize(json.dumps({"city": "Paris"}))
    )


def test_chat_tool_calls_and_reasoning(fake: FakeOpenAI) -> None:
    client = openai.OpenAI(api_key="sk-test", http_client=fake.http_client())
    fake.reply(FakeReply(tool_calls=(("lookup", {"id": 7}),), reasoning_tokens=11))
    completion = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "?"}])
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"id": 7}  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 11
    assert completion.usage.completion_tokens == 11 + len(tokenize('lookup {"id": 7}'))


def test_fail_next_and_cut_next_stream(fake: FakeOpenAI) -> None:
    fake.fail_next(429, count=2)
    assert post(fake, "/chat/completions", {"model": "gpt-4o", "messages": []}).status_code == 429
    assert post(fake, "/responses", {"model": "gpt-4o", "input": "x"}).status_code == 429
    assert post(fake, "/responses", {"model": "gpt-4o", "input": "x"}).status_code == 200
    fake.cut_next_stream(after_events=1)
    with fake.http_client() as http, pytest.raises(httpx2.ReadError):
        http.post(
            "https://api.openai.com/v1/responses", json={"model": "gpt-4o", "input": "x", "stream": True}
        )
    assert [r.status for r in fake.requests] == [429, 429, 200, 200]


def test_input_tokens_endpoint(fake: FakeOpenAI) -> None:
    client = openai.OpenAI(api_key="sk-test", http_client=fake.http_client())
    counted = client.responses.input_tokens.count(
        model="gpt-4o", instructions="Be brief.", input="Hello there"
    )
    assert counted.input_tokens == (1 + 3) + (1 + 2)


BREAKPOINT_MODELS = {  # provider-facts.md: explicit prompt_cache_breakpoint from GPT-5.6 on
    "gpt-4o": False,
    "gpt-4.1-mini": False,
    "gpt-5": False,
    "gpt-5.5-pro": False,
    "gpt-5.6": True,
    "gpt-5.6-mini-2026-09-01": True,
    "gpt-5.10": True,
    "ft:gpt-5.6:acme::abc123": True,
    "gpt-6": True,
    "GPT-6.1": True,
}


@pytest.mark.parametrize(("model", "supported"), sorted(BREAKPOINT_MODELS.items()))
def test_fake_and_library_state_the_breakpoint_rule_independently(model: str, supported: bool) -> None:
    """The fake has its own statement of the rule, so a wrong library rule fails here, not passes."""
    from budgetclient.formats.openai.usage import supports_prompt_cache_breakpoints as library_rule
    from budgetclient.testing.fake_openai import supports_prompt_cache_breakpoints as fake_rule

    assert fake_rule is not library_rule
    assert fake_rule(model) is supported
    assert library_rule(model) is supported
