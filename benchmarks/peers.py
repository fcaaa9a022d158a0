"""budgetclient beside a peer, langchain-anthropic, in the same run on the same mocked transport.

Three clients send the same Anthropic conversation to the same kind of ``httpx2.MockTransport``
(the canned response of ``overhead.py``), calls interleaved (the order rotates every round):

- ``raw``: ``anthropic.Anthropic`` (``client.messages.create``);
- ``budgetclient``: the same client wrapped by ``bc.wrap``, in a task with a budget (the whole hot
  path, as ``overhead.py`` measures it);
- ``langchain``: ``langchain_anthropic.ChatAnthropic`` with the tools bound, ``.invoke(messages)``.
  ChatAnthropic has no option for an HTTP client or transport, so its cached ``_client`` is set to
  ``anthropic.Anthropic(**chat._client_params, http_client=...)``: the client it would build
  itself, over the mocked transport. Every transport counts its requests and the run checks that
  each side sent every call.

Added time per call is the side's median minus raw's median, in the calling thread's CPU time
(``time.thread_time``; ``--clock wall`` for ``perf_counter``): budgetclient's writer thread
is not on the caller's path. The conversation grows append-only for 8 rounds, then a new one of
the nominal size starts (new clients, a new lineage), as in ``overhead.py``. LangChain's message
objects are built as an agent keeps them (one more per turn, outside the timed call); the raw and
budgetclient sides build the request dict inside the call, which costs both the same.

langchain-anthropic is a benchmark-only dependency: ``pip install langchain-anthropic`` (the
``frameworks`` extra already brings it in this project's environment).

    python benchmarks/peers.py            # 1k, 30k, 150k text turns and the 150k tool loop (~3 min)
    python benchmarks/peers.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import overhead  # noqa: E402
from overhead import Conversation, anthropic_body, anthropic_responses, tool_schema  # noqa: E402

import budgetclient as bc  # noqa: E402

SIDES = ("raw", "budgetclient", "langchain")
MODEL = "claude-sonnet-4-6"


def counted_transport(tokens: int, sent: list[int]) -> httpx2.MockTransport:
    """``overhead.transport`` whose requests are counted (proof that a side used it)."""
    inner = overhead.transport(*anthropic_responses(tokens))

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent[0] += 1
        return inner.handle_request(request)

    return httpx2.MockTransport(handler)


def langchain_messages(c: Conversation, done: list[Any]) -> list[Any]:
    """The conversation as LangChain messages, extending ``done`` (what earlier turns built)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    if not done:
        done.append(SystemMessage(c.system))
    for k in range(len(done) - 1, len(c.turns)):
        role, content = c.turns[k]
        if overhead.SHAPE != "tools" or k == 0:
            done.append(HumanMessage(content) if role == "user" else AIMessage(content))
        elif role == "assistant":
            call = {"name": f"tool_{k % overhead.TOOLS}", "args": overhead._tool_input(k), "id": f"toolu_{k}"}
            done.append(AIMessage(content, tool_calls=[call]))
        else:
            done.append(ToolMessage(content, tool_call_id=f"toolu_{k - 1}"))
    return done


Call = Callable[[], None]


def make_sides(tokens: int, sent: dict[str, list[int]]) -> tuple[dict[str, Call], Callable[[int], None]]:
    """The three call functions over one new conversation, and the append-a-round function."""
    from langchain_anthropic import ChatAnthropic

    conv = Conversation.of_size(tokens, next(overhead._salts))

    def sdk_client(side: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="sk-ant-bench",
            base_url="http://anthropic.test",
            max_retries=0,
            http_client=httpx2.Client(transport=counted_transport(tokens, sent[side])),
        )

    raw = sdk_client("raw")
    wrapped = bc.wrap(sdk_client("budgetclient"))
    chat = ChatAnthropic(
        model=MODEL, max_tokens=256, api_key="sk-ant-bench", base_url="http://anthropic.test", max_retries=0
    )
    chat.__dict__["_client"] = anthropic.Anthropic(
        **chat._client_params,
        http_client=httpx2.Client(transport=counted_transport(tokens, sent["langchain"])),
    )
    tools = [
        {"name": n, "description": d, "input_schema": p}
        for n, d, p in map(tool_schema, range(overhead.TOOLS))
    ]
    bound = chat.bind_tools(tools)
    history: list[Any] = []

    def sdk_call(client: Any) -> Call:
        return lambda: client.messages.create(**anthropic_body(conv))

    def langchain_call() -> None:
        bound.invoke(history)

    def append(i: int) -> None:
        conv.append_round(i)
        langchain_messages(conv, history)

    return {"raw": sdk_call(raw), "budgetclient": sdk_call(wrapped), "langchain": langchain_call}, append


@dataclass
class Row:
    tokens: int
    shape: str
    median_s: dict[str, float]

    def added_us(self, side: str) -> float:
        return (self.median_s[side] - self.median_s["raw"]) * 1e6

    @property
    def ratio(self) -> float:
        return self.added_us("budgetclient") / self.added_us("langchain")


def measure(tokens: int, rounds: int, warmup: int, clock: Callable[[], float]) -> Row:
    times: dict[str, list[float]] = {s: [] for s in SIDES}
    sent: dict[str, list[int]] = {s: [0] for s in SIDES}
    calls: dict[str, Call] = {}
    append: Callable[[int], None] = lambda i: None  # noqa: E731
    for i in range(warmup + rounds):
        if i % overhead.SEGMENT == 0:
            calls, append = make_sides(tokens, sent)
        append(i)
        order = SIDES[i % 3 :] + SIDES[: i % 3]
        for side in order if i % 2 == 0 else tuple(reversed(order)):
            gc.collect()
            t0 = clock()
            calls[side]()
            elapsed = clock() - t0
            if i >= warmup:
                times[side].append(elapsed)
    for side in SIDES:
        if sent[side][0] != warmup + rounds:
            raise SystemExit(
                f"{side} sent {sent[side][0]} requests over the mocked transport, not {warmup + rounds}"
            )
    return Row(tokens, overhead.SHAPE, {s: statistics.median(t) for s, t in times.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--sizes", default="1000,30000,150000")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [(n, "text") for n in sizes] + [(max(sizes), "tools")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        overhead.setup(tmp)
        with bc.task("peers", budget_usd=1_000_000):
            for tokens, shape in cases:
                overhead.SHAPE = shape
                rounds = 9 if args.quick else overhead.rounds_for(tokens, False)
                row = measure(tokens, rounds, 1 if args.quick else 3, clock)
                rows.append(row)
                print(
                    f"tokens={row.tokens} shape={row.shape} raw_ms={row.median_s['raw'] * 1e3:.3f} "
                    f"budgetclient_added_us={row.added_us('budgetclient'):.0f} "
                    f"langchain_added_us={row.added_us('langchain'):.0f} ratio={row.ratio:.3f}",
                    flush=True,
                )
        bc.flush(30)
    worst = max(rows, key=lambda r: r.ratio)
    print(f"worst_ratio={worst.ratio:.3f} tokens={worst.tokens} shape={worst.shape} target=0.333")
    if args.markdown:
        print()
        print("| tokens | shape | raw ms | budgetclient added µs | langchain-anthropic added µs | ratio |")
        print("|---:|---|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r.tokens:,} | {r.shape} | {r.median_s['raw'] * 1e3:.3f} "
                f"| {r.added_us('budgetclient'):+.0f} | {r.added_us('langchain'):+.0f} | {r.ratio:.2f} |"
            )


if __name__ == "__main__":
    main()
