"""Hiding the usage-only chunk of a chat stream from a caller who did not ask for it.

budgetclient sends ``stream_options.include_usage`` so that every chat stream reports its usage;
OpenAI then appends one chunk with ``choices == []``, which breaks caller code that reads
``chunk.choices[0]`` on every chunk. This byte stream removes exactly that SSE event (after
decoding any Content-Encoding), so the caller sees the stream the plain SDK would have given them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx2

from ._sse import _Decoder

__all__ = ["hide_usage_chunk"]


class _EventSplitter:
    """Splits decoded SSE bytes into whole events (raw bytes, separators included)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        events: list[bytes] = []
        while True:
            idx = self._buffer.find(b"\n")
            if idx < 0:
                return events
            line, self._buffer = self._buffer[: idx + 1], self._buffer[idx + 1 :]
            self._event += line
            if not line.strip():
                events.append(self._event)
                self._event = b""

    def rest(self) -> bytes:
        rest, self._buffer, self._event = self._event + self._buffer, b"", b""
        return rest


def _is_usage_chunk(event: bytes) -> bool:
    """The chunk ``include_usage`` appends: ``choices == []`` and a usage object."""
    if b"usage" not in event:
        return False
    data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    try:
        document = json.loads(data)
    except ValueError:
        return False
    return isinstance(document, Mapping) and document.get("choices") == [] and bool(document.get("usage"))


class _Filter:
    def __init__(self, encoding: str) -> None:
        self._decoder = _Decoder(encoding)
        self._splitter = _EventSplitter()

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(e for e in self._splitter.feed(self._decoder.decode(chunk)) if not _is_usage_chunk(e))

    def end(self) -> bytes:
        tail = b"".join(e for e in self._splitter.feed(self._decoder.flush()) if not _is_usage_chunk(e))
        return tail + self._splitter.rest()


class _SyncHideUsage(httpx2.SyncByteStream):
    def __init__(self, inner: Any, encoding: str) -> None:
        self._inner = inner
        self._filter = _Filter(encoding)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            out = self._filter.feed(chunk)
            if out:
                yield out
        tail = self._filter.end()
        if tail:
            yield tail

    def close(self) -> None:
        self._inner.close()


class _AsyncHideUsage(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, encoding: str) -> None:
        self._inner = inner
        self._filter = _Filter(encoding)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            out = self._filter.feed(chunk)
            if out:
                yield out
        tail = self._filter.end()
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self._inner.aclose()


def hide_usage_chunk(response: httpx2.Response, *, is_async: bool) -> None:
    """Deliver the stream without the usage-only chunk (decoded: content-encoding is dropped)."""
    if response.is_stream_consumed or getattr(response, "_content", None) is not None:
        return  # already read by the transport: nothing left to filter
    encoding = response.headers.get("content-encoding", "")
    response.stream = (_AsyncHideUsage if is_async else _SyncHideUsage)(response.stream, encoding)
    if "content-encoding" in response.headers:
        del response.headers["content-encoding"]
