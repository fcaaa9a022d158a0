"""Agent shapes on one client: sub-agents matched to their own conversations by content, and the
spare breakpoint at the end of the tools. Driven through the real SDK on the fake backend; every
expected number comes from the usage the fake reports (or its own block rules), never from
budgetclient."""

from __future__ import annotations

import random
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import budgetclient as bc
from budgetclient import lineage
from budgetclient.blocks import RequestBlocks
from budgetclient.formats.anthropic.blocks import request_blocks
from budgetclient.lineage import MAX_PER_SCOPE, ConversationHead, LineageRegistry
from budgetclient.placement import MAX_BREAKPOINTS, place_breakpoints
from budgetclient.testing import FakeAnthropic, FakeClock, min_cacheable_tokens, prompt_blocks

MODEL = "claude-sonnet-4-6"
TOOLS = [
    {
        "name": f"tool_{i}",
        "description": " ".join(f"t{i}w{j}" for j in range(180)),
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
    for i in range(8)
]


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


class Agent:
    """A sub-agent running its own tool loop: a system prompt of its own, the shared tools."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.system = [{"type": "text", "text": words(700, f"{name}s")},
                       {"type": "text", "text": words(150, f"{name}r")}]
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": words(200, f"{name}task")}]
        self.turn = 0
        self.usages: list[dict[str, int]] = []

    def step(self, client: Any) -> None:
        if self.turn:
            use_id = f"toolu_{self.name}_{self.turn:03d}"
            self.messages += [
                {"role": "assistant", "content": [
                    {"type": "text", "text": words(30, f"{self.name}a{self.turn}x")},
                    {"type": "tool_use", "id": use_id, "name": "tool_1", "input": {"query": "q"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": use_id,
                     "content": words(400, f"{self.name}r{self.turn}x")},
                ]},
            ]  # fmt: skip
        self.turn += 1
        message = client.messages.create(model=MODEL, max_tokens=20, system=self.system, tools=TOOLS,
                                         messages=self.messages)
        usage = message.usage
        self.usages.append({
            "input": usage.input_tokens,
            "read": usage.cache_read_input_tokens or 0,
            "write": usage.cache_creation_input_tokens or 0,
        })


def total_input(usage: dict[str, int]) -> int:
    return usage["input"] + usage["read"] + usage["write"]


def run_agents(order: list[int], *, drift_at: int | None = None) -> tuple[list[Agent], list[Any], Any]:
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    agents = [Agent("res"), Agent("crit")]
    with warnings.catch_warnings(record=True) as caught, bc.task("research") as task:
        warnings.simplefilter("always")
        for k, who in enumerate(order):
            if k == drift_at:  # the researcher's system prompt is edited mid-run, once
                edited = "Today is 2026-12-07. " + agents[0].system[0]["text"]
                agents[0].system = [{"type": "text", "text": edited}, agents[0].system[1]]
            agents[who].step(client)
    drifts = [w for w in caught if issubclass(w.category, bc.PrefixDriftWarning)]
    return agents, drifts, task


def orders() -> dict[str, list[int]]:
    rng = random.Random(11)
    irregular = [0]
    for _ in range(23):
        irregular.append(1 - irregular[-1] if rng.random() < 0.4 else irregular[-1])
    return {"alternating": [k % 2 for k in range(24)], "irregular": irregular}


@pytest.mark.parametrize("shape", ["alternating", "irregular"])
def test_two_sub_agents_on_one_client_keep_their_own_history_and_report_no_drift(shape: str) -> None:
    order = orders()[shape]
    assert set(order) == {0, 1}
    agents, drifts, task = run_agents(order)
    assert drifts == []
    assert all(record.drift is None for record in task.records)
    for agent in agents:
        assert agent.turn >= 3
        # every turn after the first reads the agent's whole previous prompt back from the cache:
        # its history breakpoint survived the other agent's calls
        for before, after in zip(agent.usages, agent.usages[1:], strict=False):
            assert after["read"] == total_input(before)
    # the two agents are two conversations of one task, not drift of one
    conversations = {record.conversation for record in task.records}
    assert len(conversations) == 2


def test_the_second_agent_reads_the_shared_tools_from_its_first_call() -> None:
    agents, drifts, _ = run_agents([0, 1])
    tools_tokens = next(b.prefix_tokens for b in reversed(prompt_blocks(
        {"model": MODEL, "tools": TOOLS, "system": agents[1].system, "messages": agents[1].messages}))
        if b.section == "tools")
    assert tools_tokens >= min_cacheable_tokens(MODEL)
    assert agents[0].usages[0]["read"] == 0
    assert agents[1].usages[0]["read"] == tools_tokens
    assert drifts == []


def test_a_real_drift_in_one_agent_is_still_reported_exactly_once() -> None:
    order = orders()["irregular"]
    drift_at = next(k for k in range(8, len(order)) if order[k] == 0)
    agents, drifts, task = run_agents(order, drift_at=drift_at)
    assert len(drifts) == 1
    (drifted,) = [k for k, record in enumerate(task.records) if record.drift is not None]
    assert drifted == drift_at and task.records[drifted].drift.segment.startswith("system")
    # the critic's history stayed cached through it
    critic = agents[1]
    for before, after in zip(critic.usages, critic.usages[1:], strict=False):
        assert after["read"] == total_input(before)


def test_bc_conversation_still_names_the_conversation() -> None:
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    agents = [Agent("res"), Agent("crit")]
    with warnings.catch_warnings(record=True) as caught, bc.task("t") as task, bc.conversation("one"):
        warnings.simplefilter("always")
        for k in range(4):
            agents[k % 2].step(client)
    # both agents forced into one conversation: each switch is a changed system prompt
    assert len({record.conversation for record in task.records}) == 1
    assert any(issubclass(w.category, bc.PrefixDriftWarning) for w in caught)


def test_live_conversations_per_scope_are_bounded() -> None:
    registry = LineageRegistry()

    def head(i: int) -> ConversationHead:
        return ConversationHead(fixed=(f"sys-{i}".encode(),), opening=(f"m-{i}".encode(),))

    first = registry.match("scope", head(0))
    keys = {registry.match("scope", head(i)).key for i in range(1, 3 * MAX_PER_SCOPE)}
    assert first.key == "scope" and len(keys) == 3 * MAX_PER_SCOPE - 1
    # the oldest fell out of the scope: its content starts a new conversation
    again = registry.match("scope", head(0))
    assert again.key not in keys | {"scope"}
    # a recent one is still found, by its stable prefix
    recent = registry.match("scope", head(3 * MAX_PER_SCOPE - 2))
    assert recent.key in keys


def body(system: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 10, "tools": tools, "system": system,
            "messages": [{"role": "user", "content": words(300, "u")}]}


def blocks_of(value: dict[str, Any]) -> RequestBlocks:
    return request_blocks(value)


def test_the_tools_breakpoint_is_spare_never_a_fifth_and_never_below_the_minimum() -> None:
    system = [{"type": "text", "text": words(600, "s")}]
    request = blocks_of(body(system, TOOLS))
    markers = place_breakpoints(request, ttl="5m", min_tokens=1024)
    tools_end = max(i for i, b in enumerate(request.blocks) if b.section == "tools")
    assert {m.role for m in markers} == {"rolling", "stable", "tools"}
    assert next(m.index for m in markers if m.role == "tools") == tools_end
    # tools below the minimum: no breakpoint there
    small = blocks_of(body(system, TOOLS[:1]))
    assert "tools" not in {m.role for m in place_breakpoints(small, ttl="5m", min_tokens=1024)}
    # the caller's markers count: with two of theirs, ours fill the rest, never a fifth
    marked = body(system, TOOLS)
    marked["tools"] = [*TOOLS[:-2], {**TOOLS[-2], "cache_control": {"type": "ephemeral"}}, TOOLS[-1]]
    marked["messages"] = [{"role": "user", "content": [
        {"type": "text", "text": words(300, "u"), "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": words(50, "v")}]}]
    request = blocks_of(marked)
    ours = place_breakpoints(request, ttl="5m", min_tokens=1024)
    assert len(ours) + len(request.caller_markers()) == MAX_BREAKPOINTS
    assert "tools" not in {m.role for m in ours}  # the lowest priority, left out when none is spare


def test_the_head_ignores_cache_markers_the_caller_moves() -> None:
    from budgetclient.formats.anthropic.blocks import conversation_head

    system = [{"type": "text", "text": words(600, "s")}]
    first = {"role": "user", "content": [{"type": "text", "text": words(50, "q"),
                                          "cache_control": {"type": "ephemeral"}}]}  # marked while it is last
    later = {"role": "user", "content": [{"type": "text", "text": words(50, "q")}]}
    marked_tools = [*TOOLS[:-1], {**TOOLS[-1], "cache_control": {"type": "ephemeral"}}]
    a = conversation_head({**body(system, marked_tools), "messages": [first]})
    reply = {"role": "assistant", "content": "ok"}
    b = conversation_head({**body(system, TOOLS), "messages": [later, reply]})
    assert a.fixed == b.fixed and b.continues(a)
    another = [{"type": "text", "text": words(600, "x")}]
    other = conversation_head({**body(another, TOOLS), "messages": [later]})
    assert other.fixed[0] == a.fixed[0] and other.fixed != a.fixed  # same tools, another system prompt


def test_one_shot_calls_with_the_time_in_the_system_prompt_stay_one_conversation() -> None:
    client = bc.Anthropic(api_key="test", http_client=FakeAnthropic(clock=FakeClock()).http_client())
    policy = words(1500, "policy")
    usages = []
    with warnings.catch_warnings(record=True) as caught, bc.task("classify") as task:
        warnings.simplefilter("always")
        for k in range(6):
            message = client.messages.create(
                model=MODEL, max_tokens=20, system=f"Time: 12:0{k}:00. {policy}",
                messages=[{"role": "user", "content": f"item {k}: classify it"}],
            )
            usages.append(message.usage)
    # the changing time is drift, reported on each call that changed it
    assert sum(1 for w in caught if issubclass(w.category, bc.PrefixDriftWarning)) == 5
    assert len({record.conversation for record in task.records}) == 1
    # once learnt as volatile, nothing is written that the next call cannot read
    assert all((u.cache_creation_input_tokens or 0) == 0 for u in usages[2:])


# -- the same rule on OpenAI and Gemini ------------------------------------------------------------

OPENAI_TOOLS = [
    {"type": "function", "function": {"name": f"tool_{i}", "description": words(120, f"o{i}d"),
                                      "parameters": {"type": "object", "properties": {}}}}
    for i in range(6)
]


def drift_warnings(caught: list[warnings.WarningMessage]) -> list[Any]:
    return [w for w in caught if issubclass(w.category, bc.PrefixDriftWarning)]


def run_openai_agents(order: list[int], *, drift_at: int | None = None) -> tuple[list[Any], Any]:
    from budgetclient.testing import FakeOpenAI

    client = bc.OpenAI(api_key="sk-test", http_client=FakeOpenAI().http_client())
    systems = [words(900, "researcher"), words(900, "critic")]
    histories: list[list[dict[str, Any]]] = [
        [{"role": "user", "content": words(50, f"task{i}")}] for i in (0, 1)
    ]
    with warnings.catch_warnings(record=True) as caught, bc.task("research") as task:
        warnings.simplefilter("always")
        for k, who in enumerate(order):
            if k == drift_at:
                systems[0] = "Today is 2026-12-07. " + systems[0]
            reply = client.chat.completions.create(
                model="gpt-5.1", tools=OPENAI_TOOLS,
                messages=[{"role": "system", "content": systems[who]}, *histories[who]],
            )
            histories[who] += [{"role": "assistant", "content": reply.choices[0].message.content or ""},
                               {"role": "user", "content": words(40, f"more{k}")}]
    return drift_warnings(caught), task


@pytest.mark.parametrize("shape", ["alternating", "irregular"])
def test_two_openai_agents_on_one_client_report_no_drift_and_a_real_change_once(shape: str) -> None:
    order = orders()[shape]
    drifts, task = run_openai_agents(order)
    assert drifts == [] and all(record.drift is None for record in task.records)
    assert len({record.conversation for record in task.records}) == 2
    drift_at = next(k for k in range(8, len(order)) if order[k] == 0)
    drifts, task = run_openai_agents(order, drift_at=drift_at)
    assert len(drifts) == 1
    (drifted,) = [k for k, record in enumerate(task.records) if record.drift is not None]
    assert drifted == drift_at and task.records[drifted].drift.segment.startswith("messages[0]")


def run_gemini_agents(order: list[int], *, drift_at: int | None = None) -> tuple[list[Any], Any]:
    from google.genai import types as gtypes

    from budgetclient.testing import FakeGemini

    fake = FakeGemini(implicit_caching=True)
    client = bc.GenAIClient(api_key="AIza-test-0123456789",
                            http_options=gtypes.HttpOptions(client_args={"transport": fake.transport()}))
    tools = [gtypes.Tool(function_declarations=[
        gtypes.FunctionDeclaration(name=f"tool_{i}", description=words(120, f"g{i}d")) for i in range(6)])]
    systems = [words(900, "researcher"), words(900, "critic")]
    histories: list[list[Any]] = [[], []]
    with warnings.catch_warnings(record=True) as caught, bc.task("research") as task:
        warnings.simplefilter("always")
        for k, who in enumerate(order):
            if k == drift_at:
                systems[0] = "Today is 2026-12-07. " + systems[0]
            histories[who].append(gtypes.Content(role="user", parts=[gtypes.Part(text=words(40, f"q{k}"))]))
            config = gtypes.GenerateContentConfig(
                system_instruction=systems[who], tools=tools,
                automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True))
            reply = client.models.generate_content(model="gemini-2.5-flash", contents=histories[who],
                                                   config=config)
            histories[who].append(gtypes.Content(role="model", parts=[gtypes.Part(text=reply.text or "ok")]))
    client.close()
    return drift_warnings(caught), task


@pytest.mark.parametrize("shape", ["alternating", "irregular"])
def test_two_gemini_agents_on_one_client_report_no_drift_and_a_real_change_once(shape: str) -> None:
    order = orders()[shape]
    drifts, task = run_gemini_agents(order)
    generate = [r for r in task.records if r.operation == "generate_content"]
    assert drifts == [] and all(record.drift is None for record in generate)
    assert len({record.conversation for record in generate}) == 2
    drift_at = next(k for k in range(8, len(order)) if order[k] == 0)
    drifts, task = run_gemini_agents(order, drift_at=drift_at)
    generate = [r for r in task.records if r.operation == "generate_content"]
    assert len(drifts) == 1
    (drifted,) = [k for k, record in enumerate(generate) if record.drift is not None]
    assert drifted == drift_at and generate[drifted].drift.segment.startswith("systemInstruction")


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini"])
def test_one_shot_calls_whose_prompt_was_edited_are_drift_but_another_prompt_is_not(provider: str) -> None:
    from budgetclient.formats.anthropic.blocks import prefix_shape as anthropic_shape
    from budgetclient.formats.openai.prefix import prefix_shape as openai_shape

    policy = words(1500, "policy")
    edited = policy.replace("policy0 ", "policy-zero ", 1)  # reworded near the start
    other = words(1500, "critic")

    def shape(system: str, tools: list[Any]) -> Any:
        if provider == "anthropic":
            return anthropic_shape({"system": system, "tools": tools})
        if provider == "openai":
            request = {"messages": [{"role": "system", "content": system}], "tools": tools}
            return openai_shape(request, "chat.completions")
        from budgetclient.lineage import prefix_shape as generic

        return generic(b"gemini" + system.encode() + repr(tools).encode(), [system])

    base = shape(policy, TOOLS)
    assert shape(edited, TOOLS).resembles(base)  # an edit: drift of that conversation
    assert shape(policy + " v2", TOOLS).resembles(base)  # text added at the end
    assert shape(policy, TOOLS[:3]).resembles(base)  # the same system prompt, other tools
    assert not shape(other, TOOLS).resembles(base)  # another agent with the same tools
    assert not shape("You are a critic.", TOOLS).resembles(shape("You are a researcher.", TOOLS))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=30))
def test_the_latest_conversation_shortcut_matches_what_the_walk_matches(
    steps: list[tuple[int, int, int]],
) -> None:
    """`Conversations.match` answers a request with the scope's latest head without walking the
    scope: the same conversations, in the same order, as the walk gives every request."""

    def head(system: int, first: int, second: int) -> ConversationHead:
        opening = (f"m-{first}".encode(), f"r-{second}".encode())[: 1 + second % 2]
        return ConversationHead(fixed=(b"tools", f"sys-{system}".encode()), opening=opening)

    def keys(fast: bool) -> list[str]:
        registry = LineageRegistry()
        lineage.LATEST_FAST_PATH = fast
        try:
            return [registry.match("scope", head(*step)).key for step in steps]
        finally:
            lineage.LATEST_FAST_PATH = True

    assert keys(True) == keys(False)
