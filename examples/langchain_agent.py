"""A LangChain tool-calling loop on ``ChatAnthropic`` and ``ChatOpenAI``, metered by ``bc.instrument()``.

    pip install 'budgetclient[all,frameworks]'
    python examples/langchain_agent.py

LangChain builds the anthropic and openai SDK clients inside its chat models; after
``bc.instrument()`` both are metered, cached and budgeted like ``bc.Anthropic()`` / ``bc.OpenAI()``.
Offline: the fake backends are served on 127.0.0.1 and script the tool calls; the SDKs find them
through ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing import FakeAnthropic, FakeOpenAI, FakeReply, serve

SYSTEM = "You are a travel assistant. Check the weather before you answer, in one sentence. " * 120
SCRIPT = [FakeReply(tool_calls=(("get_weather", {"city": "Oslo"}),)), "Bring a coat: Oslo is cold."]


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"-3C and snowing in {city}"


def tool_loop(model: Any) -> str:
    """The usual LangChain loop: invoke, run the tool calls, send their results, until an answer."""
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool

    weather = tool(get_weather)
    llm = model.bind_tools([weather])
    messages: list[Any] = [SystemMessage(SYSTEM), HumanMessage("Do I need a coat in Oslo?")]
    while True:
        reply = llm.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return str(reply.content)
        for call in reply.tool_calls:
            messages.append(ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]))


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger="memory://examples")
    with (
        serve(FakeAnthropic(replies=SCRIPT)) as anthropic_url,
        serve(FakeOpenAI(replies=SCRIPT)) as openai_url,
    ):
        os.environ.update(
            ANTHROPIC_BASE_URL=anthropic_url,
            ANTHROPIC_API_KEY="offline",
            OPENAI_BASE_URL=f"{openai_url}/v1",
            OPENAI_API_KEY="offline",
        )
        bc.instrument()

        from langchain_anthropic import ChatAnthropic
        from langchain_openai import ChatOpenAI

        for name, model in (
            # a budget holds each call's worst case: input + max_tokens at the output price
            ("ChatAnthropic", ChatAnthropic(model="claude-sonnet-4-6", max_tokens=1024)),
            ("ChatOpenAI", ChatOpenAI(model="gpt-4o", max_tokens=1024)),
        ):
            with bc.task(f"coat-advice-{name}", budget_usd=0.10) as t:
                answer = tool_loop(model)
            print(f"{name}: {answer}")
            print(f"  {t.calls} calls, ${t.cost:.5f}, cache hit rate {t.cache_hit_rate:.0%}")
        bc.uninstrument()


if __name__ == "__main__":
    main()
