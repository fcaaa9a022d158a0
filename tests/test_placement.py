"""Where breakpoints go: pure placement decisions, then whole conversations against the fake backend.

Expected numbers are computed here from the fake's usage fields and its documented tokenizer
(one word = one token), never read back from budgetclient.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetclient.formats.anthropic.blocks import request_blocks
from budgetclient.formats.anthropic.prepare import observe_response, prepare_request
from budgetclient.lineage import LineageRegistry, LineageState
from budgetclient.placement import (
    Marker,
    TailRule,
    choose_ttl,
    drift_region_end,
    learn_tail,
    min_cacheable_tokens,
    place_breakpoints,
    trailing_turn_start,
    volatile_tail_start,
)
from budgetclient.testing import FakeAnthropic, FakeClock, cache_breakpoints, prompt_blocks
from budgetclient.testing.traces import send, usage_of

MODEL = "claude-sonnet-4-6"


def words(n: int, seed: int = 0) -> str:
    vocabulary = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    return " ".join(vocabulary[(i * 7 + seed) % len(vocabulary)] for i in range(n))


def conversation(turns: int, *, system_words: int = 1500, result_words: int = 50) -> dict[str, Any]:
    """tools + 2 system blocks, then user / assistant tool_use / user tool_result steps."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": words(40, 1)}]
    for k in range(turns):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": words(10, k)},
                    {"type": "tool_use", "id": f"t{k}", "name": "search", "input": {"q": words(3, k)}},
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"t{k}", "content": words(result_words, k)},
                ],
            }
        )
    return {
        "model": MODEL,
        "max_tokens": 64,
        "tools": [{"name": "search", "description": words(30), "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": words(system_words)}, {"type": "text", "text": words(20, 3)}],
        "messages": messages,
    }


def marked_paths(body: dict[str, Any]) -> dict[str, str]:
    """Block path -> TTL of every ``cache_control`` in a body, as the fake backend reads them."""
    return {b.segment: b.cache_ttl for b in prompt_blocks(body) if b.cache_ttl is not None}


# --- pure decisions ----------------------------------------------------------------------------


def test_append_only_places_stable_and_rolling() -> None:
    request = request_blocks(conversation(3))
    markers = place_breakpoints(request, ttl="5m", min_tokens=1024)
    last = len(request) - 1
    assert markers == (Marker(2, "5m", "stable"), Marker(last, "5m", "rolling"))


def test_nothing_below_the_minimum() -> None:
    request = request_blocks(conversation(1, system_words=100))
    total = request.total_tokens
    assert place_breakpoints(request, ttl="5m", min_tokens=total + 1) == ()
    # the fixed prefix alone is below the minimum, the whole conversation is not
    only = place_breakpoints(request, ttl="5m", min_tokens=request.prefix_tokens[2] + 1)
    assert [m.role for m in only] == ["rolling"]


def test_volatile_tail_moves_the_rolling_breakpoint() -> None:
    body = conversation(2)
    body["messages"].append({"role": "assistant", "content": "answer"})
    body["messages"].append(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "question"},
                {"type": "text", "text": "doc one"},
                {"type": "text", "text": "doc two"},
            ],
        }
    )
    request = request_blocks(body)
    n = len(request)
    after_question = place_breakpoints(request, ttl="5m", min_tokens=1024, tail=TailRule(0, 1))
    assert after_question[-1] == Marker(n - 3, "5m", "rolling")
    whole_turn = place_breakpoints(request, ttl="5m", min_tokens=1024, tail=TailRule(0, 0))
    assert whole_turn[-1] == Marker(n - 4, "5m", "rolling")  # the assistant's answer
    assert volatile_tail_start(request, TailRule(0, 1)) == n - 2
    assert volatile_tail_start(request, None) == n
    assert drift_region_end(request, TailRule(0, 1)) == n - 2
    assert drift_region_end(request, None) == n - 3 == trailing_turn_start(request.blocks)


def test_intermediate_breakpoint_when_the_previous_write_is_out_of_lookback() -> None:
    request = request_blocks(conversation(14))
    last = len(request) - 1
    near = place_breakpoints(request, ttl="5m", min_tokens=1024, previous_end=last - 18)
    assert [m.role for m in near] == ["stable", "rolling"]  # last - 19 is within the 20-block window
    far = place_breakpoints(request, ttl="5m", min_tokens=1024, previous_end=last - 19)
    assert Marker(last - 20, "5m", "intermediate") in far


