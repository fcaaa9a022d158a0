"""Anthropic's append-only fast path (`prepare.APPEND_FAST_PATH`) decides exactly as the full path.

The same random sequences of calls (turns appended, earlier messages edited, the last turn
rewritten, markers, system, tools and parameters changed, re-sends) go through a lineage with the
fast path and one without; every prepared request (body sent with its markers, drift, breakpoints,
TTL) and the lineage's state after it must be equal. Over the mocked wire, the bodies sent, the
drift warnings and the task's usage and cost must be equal too, and ``drift="raise"`` still
raises before sending once the fast path has been used.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import budgetclient as bc
from budgetclient.formats.anthropic import blocks, prepare
from budgetclient.formats.anthropic.estimate import estimate_input
from budgetclient.formats.anthropic.prepare import PreparedRequest, observe_response, prepare_request
from budgetclient.lineage import LineageRegistry, LineageState
from budgetclient.usage import Usage
from tests._hypothesis import FAST
from tests._sdk_copy import sdk_copy
from tests.providers.wire import Wire, anthropic_message, anthropic_usage, json_response

MODEL = "claude-sonnet-4-6"
_WORDS = ("cache", "prefix", "turn", "tool", "budget", "ledger", "drift", "token")


@contextmanager
def _fast_path(on: bool) -> Iterator[None]:
    saved = prepare.APPEND_FAST_PATH, blocks.APPEND_FAST_PATH
    prepare.APPEND_FAST_PATH = blocks.APPEND_FAST_PATH = on
    try:
        yield
    finally:
        prepare.APPEND_FAST_PATH, blocks.APPEND_FAST_PATH = saved


def _text(seed: int, words: int) -> str:
    return " ".join(_WORDS[(seed * 7 + i * 3) % len(_WORDS)] + str(seed) for i in range(words))


Op = tuple[str, int]
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["user", "user", "user", "assistant", "blocks", "tool_result", "edit", "drop", "marker",
             "system", "tools", "tool_choice", "same", "top_marker", "tool_marker"]
        ),
        st.integers(min_value=0, max_value=50),
    ),
    min_size=1,
    max_size=12,
)  # fmt: skip


class _Conversation:
    """A caller's conversation: one messages list, appended to and edited as ``ops`` say."""

    def __init__(self) -> None:
        self.system = _text(1, 300)
        self.tools: list[dict[str, Any]] = [
            {"name": f"tool_{i}", "description": _text(i, 400), "input_schema": {"type": "object"}}
            for i in range(3)
        ]
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": _text(2, 200)}]
        self.extra: dict[str, Any] = {}

    def apply(self, op: Op) -> None:
        kind, n = op
        messages = self.messages
        if kind == "user":
            messages.append({"role": "user", "content": _text(n, 20 + 10 * n)})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": _text(n + 100, 30)})
        elif kind == "blocks":
            messages.append({"role": "assistant", "content": [{"type": "text", "text": _text(n, 25)}]})
        elif kind == "tool_result":
            result = {"type": "tool_result", "tool_use_id": f"tu_{n}", "content": _text(n + 7, 60)}
            messages.append({"role": "user", "content": [result]})
        elif kind == "edit":
            at = n % len(messages)
            messages[at] = {"role": messages[at]["role"], "content": _text(n, 9)}
        elif kind == "drop" and len(messages) > 1:
            messages.pop()
        elif kind == "marker":
            last = messages[-1]
            content = last["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
            messages[-1] = {"role": last["role"], "content": blocks}
        elif kind == "system":
            self.system = _text(n + 3, 300)
        elif kind == "tools":
            self.tools = [*self.tools, {"name": f"extra_{n}", "description": "x", "input_schema": {}}]
        elif kind == "tool_choice":
            self.extra["tool_choice"] = {"type": "auto"} if n % 2 else {"type": "any"}
        elif kind == "top_marker":  # automatic caching on, or off again
            if self.extra.pop("cache_control", None) is None:
                self.extra["cache_control"] = {"type": "ephemeral"}
        elif kind == "tool_marker":
            self.tools = [*self.tools[:-1], {**self.tools[-1], "cache_control": {"type": "ephemeral"}}]

    def body(self) -> dict[str, Any]:
        """What the SDK hands over: fresh dicts and lists around the caller's own strings."""
        return {
            "model": MODEL,
            "max_tokens": 64,
            "system": self.system,
            "tools": [sdk_copy(t) for t in self.tools],
            "messages": [sdk_copy(m) for m in self.messages],
            **{k: sdk_copy(v) for k, v in self.extra.items()},
        }


def _decisions(prepared: PreparedRequest, state: LineageState) -> tuple[Any, ...]:
    built = prepared.built
    assert built is not None
    return (
        built.messages, built.message_spans, built.messages_span, built.tools_span, built.system_span,
        built.last_assistant, built.tool_overhead, built.messages_count, built.messages_bytes,
        built.estimable, built.messages_estimable, estimate_input(built) if built.estimable else None,
        prepared.body, prepared.prefix_hash, prepared.drift, prepared.breakpoints, prepared.markers,
        prepared.ttl, prepared.cache_points, prepared.expected_divergence, prepared.diagnostics,
        prepared.sequence, prepared.new_segment,
        prepared.blocks.blocks if prepared.blocks is not None else None,
        prepared.blocks.prefix_tokens if prepared.blocks is not None else None,
        state.tail, state.drift_end, state.written_end, state.long_end, state.ttl,
        state.fixed_divergence, state.volatile_fixed, state.calls, list(state.gaps), state.token_scale,
        state.stored_bytes,
    )  # fmt: skip


def _run_prepared(ops: list[Op], drift: str, fast: bool) -> list[tuple[Any, ...]]:
    conversation = _Conversation()
    state = LineageRegistry().get("k")
    out = []
    with _fast_path(fast):
        for i, op in enumerate(ops):
            conversation.apply(op)
            body = conversation.body()
            prepared = prepare_request(
                body, cache="auto", cache_ttl="auto", drift=drift,  # type: ignore[arg-type]
                state=state, now=float(i * 10), diagnostics=True, tools=blocks.tools_print(body),
            )  # fmt: skip
            out.append(_decisions(prepared, state))
            if prepared.drift is not None and drift == "raise":
                continue  # not sent: no response
            total = prepared.blocks.total_tokens if prepared.blocks is not None else 0
            read = total // 2 if op[1] % 3 else 0
            usage = Usage(input_tokens=total + op[1], cache_read_tokens=read, cache_write_tokens=total - read)
            observe_response(state, prepared, usage, {"id": f"msg_{i}"}, now=float(i * 10 + 1))
    return out


@FAST
@given(ops=OPS, drift=st.sampled_from(["warn", "raise", "off"]))
def test_the_fast_path_prepares_what_the_full_path_prepares(ops: list[Op], drift: str) -> None:
    fast = _run_prepared(ops, drift, fast=True)
    full = _run_prepared(ops, drift, fast=False)
    assert fast == full


def test_the_fast_path_is_taken_for_appended_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bool] = []
    built: list[bool] = []
    appended = prepare._appended
    appended_text = blocks._appended_text
    monkeypatch.setattr(prepare, "_appended", lambda *a: taken.append(appended(*a)) or taken[-1])
    monkeypatch.setattr(
        blocks, "_appended_text", lambda *a: built.append(appended_text(*a) is not None) or None
    )  # the general path builds these (the same, as the property test checks)
    ops: list[Op] = [("user", 1), ("assistant", 2), ("user", 3), ("edit", 0), ("user", 4), ("blocks", 5),
                     ("user", 6)]  # fmt: skip
    _run_prepared(ops, "warn", fast=True)
    # the first call has no previous one; the edit is compared in full
    assert taken == [True, True, False, True, True, True]
    # a list-content turn (and the call after it, sealed) is built by the general path
    assert built == [True, True, False, True, False]


