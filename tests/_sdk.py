"""What the installed SDK itself does on a given wire: the reference budgetclient's tests compare with.

SDK releases change what they raise for the same fault (anthropic 2.17 wraps a stream cut mid-way
in ``APIConnectionError``; 2.10-2.16 let the ``httpx2.ReadError`` through), so a test sends the same
wire through the raw client and through ours and compares the two outcomes, instead of naming one
release's exception class.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2

from tests.providers.wire import Wire, anthropic_stream_events, anthropic_usage, sse_response


@dataclass(frozen=True)
class Outcome:
    """How a call or a stream ended: what arrived before the end, and the exception (if any) that ended it."""

    items: tuple[Any, ...]
    error: Exception | None = None

    @property
    def error_type(self) -> type[Exception] | None:
        return type(self.error) if self.error is not None else None

    @property
    def transport_error(self) -> httpx2.TransportError | None:
        """The httpx2 transport error behind ``error`` (itself or a cause), however the SDK wrapped it."""
        seen: BaseException | None = self.error
        while seen is not None:
            if isinstance(seen, httpx2.TransportError):
                return seen
            seen = seen.__cause__ or seen.__context__
        return None

    def dumped(self) -> list[Any]:
        """The items as plain data, comparable between two clients' objects."""
        return [item.model_dump() if hasattr(item, "model_dump") else item for item in self.items]


def drain(call: Callable[[], Iterable[Any]]) -> Outcome:
    """Run ``call`` and iterate what it returns to the end: each item, and the error that stopped it."""
    items: list[Any] = []
    try:
        for item in call():
            items.append(item)
    except Exception as exc:
        return Outcome(tuple(items), exc)
    return Outcome(tuple(items))


async def adrain(call: Callable[[], AsyncIterable[Any] | Awaitable[AsyncIterable[Any]]]) -> Outcome:
    """``drain`` for async calls: an async generator, or a coroutine like ``….create(stream=True)``."""
    items: list[Any] = []
    try:
        source = call()
        async for item in await source if inspect.isawaitable(source) else source:
            items.append(item)
    except Exception as exc:
        return Outcome(tuple(items), exc)
    return Outcome(tuple(items))


def assert_same_outcome(ours: Outcome, raw: Outcome, *, contents: bool = True) -> None:
    """The wrapped client ended as the raw one did: the same exception class and transport cause, after
    the same items (``contents=False``: items of the same types, for a wire that echoes what we add by
    design, such as OpenAI's ``prompt_cache_key``)."""
    assert ours.error_type is raw.error_type, f"raised {ours.error_type}, the raw SDK raised {raw.error_type}"
    assert type(ours.transport_error) is type(raw.transport_error)
    assert [type(item) for item in ours.items] == [type(item) for item in raw.items]
    if contents:
        assert ours.dumped() == raw.dumped()


def anthropic_cut_stream_error(
    transport_error: type[httpx2.TransportError] = httpx2.ReadError,
) -> type[Exception]:
    """What the installed anthropic SDK raises when a streamed body fails with ``transport_error``."""
    events = anthropic_stream_events(anthropic_usage(1, 1))
    wire = Wire(default=lambda r: sse_response(events, cut_after=1, cut_error=transport_error))
    raw = anthropic.Anthropic(
        api_key="sk-ant-test", base_url="http://anthropic.test", http_client=wire.client(), max_retries=0
    )
    messages = [{"role": "user", "content": "hi"}]
    outcome = drain(
        lambda: raw.messages.create(model="claude-sonnet-4-6", max_tokens=8, stream=True, messages=messages)
    )
    assert outcome.error_type is not None, "the cut stream ended without an error"
    assert isinstance(outcome.transport_error, transport_error)
    return outcome.error_type