def test_caller_markers_count_and_are_never_doubled() -> None:
    body = conversation(3)
    body["tools"][0]["cache_control"] = {"type": "ephemeral"}
    body["messages"][0]["content"] = [
        {"type": "text", "text": words(40, 1), "cache_control": {"type": "ephemeral"}}
    ]
    body["cache_control"] = {"type": "ephemeral"}  # covers the last block
    request = request_blocks(body)
    markers = place_breakpoints(request, ttl="5m", min_tokens=1024)
    assert markers == (Marker(2, "5m", "stable"),)  # the rolling position is already the automatic one
    body["system"][0]["cache_control"] = {"type": "ephemeral"}
    assert place_breakpoints(request_blocks(body), ttl="5m", min_tokens=1024) == ()


def test_ttls_are_ordered_around_caller_markers() -> None:
    body = conversation(3)
    body["messages"][-1]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    body["messages"].append({"role": "assistant", "content": "ok"})
    body["messages"].append({"role": "user", "content": "go on"})
    request = request_blocks(body)
    markers = place_breakpoints(request, ttl="5m", min_tokens=1024)
    assert markers[0] == Marker(2, "1h", "stable")  # before the caller's 1h marker
    assert markers[-1].ttl == "5m"
    body2 = conversation(3)
    body2["system"][0]["cache_control"] = {"type": "ephemeral"}
    markers2 = place_breakpoints(request_blocks(body2), ttl="1h", min_tokens=1024)
    assert all(m.ttl == "5m" for m in markers2)  # after the caller's 5m marker


def test_rolling_walks_back_past_thinking_blocks() -> None:
    body = conversation(2)
    body["messages"].append(
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "sure"},
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
            ],
        }
    )
    request = request_blocks(body)
    markers = place_breakpoints(request, ttl="5m", min_tokens=1024)
    assert markers[-1].index == len(request) - 2


def test_volatile_fixed_block_stops_caching_past_it() -> None:
    request = request_blocks(conversation(3))  # tools[0], system[0], system[1] (changes every call), ...
    markers = place_breakpoints(request, ttl="5m", min_tokens=1024, volatile_fixed=2)
    assert markers == (Marker(1, "5m", "stable"),)
    assert place_breakpoints(request, ttl="5m", min_tokens=1024, volatile_fixed=0) == ()


def test_learn_tail_only_from_the_trailing_turn() -> None:
    before = request_blocks(conversation(2)).blocks
    last = len(before) - 1
    assert learn_tail(before, len(before)) is None  # clean append
    assert learn_tail(before, last) == TailRule(0, 0)
    assert learn_tail(before, 3) is None  # an earlier message changed: drift, not a tail


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-6", 1024),
        ("claude-haiku-4-5-20251001", 4096),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", 1024),
        ("claude-opus-4-6", 4096),
        ("claude-opus-4-1-20250805", 1024),
        ("claude-opus-5", 512),
        ("claude-3-5-haiku-latest", 2048),
        ("some-other-model", 1024),
    ],
)
def test_minimum_cacheable_lengths(model: str, expected: int) -> None:
    assert min_cacheable_tokens(model) == expected


def test_choose_ttl() -> None:
    assert choose_ttl("1h", [], prefix_tokens=0, new_tokens=0) == "1h"
    assert choose_ttl("5m", [4000, 4000], prefix_tokens=0, new_tokens=0) == "5m"
    assert choose_ttl("auto", [], prefix_tokens=9000, new_tokens=100) == "5m"
    assert choose_ttl("auto", [10, 20, 30], prefix_tokens=9000, new_tokens=100) == "5m"
    assert choose_ttl("auto", [10, 400], prefix_tokens=9000, new_tokens=100) == "1h"
    # a long gap, but each call adds far more than it could reuse: the 1h premium would not pay
    assert choose_ttl("auto", [10, 400], prefix_tokens=100, new_tokens=9000) == "5m"
    # every gap outlives even a 1h entry: nothing written would ever be read
    assert choose_ttl("auto", [4000, 5000], prefix_tokens=9000, new_tokens=100) is None
    assert choose_ttl("auto", [4000], prefix_tokens=9000, new_tokens=100) == "5m"


# --- whole conversations against the fake backend --------------------------------------------


class Session:
    """One lineage driven through prepare_request / the fake / observe_response."""

    def __init__(self, **options: Any) -> None:
        self.fake = FakeAnthropic(clock=FakeClock())
        self.state = LineageState("test")
        self.options = {"cache": "auto", "cache_ttl": "auto", "drift": "warn", **options}

    def call(self, body: dict[str, Any], gap: float = 5.0) -> tuple[dict[str, Any], dict[str, Any], Any]:
        self.fake.clock.advance(gap)
        now = self.fake.clock.now()
        prepared = prepare_request(body, state=self.state, now=now, **self.options)
        message = send(self.fake, prepared.body)
        observe_response(self.state, prepared, usage_of(message["usage"]), message, now=now)
        return prepared.body, message["usage"], prepared


