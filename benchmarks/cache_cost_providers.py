"""Gemini and OpenAI caching decisions on their fake backends, against the best found offline.

    python benchmarks/cache_cost_providers.py        # also printed by benchmarks/cache_cost.py

Each trace is run through the real SDKs on the fakes (which bill by the providers' published
rules: Gemini explicit caches pay creation at the input rate and storage per token-hour on the
server's clock; OpenAI caches by model, ``prompt_cache_key`` and prefix), once with the raw SDK,
once with budgetclient, and once with the best plan found knowing the whole trace. Costs are the
fakes' own bills (usage fields, cache sizes and lifetimes) at the pricing module's rates.

Gemini's offline best is the cheaper of no explicit cache and one shared entry created before
the first call and deleted after the last (the cheapest explicit plan when every call reads the
same prefix). OpenAI's offline best sends one ``prompt_cache_key`` per distinct stable prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from google import genai
from google.genai import types as gtypes

import budgetclient as bc
from budgetclient import pricing
from budgetclient.testing.fake_gemini import FakeGemini
from budgetclient.testing.fake_openai import FakeOpenAI

GEMINI_MODEL = "gemini-2.5-flash"
OPENAI_MODEL = "gpt-5.1"
MTOK = Decimal(1_000_000)
HOUR = Decimal(3600)
KEY = "AIza-benchmark-key-0123456789"

# 160,000 bytes: 40,000 tokens under the Gemini fake's rule (one token per 4 bytes of text)
PREFIX_40K = (" ".join(f"clause-{i} applies to every ticket" for i in range(6000)))[:160_000]


# -- Gemini ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeminiTrace:
    name: str
    conversations: int
    turns: int
    gap_s: int
    """Seconds between calls; conversations take turns (interleaved)."""
    run_async: bool = False
    """Through ``client.aio``, answers streamed."""


GEMINI_TRACES = (
    GeminiTrace("gemini 20 turns, 30 s apart", 1, 20, 30),
    GeminiTrace("gemini 3 calls", 1, 3, 30),
    GeminiTrace("gemini 2 conversations, shared prefix", 2, 10, 30),
    GeminiTrace("gemini 20 turns, 30 s apart (async, streaming)", 1, 20, 30, run_async=True),
)


def gemini_bill(fake: FakeGemini) -> Decimal:
    """What the fake server billed: requests, cache creation and cache storage."""
    rates = pricing.rates_for(GEMINI_MODEL, "google")
    assert rates is not None and rates.cache_storage is not None
    total = Decimal(0)
    for g in fake.generations:
        meta = g.usage_metadata
        prompt = meta["promptTokenCount"]
        cached = meta.get("cachedContentTokenCount", 0)
        output = meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0)
        total += (
            (prompt - cached) * rates.input.at(prompt)
            + cached * rates.cache_read.at(prompt)
            + output * rates.output.at(prompt)
        ) / MTOK
    for _, tokens, seconds in fake.cache_lifetimes():
        total += tokens * rates.input.base / MTOK  # creation
        total += tokens * Decimal(str(seconds)) / HOUR * rates.cache_storage / MTOK
    return total


def _http(fake: FakeGemini) -> gtypes.HttpOptions:
    return gtypes.HttpOptions(
        client_args={"transport": fake.transport()}, async_client_args={"transport": fake.transport()}
    )


def _run_gemini(
    trace: GeminiTrace, fake: FakeGemini, client: Any, config: gtypes.GenerateContentConfig
) -> None:
    if trace.run_async:
        asyncio.run(_run_gemini_async(trace, fake, client, config))
        return
    chats = [client.chats.create(model=GEMINI_MODEL, config=config) for _ in range(trace.conversations)]
    for turn in range(trace.turns):
        for i, chat in enumerate(chats):
            if turn or i:
                fake.advance(trace.gap_s)
            chat.send_message(f"Conversation {i}, question {turn}: what does the policy say?")


async def _run_gemini_async(
    trace: GeminiTrace, fake: FakeGemini, client: Any, config: gtypes.GenerateContentConfig
) -> None:
    """The same turns through ``client.aio``, each answer streamed."""
    chats = [client.aio.chats.create(model=GEMINI_MODEL, config=config) for _ in range(trace.conversations)]
    for turn in range(trace.turns):
        for i, chat in enumerate(chats):
            if turn or i:
                fake.advance(trace.gap_s)
            async for _ in await chat.send_message_stream(
                f"Conversation {i}, question {turn}: what does the policy say?"
            ):
                pass


def _run_budgetclient(trace: GeminiTrace, fake: FakeGemini, config: gtypes.GenerateContentConfig) -> None:
    client = bc.GenAIClient(api_key=KEY, http_options=_http(fake))
    with bc.task(trace.name):
        _run_gemini(trace, fake, client, config)
    client.close()


@contextmanager
def _sqlite_ledger() -> Iterator[None]:
    """A fresh SQLite ledger for the block (a benchmark's calls are not the user's spending)."""
    with tempfile.TemporaryDirectory() as folder:
        bc.configure(ledger=f"sqlite:///{folder}/ledger.db")
        try:
            yield
        finally:
            bc.flush()
            bc.configure(ledger="memory://")


def gemini_fakes(trace: GeminiTrace, *, implicit: bool, history: bool = False) -> dict[str, FakeGemini]:
    """The fake servers after the raw SDK, budgetclient and the explicit plan ran ``trace``;
    ``history``: budgetclient's run is the task's second, the first recorded in the ledger."""
    prefix_config = gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
    fakes: dict[str, FakeGemini] = {}

    fake = fakes["raw SDK"] = FakeGemini(implicit_caching=implicit)
    _run_gemini(trace, fake, genai.Client(api_key=KEY, http_options=_http(fake)), prefix_config)

    fake = fakes["budgetclient"] = FakeGemini(implicit_caching=implicit)
    if history:  # an earlier run of the task is in the ledger: the measured run learns from it
        with _sqlite_ledger():
            _run_budgetclient(trace, FakeGemini(implicit_caching=implicit), prefix_config)
            bc.flush()
            _run_budgetclient(trace, fake, prefix_config)
    else:
        _run_budgetclient(trace, fake, prefix_config)

    # one entry created before the first call, deleted right after the last
    fake = fakes["explicit plan"] = FakeGemini(implicit_caching=implicit)
    raw = genai.Client(api_key=KEY, http_options=_http(fake))
    span = trace.turns * trace.conversations * trace.gap_s
    cache = raw.caches.create(
        model=GEMINI_MODEL,
        config=gtypes.CreateCachedContentConfig(system_instruction=PREFIX_40K, ttl=f"{span + 60}s"),
    )
    _run_gemini(trace, fake, raw, gtypes.GenerateContentConfig(cached_content=cache.name))
    raw.caches.delete(name=str(cache.name))
    return fakes


def gemini_costs(trace: GeminiTrace, *, implicit: bool, history: bool = False) -> dict[str, Decimal]:
    """Raw SDK, budgetclient and the offline best on ``trace``."""
    fakes = gemini_fakes(trace, implicit=implicit, history=history)
    bills = {name: gemini_bill(fake) for name, fake in fakes.items()}
    return {
        "raw SDK": bills["raw SDK"],
        "budgetclient": bills["budgetclient"],
        "offline best": min(bills["explicit plan"], bills["raw SDK"]),
    }


# -- OpenAI ------------------------------------------------------------------------------------------


SYSTEM_A = " ".join(f"Rule {i}: answer billing questions with the refund policy." for i in range(400))
SYSTEM_B = " ".join(f"Rule {i}: answer shipping questions with the delivery policy." for i in range(400))


@dataclass(frozen=True, slots=True)
class OpenAITrace:
    name: str
    run: Callable[[Any, FakeOpenAI, Callable[[str], Any]], None]
    """Sends the trace through a client; the third argument opens a task scope by name."""


def _ask(client: Any, system: str, question: str, key: str | None) -> None:
    extra = {"prompt_cache_key": key} if key is not None else {}
    client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        **extra,
    )


Scope = Callable[[str], Any]
KeyOf = Callable[[str], str | None]


def _two_tasks(client: Any, fake: FakeOpenAI, scope: Scope, key: KeyOf) -> None:
    for name in ("triage", "summarize"):
        with scope(name):
            for i in range(5):
                _ask(client, SYSTEM_A, f"{name} ticket {i}", key(SYSTEM_A))
                fake.clock.advance(30)


def _two_agents(client: Any, fake: FakeOpenAI, scope: Scope, key: KeyOf) -> None:
    with scope("agents"):
        for i in range(8):
            for system in (SYSTEM_A, SYSTEM_B):
                _ask(client, system, f"ticket {i}", key(system))
                fake.clock.advance(15)


OPENAI_TRACES: tuple[tuple[str, Callable[..., None]], ...] = (
    ("openai two tasks, same prefix", _two_tasks),
    ("openai two agents, one task", _two_agents),
)


def openai_bill(fake: FakeOpenAI, model: str = OPENAI_MODEL) -> Decimal:
    """What the fake server billed, from each response's usage (Chat Completions or Responses):
    uncached input, cached reads, cache writes (gpt-5.6+: their own rate) and output."""
    rates = pricing.rates_for(model, "openai")
    assert rates is not None
    total = Decimal(0)
    for usage in fake.usages:
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        cached = details.get("cached_tokens") or 0
        written = details.get("cache_write_tokens") or 0
        written_long = (details.get("cache_write_tokens_details") or {}).get("ttl_12h_tokens") or 0
        output = usage.get("completion_tokens", usage.get("output_tokens", 0))
        total += (
            (prompt - cached - written) * rates.input.at(prompt)
            + cached * rates.cache_read.at(prompt)
            + (written - written_long) * rates.cache_write.at(prompt)
            + written_long * rates.cache_write_long.at(prompt)
            + output * rates.output.at(prompt)
        ) / MTOK
    return total


def openai_fakes(run: Callable[..., None]) -> dict[str, FakeOpenAI]:
    """The fake servers after the raw SDK, budgetclient and one key per prefix ran ``run``."""
    no_scope: Scope = lambda name: _NullScope()  # noqa: E731
    names = ("raw SDK", "budgetclient", "key per prefix")
    fakes = {name: FakeOpenAI(route_limit_per_min=15) for name in names}  # OpenAI's ~15 req/min
    fake = fakes["raw SDK"]
    run(openai.OpenAI(api_key="sk-bench", http_client=fake.http_client()), fake, no_scope, lambda s: None)
    fake = fakes["budgetclient"]
    run(bc.OpenAI(api_key="sk-bench", http_client=fake.http_client()), fake, bc.task, lambda s: None)
    fake = fakes["key per prefix"]
    by_prefix: KeyOf = lambda system: "best-" + hashlib.sha256(system.encode()).hexdigest()[:16]  # noqa: E731
    run(openai.OpenAI(api_key="sk-bench", http_client=fake.http_client()), fake, no_scope, by_prefix)
    return fakes


def openai_costs(run: Callable[..., None]) -> dict[str, Decimal]:
    bills = {name: openai_bill(fake) for name, fake in openai_fakes(run).items()}
    return {
        "raw SDK": bills["raw SDK"],
        "budgetclient": bills["budgetclient"],
        "offline best": min(bills["key per prefix"], bills["raw SDK"]),
    }


# -- OpenAI: whole conversations, explicit breakpoints (gpt-5.6), Responses, streaming, async --------


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


AGENT_SYSTEM = _words(3000, "policy")


@dataclass(frozen=True, slots=True)
class OpenAIRequestTrace:
    """Requests sent as written (one agent's growing conversation, or agents' one-shot calls)."""

    name: str
    model: str
    api: str
    """``chat`` or ``responses``."""
    requests: Callable[[str], list[dict[str, Any]]]
    """The keyword arguments of each call, given the API (the system turn's role differs)."""
    gap_s: float = 20.0
    stream: bool = False
    run_async: bool = False


def _agent_loop(api: str, turns: int = 12) -> list[dict[str, Any]]:
    """One agent's conversation: the same system prompt, each turn appending a reply and a tool result."""
    role = "system" if api == "chat" else "developer"
    history: list[dict[str, Any]] = [{"role": role, "content": AGENT_SYSTEM}]
    calls = []
    for turn in range(turns):
        history = [*history, {"role": "user", "content": _words(300, f"result{turn}x")}]
        calls.append({"messages" if api == "chat" else "input": history})
        history = [*history, {"role": "assistant", "content": _words(40, f"reply{turn}x")}]
    return calls


def _agents_one_shot(api: str) -> list[dict[str, Any]]:
    role = "system" if api == "chat" else "developer"
    return [{"messages" if api == "chat" else "input": [{"role": role, "content": system},
                                                      {"role": "user", "content": f"ticket {i}"}]}
            for i in range(8) for system in (SYSTEM_A, SYSTEM_B)]


def _one_shot(api: str) -> list[dict[str, Any]]:
    """Independent questions under one long system prompt (a classifier, a support bot)."""
    role = "system" if api == "chat" else "developer"
    return [{"messages" if api == "chat" else "input": [{"role": role, "content": AGENT_SYSTEM},
                                                      {"role": "user", "content": _words(60, f"q{i}x")}]}
            for i in range(10)]


_T = OpenAIRequestTrace
OPENAI_REQUEST_TRACES = (
    _T("openai gpt-5.6 agent loop, 12 turns (chat, breakpoints)", "gpt-5.6", "chat", _agent_loop),
    _T("openai gpt-5.6 one-shot calls, shared system (chat, breakpoints)", "gpt-5.6", "chat", _one_shot),
    _T("openai gpt-5.6 agent loop, 12 turns (responses, streaming)", "gpt-5.6", "responses", _agent_loop,
       stream=True),
    _T("openai gpt-5.1 agent loop, 12 turns (responses)", OPENAI_MODEL, "responses", _agent_loop),
    _T("openai gpt-5.1 two agents, one task (async, streaming)", OPENAI_MODEL, "chat", _agents_one_shot,
       gap_s=15.0, stream=True, run_async=True),
)

Plan = Callable[[dict[str, Any], str], dict[str, Any]]


def _as_sent(kwargs: dict[str, Any], api: str) -> dict[str, Any]:
    return kwargs


def _key_per_prefix(kwargs: dict[str, Any], api: str) -> dict[str, Any]:
    items = kwargs["messages" if api == "chat" else "input"]
    key = "best-" + hashlib.sha256(items[0]["content"].encode()).hexdigest()[:16]
    return {**kwargs, "prompt_cache_key": key}


def _marked_system(kwargs: dict[str, Any], api: str, mode: str, last: bool = False) -> dict[str, Any]:
    """The system turn (and with ``last`` the last message) ends with an explicit breakpoint."""
    key = "messages" if api == "chat" else "input"
    kind = "text" if api == "chat" else "input_text"
    items = list(kwargs[key])
    marker = {"mode": "explicit"}
    for index in ([0, len(items) - 1] if last else [0]):
        part = {"type": kind, "text": items[index]["content"], "prompt_cache_breakpoint": marker}
        items[index] = {**items[index], "content": [part]}
    return {**_key_per_prefix(kwargs, api), key: items, "prompt_cache_options": {"mode": mode}}


PLANS_56: dict[str, Plan] = {
    "implicit + system breakpoint": lambda kw, api: _marked_system(kw, api, "implicit"),
    "explicit, system only": lambda kw, api: _marked_system(kw, api, "explicit"),
    "explicit, system + last message": lambda kw, api: _marked_system(kw, api, "explicit", last=True),
}


def _send(client: Any, trace: OpenAIRequestTrace, kwargs: dict[str, Any]) -> Any:
    create = client.chat.completions.create if trace.api == "chat" else client.responses.create
    extra = {"stream": True} if trace.stream else {}
    return create(model=trace.model, **kwargs, **extra)


def _run_requests(trace: OpenAIRequestTrace, fake: FakeOpenAI, client: Any, plan: Plan) -> None:
    calls = [plan(kwargs, trace.api) for kwargs in trace.requests(trace.api)]
    if trace.run_async:
        async def run() -> None:
            for kwargs in calls:
                result = await _send(client, trace, kwargs)
                if trace.stream:
                    async for _ in result:
                        pass
                fake.clock.advance(trace.gap_s)

        asyncio.run(run())
        return
    for kwargs in calls:
        result = _send(client, trace, kwargs)
        if trace.stream:
            for _ in result:
                pass
        fake.clock.advance(trace.gap_s)


def openai_request_fakes(trace: OpenAIRequestTrace) -> dict[str, FakeOpenAI]:
    """The fake servers after the raw SDK, budgetclient and each hand plan sent ``trace``."""
    plans: dict[str, Plan] = {"raw SDK": _as_sent, "budgetclient": _as_sent}
    plans["key per prefix"] = _key_per_prefix
    if trace.model == "gpt-5.6":
        plans.update(PLANS_56)
    fakes: dict[str, FakeOpenAI] = {}
    for name, plan in plans.items():
        fake = fakes[name] = FakeOpenAI(route_limit_per_min=15)
        if name == "budgetclient":
            factory: Any = bc.AsyncOpenAI if trace.run_async else bc.OpenAI
        else:
            factory = openai.AsyncOpenAI if trace.run_async else openai.OpenAI
        http = fake.async_http_client() if trace.run_async else fake.http_client()
        client = factory(api_key="sk-bench", http_client=http)
        scope = bc.task(trace.name) if name == "budgetclient" else _NullScope()
        with scope:
            _run_requests(trace, fake, client, plan)
    return fakes


def openai_request_costs(trace: OpenAIRequestTrace) -> dict[str, Decimal]:
    bills = {name: openai_bill(fake, trace.model) for name, fake in openai_request_fakes(trace).items()}
    return {
        "raw SDK": bills["raw SDK"],
        "budgetclient": bills["budgetclient"],
        "offline best": min(bill for name, bill in bills.items() if name != "budgetclient"),
    }


class _NullScope:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- the table ---------------------------------------------------------------------------------------


def measure_providers() -> list[tuple[str, dict[str, Decimal]]]:
    with warnings.catch_warnings():  # the agents trace drifts by design; its warnings are not news
        warnings.simplefilter("ignore", bc.PrefixDriftWarning)
        return _measure()


def _measure() -> list[tuple[str, dict[str, Decimal]]]:
    rows = []
    for trace in GEMINI_TRACES:
        for implicit in (False, True):
            label = f"{trace.name} (implicit {'hits' if implicit else 'misses'})"
            rows.append((label, gemini_costs(trace, implicit=implicit)))
        label = f"{trace.name} (implicit misses, with history)"
        rows.append((label, gemini_costs(trace, implicit=False, history=True)))
    for name, run in OPENAI_TRACES:
        rows.append((name, openai_costs(run)))
    for trace in OPENAI_REQUEST_TRACES:
        rows.append((trace.name, openai_request_costs(trace)))
    return rows


def provider_table(rows: Sequence[tuple[str, dict[str, Decimal]]]) -> str:
    header = ("trace", "raw SDK", "budgetclient", "offline best", "ratio", "vs raw")
    lines = ["{:<80} {:>9} {:>12} {:>12} {:>6} {:>6}".format(*header)]
    for name, costs in rows:
        ours, best, raw = costs["budgetclient"], costs["offline best"], costs["raw SDK"]
        lines.append(
            f"{name:<80} {raw:>9.5f} {ours:>12.5f} {best:>12.5f} {ours / best:>5.2f}x {ours / raw:>5.2f}x"
        )
    return "\n".join(lines)


def main() -> int:
    bc.configure(ledger="memory://")  # a benchmark's calls are not the user's spending
    print(provider_table(measure_providers()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
