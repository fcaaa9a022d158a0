"""OpenAI caching through bc.OpenAI: prompt_cache_key, gpt-5.6+ breakpoints, prefix drift, diagnostics.

Token positions are computed here from the fake backend's documented rules (one token per word
or punctuation mark, one marker token per message/tool/instructions) and costs from the
published gpt-5.6-terra / gpt-4o rates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import openai
import pytest

import budgetclient as bc
from budgetclient.testing.fake_openai import FakeOpenAI, tokenize

MILLION = Decimal(1_000_000)
TERRA = {
    "input": Decimal("2"),
    "cache_read": Decimal("0.20"),
    "cache_write": Decimal("2.50"),
    "output": Decimal("12"),
}
SYSTEM = (
    "You are the billing assistant of Acme. Follow the refund policy to the letter. " * 90
)  # 1,440 tokens
SMALL_SYSTEM = "You are terse."
SYSTEM_TOKENS = 1 + len(tokenize(SYSTEM))  # role marker + words and punctuation


def messages(user: str, system: str = SYSTEM) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def terra_cost(wire: Mapping[str, Any]) -> Decimal:
    if "prompt_tokens" in wire:
        total, details, output = (
            wire["prompt_tokens"],
            wire["prompt_tokens_details"],
            wire["completion_tokens"],
        )
    else:
        total, details, output = wire["input_tokens"], wire["input_tokens_details"], wire["output_tokens"]
    cached, written = details.get("cached_tokens") or 0, details.get("cache_write_tokens") or 0
    return (
        (total - cached - written) * TERRA["input"]
        + cached * TERRA["cache_read"]
        + written * TERRA["cache_write"]
        + output * TERRA["output"]
    ) / MILLION


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


def client_for(fake: FakeOpenAI, **options: Any) -> bc.OpenAI:
    return bc.OpenAI(api_key="sk-test", http_client=fake.http_client(), **options)


# -- prompt_cache_key ----------------------------------------------------------------------------


def test_prompt_cache_key_follows_the_stable_prefix_across_tasks_and_clients(fake: FakeOpenAI) -> None:
    """Tasks sending one prefix share its key (and so OpenAI's warm machines), in any process;
    a different prefix gets another key."""
    first, second = client_for(fake), client_for(fake)  # two clients stand for two processes
    with bc.task("triage"):
        first.chat.completions.create(model="gpt-4o", messages=messages("a"))
        first.chat.completions.create(model="gpt-4o", messages=messages("b"))
    with bc.task("triage"):
        second.chat.completions.create(model="gpt-4o", messages=messages("c"))
    with bc.task("summarize"):
        second.chat.completions.create(model="gpt-4o", messages=messages("d"))
        second.chat.completions.create(model="gpt-4o", messages=messages("e", system=SMALL_SYSTEM))
    with bc.task("summarize"):
        second.chat.completions.create(model="gpt-4.1", messages=messages("f"))
    keys = [r.body["prompt_cache_key"] for r in fake.requests]
    assert keys[0] == keys[1] == keys[2] == keys[3]
    assert len({keys[0], keys[4], keys[5]}) == 3
    assert all(k.startswith("bc-") and len(k) <= 64 for k in keys)


def test_tasks_with_one_prefix_read_each_others_cache(fake: FakeOpenAI) -> None:
    """The second task's first call hits the prefix the first task warmed: cheaper than raw SDK
    calls, which send no key and (on the fake, as on OpenAI) share only by chance of routing."""
    client = client_for(fake)
    for name in ("first", "second"):
        with bc.task(name):
            client.chat.completions.create(model="gpt-4o", messages=messages(name))
    cached = [r.usage["prompt_tokens_details"]["cached_tokens"] for r in fake.requests]
    assert cached[0] == 0 and cached[1] >= 1024


def test_without_a_stable_prefix_the_key_follows_the_conversation(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.conversation("ticket-9"):
        with bc.task("triage"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a"}])
        with bc.task("triage"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "b"}])
    with bc.conversation("ticket-10"), bc.task("triage"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "c"}])
    first, second, other = (r.body["prompt_cache_key"] for r in fake.requests)
    assert first == second != other


def test_callers_prompt_cache_key_wins(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("triage"):
        client.chat.completions.create(model="gpt-4o", messages=messages("a"), prompt_cache_key="tenant-42")
        client.responses.create(model="gpt-4o", input="b", prompt_cache_key="tenant-42")
    assert [r.body["prompt_cache_key"] for r in fake.requests] == ["tenant-42", "tenant-42"]


def test_the_key_routes_repeat_calls_to_the_cache(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("triage") as t:
        client.chat.completions.create(model="gpt-4o", messages=messages("first question"))
        second = client.chat.completions.create(model="gpt-4o", messages=messages("second question"))
    # automatic caching: longest shared prefix (system + the user marker), in 128-token steps from 1,024
    shared = SYSTEM_TOKENS + 1
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == 1024 + (shared - 1024) // 128 * 128
    assert t.usage.cache_read_tokens == second.usage.prompt_tokens_details.cached_tokens


def test_cache_off_sends_the_request_as_written(fake: FakeOpenAI) -> None:
    client = client_for(fake, cache="off")
    with bc.task("off") as t:
        client.chat.completions.create(model="gpt-5.6-terra", messages=messages("a"))
        list(client.chat.completions.create(model="gpt-5.6-terra", messages=messages("b"), stream=True))
    plain, streamed = (r.body for r in fake.requests)
    assert plain == {"model": "gpt-5.6-terra", "messages": messages("a")}
    assert streamed == {
        "model": "gpt-5.6-terra",
        "messages": messages("b"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }  # metering still needs stream usage
    assert t.calls == 2


# -- explicit breakpoints (gpt-5.6 and later) ---------------------------------------------------


def test_breakpoint_at_the_end_of_the_system_prompt(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("bp") as t:
        client.chat.completions.create(model="gpt-5.6-terra", messages=messages("Refund for order 1?"))
        second = client.chat.completions.create(model="gpt-5.6-terra", messages=messages("And order 2?"))
    sent = fake.requests[0].body
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": SYSTEM, "prompt_cache_breakpoint": {"mode": "explicit"}}
    ]
    assert sent["messages"][1] == {"role": "user", "content": "Refund for order 1?"}
    assert sent["prompt_cache_options"] == {"mode": "implicit"}
    assert t.records[0].metadata["breakpoints"] == ["messages[0].content[0]"]
    # the second question reads the system prompt the first one wrote at the breakpoint
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == SYSTEM_TOKENS
    first_wire, second_wire = fake.usages
    assert first_wire["prompt_tokens_details"]["cache_write_tokens"] == first_wire["prompt_tokens"]
    assert t.cost == terra_cost(first_wire) + terra_cost(second_wire)


def test_without_budgetclient_the_system_prompt_is_not_reused(fake: FakeOpenAI) -> None:
    plain = openai.OpenAI(api_key="sk-test", http_client=fake.http_client())
    plain.chat.completions.create(model="gpt-5.6-terra", messages=messages("Refund for order 1?"))
    second = plain.chat.completions.create(model="gpt-5.6-terra", messages=messages("And order 2?"))
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == 0  # only the implicit, per-input breakpoint


def test_responses_instructions_become_a_marked_developer_message(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("bp") as t:
        client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Order 1?")
        second = client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Order 2?")
        chained = client.responses.create(
            model="gpt-5.6-terra", instructions=SYSTEM, input="And then?", previous_response_id=second.id
        )
    sent = fake.requests[0].body
    assert "instructions" not in sent
    assert sent["input"] == [
        {
            "role": "developer",
            "content": [
                {"type": "input_text", "text": SYSTEM, "prompt_cache_breakpoint": {"mode": "explicit"}}
            ],
        },
        {"role": "user", "content": "Order 1?"},
    ]
    assert second.usage is not None and second.usage.input_tokens_details.cached_tokens == SYSTEM_TOKENS
    # a stateful call keeps its instructions: a moved message would be stored into the conversation
    assert fake.requests[2].body["instructions"] == SYSTEM
    assert chained.usage is not None
    assert t.cost == sum((terra_cost(u) for u in fake.usages), Decimal(0))


def test_diagnostics_are_requested_with_the_previous_response(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("diag"):
        first = client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Order 1?")
        client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Order 2?")
    assert "comparison_response_id" not in fake.requests[0].body["prompt_cache_options"]
    assert fake.requests[1].body["prompt_cache_options"] == {
        "mode": "implicit",
        "comparison_response_id": first.id,
    }


@pytest.mark.parametrize(
    ("caller_marks", "mode", "ours"),
    [(2, None, True), (3, None, False), (3, "explicit", True), (4, "explicit", False)],
)
def test_never_more_than_four_breakpoints(
    fake: FakeOpenAI, caller_marks: int, mode: str | None, ours: bool
) -> None:
    parts = [
        {
            "type": "text",
            "text": f"Document {i}. " + "lorem ipsum " * 10,
            "prompt_cache_breakpoint": {"mode": "explicit"},
        }
        for i in range(caller_marks)
    ]
    extra: dict[str, Any] = {"prompt_cache_options": {"mode": mode}} if mode else {}
    client = client_for(fake)
    with bc.task("cap"):
        client.chat.completions.create(
            model="gpt-5.6-terra",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}],
            **extra,
        )
    sent = fake.requests[0].body
    marked_system = isinstance(sent["messages"][0]["content"], list)
    assert marked_system is ours
    if mode:
        assert sent["prompt_cache_options"] == {"mode": mode}  # the caller's options are untouched


def test_callers_retention_means_no_prompt_cache_options(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("retention"):
        client.chat.completions.create(
            model="gpt-5.6-terra", messages=messages("a"), prompt_cache_retention="24h"
        )
    sent = fake.requests[0].body
    assert "prompt_cache_options" not in sent
    assert sent["prompt_cache_retention"] == "24h"
    assert sent["messages"][0]["content"][0]["prompt_cache_breakpoint"] == {"mode": "explicit"}


def test_no_breakpoint_below_the_minimum_or_on_older_models(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("small"):
        client.chat.completions.create(model="gpt-5.6-terra", messages=messages("a", SMALL_SYSTEM))
        client.chat.completions.create(model="gpt-4o", messages=messages("a"))
    small, older = (r.body for r in fake.requests)
    assert small["messages"][0]["content"] == SMALL_SYSTEM and "prompt_cache_options" not in small
    assert older["messages"][0]["content"] == SYSTEM and "prompt_cache_options" not in older


def test_cache_ttl_1h_writes_with_the_12h_ttl_on_responses(fake: FakeOpenAI) -> None:
    client = client_for(fake, cache_ttl="1h")
    with bc.task("ttl") as t:
        client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM, input="Order 1?")
    sent = fake.requests[0].body
    assert sent["input"][0]["content"][0]["prompt_cache_breakpoint"] == {"mode": "explicit", "ttl": "12h"}
    details = fake.usages[0]["input_tokens_details"]
    assert t.usage.cache_write_long_tokens == details["cache_write_tokens_details"]["ttl_12h_tokens"]
    assert t.usage.cache_write_long_tokens == SYSTEM_TOKENS
    assert t.usage.cache_write_tokens == details["cache_write_tokens"]


# -- prefix drift --------------------------------------------------------------------------------


def test_a_changed_system_prompt_is_reported(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    before = SYSTEM + "Today is 2026-11-28."
    after = SYSTEM + "Today is 2026-11-29."
    with bc.task("drift") as t:
        client.chat.completions.create(model="gpt-4o", messages=messages("a", before))
        with pytest.warns(bc.PrefixDriftWarning) as caught:
            client.chat.completions.create(model="gpt-4o", messages=messages("b", after))
    drift = t.records[1].drift
    assert drift is not None and caught[0].message.drift == drift  # type: ignore[union-attr]
    assert drift.segment == "messages[0].content"
    offset = next(i for i, (x, y) in enumerate(zip(before.encode(), after.encode(), strict=True)) if x != y)
    assert drift.offset == offset
    assert "28" in drift.before and "29" in drift.after
    assert drift.cause == "timestamp"
    # what the change costs: the system prompt from the change on is no longer read from cache
    assert drift.tokens_at_risk > 0
    assert drift.est_extra_cost == drift.tokens_at_risk * (Decimal("2.50") - Decimal("1.25")) / MILLION
    assert t.records[0].drift is None


def test_tools_changes_are_reported(fake: FakeOpenAI) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    changed = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "x": 1}}}
    client = client_for(fake)
    with bc.task("drift") as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)
        client.responses.create(model="gpt-4o", instructions=SYSTEM, input="a", tools=[tool])
        client.responses.create(model="gpt-4o", instructions=SYSTEM, input="b", tools=[changed])
    drift = t.records[1].drift
    assert drift is not None and drift.segment.startswith("tools[0]")


def test_a_changed_cache_parameter_is_reported(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("drift") as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)
        client.chat.completions.create(model="gpt-4o", messages=messages("a"), reasoning_effort="low")
        client.chat.completions.create(model="gpt-4o", messages=messages("b"), reasoning_effort="high")
    drift = t.records[1].drift
    assert drift is not None and drift.segment == "reasoning_effort"
    assert (drift.before, drift.after) == ('"low"', '"high"')


def test_drift_raise_stops_the_request_before_sending(fake: FakeOpenAI) -> None:
    client = client_for(fake, drift="raise")
    with bc.task("drift"):
        client.chat.completions.create(model="gpt-4o", messages=messages("a", SYSTEM + " v1"))
        with pytest.raises(bc.PrefixDriftError) as raised:
            client.chat.completions.create(model="gpt-4o", messages=messages("b", SYSTEM + " v2"))
    assert raised.value.drift.segment == "messages[0].content"
    assert len(fake.requests) == 1


def test_drift_off_and_a_stable_loop_report_nothing(fake: FakeOpenAI) -> None:
    quiet = client_for(fake, drift="off")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bc.PrefixDriftWarning)
        with bc.task("off") as off:
            quiet.chat.completions.create(model="gpt-4o", messages=messages("a", SYSTEM + " v1"))
            quiet.chat.completions.create(model="gpt-4o", messages=messages("b", SYSTEM + " v2"))
        stable = client_for(fake)
        with bc.task("stable") as loop:
            history = messages("start")
            for turn in range(20):
                reply = stable.chat.completions.create(model="gpt-4o", messages=history)
                history += [
                    {"role": "assistant", "content": reply.choices[0].message.content},
                    {"role": "user", "content": f"turn {turn}"},
                ]
    assert all(r.drift is None for r in (*off.records, *loop.records))
    assert not [w for w in caught if issubclass(w.category, bc.PrefixDriftWarning)]


def test_a_retried_attempt_does_not_warn_twice(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("drift") as t:
        client.chat.completions.create(model="gpt-4o", messages=messages("a", SYSTEM + " v1"))
        fake.fail_next(503)
        with pytest.warns(bc.PrefixDriftWarning) as caught:
            client.chat.completions.create(model="gpt-4o", messages=messages("b", SYSTEM + " v2"))
    assert len([w for w in caught if issubclass(w.category, bc.PrefixDriftWarning)]) == 1
    assert [r.status for r in t.records] == ["ok", "error", "ok"]


def test_provider_diagnostics_are_merged_into_the_drift(fake: FakeOpenAI) -> None:
    client = client_for(fake)
    with bc.task("diag") as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)
        client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM + " v1", input="a")
        second = client.responses.create(model="gpt-5.6-terra", instructions=SYSTEM + " v2", input="b")
    diagnostics = second.prompt_cache_diagnostics
    assert diagnostics is not None and diagnostics.type == "cache_miss"
    drift = t.records[1].drift
    assert drift is not None
    assert drift.segment == "instructions"
    # the key follows the prefix, so OpenAI names the key change; the segment says what changed
    assert drift.provider_reason == diagnostics.reason == "prompt_cache_key_changed"
    assert drift.provider_missed_tokens == diagnostics.cache_missed_tokens


def gpt51_bill(fake: FakeOpenAI) -> Decimal:
    """GPT-5.1 at its published prices: $1.25 input, $0.125 cached input, $10 output per MTok."""
    total = Decimal(0)
    for u in fake.usages:
        cached = u["prompt_tokens_details"].get("cached_tokens") or 0
        total += (u["prompt_tokens"] - cached) * Decimal("1.25") + cached * Decimal("0.125")
        total += u["completion_tokens"] * Decimal(10)
    return total / MILLION


def run_busy_prefix(fake: FakeOpenAI, client: Any) -> None:
    """Six conversations (tasks) of five calls on one prefix, all within one minute: 30 req/min."""
    for turn in range(5):
        for worker in range(6):
            with bc.conversation(f"worker-{worker}"), bc.task("busy"):
                client.chat.completions.create(model="gpt-5.1", messages=messages(f"w{worker} t{turn}"))
            fake.clock.advance(1)


def test_a_busy_prefix_is_spread_over_keys_below_the_route_limit() -> None:
    """Past ~15 requests a minute on one prefix + key, OpenAI sends requests to machines without
    the prefix. Conversations are spread over keys instead, each staying on its own route."""
    spread, one_key = FakeOpenAI(route_limit_per_min=15), FakeOpenAI(route_limit_per_min=15)
    run_busy_prefix(spread, client_for(spread))
    run_busy_prefix(one_key, openai.OpenAI(api_key="sk-test", http_client=one_key.http_client()))
    keys = [r.body["prompt_cache_key"] for r in spread.requests]
    assert len(set(keys)) == 2  # 30 req/min over two keys of at most 15
    assert all(keys.count(k) <= 15 for k in set(keys))
    assert all(len(set(keys[w::6])) <= 2 for w in range(6))  # a conversation moves at most once
    cached = [r.usage["prompt_tokens_details"]["cached_tokens"] for r in spread.requests]
    assert cached.count(0) == 2  # the first call on each key; none overflowed
    assert gpt51_bill(spread) < gpt51_bill(one_key)
