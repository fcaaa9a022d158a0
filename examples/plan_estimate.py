"""Plan a session's token budget, then act on it: estimate, analyze, trim history, route tools and models.

    python -m pip install -e '.[anthropic]'   # from a checkout; or: pip install 'budgetclient[anthropic]'
    python examples/plan_estimate.py

Runs offline: the estimate's budgetclient column is simulated on the fake Anthropic backend.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from budgetclient import history, plan, toolsets
from budgetclient.cli.estimate import render
from budgetclient.models import Router

HERE = Path(__file__).resolve().parent


def main() -> None:
    # 1. Before deployment: the guide's worked example, side by side on two models.
    result = plan.estimate_file(
        HERE / "plans" / "guide.toml", overrides={"models": ["claude-sonnet-4-6", "claude-haiku-4-5"]}
    )
    print(render(result))

    # 2. A live request against the guide's 32k allocation.
    tools: list[dict[str, Any]] = [
        {
            "name": f"tool_{i}",
            "description": "Look up account data. " * 40,
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        }
        for i in range(20)
    ]
    request = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "system": "You are a billing agent. " * 50,
        "tools": tools,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<document>Refund policy ... " * 300 + "</document>"},
                    {"type": "text", "text": "Why was I charged twice?"},
                ],
            }
        ],
    }
    analysis = plan.analyze(request)
    print("request components:", dict(analysis.components))
    print("over target:", [(r.component, r.tokens, r.target_tokens) for r in analysis.exceeded])

    # 3. Send only the tools the task type needs.
    router = toolsets.ToolRouter(tools, {"billing": ["tool_1", "tool_4", "tool_9", "tool_12", "tool_17"]})
    saved = router.savings("billing")
    print(
        f"billing tools: {saved.tools_kept}/{saved.tools_total}, {saved.tokens_saved:,} tokens saved a call "
        f"({saved.fraction_saved:.0%})"
    )

    # 4. Keep history within 9,600 tokens, trimming in coarse, cache-friendly steps.
    window = history.HistoryWindow(9_600, trim_to=0.5)
    conversation: list[dict[str, Any]] = []
    for turn in range(40):
        conversation += [
            {"role": "user", "content": f"question {turn} " * 150},
            {"role": "assistant", "content": f"answer {turn} " * 250},
        ]
        window.apply(conversation)
    print(
        f"history: {len(conversation)} messages, window keeps {len(conversation) - window.cut} "
        f"after {window.trims} trims"
    )

    # 5. Summaries and classification on the small model, reasoning on the large one.
    models = Router(
        {"small": "claude-haiku-4-5", "large": "claude-sonnet-4-6"},
        {"summarize": "small", "classify": "small"},
        default="large",
    )
    print("summarize ->", models.route("summarize"), "| plan ->", models.route("plan"))


if __name__ == "__main__":
    main()
