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


GEMINI_TRACES = (
    GeminiTrace("gemini 20 turns, 30 s apart", 1, 20, 30),
    GeminiTrace("gemini 3 calls", 1, 3, 30),
    GeminiTrace("gemini 2 conversations, shared prefix", 2, 10, 30),
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
    return gtypes.HttpOptions(client_args={"transport": fake.transport()})


def _run_gemini(
    trace: GeminiTrace, fake: FakeGemini, client: Any, config: gtypes.GenerateContentConfig
) -> None:
    chats = [client.chats.create(model=GEMINI_MODEL, config=config) for _ in range(trace.conversations)]
    for turn in range(trace.turns):
        for i, chat in enumerate(chats):
            if turn or i:
                fake.advance(trace.gap_s)
            chat.send_message(f"Conversation {i}, question {turn}: what does the policy say?")


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


def openai_bill(fake: FakeOpenAI) -> Decimal:
    rates = pricing.rates_for(OPENAI_MODEL, "openai")
    assert rates is not None
    total = Decimal(0)
    for usage in fake.usages:
        prompt = usage["prompt_tokens"]
        cached = usage["prompt_tokens_details"].get("cached_tokens") or 0
        total += (
            (prompt - cached) * rates.input.at(prompt)
            + cached * rates.cache_read.at(prompt)
            + usage["completion_tokens"] * rates.output.at(prompt)
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
    return rows


def provider_table(rows: Sequence[tuple[str, dict[str, Decimal]]]) -> str:
    header = ("trace", "raw SDK", "budgetclient", "offline best", "ratio", "vs raw")
    lines = ["{:<70} {:>9} {:>12} {:>12} {:>6} {:>6}".format(*header)]
    for name, costs in rows:
        ours, best, raw = costs["budgetclient"], costs["offline best"], costs["raw SDK"]
        lines.append(
            f"{name:<70} {raw:>9.5f} {ours:>12.5f} {best:>12.5f} {ours / best:>5.2f}x {ours / raw:>5.2f}x"
        )
    return "\n".join(lines)


def main() -> int:
    bc.configure(ledger="memory://")  # a benchmark's calls are not the user's spending
    print(provider_table(measure_providers()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
