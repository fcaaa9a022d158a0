"""bc.plan: the guide's budget model, plan files, allocation targets and request analysis."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from budgetclient import plan as bplan
from budgetclient.errors import PlanError
from budgetclient.estimate import estimate_request
from budgetclient.pricing import Rate, Rates
from budgetclient.testing.traces import run_trace
from budgetclient.tokens import count_text

from ._approximated_counts import approximated_tokens

GUIDE = Path(__file__).resolve().parents[1] / "examples" / "plans" / "guide.toml"
M = Decimal(1_000_000)
# Published Claude Sonnet 4.6 rates, USD per million tokens
INPUT, READ, WRITE_5M, OUTPUT = Decimal(3), Decimal("0.30"), Decimal("3.75"), Decimal(15)
SONNET_4_6 = Rates(
    model="claude-sonnet-4-6",
    provider="anthropic",
    input=Rate(INPUT),
    output=Rate(OUTPUT),
    cache_read=Rate(READ),
    cache_write=Rate(WRITE_5M),
    cache_write_long=Rate(Decimal(6)),
    cache_storage=None,
    source="published",
)
"""Published Claude Sonnet 4.6 prices, stated here so the check does not read them from the code."""


def _guide() -> dict[str, Any]:
    return bplan.load_plan(GUIDE)


def _history(turn: int) -> int:
    return round(10_000 * (turn - 1) / 14)


def test_guide_example_component_sums() -> None:
    result = bplan.estimate(_guide())
    fixed = 400 + 8 * 200 + 200
    assert fixed == 2_200 and result.fixed_tokens == fixed
    assert len(result.turns) == 15
    last = result.turns[-1]
    assert (last.turn, last.fixed, last.history, last.retrieved, last.user_message) == (
        15,
        2_200,
        10_000,
        2_500,
        200,
    )
    assert last.variable == 5 * 500 + 10_000 + 200 == 12_700
    assert last.total == 14_900
    for row in result.turns:
        assert row.fixed == fixed
        assert row.variable == _history(row.turn) + 2_500 + 200
        assert row.total == row.fixed + row.variable


def test_guide_session_cost_uncached_and_fixed_prefix_cached() -> None:
    result = bplan.estimate(_guide())
    totals = [2_200 + _history(t) + 2_700 for t in range(1, 16)]
    variables = [_history(t) + 2_700 for t in range(1, 16)]
    output = 15 * 500 * OUTPUT / M
    uncached = sum(totals) * INPUT / M + output
    cached = (2_200 * WRITE_5M + 14 * 2_200 * READ + sum(variables) * INPUT) / M + output
    assert result.session_cost["uncached"] == uncached
    assert result.session_cost["fixed_prefix_cached"] == cached
    assert result.session_input_cost["uncached"] == uncached - output
    assert result.session_input_cost["fixed_prefix_cached"] == cached - output
    assert set(result.session_cost) == {"uncached", "fixed_prefix_cached", "budgetclient"}
    assert all(isinstance(v, Decimal) for v in result.session_cost.values())
    for key, value in result.session_cost.items():
        assert result.per_1000_sessions[key] == value * 1000


def test_budgetclient_cost_is_the_benchmark_run_of_the_plans_trace() -> None:
    raw = _guide()
    result = bplan.estimate(raw)
    trace = bplan.plan_trace(bplan.parse_plan(raw), "claude-sonnet-4-6")
    assert len(trace.calls) == 15
    run = run_trace(trace, "budgetclient")
    assert result.session_input_cost["budgetclient"] == run.input_cost(SONNET_4_6)
    assert result.session_cost["budgetclient"] == run.input_cost(SONNET_4_6) + 15 * 500 * OUTPUT / M
    # the synthetic session has the plan's sizes (tool JSON rounds a few tokens per tool)
    plain = run_trace(trace, "none")
    for usage, t in zip(plain.usages, range(1, 16), strict=True):
        assert abs(usage["input_tokens"] - (2_200 + _history(t) + 2_700)) <= 8 * 3
    assert result.session_cost["budgetclient"] < result.session_cost["fixed_prefix_cached"]
    assert result.session_cost["fixed_prefix_cached"] < result.session_cost["uncached"]


def test_side_by_side_models_priced_at_their_rates() -> None:
    raw = {**_guide(), "models": ["claude-sonnet-4-6", "claude-haiku-4-5"]}
    raw.pop("model")
    result = bplan.estimate(raw)
    assert [m.model for m in result.models] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    haiku = result.models[1]
    # published Haiku 4.5 rates: 1 in, 0.10 read, 1.25 5m write, 5 out
    totals = [2_200 + _history(t) + 2_700 for t in range(1, 16)]
    assert haiku.session_cost["uncached"] == (sum(totals) * 1 + 15 * 500 * 5) / M
    assert result.session_cost == result.models[0].session_cost


def test_calls_per_turn_and_tool_outputs() -> None:
    raw = {
        "model": "claude-sonnet-4-6",
        "turns": 3,
        "calls_per_turn": 2,
        "output_tokens": 100,
        "fixed": {"system_prompt": 1_000},
        "variable": {
            "history_per_turn": 300,
            "tool_outputs": 2,
            "tool_output_tokens": 400,
            "user_message": 50,
        },
    }
    result = bplan.estimate(raw)
    assert [r.total for r in result.turns] == [1_000 + h + 800 + 50 for h in (0, 300, 600)]
    totals = [1_850, 1_850, 2_150, 2_150, 2_450, 2_450]
    assert result.session_input_tokens == sum(totals)
    assert result.session_cost["uncached"] == (sum(totals) * INPUT + 6 * 100 * OUTPUT) / M
    cached = 1_000 * WRITE_5M + 5 * 1_000 * READ + sum(t - 1_000 for t in totals) * INPUT + 600 * OUTPUT
    assert result.session_cost["fixed_prefix_cached"] == cached / M


def test_components_from_files_are_counted(tmp_path: Path) -> None:
    system = "You are a careful billing assistant. Answer briefly and cite the invoice line.\n" * 5
    tools = [
        {
            "name": f"lookup_{i}",
            "description": "Look up an invoice by id " * (i + 1),
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        }
        for i in range(3)
    ]
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "system.md").write_text(system)
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    (tmp_path / "plan.toml").write_text(
        'model = "claude-sonnet-4-6"\nturns = 2\n[fixed]\nsystem_prompt_file = "prompts/system.md"\n'
        'tools_file = "tools.json"\n[variable]\nuser_message = 10\n'
    )
    result = bplan.estimate_file(tmp_path / "plan.toml")
    tool_tokens = [approximated_tokens(json.dumps(t, separators=(",", ":"))) + 8 for t in tools]
    expected_fixed = approximated_tokens(system) + 3 * round(sum(tool_tokens) / 3)
    assert result.fixed_tokens == expected_fixed
    assert result.turns[0].total == expected_fixed + 10


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_toml_syntax_error_has_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'model = "claude-sonnet-4-6"\nturns = 15\n[fixed]\nsystem_prompt = = 4\n')
    with pytest.raises(PlanError, match=rf"{path}:4: invalid TOML"):
        bplan.estimate_file(path)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            'model = "claude-sonnet-4-6"\nturns = 15\n[fixed]\nsystem_prompt = 400\ntools = "eight"\n',
            5,
            "fixed.tools: expected an integer",
        ),
        (
            'model = "claude-sonnet-4-6"\nturns = 15\n[variable]\nuser_mesage = 200\n',
            4,
            "variable.user_mesage: unknown",
        ),
        ('model = "claude-sonnet-4-6"\n\n[fixed]\nsystem_prompt = 4\n', None, "turns: missing"),
        ('model = "claude-sonnet-4-6"\nturns = 0\n', 2, "turns: expected an integer >= 1"),
        ('model = "no-such-model-xyz"\nturns = 2\n', 1, "no price known"),
        (
            'model = "claude-sonnet-4-6"\nturns = 2\n[allocation]\nhistory = 80\nretrieved = 40\n',
            5,
            "over 100",
        ),
        ('model = "claude-sonnet-4-6"\nturns = 2\n[fixed]\nsafety_file = "missing.txt"\n', 4, "cannot read"),
    ],
)
def test_semantic_errors_name_the_keys_line(
    tmp_path: Path, text: str, line: int | None, fragment: str
) -> None:
    path = _write(tmp_path, text)
    where = f"{path}:{line}:" if line else f"{path}:"
    with pytest.raises(PlanError) as info:
        bplan.estimate_file(path)
    message = str(info.value)
    assert message.startswith(where) and fragment in message


def test_plan_dict_errors_name_the_key() -> None:
    with pytest.raises(bplan.PlanKeyError) as info:
        bplan.estimate({"model": "claude-sonnet-4-6", "turns": 3, "fixed": {"tools": -1}})
    assert info.value.key == ("fixed", "tools")


# --- allocation ---------------------------------------------------------------------------------


def test_guide_default_allocation_for_32k() -> None:
    targets = bplan.AllocationTargets.guide_default()
    assert targets.window == 32_000
    expected = {
        "system_and_tools": 4_800,
        "retrieved": 8_000,
        "history": 9_600,
        "tool_outputs": 6_400,
        "user_and_output": 3_200,
    }
    assert {k: targets.tokens(k) for k in expected} == expected


def test_custom_allocation_and_plan_check() -> None:
    targets = bplan.AllocationTargets(window=100_000, shares={"retrieved": 50, "history": 20})
    assert targets.tokens("retrieved") == 50_000 and targets.tokens("history") == 20_000
    result = bplan.estimate(_guide(), targets=targets)
    rows = {r.component: r for r in result.allocation}
    assert rows["history"].tokens == 10_000 and not rows["history"].exceeded
    assert rows["system_and_tools"].target_tokens is None
    with pytest.raises(PlanError, match="at most 100"):
        bplan.AllocationTargets(shares={"retrieved": 60, "history": 50})
    with pytest.raises(PlanError, match="unknown allocation"):
        bplan.AllocationTargets(shares={"docs": 10})


def test_guide_plan_history_exceeds_its_target() -> None:
    rows = {r.component: r for r in bplan.estimate(_guide()).allocation}
    assert rows["history"].exceeded and rows["history"].share == 10_000 / 32_000
    assert not rows["system_and_tools"].exceeded and rows["system_and_tools"].tokens == 2_200
    assert rows["user_and_output"].tokens == 200 + 500


def _anthropic_request() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are a support agent for an invoicing product. " * 20}],
        "tools": [
            {
                "name": "search",
                "description": "Search the knowledge base. " * 10,
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
        ],
        "messages": [
            {"role": "user", "content": "My invoice total looks wrong this month. " * 5},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check the line items. " * 8}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "Refund policy: refunds within 30 days. " * 30,
                        },
                    },
                    {
                        "type": "text",
                        "text": "<document id=7>Tax rules for the EU region. " * 20 + "</document>",
                    },
                    {"type": "text", "text": "Why was I charged twice for March?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "search",
                        "input": {"q": "double charge march"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "ticket 4411: duplicate charge reversed. " * 12},
                            {
                                "type": "search_result",
                                "source": "kb/42",
                                "title": "Duplicate charges",
                                "content": [
                                    {
                                        "type": "text",
                                        "text": "Duplicate charges are reversed in 5 days. " * 10,
                                    }
                                ],
                            },
                        ],
                    },
                ],
            },
        ],
    }


def test_analyze_anthropic_request() -> None:
    request = _anthropic_request()
    analysis = bplan.analyze(request)
    c = analysis.components
    assert analysis.provider == "anthropic"
    assert c["system"] == approximated_tokens(request["system"][0]["text"])
    assert c["tools"] == approximated_tokens(json.dumps(request["tools"][0], separators=(",", ":")))
    assert c["user_message"] == approximated_tokens("Why was I charged twice for March?")
    assert c["history"] == approximated_tokens(request["messages"][0]["content"]) + approximated_tokens(
        request["messages"][1]["content"][0]["text"]
    ) + approximated_tokens("search") + approximated_tokens('{"q":"double charge march"}')
    assert c["tool_outputs"] == approximated_tokens("ticket 4411: duplicate charge reversed. " * 12)
    docs = request["messages"][2]["content"]
    search = request["messages"][4]["content"][0]["content"][1]
    assert c["retrieved"] == (
        approximated_tokens(docs[0]["source"]["data"])
        + approximated_tokens(docs[1]["text"])
        + approximated_tokens("Duplicate charges")
        + approximated_tokens("kb/42")
        + approximated_tokens(search["content"][0]["text"])
    )
    assert analysis.total == estimate_request("anthropic", request).tokens
    assert analysis.shares["history"] == c["history"] / 32_000
    rows = {r.component: r for r in analysis.allocation}
    assert rows["system_and_tools"].tokens == c["system"] + c["tools"]


def test_analyze_openai_chat_request_and_custom_tagging() -> None:
    request = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Answer from the provided sources only."},
            {"role": "user", "content": "What changed in the API?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "fetch", "arguments": '{"u":"x"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "old tool result text"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "SOURCE: the changelog says v2 removed X."},
                    {"type": "text", "text": "Summarise it."},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c2", "type": "function", "function": {"name": "fetch", "arguments": '{"u":"y"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "fresh tool result"},
        ],
        "tools": [{"type": "function", "function": {"name": "fetch", "parameters": {"type": "object"}}}],
    }
    analysis = bplan.analyze(
        request, is_retrieved=lambda p: isinstance(p, dict) and str(p.get("text", "")).startswith("SOURCE:")
    )
    c = analysis.components
    assert analysis.provider == "openai"
    assert c["system"] == count_text("Answer from the provided sources only.")
    assert c["retrieved"] == count_text("SOURCE: the changelog says v2 removed X.")
    assert c["user_message"] == count_text("Summarise it.")
    assert c["tool_outputs"] == count_text("fresh tool result")
    assert c["history"] == sum(
        count_text(t)
        for t in (
            "What changed in the API?",
            "Let me look.",
            "fetch",
            '{"u":"x"}',
            "old tool result text",
            "fetch",
            '{"u":"y"}',
        )
    )
    assert analysis.total == estimate_request("openai", request).tokens


def test_check_allocation_logs_each_exceeded_component() -> None:
    targets = bplan.AllocationTargets(window=1_000, shares={"system_and_tools": 10, "history": 50})
    request = _anthropic_request()
    with capture_logs() as logs:
        exceeded = bplan.check_allocation("anthropic", request, targets)
    analysis = bplan.analyze(request, targets=targets)
    system_and_tools = analysis.components["system"] + analysis.components["tools"]
    assert system_and_tools > 100 and analysis.components["history"] < 500
    assert [r.component for r in exceeded] == ["system_and_tools"]
    events = [e for e in logs if e["event"] == "plan.allocation_exceeded"]
    assert len(events) == 1
    assert events[0]["component"] == "system_and_tools" and events[0]["tokens"] == system_and_tools
    assert events[0]["target_tokens"] == 100


def test_check_allocation_never_raises() -> None:
    with capture_logs() as logs:
        assert bplan.check_allocation("cohere", {"messages": []}) == []  # a provider analyze cannot read
    assert logs[0]["event"] == "plan.allocation_check_failed"


def test_analyze_uses_the_learnt_calibration() -> None:
    from budgetclient import tokens

    request = _anthropic_request()
    raw = estimate_request("anthropic", request).raw_tokens
    for _ in range(5):
        tokens.calibrate("anthropic", "claude-sonnet-4-6", raw, round(raw * 1.2))
    analysis = bplan.analyze(request)
    assert analysis.components["system"] == int(approximated_tokens(request["system"][0]["text"]) * 1.2 + 0.5)
    assert abs(analysis.total - estimate_request("anthropic", request).tokens) <= len(bplan.COMPONENTS)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_analyze_openai_responses_request() -> None:
    request = {
        "model": "gpt-4o",
        "instructions": "Answer from the provided sources only.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "What changed in the API?"}]},
            {"type": "function_call", "call_id": "c1", "name": "fetch", "arguments": '{"u":"x"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "old tool result text"},
            {"role": "user", "content": "Summarise it."},
            {"type": "function_call", "call_id": "c2", "name": "fetch", "arguments": '{"u":"y"}'},
            {"type": "function_call_output", "call_id": "c2", "output": "fresh tool result"},
        ],
        "tools": [{"type": "function", "name": "fetch", "parameters": {"type": "object"}}],
    }
    analysis = bplan.analyze(request)
    c = analysis.components
    assert analysis.provider == "openai"
    assert c["system"] == count_text("Answer from the provided sources only.")
    assert c["user_message"] == count_text("Summarise it.")
    assert c["tool_outputs"] == count_text("fresh tool result")
    assert c["history"] == sum(
        count_text(t)
        for t in (
            "What changed in the API?",
            "fetch",
            '{"u":"x"}',
            "old tool result text",
            "fetch",
            '{"u":"y"}',
        )
    )
    assert c["tools"] == count_text(_compact(request["tools"][0]))


def test_analyze_gemini_request() -> None:
    model = "gemini-2.5-flash"
    call = {"name": "weather", "args": {"city": "Paris"}}
    result = {"name": "weather", "response": {"celsius": 21}}
    declaration = {"name": "weather", "parameters": {"type": "OBJECT"}}
    request = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hello there."}]},
            {"role": "model", "parts": [{"text": "Hi!"}]},
            {"role": "user", "parts": [{"text": "What is the weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": call}]},
            {"role": "user", "parts": [{"functionResponse": result}]},
        ],
        "tools": [{"functionDeclarations": [declaration]}],
    }
    analysis = bplan.analyze(request, model=model)
    c = analysis.components
    assert analysis.provider == "google"
    assert c["system"] == count_text("Be brief.", model)
    assert c["user_message"] == count_text("What is the weather in Paris?", model)
    assert c["history"] == sum(
        count_text(t, model) for t in ("Hello there.", "Hi!", "weather", _compact(call["args"]))
    )
    assert c["tool_outputs"] == count_text("weather", model) + count_text(_compact(result["response"]), model)
    assert c["tools"] == count_text(_compact(declaration), model)
    assert analysis.total == estimate_request("google", request, model).tokens
