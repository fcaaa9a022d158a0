"""bc.tools (budgetclient.toolsets): tool subsets per task type and the tokens they save."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from budgetclient import toolsets
from budgetclient.errors import ConfigurationError

from ._approximated_counts import approximated_tokens


def _tools(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"tool_{i}",
            "description": f"Does thing number {i}. " * (i + 3),
            "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
        }
        for i in range(n)
    ]


def _tokens(tool: Mapping[str, Any]) -> int:
    return approximated_tokens(json.dumps(tool, separators=(",", ":"))) + 8  # Anthropic per-tool framing


def test_subsets_keep_order_and_report_savings() -> None:
    tools = _tools(20)
    router = toolsets.ToolRouter(tools, {"billing": ["tool_7", "tool_2", "tool_11", "tool_3", "tool_19"]})
    kept = router.tools_for("billing")
    assert [t["name"] for t in kept] == ["tool_2", "tool_3", "tool_7", "tool_11", "tool_19"]
    savings = router.savings("billing")
    total = sum(_tokens(t) for t in tools)
    kept_tokens = sum(_tokens(t) for t in kept)
    assert (savings.tools_total, savings.tools_kept) == (20, 5)
    assert (savings.tokens_total, savings.tokens_kept, savings.tokens_saved) == (
        total,
        kept_tokens,
        total - kept_tokens,
    )
    assert savings.fraction_saved == (total - kept_tokens) / total
    assert router.report() == [savings]


def test_unknown_task_type_gets_the_default() -> None:
    tools = _tools(3)
    assert toolsets.ToolRouter(tools, {}).tools_for("x") == tools
    assert toolsets.ToolRouter(tools, {}, default="none").tools_for("x") == []


def test_openai_tool_names_and_validation() -> None:
    tools = [
        {"type": "function", "function": {"name": "fetch", "parameters": {}}},
        {"type": "function", "name": "search", "parameters": {}},
    ]
    router = toolsets.ToolRouter(tools, {"web": ["search"]}, provider="openai", model="gpt-4o")
    assert router.tools_for("web") == [tools[1]]
    with pytest.raises(ConfigurationError, match=r"unknown tool\(s\) \['nope'\]"):
        toolsets.ToolRouter(tools, {"web": ["nope"]})
    with pytest.raises(ConfigurationError, match="duplicate"):
        toolsets.ToolRouter([*tools, tools[0]], {})
