"""A tool-using agent on ``bc.Anthropic``, run offline against the fake Anthropic backend.

    python -m pip install -e '.[anthropic]'   # from a checkout; or: pip install 'budgetclient[anthropic]'
    python examples/anthropic_agent.py

The agent is ordinary anthropic SDK code; only the client comes from budgetclient. Each ticket
runs in a ``bc.task`` with a budget; budgetclient places cache breakpoints (stable prefix and a
rolling conversation breakpoint), checks the cached prefix for drift and meters every hop.
No network and no API key: the fake backend bills with Anthropic's caching rules.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing import FakeAnthropic

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


def run_ticket(client: bc.Anthropic, ticket: str) -> bc.Task:
    with bc.task("support-ticket", budget_usd=0.25, metadata={"ticket": ticket}) as t:
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"Ticket {ticket}: my bill doubled."}]
        for step in range(4):
            reply = client.messages.create(
                model=MODEL, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=messages
            )
            messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
            messages.append({"role": "user", "content": f"Tool output for step {step}: " + "row " * 150})
    return t


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger="memory://examples")
    fake = FakeAnthropic(output_tokens=120)
    client = bc.Anthropic(
        api_key="offline", base_url="https://api.anthropic.com", http_client=fake.http_client()
    )
    for ticket in ("T-1001", "T-1002"):
        t = run_ticket(client, ticket)
        b = t.cost_breakdown
        print(
            f"{ticket}: {t.calls} calls, ${t.cost:.5f} (input ${b.input:.5f}, output ${b.output:.5f}), "
            f"cache hit rate {t.cache_hit_rate:.0%}, {t.usage.input_tokens:,} input tokens"
        )


if __name__ == "__main__":
    main()
