"""A pydantic-ai agent with a tool, metered by ``bc.instrument()`` without changing its code.

    pip install 'budgetclient[anthropic,frameworks]'
    python examples/pydantic_ai_agent.py

pydantic-ai builds its own ``AsyncAnthropic`` client inside ``Agent("anthropic:...")``; after
``bc.instrument()`` that client gets budgetclient's breakpoints, drift checks and metering, so the
run is costed in the task. Offline: the fake Anthropic backend is served on 127.0.0.1 and
scripts the model's tool call; the SDK finds it through ``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing import FakeAnthropic, FakeReply, serve

SYSTEM = "You are a travel assistant. Check the weather before you answer, in one sentence. " * 120


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"18C and sunny in {city}"


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger="memory://examples")
    fake = FakeAnthropic(output_tokens=40)
    with serve(fake) as base_url:
        os.environ.update(ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY="offline")
        bc.instrument()  # before the framework builds its clients

        from pydantic_ai import Agent

        # a budget holds each call's worst case: input + max_tokens at the output price
        agent = Agent(
            "anthropic:claude-sonnet-4-6",
            system_prompt=SYSTEM,
            tools=[get_weather],
            model_settings={"max_tokens": 1024},
        )
        for city in ("Paris", "Lisbon"):
            fake.reply(
                FakeReply(tool_calls=(("get_weather", {"city": city}),)), f"Pack sunglasses for {city}."
            )
            with bc.task("trip-advice", budget_usd=0.10) as t:
                result = agent.run_sync(f"Should I pack sunglasses for {city}?")
            print(f"{city}: {result.output}")
            print(f"  {t.calls} calls, ${t.cost:.5f}, cache hit rate {t.cache_hit_rate:.0%}")
        bc.uninstrument()


if __name__ == "__main__":
    main()
