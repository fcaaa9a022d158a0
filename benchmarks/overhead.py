"""Per-call overhead of budgetclient over the raw SDKs, on a local mocked transport.

For each provider (anthropic, openai chat completions, google-genai), sync and streaming, and
for prompts of about 1k, 30k and 150k tokens with 20 tools, the raw SDK client and the same client
wrapped by budgetclient (``bc.wrap``) send the same request to the same ``httpx2.MockTransport``
(a canned response, no network). Calls are interleaved (raw, wrapped, raw, ...; the order flips
every round) so both sides see the same machine state, and the median time per call is reported.

The wrapped client runs the whole hot path: placement, fingerprinting and the drift check over
the conversation, the budget check of an active task with a budget, metering of the response and
the ledger write (SQLite, batched on the writer thread). The conversation grows append-only: each
round adds one small user turn, as an agent loop does, and both sides send the same messages.

    python benchmarks/overhead.py            # 3 sizes x 3 providers x sync/stream, ~3 min
    python benchmarks/overhead.py --quick    # fewer rounds, under a minute
    python benchmarks/overhead.py --markdown # the README table
    python benchmarks/overhead.py --profile anthropic:150000:sync  # cProfile of the wrapped side
    python benchmarks/overhead.py --reply-tokens 1000              # 1k-token turns appended
    python benchmarks/overhead.py --shape tools                    # tool calls and tool results
    python benchmarks/overhead.py --instructions  # instructions per call under callgrind (~15 min)
    python benchmarks/overhead.py --instructions --process-warmup 0  # the same in a cold process
    python benchmarks/overhead.py --instructions --cache  # and the L2 misses per call (simulated)
    python benchmarks/overhead.py --clock thread  # the calling thread's CPU time, not wall time

``--instructions`` runs each sync case (1k, 30k and 150k tokens of text turns, and the 150k agent
tool loop) in a process of its own under valgrind's callgrind (Debian package ``valgrind``), and
counts the instructions of the calling thread in steady-state calls only: the process first makes
``--process-warmup`` rounds (default 64) on other conversations of the same size, as the timed
measurement's process has by its median call (CPython 3.11 specialises a function's bytecode only
after it ran a few dozen times, the raw SDK's and budgetclient's alike; ``--process-warmup 0``
measures a cold process), then a few warm-up rounds of the measured conversation are uncounted,
then each measured call runs inside ``sys.call_tracing`` (a C function nothing else on
the path calls), which is callgrind's ``--toggle-collect`` marker and ``--dump-after`` trigger, so
every measured call is one dump. Work the library hands to its writer thread is not counted:
it is not on the caller's path. Machine load does not move these counts.

Each case sends turns no earlier case sent (token counts are memoised by text); the system prompt
and the tools are the same in all of them.

Token counts are nominal (about 4 characters per token of English-like text).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import itertools
import json
import logging
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import budgetclient as bc  # noqa: E402

SIZES = (1_000, 30_000, 150_000)
PROVIDERS = ("anthropic", "openai", "google")
MODES = ("sync", "stream")
TOOLS = 20
REPLY_TOKENS = 30
"""Tokens of the turn each round appends (``--reply-tokens``; an agent's tool results are often 1k
and more, and every new token is counted before the call)."""
SHAPE = "text"
"""``text``: turns are plain strings. ``tools`` (``--shape tools``): an agent loop, every assistant
turn a text and a tool call, every user turn after the first that tool's result (block lists, as
an agent with tools sends them)."""
_WORDS = [
    "the",
    "agent",
    "reads",
    "the",
    "repository",
    "and",
    "plans",
    "a",
    "change",
    "before",
    "editing",
    "files",
    "carefully",
    "while",
    "tests",
    "run",
    "in",
    "the",
    "background",
    "and",
    "results",
    "are",
    "summarised",
    "for",
    "the",
    "reviewer",
    "each",
    "step",
]


def text(tokens: int, seed: int) -> str:
    """About ``tokens`` tokens of text (4 characters per token), varied by ``seed``."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < tokens * 4:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


