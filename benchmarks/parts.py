"""Where an Anthropic call's added time goes: the wrapped call with parts of the hot path off.

`overhead.py` says how much budgetclient adds; this says what the added time is made of, so a
target can be weighed against the cost of what the product does. Each row runs the interleaved
raw/wrapped comparison of `overhead.py` (anthropic, sync, new turns in every case, a new
conversation every 8 rounds, the median of the other rounds, in the calling thread's CPU time) with
less of the hot path running:

- ``everything``: the default client in a task with a budget (what `overhead.py` measures).
- ``no budget``: a task without a budget (no pre-call token estimate). A real configuration.
- ``no budget, cache off, drift off``: ``bc.wrap(client, cache="off", drift="off")``. A real
  configuration; the blocks are still built, for the record's ``prefix_hash``.
- ``metering only``: an experiment. The request is passed through unprepared (no blocks,
  placement, drift check or estimate); what runs is the SDK's middleware seam, the lineage and
  call context, and metering the response (usage, price, task, ledger queue).
- ``before the request only``: an experiment. ``metering only`` without metering the response.
- ``pass-through middleware``: an ``anthropic.Middleware`` that only calls the next handler, in
  place of budgetclient's: the cost of any hook on the SDK's public seam.
- ``free counting``: an experiment. ``everything`` with tiktoken replaced by a length rule, to
  show what exact counting of the new turns costs.

    python benchmarks/parts.py             # the README table (about 12 min)
    python benchmarks/parts.py --quick     # fewer rounds (about 3 min)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import anthropic
import httpx2

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import overhead  # noqa: E402
from overhead import Conversation, anthropic_body, anthropic_responses, transport  # noqa: E402

import budgetclient as bc  # noqa: E402
from budgetclient import blocks  # noqa: E402
from budgetclient.formats.anthropic.prepare import PreparedRequest  # noqa: E402
from budgetclient.providers import anthropic as bc_anthropic  # noqa: E402
from budgetclient.tokens import counting  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    options: dict[str, str]
    budget: bool
    patches: Callable[[], AbstractContextManager[None]] | None = None
    passthrough: bool = False


@contextmanager
def _unprepared() -> Iterator[None]:
    def prepare(body: Any, **_: Any) -> PreparedRequest:
        return PreparedRequest(body=body, prefix_hash=None, drift=None, breakpoints=())

    with mock.patch.object(bc_anthropic, "prepare_request", prepare):
        yield


@contextmanager
def _before_only() -> Iterator[None]:
    with ExitStack() as stack:
        stack.enter_context(_unprepared())
        stack.enter_context(mock.patch.object(bc_anthropic.BudgetMiddleware, "_after", lambda *a: None))
        yield


@contextmanager
def _free_counting() -> Iterator[None]:
    def length_rule(text: str) -> int:
        return (len(text) + 3) // 4

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(blocks, "_counter", lambda text, model: length_rule(text)))
        stack.enter_context(mock.patch.object(counting, "_exact", lambda enc, text, n: length_rule(text)))
        yield


VARIANTS = (
    Variant("everything", {}, budget=True),
    Variant("no budget", {}, budget=False),
    Variant("no budget, cache off, drift off", {"cache": "off", "drift": "off"}, budget=False),
    Variant("metering only (experiment)", {}, budget=False, patches=_unprepared),
    Variant("before the request only (experiment)", {}, budget=False, patches=_before_only),
    Variant("pass-through middleware", {}, budget=False, passthrough=True),
    Variant("free counting (experiment)", {}, budget=True, patches=_free_counting),
)
COLUMNS = ((1_000, "text"), (30_000, "text"), (150_000, "text"), (150_000, "tools"))
SEGMENT = 8
_salts = itertools.count(50_000)


class _PassThrough(anthropic.Middleware):
    def handle(self, request: Any, call_next: Any) -> Any:
        return call_next(request)


def _client(size: int, middleware: list[Any] | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-bench",
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport(*anthropic_responses(size))),
        middleware=middleware,
    )


def measure(variant: Variant, size: int, shape: str, rounds: int) -> tuple[float, float]:
    """The raw call's median, and the wrapped call's median minus it, in µs of the calling
    thread's CPU time (``time.thread_time``: steadier than wall time for differences of a few
    hundred µs; the ledger's writer thread, off the call path, is not counted)."""
    overhead.SHAPE = shape
    raw_times: list[float] = []
    wrapped_times: list[float] = []
    warmup = SEGMENT
    with ExitStack() as stack:
        if variant.patches is not None:
            stack.enter_context(variant.patches())
        # a task of its own per row and column: no alert compares it with the others
        name = f"parts {variant.name} {size} {shape}"
        stack.enter_context(bc.task(name, budget_usd=1_000_000 if variant.budget else None))
        for i in range(warmup + rounds):
            if i % SEGMENT == 0:
                conv = Conversation.of_size(size, next(_salts))
                raw = _client(size)
                if variant.passthrough:
                    wrapped = _client(size, [_PassThrough()])
                else:
                    wrapped = bc.wrap(_client(size), **variant.options)
            conv.append_round(i)
            pair = ((raw, raw_times), (wrapped, wrapped_times))
            for client, times in pair if i % 2 == 0 else reversed(pair):
                body = anthropic_body(conv)
                gc.collect()
                t0 = time.thread_time()
                client.messages.create(**body)
                elapsed = time.thread_time() - t0
                if i >= warmup and i % SEGMENT:  # a new lineage's first call is not the steady state
                    times.append(elapsed)
    raw_us = statistics.median(raw_times) * 1e6
    return raw_us, statistics.median(wrapped_times) * 1e6 - raw_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 24 if args.quick else 96
    with tempfile.TemporaryDirectory() as tmp:
        overhead.setup(tmp)
        rows: list[tuple[str, list[float]]] = []
        raw: list[list[float]] = [[] for _ in COLUMNS]
        for variant in VARIANTS:
            cells = []
            for column, (size, shape) in enumerate(COLUMNS):
                raw_us, added = measure(variant, size, shape, rounds)
                raw[column].append(raw_us)
                cells.append(added)
                print(
                    f"variant={variant.name!r} tokens={size} shape={shape} raw_us={raw_us:.0f} "
                    f"added_us={added:.0f}",
                    flush=True,
                )
            rows.append((variant.name, cells))
        # what a ratio of 1.10 leaves: a tenth of the raw call (the median of every row's raw side)
        rows.insert(0, ("10% of the raw call (ratio 1.10)", [statistics.median(r) / 10 for r in raw]))
        bc.flush(30)
    print()
    print("| what runs | " + " | ".join(f"{s // 1000}k {shape}" for s, shape in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