def total_input(usage: dict[str, Any]) -> int:
    return usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]


def test_append_only_loop_reads_everything_the_previous_call_sent() -> None:
    session = Session()
    previous_total = None
    for turn in range(1, 51):
        body = conversation(turn, result_words=20)
        sent, usage, prepared = session.call(body)
        assert prepared.drift is None
        # placing markers never changes the cache keys of the prompt
        assert [b.key for b in prompt_blocks(sent)] == [b.key for b in prompt_blocks(body)]
        if previous_total is not None:
            assert usage["cache_read_input_tokens"] == previous_total
        assert usage["input_tokens"] == 0  # everything up to the last block is read or written
        previous_total = total_input(usage)
        assert len(marked_paths(sent)) <= 4


def test_turns_adding_more_than_twenty_blocks_still_read_the_previous_call() -> None:
    session = Session()
    body = conversation(1)
    _, usage, _ = session.call(body)
    previous_total = total_input(usage)
    for _ in range(4):
        for k in range(12):  # 24 blocks per turn, past the 20-block lookback
            body["messages"].append(
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": f"x{k}{len(body['messages'])}",
                            "name": "search",
                            "input": {},
                        }
                    ],
                }
            )
            body["messages"].append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": f"x{k}{len(body['messages']) - 1}",
                            "content": "r",
                        }
                    ],
                }
            )
        _sent, usage, prepared = session.call(copy.deepcopy(body))
        assert usage["cache_read_input_tokens"] == previous_total
        assert any(m.role == "intermediate" for m in prepared.markers)
        previous_total = total_input(usage)


def test_volatile_tail_is_learned_and_no_longer_written() -> None:
    session = Session()
    docs = [words(300, seed) for seed in range(3)]
    history: list[dict[str, Any]] = []
    base = conversation(0)
    writes_of_docs = []
    for turn in range(5):
        question = {"type": "text", "text": f"question {turn} " + words(20, turn)}
        body = {
            **base,
            "messages": [
                *history,
                {
                    "role": "user",
                    "content": [question, *({"type": "text", "text": f"doc {turn} {d}"} for d in docs)],
                },
            ],
        }
        _, usage, prepared = session.call(body)
        assert prepared.drift is None  # the dropped documents are the learned tail, not drift
        doc_tokens = sum(2 + 300 for _ in docs)  # "doc", the turn number and 300 words each
        writes_of_docs.append(usage["input_tokens"] >= doc_tokens)
        history += [
            {"role": "user", "content": [question]},
            {"role": "assistant", "content": [{"type": "text", "text": words(80, turn)}]},
        ]
    # the first call cannot know; from the second on the documents are sent as plain input
    assert writes_of_docs == [False, True, True, True, True]


def test_ttl_auto_switches_to_one_hour_after_a_long_gap() -> None:
    session = Session()
    body = conversation(1)
    _, _first, _ = session.call(body, gap=0)
    body = conversation(2)
    _, second, prepared = session.call(body, gap=400)  # the 5m entries expired
    assert second["cache_read_input_tokens"] == 0
    assert prepared.ttl == "1h"
    assert second["cache_creation"]["ephemeral_1h_input_tokens"] == total_input(second)
    body = conversation(3)
    _, third, _ = session.call(body, gap=1200)  # 20 minutes: the 1h entry is still there
    assert third["cache_read_input_tokens"] == total_input(second)


def test_cache_off_keeps_caller_markers_and_adds_none() -> None:
    session = Session(cache="off")
    body = conversation(2)
    body["system"][1]["cache_control"] = {"type": "ephemeral"}
    sent, _, prepared = session.call(body)
    assert marked_paths(sent) == {"system[1]": "5m"}
    assert prepared.breakpoints == ()


def test_short_conversations_get_no_useless_markers() -> None:
    session = Session()
    body = conversation(1, system_words=50)
    _sent, usage, prepared = session.call(body)
    assert prepared.breakpoints == ()
    assert usage["cache_creation_input_tokens"] == 0


def test_diagnostics_are_requested_with_the_previous_message_id() -> None:
    session = Session()
    sent, _, _ = session.call(conversation(1))
    assert sent["diagnostics"] == {"previous_message_id": None}
    first_id = session.fake.requests[-1].message_id
    sent, _, _ = session.call(conversation(2))
    assert sent["diagnostics"] == {"previous_message_id": first_id}
    quiet = Session(drift="off")
    sent, _, _ = quiet.call(conversation(1))
    assert "diagnostics" not in sent
    flagless = prepare_request(
        conversation(1),
        cache="auto",
        cache_ttl="auto",
        drift="warn",
        state=LineageState("x"),
        now=0.0,
        diagnostics=False,
    )
    assert "diagnostics" not in flagless.body


