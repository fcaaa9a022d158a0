"""Lazy response bodies for the fakes: bytes handed out chunk by chunk, like a socket.

``httpx2.Response(content=...)`` reads its body eagerly, which would let code that wraps a
response stream go untested; these bodies are only produced when the caller iterates.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx2

__all__ = ["ChunkStream", "sse_event"]


class ChunkStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body of pre-built chunks served lazily to sync and async clients alike.

    ``cut_after`` makes the body fail with ``httpx2.ReadError`` once that many chunks were
    delivered, the way a dropped connection ends a stream without its final event.
    """

    def __init__(self, chunks: Sequence[bytes], *, cut_after: int | None = None) -> None:
        self.chunks = list(chunks)
        self.cut_after = cut_after
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if self.cut_after is not None and index >= self.cut_after:
                raise httpx2.ReadError("connection reset by peer (fake stream cut)")
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def sse_event(event: str, data: Any) -> bytes:
    """One Server-Sent Event with its ``event:`` line (the anthropic SDK skips data-only events)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