# -- over the mocked wire ------------------------------------------------------------------------

_task_names = itertools.count()


def _run_wire(ops: list[Op], fast: bool) -> tuple[list[bytes], list[str], Any, Any, int]:
    usage = anthropic_usage(900, 12, read=300, write_5m=200)
    wire = Wire(default=lambda request: json_response(anthropic_message(usage)))
    client = bc.Anthropic(
        api_key="sk-ant-test-key", base_url="http://anthropic.test", http_client=wire.client(), max_retries=0
    )
    conversation = _Conversation()
    with _fast_path(fast), warnings.catch_warnings(record=True) as caught, bc.task(
        f"fast-path-{next(_task_names)}"
    ) as task:
        warnings.simplefilter("always")
        for op in ops:
            conversation.apply(op)
            body = conversation.body()
            client.messages.create(**body)
    sent = [request.content for request in wire.requests]
    drift = [str(w.message) for w in caught if "drift" in str(w.message).lower()]
    return sent, drift, task.usage, task.cost, task.calls


@settings(FAST, max_examples=25)
@given(ops=OPS)
def test_the_wire_sees_the_same_calls_with_and_without_the_fast_path(ops: list[Op]) -> None:
    assert _run_wire(ops, fast=True) == _run_wire(ops, fast=False)


