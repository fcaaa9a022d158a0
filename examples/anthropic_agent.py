"""A tool-using agent on ``bc.Anthropic``, run offline against the fake Anthropic backend.

    python -m pip install -e '.[anthropic]'   # from a checkout; or: pip install 'budgetclient[anthropic]'
    python examples/anthropic_agent.py

The agent is ordinary anthropic SDK code: it sends the tools, runs each ``tool_use`` block the
model returns with a real Python function, answers with ``tool_result`` blocks, and stops when
the model ends its turn. Only the client comes from budgetclient. Each ticket runs in a
``bc.task`` with a budget; budgetclient places cache breakpoints (stable prefix and a rolling
conversation breakpoint), checks the cached prefix for drift and meters every hop. No network
and no API key: the fake backend scripts the model's tool calls and bills with Anthropic's
caching rules.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing import FakeAnthropic, FakeReply

MODEL = "claude-sonnet-4-6"
SYSTEM = "You are a support agent for Acme Cloud. Answer briefly and cite the runbook. " * 120
TOOLS = [
    {
        "name": f"lookup_{name}",
        "description": f"Look up {name} for a customer account. " * 20,
        "input_schema": {
            "type": "object",
            "properties": {"account": {"type": "string"}},
            "required": ["account"],
        },
    }
    for name in ("invoices", "usage", "incidents", "plan")
]


ACCOUNT_DATA = {
    "invoices": "2026-11: $412.00; 2026-10: $198.50",
    "usage": "compute hours 2026-11: 1,920 (2026-10: 880); a second region was enabled on 11-03",
    "incidents": "none open",
    "plan": "Team, billed per compute hour, no committed-use discount",
}
PLAN = ("lookup_invoices", "lookup_usage", "lookup_plan")
"""The tools the scripted model calls, one per turn, before it answers."""


def run_tool(name: str, arguments: dict[str, Any]) -> str:
    """The agent's tools: plain functions over the account data."""
    return f"{arguments['account']}: {ACCOUNT_DATA[name.removeprefix('lookup_')]}"


def scripted_model(body: Mapping[str, Any]) -> FakeReply:
    """The fake model: call the next tool of ``PLAN`` until every one has answered, then conclude."""
    results = [
        block["content"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    if len(results) < len(PLAN):
        account = str(body["messages"][0]["content"]).split()[1].rstrip(":")
        return FakeReply(text="Let me check.", tool_calls=((PLAN[len(results)], {"account": account}),))
    return FakeReply(text="Your bill doubled because usage doubled after a second region was enabled.")


def run_ticket(client: bc.Anthropic, ticket: str) -> tuple[bc.Task, str]:
    with bc.task("support-ticket", budget_usd=0.25, metadata={"ticket": ticket}) as t:
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"Ticket {ticket}: my bill doubled."}]
        while True:
            reply = client.messages.create(
                model=MODEL, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=messages
            )
            messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
            if reply.stop_reason != "tool_use":
                break
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": b.id,
                            "content": run_tool(b.name, dict(b.input)),
                        }
                        for b in reply.content
                        if b.type == "tool_use"
                    ],
                }
            )
    answer = " ".join(b.text for b in reply.content if b.type == "text")
    return t, answer


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger="memory://examples")
    fake = FakeAnthropic(output_tokens=120, responder=scripted_model)
    client = bc.Anthropic(
        api_key="offline", base_url="https://api.anthropic.com", http_client=fake.http_client()
    )
    for ticket in ("T-1001", "T-1002"):
        t, answer = run_ticket(client, ticket)
        b = t.cost_breakdown
        print(f"{ticket}: {answer}")
        print(
            f"  {t.calls} calls, ${t.cost:.5f} (input ${b.input:.5f}, output ${b.output:.5f}), "
            f"cache hit rate {t.cache_hit_rate:.0%}, {t.usage.input_tokens:,} input tokens"
        )


if __name__ == "__main__":
    main()
