"""An OpenAI Agents SDK agent with a tool, metered by ``bc.instrument()`` without changing its code.

    pip install 'budgetclient[openai,frameworks]'
    python examples/openai_agents_sdk_agent.py

The Agents SDK builds its own ``AsyncOpenAI`` client and calls the Responses API; after
``bc.instrument()`` that client is metered, cached and budgeted like ``bc.AsyncOpenAI()``.
Offline: the fake OpenAI backend is served on 127.0.0.1 and scripts the tool call; the SDK finds
it through ``OPENAI_BASE_URL``. Tracing is turned off (its exporter would call the real API).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing import FakeOpenAI, FakeReply, serve

INSTRUCTIONS = "You are a travel assistant. Check the weather before you answer, in one sentence. " * 120


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"24C and clear in {city}"


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger="memory://examples")
    fake = FakeOpenAI()
    with serve(fake) as base_url:
        os.environ.update(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="offline")
        bc.instrument()

        from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled

        set_tracing_disabled(True)
        # a budget holds each call's worst case: input + max_tokens at the output price
        agent = Agent(
            name="travel",
            instructions=INSTRUCTIONS,
            tools=[function_tool(get_weather)],
            model="gpt-4o",
            model_settings=ModelSettings(max_tokens=1024),
        )
        for city in ("Athens", "Seville"):
            fake.reply(
                FakeReply(tool_calls=(("get_weather", {"city": city}),)), f"{city} is warm: pack light."
            )
            with bc.task("packing-advice", budget_usd=0.10) as t:
                result = Runner.run_sync(agent, f"What should I pack for {city}?")
            print(f"{city}: {result.final_output}")
            print(f"  {t.calls} calls, ${t.cost:.5f}, cache hit rate {t.cache_hit_rate:.0%}")
        bc.uninstrument()


if __name__ == "__main__":
    main()
