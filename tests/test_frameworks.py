"""Agent frameworks, unchanged, under bc.instrument(): real framework code on the fake backends.

Each framework builds its own SDK clients from environment variables pointing at a fake served on
127.0.0.1, runs a real tool loop (the fakes script the tool calls), and the task's cost must equal
the cost computed here from the fake's usage fields and published rates. Install the frameworks
with ``pip install -e '.[dev,frameworks]'``; without them these tests skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import budgetclient as bc
from budgetclient.testing import FakeAnthropic, FakeOpenAI, FakeReply, serve

from ._fake_costs import CLAUDE, GPT, anthropic_cost, openai_cost, total

SYSTEM = "You are a careful weather assistant. Answer in one sentence and name the city. " * 120
WEATHER_CALL = FakeReply(tool_calls=(("get_weather", {"city": "Paris"}),))
FINAL = "It is 18C and sunny in Paris."
NOT_INSTALLED = "{} is not installed (extra 'frameworks')"


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"18C and sunny in {city}"


@pytest.fixture
def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(replies=[WEATHER_CALL, FINAL])
    with serve(fake) as base_url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        yield fake


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(replies=[WEATHER_CALL, FINAL])
    with serve(fake) as base_url:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{base_url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield fake


@pytest.fixture(autouse=True)
def _instrumented() -> Iterator[None]:
    bc.instrument()
    yield
    bc.uninstrument()


def anthropic_usages(fake: FakeAnthropic) -> list[dict[str, Any]]:
    return [r.usage for r in fake.requests if r.path.endswith("/v1/messages") and r.usage is not None]


def assert_anthropic_task(task: bc.Task, fake: FakeAnthropic) -> None:
    usages = anthropic_usages(fake)
    assert len(usages) == task.calls == 2  # the tool call and the answer, both metered
    assert task.cost == total(anthropic_cost(u) for u in usages)
    assert usages[1]["cache_read_input_tokens"] > 0  # budgetclient's breakpoints: the second hop reads


def assert_openai_task(task: bc.Task, fake: FakeOpenAI) -> None:
    assert len(fake.usages) == task.calls == 2
    assert task.cost == total(openai_cost(u) for u in fake.usages)


# -- pydantic-ai ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [f"anthropic:{CLAUDE}", f"openai:{GPT}"])
def test_pydantic_ai_agent_with_a_tool(
    model: str, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai", reason=NOT_INSTALLED.format("pydantic-ai"))
    agent = pydantic_ai.Agent(model, system_prompt=SYSTEM, tools=[get_weather])
    with bc.task("pydantic-ai") as t:
        result = agent.run_sync("What is the weather in Paris?")
    assert result.output == FINAL
    if model.startswith("anthropic"):
        assert_anthropic_task(t, fake_anthropic)
    else:
        assert_openai_task(t, fake_openai)


async def test_pydantic_ai_agent_async_budget_refuses_before_sending(fake_anthropic: FakeAnthropic) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai", reason=NOT_INSTALLED.format("pydantic-ai"))
    agent = pydantic_ai.Agent(f"anthropic:{CLAUDE}", system_prompt=SYSTEM, tools=[get_weather])
    with pytest.raises(bc.BudgetExceeded):
        async with bc.task("capped", budget_usd=0.000001):
            await agent.run("What is the weather in Paris?")
    assert anthropic_usages(fake_anthropic) == []


# -- LangChain --------------------------------------------------------------------------------


def _langchain_tool_loop(model: Any) -> str:
    messages_module = pytest.importorskip("langchain_core.messages")
    tools_module = pytest.importorskip("langchain_core.tools")
    weather = tools_module.tool(get_weather)
    llm = model.bind_tools([weather])
    messages: list[Any] = [messages_module.SystemMessage(SYSTEM), messages_module.HumanMessage("Paris?")]
    while True:
        reply = llm.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return str(reply.content)
        for call in reply.tool_calls:
            result = weather.invoke(call["args"])
            messages.append(messages_module.ToolMessage(result, tool_call_id=call["id"]))


@pytest.mark.parametrize(
    ("package", "chat_model", "model"),
    [("langchain_anthropic", "ChatAnthropic", CLAUDE), ("langchain_openai", "ChatOpenAI", GPT)],
)
def test_langchain_chat_model_tool_loop(
    package: str, chat_model: str, model: str, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    module = pytest.importorskip(package, reason=NOT_INSTALLED.format(package.replace("_", "-")))
    with bc.task(package) as t:
        answer = _langchain_tool_loop(getattr(module, chat_model)(model=model))
    assert answer == FINAL
    if model == CLAUDE:
        assert_anthropic_task(t, fake_anthropic)
    else:
        assert_openai_task(t, fake_openai)


# -- OpenAI Agents SDK ------------------------------------------------------------------------


def test_openai_agents_sdk_agent_with_a_tool(fake_openai: FakeOpenAI) -> None:
    agents = pytest.importorskip("agents", reason=NOT_INSTALLED.format("openai-agents"))
    agents.set_tracing_disabled(True)  # its trace exporter would call the real API
    agent = agents.Agent(
        name="weather", instructions=SYSTEM, tools=[agents.function_tool(get_weather)], model=GPT
    )
    with bc.task("openai-agents") as t:
        result = agents.Runner.run_sync(agent, "What is the weather in Paris?")
    assert result.final_output == FINAL
    assert_openai_task(t, fake_openai)
    assert all("input_tokens" in u for u in fake_openai.usages)  # the Responses API, as the SDK uses