@functools.cache
def tool_schema(i: int) -> tuple[str, str, dict[str, Any]]:
    params = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": f"file path for tool {i}"},
            "limit": {"type": "integer", "description": "maximum number of lines"},
        },
        "required": ["path"],
    }
    return f"tool_{i}", f"Tool {i}: " + text(40, 1000 + i), params


# -- requests: a system prompt, 20 tools and a history of turns adding up to the size ----------


@dataclass
class Conversation:
    """Provider-neutral conversation: (role, text) turns, append-only.

    Every conversation has its own turns (``salt``): token counts are memoised by text, so turns
    repeated from an earlier case would be counted for free. The system prompt and the tools are
    the same in all of them, as for one agent's conversations.
    """

    system: str
    turns: list[tuple[str, str]]
    salt: int = 0

    @classmethod
    def of_size(cls, tokens: int, salt: int = 0) -> Conversation:
        system = text(min(2_000, tokens // 4), 1)
        rest = max(tokens - len(system) // 4 - TOOLS * 60, 200)
        n = max(2, min(40, rest // 1_000))
        seed = 10 + 1_000_000 * salt
        turns = [("user" if i % 2 == 0 else "assistant", text(rest // n, seed + i)) for i in range(n)]
        if turns[-1][0] == "assistant":
            turns.append(("user", "continue"))
        return cls(system, turns, salt)

    def append_round(self, i: int) -> None:
        """One more exchange, as an agent loop would add: assistant reply then a new user turn
        (with ``--shape tools``: a short reply calling a tool, then its ``--reply-tokens`` output)."""
        seed = 500_000 + 1_000_000 * self.salt + i
        if SHAPE == "tools":
            self.turns.append(("assistant", f"step {i} of {self.salt}: reading the next file"))
            self.turns.append(("user", f"file {i}: " + text(REPLY_TOKENS, seed)))
            return
        self.turns.append(("assistant", f"step {i} done: " + text(REPLY_TOKENS, seed)))
        self.turns.append(("user", f"next step {i} of {self.salt}"))


def _tool_input(k: int) -> dict[str, Any]:
    return {"path": f"src/module_{k}.py", "limit": 200}


def anthropic_body(c: Conversation) -> dict[str, Any]:
    tools = [{"name": n, "description": d, "input_schema": p} for n, d, p in map(tool_schema, range(TOOLS))]
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "system": c.system,
        "tools": tools,
        "messages": [_anthropic_turn(k, r, t) for k, (r, t) in enumerate(c.turns)],
    }


def _anthropic_turn(k: int, role: str, content: str) -> dict[str, Any]:
    if SHAPE != "tools" or k == 0:
        return {"role": role, "content": content}
    if role == "assistant":
        call = {"type": "tool_use", "id": f"toolu_{k}", "name": f"tool_{k % TOOLS}", "input": _tool_input(k)}
        return {"role": role, "content": [{"type": "text", "text": content}, call]}
    result = {"type": "tool_result", "tool_use_id": f"toolu_{k - 1}", "content": content}
    return {"role": role, "content": [result]}


def openai_body(c: Conversation) -> dict[str, Any]:
    tools = [
        {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
        for n, d, p in map(tool_schema, range(TOOLS))
    ]
    messages = [{"role": "system", "content": c.system}] + [
        _openai_turn(k, r, t) for k, (r, t) in enumerate(c.turns)
    ]
    return {"model": "gpt-4o", "tools": tools, "messages": messages}


def _openai_turn(k: int, role: str, content: str) -> dict[str, Any]:
    if SHAPE != "tools" or k == 0:
        return {"role": role, "content": content}
    if role == "assistant":
        function = {"name": f"tool_{k % TOOLS}", "arguments": json.dumps(_tool_input(k))}
        return {
            "role": role,
            "content": content,
            "tool_calls": [{"id": f"call_{k}", "type": "function", "function": function}],
        }
    return {"role": "tool", "tool_call_id": f"call_{k - 1}", "content": content}


def google_args(c: Conversation) -> dict[str, Any]:
    from google.genai import types as gtypes

    tools = [
        gtypes.Tool(
            function_declarations=[
                gtypes.FunctionDeclaration(name=n, description=d, parameters_json_schema=p)
                for n, d, p in map(tool_schema, range(TOOLS))
            ]
        )
    ]
    contents = [_google_turn(k, r, t) for k, (r, t) in enumerate(c.turns)]
    return {
        "model": "gemini-2.5-flash",
        "contents": contents,
        "config": gtypes.GenerateContentConfig(system_instruction=c.system, tools=tools),
    }


def _google_turn(k: int, role: str, content: str) -> Any:
    from google.genai import types as gtypes

    if SHAPE != "tools" or k == 0:
        return gtypes.Content(role="user" if role == "user" else "model", parts=[gtypes.Part(text=content)])
    if role == "assistant":
        call = gtypes.FunctionCall(name=f"tool_{k % TOOLS}", args=_tool_input(k))
        return gtypes.Content(
            role="model", parts=[gtypes.Part(text=content), gtypes.Part(function_call=call)]
        )
    response = gtypes.FunctionResponse(name=f"tool_{(k - 1) % TOOLS}", response={"output": content})
    return gtypes.Content(role="user", parts=[gtypes.Part(function_response=response)])


# -- canned responses --------------------------------------------------------------------------


class _Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A lazily read body, like a socket (``Response(content=...)`` is read eagerly)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk


def _sse(events: list[tuple[str | None, dict[str, Any]]]) -> list[bytes]:
    return [((f"event: {e}\n" if e else "") + f"data: {json.dumps(d)}\n\n").encode() for e, d in events]


def anthropic_responses(tokens: int) -> tuple[bytes, list[bytes]]:
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": tokens - 50,
        "cache_creation_input_tokens": 0,
        "service_tier": "standard",
    }
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Done."}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 20},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return json.dumps(message).encode(), _sse(events)


def openai_responses(tokens: int) -> tuple[bytes, list[bytes]]:
    usage = {
        "prompt_tokens": tokens,
        "completion_tokens": 20,
        "total_tokens": tokens + 20,
        "prompt_tokens_details": {"cached_tokens": (tokens // 128) * 128 - 128 if tokens > 1024 else 0},
    }
    completion = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
    }
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Done."}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": usage},
    ]
    body = [*_sse([(None, c) for c in chunks]), b"data: [DONE]\n\n"]
    return json.dumps(completion).encode(), body


def google_responses(tokens: int) -> tuple[bytes, list[bytes]]:
    meta = {"promptTokenCount": tokens, "candidatesTokenCount": 20, "totalTokenCount": tokens + 20}
    doc = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Done."}]}, "finishReason": "STOP"}],
        "usageMetadata": meta,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "bench",
    }
    first = {
        **doc,
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Do"}]}}],
        "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens},
    }
    second = {
        **doc,
        "candidates": [{"content": {"role": "model", "parts": [{"text": "ne."}]}, "finishReason": "STOP"}],
    }
    chunks = [f"data: {json.dumps(d)}\r\n\r\n".encode() for d in (first, second)]
    return json.dumps(doc).encode(), chunks


def transport(json_body: bytes, sse_chunks: list[bytes]) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        streaming = (
            "alt=sse" in url
            or b'"stream":true' in request.content[-200:]
            or b'"stream": true' in (request.content[-200:])
        )
        if streaming:
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Body(sse_chunks)
            )
        return httpx2.Response(200, headers={"content-type": "application/json"}, stream=_Body([json_body]))

    return httpx2.MockTransport(handler)


# -- one case: a pair of call functions over the same conversation -----------------------------


Call = Callable[[], None]
_keep: list[Any] = []


_salts = itertools.count(1)


def make_case(provider: str, tokens: int, mode: str) -> tuple[Call, Call, Callable[[int], None]]:
    """(raw call, wrapped call, append round i) for one provider, size and mode, on a conversation
    no earlier case has sent."""
    conv = Conversation.of_size(tokens, next(_salts))
    stream = mode == "stream"
    if provider == "anthropic":
        import anthropic

        raw = anthropic.Anthropic(
            api_key="sk-ant-bench",
            base_url="http://anthropic.test",
            max_retries=0,
            http_client=httpx2.Client(transport=transport(*anthropic_responses(tokens))),
        )
        wrapped = bc.wrap(
            anthropic.Anthropic(
                api_key="sk-ant-bench",
                base_url="http://anthropic.test",
                max_retries=0,
                http_client=httpx2.Client(transport=transport(*anthropic_responses(tokens))),
            )
        )

        def call_of(client: Any) -> Call:
            def call() -> None:
                body = anthropic_body(conv)
                if stream:
                    with client.messages.create(**body, stream=True) as events:
                        for _ in events:
                            pass
                else:
                    client.messages.create(**body)

            return call

    elif provider == "openai":
        import openai

        raw = openai.OpenAI(
            api_key="sk-bench",
            base_url="http://openai.test/v1",
            max_retries=0,
            http_client=httpx2.Client(transport=transport(*openai_responses(tokens))),
        )
        wrapped = bc.wrap(
            openai.OpenAI(
                api_key="sk-bench",
                base_url="http://openai.test/v1",
                max_retries=0,
                http_client=httpx2.Client(transport=transport(*openai_responses(tokens))),
            )
        )

        def call_of(client: Any) -> Call:
            def call() -> None:
                body = openai_body(conv)
                if stream:
                    chunks = client.chat.completions.create(
                        **body, stream=True, stream_options={"include_usage": True}
                    )
                    with chunks:
                        for _ in chunks:
                            pass
                else:
                    client.chat.completions.create(**body)

            return call

    elif provider == "google":
        from google import genai
        from google.genai import types as gtypes

        def genai_client() -> Any:
            return genai.Client(
                api_key="AIza-bench",
                http_options=gtypes.HttpOptions(
                    base_url="http://gemini.test/",
                    client_args={"transport": transport(*google_responses(tokens))},
                ),
            )

        raw = genai_client()
        original = genai_client()  # kept alive: wrap() copies share its HTTP client
        # explicit context caches are a separate, billed resource with their own requests;
        # the per-call path (metering, drift check) is what is measured here
        wrapped = bc.wrap(original, cache="off")
        _keep.append(original)

        def call_of(client: Any) -> Call:
            def call() -> None:
                args = google_args(conv)
                if stream:
                    for _ in client.models.generate_content_stream(**args):
                        pass
                else:
                    client.models.generate_content(**args)

            return call

    else:
        raise SystemExit(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
    return call_of(raw), call_of(wrapped), conv.append_round


@dataclass
class Result:
    provider: str
    tokens: int
    mode: str
    raw_s: float
    wrapped_s: float

    @property
    def ratio(self) -> float:
        return self.wrapped_s / self.raw_s

    @property
    def added_us(self) -> float:
        return (self.wrapped_s - self.raw_s) * 1e6


PROCESS_WARMUP = 64
"""``--instructions``: rounds per side a case's process makes before its measured conversation
(`warm_process`); the timed measurement's median call comes after dozens of them."""

SEGMENT = 8
"""Rounds per conversation: the history grows append-only for this many calls, then a new
conversation of the nominal size starts (so the prompt stays near its nominal size)."""


def measure(
    provider: str,
    tokens: int,
    mode: str,
    rounds: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> Result:
    raw_times: list[float] = []
    wrapped_times: list[float] = []
    raw = wrapped = append = None
    for i in range(warmup + rounds):
        if i % SEGMENT == 0:
            # new clients: a new conversation (lineage) on the budgetclient side
            raw, wrapped, append = make_case(provider, tokens, mode)
        assert raw is not None and wrapped is not None and append is not None
        append(i)  # both sides send the same, one exchange longer each round
        pair = ((raw, raw_times), (wrapped, wrapped_times))
        for fn, times in pair if i % 2 == 0 else reversed(pair):
            gc.collect()
            t0 = clock()
            fn()
            elapsed = clock() - t0
            if i >= warmup:
                times.append(elapsed)
    return Result(provider, tokens, mode, statistics.median(raw_times), statistics.median(wrapped_times))


def rounds_for(tokens: int, quick: bool) -> int:
    if quick:
        return 5 if tokens >= 100_000 else 7 if tokens >= 10_000 else 9
    return 31 if tokens >= 100_000 else 41 if tokens >= 10_000 else 81


def setup(tmp: str) -> None:
    """A SQLite ledger, prices for the benchmark models, and a task with a budget (the full path)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger=f"sqlite:///{tmp}/ledger.db")


def profile(spec: str) -> None:
    provider, size, mode = spec.split(":")
    _, wrapped, append = make_case(provider, int(size), mode)
    for i in range(5):
        append(i)
        wrapped()
    prof = cProfile.Profile()
    prof.enable()
    for i in range(5, 45):
        append(i)
        wrapped()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(45)
    stats.print_callers("encoder.py.*iterencode|dumps")


# -- instruction counts under callgrind ---------------------------------------------------------

INSTR_MARKER = "_PyEval_CallTracing"
"""The C function behind ``sys.call_tracing``: callgrind collects only inside it and dumps after
it, so each measured call is one dump file of its own."""


_CLIENT_REQUEST = bytes.fromhex(
    "4889f8"  # mov rax, rdi         (rdi: the request's six words)
    "31d2"  # xor edx, edx           (the result when not under valgrind)
    "48c1c703"
    "48c1c70d"
    "48c1c73d"
    "48c1c733"  # rol rdi, 3/13/61/51: valgrind's preamble
    "4887db"  # xchg rbx, rbx        (the request itself)
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)
"""Valgrind's client-request sequence for x86-64 (``valgrind.h``), as a function ``long(long *)``:
a no-op returning 0 outside valgrind. Lets the child start callgrind's instrumentation after its
imports and warm-up (``--instr-atstart=no``: those run several times faster uninstrumented)."""
_CALLGRIND_START_INSTRUMENTATION = (ord("C") << 24 | ord("T") << 16) + 4


def start_instrumentation() -> bool:
    """Ask callgrind to start instrumenting now; False where the request cannot be made here."""
    import ctypes
    import mmap
    import platform

    if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
        return False
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(_CLIENT_REQUEST)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    request = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.POINTER(ctypes.c_long))(address)
    args = (ctypes.c_long * 6)(_CALLGRIND_START_INSTRUMENTATION, 0, 0, 0, 0, 0)
    request(args)
    _keep.append((page, request))
    return True


def instruction_cases(providers: list[str], sizes: list[int]) -> list[tuple[str, int, str]]:
    """(provider, tokens, shape): text turns at every size, and the agent tool loop at the largest."""
    cases = [(p, n, "text") for p in providers for n in sizes]
    cases += [(p, max(sizes), "tools") for p in providers]
    return sorted(cases, key=lambda c: (providers.index(c[0]), c[1], c[2]))


def warm_process(provider: str, tokens: int, rounds: int) -> None:
    """``rounds`` uncounted calls per side on conversations of the case's size, as the timed
    measurement makes them (a new conversation every `SEGMENT` rounds): the process is then in
    the steady state the time table measures, every function on the path run often enough for
    the interpreter to specialise it (CPython 3.11 does so after a few dozen runs), raw SDK and
    budgetclient alike. The measured conversation is a new one: nothing of it is memoised."""
    raw = wrapped = append = None
    for i in range(rounds):
        if i % SEGMENT == 0:
            raw, wrapped, append = make_case(provider, tokens, "sync")
        assert raw is not None and wrapped is not None and append is not None
        append(i)
        raw()
        wrapped()


def instructions_child(spec: str, calls: int, warmup: int, process_warmup: int = 0) -> None:
    """Run under callgrind: the process warmed (`warm_process`), warm-up rounds uncounted, then
    ``calls`` interleaved rounds, each call inside the marker; prints the order of the sides (one
    dump per call, in that order)."""
    provider, size, _ = spec.split(":")
    warm_process(provider, int(size), process_warmup)
    raw, wrapped, append = make_case(provider, int(size), "sync")
    order: list[str] = []
    for i in range(warmup + calls):
        append(i)
        if i == warmup and not start_instrumentation():
            raise SystemExit("--instructions needs x86-64 Linux (callgrind's client request)")
        pair = (("raw", raw), ("budgetclient", wrapped))
        for side, fn in pair if i % 2 == 0 else reversed(pair):
            gc.collect()
            if i < warmup:
                fn()
            else:
                sys.call_tracing(fn, ())
                order.append(side)
    print("ORDER " + ",".join(order), flush=True)


@dataclass
class InstrResult:
    provider: str
    tokens: int
    shape: str
    raw: float
    wrapped: float
    raw_misses: float | None = None
    """``--cache``: simulated L2 misses per call (instruction fetches, data reads and writes)."""
    wrapped_misses: float | None = None

    @property
    def ratio(self) -> float:
        return self.wrapped / self.raw


L2_BYTES = 1 << 20
"""``--cache``: the simulated last-level cache, sized as one core's L2 (1 MiB, 16-way): the benchmark
collects garbage before each call, which evicts it, as a real agent's wait for the network and
other work between calls do; a line missing there costs tens of cycles (L3) or a hundred ns."""
_MISSES = ("ILmr", "DLmr", "DLmw")


def _dump_totals(path: Path) -> dict[str, int]:
    """The dump's total of each event (``Ir``, and with ``--cache-sim`` the cache misses)."""
    events: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:") or line.startswith("summary:"):
            return dict(zip(events, map(int, line.split()[1:]), strict=False))
    raise SystemExit(f"no totals in {path}")


def count_instructions(
    case: tuple[str, int, str],
    calls: int,
    warmup: int,
    budget: bool,
    process_warmup: int = 0,
    cache: bool = False,
) -> InstrResult:
    """One case in its own process under callgrind; instructions per call, mean of ``calls``."""
    provider, tokens, shape = case
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--toggle-collect={INSTR_MARKER}",
            f"--dump-after={INSTR_MARKER}",
            f"--callgrind-out-file={out}/cg.out",
            *(["--cache-sim=yes", f"--LL={L2_BYTES},16,64"] if cache else []),
            sys.executable,
            str(Path(__file__).resolve()),
            "--instructions-child",
            f"{provider}:{tokens}:{shape}",
            "--shape",
            shape,
            "--reply-tokens",
            str(REPLY_TOKENS),
            "--calls",
            str(calls),
            "--warmup",
            str(warmup),
            "--process-warmup",
            str(process_warmup),
            *([] if budget else ["--no-budget"]),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        order_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ORDER ")]
        if proc.returncode != 0 or not order_lines:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"callgrind run failed for {case}")
        order = order_lines[-1].split()[1].split(",")
        dumps = sorted(Path(out).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        if len(dumps) != len(order):
            raise SystemExit(f"{case}: {len(dumps)} dumps for {len(order)} measured calls")
        per_side: dict[str, list[int]] = {"raw": [], "budgetclient": []}
        misses: dict[str, list[int]] = {"raw": [], "budgetclient": []}
        for side, dump in zip(order, dumps, strict=True):
            totals = _dump_totals(dump)
            per_side[side].append(totals["Ir"])
            if cache:
                misses[side].append(sum(totals[e] for e in _MISSES))
    return InstrResult(
        provider,
        tokens,
        shape,
        statistics.fmean(per_side["raw"]),
        statistics.fmean(per_side["budgetclient"]),
        statistics.fmean(misses["raw"]) if cache else None,
        statistics.fmean(misses["budgetclient"]) if cache else None,
    )


def run_instructions(
    providers: list[str],
    sizes: list[int],
    calls: int,
    warmup: int,
    budget: bool,
    process_warmup: int = 0,
    cache: bool = False,
) -> None:
    results: list[InstrResult] = []
    for case in instruction_cases(providers, sizes):
        r = count_instructions(case, calls, warmup, budget, process_warmup, cache)
        results.append(r)
        l2 = ""
        if r.raw_misses is not None and r.wrapped_misses is not None:
            l2 = (
                f" raw_l2_misses={r.raw_misses:.0f} budgetclient_l2_misses={r.wrapped_misses:.0f}"
                f" added_l2_misses={r.wrapped_misses - r.raw_misses:.0f}"
            )
        print(
            f"provider={r.provider} tokens={r.tokens} shape={r.shape} raw_instr={r.raw:.0f} "
            f"budgetclient_instr={r.wrapped:.0f} added_instr={r.wrapped - r.raw:.0f} ratio={r.ratio:.3f}{l2}",
            flush=True,
        )
    worst = max(results, key=lambda r: r.ratio)
    print(
        f"worst_ratio={worst.ratio:.3f} provider={worst.provider} tokens={worst.tokens} shape={worst.shape}"
    )


def main() -> None:
    global REPLY_TOKENS, SHAPE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--no-budget",
        action="store_true",
        help="no task budget: skips the pre-call token estimate (metering only)",
    )
    parser.add_argument("--profile", metavar="PROVIDER:TOKENS:MODE", help="profile the wrapped side")
    parser.add_argument(
        "--reply-tokens", type=int, default=REPLY_TOKENS, help="tokens each round appends (default 30)"
    )
    parser.add_argument(
        "--shape",
        choices=("text", "tools"),
        default=SHAPE,
        help="turns as plain strings (default) or an agent's tool calls and tool results",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per sync call under valgrind's callgrind (one process per case)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="time per call: wall (perf_counter, default) or the calling thread's CPU time (thread_time)",
    )
    parser.add_argument("--calls", type=int, default=3, help="--instructions: measured rounds per case")
    parser.add_argument("--warmup", type=int, default=3, help="--instructions: uncounted rounds first")
    parser.add_argument(
        "--process-warmup",
        type=int,
        default=PROCESS_WARMUP,
        help=f"--instructions: uncounted rounds on other conversations first, so the process is in the "
        f"steady state the time table measures (default {PROCESS_WARMUP}; 0: a cold process)",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="--instructions: also simulate the caches and print each side's L2 misses per call "
        "(callgrind --cache-sim; about twice as slow)",
    )
    parser.add_argument("--instructions-child", metavar="PROVIDER:TOKENS:SHAPE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    REPLY_TOKENS = args.reply_tokens
    SHAPE = args.shape
    if args.instructions:
        run_instructions(
            args.providers.split(","),
            [int(s) for s in args.sizes.split(",")],
            args.calls,
            args.warmup,
            not args.no_budget,
            args.process_warmup,
            args.cache,
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        setup(tmp)
        with bc.task("benchmark", budget_usd=None if args.no_budget else 1_000_000):
            if args.instructions_child:
                instructions_child(args.instructions_child, args.calls, args.warmup, args.process_warmup)
                bc.flush(30)
                return
            if args.profile:
                profile(args.profile)
                return
            results: list[Result] = []
            for provider in args.providers.split(","):
                for tokens in map(int, args.sizes.split(",")):
                    for mode in args.modes.split(","):
                        warmup = 1 if args.quick else 3
                        clock = time.thread_time if args.clock == "thread" else time.perf_counter
                        r = measure(provider, tokens, mode, rounds_for(tokens, args.quick), warmup, clock)
                        results.append(r)
                        print(
                            f"provider={r.provider} tokens={r.tokens} raw_ms={r.raw_s * 1e3:.3f} "
                            f"budgetclient_ms={r.wrapped_s * 1e3:.3f} ratio={r.ratio:.3f} "
                            f"mode={r.mode} added_us={r.added_us:.0f}",
                            flush=True,
                        )
        bc.flush(30)
    worst = max(results, key=lambda r: r.ratio)
    print(
        f"worst_ratio={worst.ratio:.3f} provider={worst.provider} tokens={worst.tokens} mode={worst.mode} "
        f"max_added_us_at_150k={max((r.added_us for r in results if r.tokens >= 150_000), default=0):.0f}"
    )
    if args.markdown:
        print()
        print("| provider | tokens | mode | raw ms | budgetclient ms | ratio | added µs |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| {r.provider} | {r.tokens:,} | {r.mode} | {r.raw_s * 1e3:.3f} | {r.wrapped_s * 1e3:.3f} "
                f"| {r.ratio:.3f} | {r.added_us:+.0f} |"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