_TTL = st.sampled_from(["5m", "1h"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    turns=st.integers(0, 12),
    marks=st.lists(st.tuples(st.integers(0, 60), _TTL), max_size=4),
    top=st.one_of(st.none(), _TTL),
    ttl=st.sampled_from(["auto", "5m", "1h"]),
)
def test_any_caller_markers_stay_valid_and_kept(
    turns: int, marks: list[tuple[int, str]], top: str | None, ttl: str
) -> None:
    body = conversation(turns)
    blocks = [b for b in request_blocks(body).blocks if b.markable]
    chosen: dict[int, str] = {}
    for position, mark_ttl in marks:
        chosen[position % len(blocks)] = mark_ttl
    # the caller's own markers must be valid on their own: 1h ones first, at most 4 with the top-level
    ordered = sorted(chosen.items())
    ttls = sorted((t for _, t in ordered), key=lambda t: t != "1h")
    caller = dict(zip((i for i, _ in ordered), ttls, strict=True))
    if top is not None:
        if len(caller) == 4:
            caller.pop(max(caller))
        if top == "1h" and "5m" in caller.values():
            top = "5m"
        body["cache_control"] = {"type": "ephemeral", "ttl": top}
    for index, mark_ttl in caller.items():
        block = blocks[index]
        path = block.path
        if block.section == "tools":
            body["tools"][block.content]["cache_control"] = {"type": "ephemeral", "ttl": mark_ttl}
        elif block.section == "system":
            body["system"][block.content]["cache_control"] = {"type": "ephemeral", "ttl": mark_ttl}
        elif block.shorthand:
            text = body["messages"][block.message]["content"]
            body["messages"][block.message]["content"] = [
                {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": mark_ttl}}
            ]
        else:
            body["messages"][block.message]["content"][block.content]["cache_control"] = {
                "type": "ephemeral",
                "ttl": mark_ttl,
            }
        assert path
    try:
        cache_breakpoints(body, prompt_blocks(body))
    except ValueError:
        return  # the caller's request is itself invalid (e.g. a 1h top-level after a 5m marker)
    original = copy.deepcopy(body)
    prepared = prepare_request(
        body, cache="auto", cache_ttl=ttl, drift="warn", state=LineageState("p"), now=0.0
    )
    assert body == original
    sent = prepared.body
    points = cache_breakpoints(sent, prompt_blocks(sent))  # raises on > 4 markers or a bad TTL order
    assert len(points) <= 4
    before, after = marked_paths(original), marked_paths(sent)
    assert {path: before[path] for path in before} == {path: after[path] for path in before}
    assert sent.get("cache_control") == original.get("cache_control")


def test_a_new_conversation_starts_from_the_gaps_its_client_has_seen() -> None:
    registry = LineageRegistry()
    seasoned = registry.get("first")
    for k, gap in enumerate((0.0, 600.0, 900.0)):
        prepare_request(conversation(k + 1), cache="auto", cache_ttl="auto", drift="warn", state=seasoned,
                        now=1000.0 + gap * k)
    fresh = registry.get("second")
    prepared = prepare_request(conversation(1), cache="auto", cache_ttl="auto", drift="warn", state=fresh,
                               now=5000.0)
    assert prepared.ttl == "1h" and {m.ttl for m in prepared.markers} == {"1h"}
    alone = prepare_request(conversation(1), cache="auto", cache_ttl="auto", drift="warn",
                            state=LineageState("alone"), now=5000.0)
    assert alone.ttl == "5m"


def test_occasional_pauses_keep_the_prefix_on_a_one_hour_anchor() -> None:
    session = Session()
    totals = []
    for turn, gap in enumerate((0.0, 5.0, 5.0, 400.0, 5.0, 1000.0), start=1):
        _, usage, prepared = session.call(conversation(turn), gap=gap)
        totals.append(total_input(usage))
        roles = {m.role: m.ttl for m in prepared.markers}
        if turn == 4:  # the first pause: nothing lasting was cached yet, so all of it goes to 1h
            assert usage["cache_creation"]["ephemeral_1h_input_tokens"] == totals[3]
        if turn == 5:  # one gap in four outlived 5 minutes: 1h on an anchor only, 5m on the rest
            assert roles["anchor"] == "1h" and roles["rolling"] == "5m"
    # after the 1000 s pause the 5m entries are gone; the 5th call's 1h anchor (just past the 4th
    # prompt) is still read, only the part the 5th call wrote at 5m is written again
    assert totals[3] < usage["cache_read_input_tokens"] < totals[4]