def test_drift_raise_still_raises_before_sending_after_the_fast_path() -> None:
    usage = anthropic_usage(900, 12)
    wire = Wire(default=lambda request: json_response(anthropic_message(usage)))
    client = bc.Anthropic(
        api_key="sk-ant-test-key", base_url="http://anthropic.test", http_client=wire.client(),
        max_retries=0, drift="raise",
    )  # fmt: skip
    conversation = _Conversation()
    taken: list[bool] = []
    appended = prepare._appended
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare, "_appended", lambda *a: taken.append(appended(*a)) or taken[-1])
        for op in [("user", 1), ("assistant", 2), ("user", 3)]:
            conversation.apply(op)
            client.messages.create(**conversation.body())
        assert taken == [True, True]
        sent = len(wire.requests)
        conversation.apply(("edit", 1))  # an earlier turn edited: drift
        with pytest.raises(bc.PrefixDriftError):
            client.messages.create(**conversation.body())
    assert len(wire.requests) == sent  # raised before sending
    assert isinstance(wire.requests[-1], httpx2.Request)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 40), min_size=6, max_size=6),
    params=st.sets(st.integers(0, 12), max_size=2),
)
def test_the_chained_prefix_fingerprint_is_the_fingerprint_of_the_whole_prefix(
    sizes: list[int], cuts: list[int], params: set[int]
) -> None:
    """A conversation growing call by call: each call's fingerprint continued from the previous
    call's state is the BLAKE2b of its whole prefix, computed here from its definition (``p`` +
    name + NUL + digest of each parameter placed before the cut, then ``b`` + digest per block)."""
    import hashlib

    from budgetclient.blocks import new_block
    from budgetclient.drift import chained_prefix_fingerprint

    sent = tuple((f"param{p}", p, f"value{p}".encode()) for p in sorted(params))
    grown: list[Any] = []
    base = None
    for step, (size, cut_at) in enumerate(zip(sizes, cuts, strict=False)):
        for i in range(size):
            digest = hashlib.blake2b(f"{step}.{i}".encode(), digest_size=16).digest()
            grown.append(new_block(path=f"b{len(grown)}", section="messages", raw=b"", digest=digest,
                                   tokens=1, markable=True, message=len(grown)))
        cut = min(cut_at, len(grown))
        if not cut:
            base = None
            continue
        h = hashlib.blake2b(digest_size=16)
        for name, position, data in sent:
            if position <= cut:
                h.update(b"p" + name.encode() + b"\0" + hashlib.blake2b(data, digest_size=16).digest())
        for block in grown[:cut]:
            h.update(b"b" + block.digest)
        value, base = chained_prefix_fingerprint(tuple(grown), cut, sent, base)
        assert value == h.hexdigest()
