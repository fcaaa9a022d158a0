"""The incremental chat estimate gives what reading the whole body gives, call after call."""

from __future__ import annotations

import copy
import json
from typing import Any

from budgetclient.estimate import estimate_request
from budgetclient.providers._openai_estimate import ChatEstimates

MODEL = "gpt-4o"


def _tool(i: int) -> dict[str, Any]:
    params = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    return {
        "type": "function",
        "function": {"name": f"tool_{i}", "description": f"tool {i} " * 20, "parameters": params},
    }


def _body(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    # as the SDK hands a body over: fresh dicts every call, the caller's strings kept
    return {"model": MODEL, "messages": copy.copy([dict(m) for m in messages]), "tools": copy.deepcopy(tools)}


def test_each_call_matches_the_full_read() -> None:
    estimates = ChatEstimates()
    tools = [_tool(i) for i in range(5)]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse. " * 50}]
    for i in range(12):
        messages.append({"role": "user", "content": f"question {i}: " + "why " * (10 + i)})
        if i == 4:
            tools = [*tools, _tool(99)]  # the tool list grows
        if i == 7:
            messages[1] = {"role": "user", "content": "an edited first question"}  # history rewritten
        if i == 9:
            call = {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "tool_1", "arguments": json.dumps({"path": "a.py"})},
            }
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "file body " * 30})
        body = _body(messages, tools)
        got = estimates.estimate("conversation", body, MODEL)
        want = estimate_request("openai", _body(messages, tools), MODEL)
        assert (got.raw_tokens, got.tokens) == (want.raw_tokens, want.tokens), i
        messages.append({"role": "assistant", "content": f"answer {i} " * 8})


def test_conversations_are_kept_apart_and_other_bodies_read_whole() -> None:
    estimates = ChatEstimates()
    a = _body([{"role": "user", "content": "alpha " * 40}], [_tool(1)])
    b = _body([{"role": "user", "content": "beta " * 70}], [])
    for body, key in ((a, "a"), (b, "b"), (a, "a"), (b, "a"), (b, None)):
        assert (
            estimates.estimate(key, body, MODEL).raw_tokens
            == estimate_request("openai", body, MODEL).raw_tokens
        )
    schema = {**b, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}
    assert estimates.estimate("a", schema, MODEL) == estimate_request("openai", schema, MODEL)


def test_tools_equal_by_value_but_written_differently_are_counted_again() -> None:
    # ``1 == 1.0 == True``, but the tools' JSON (and its tokens) differs: compared by their prints
    from budgetclient.blocks import json_print

    estimates = ChatEstimates()
    messages = [{"role": "user", "content": "q " * 30}]
    for value in (1, 1.0, True, 1):
        tool = _tool(1)
        tool["function"]["parameters"]["properties"]["path"]["maxLength"] = value
        body = _body(messages, [tool])
        got = estimates.estimate("conversation", body, MODEL, json_print(body["tools"]))
        want = estimate_request("openai", _body(messages, [tool]), MODEL)
        assert (got.raw_tokens, got.tokens) == (want.raw_tokens, want.tokens), value
