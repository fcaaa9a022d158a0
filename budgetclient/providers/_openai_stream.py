"""Hiding the usage-only chunk of a chat stream from a caller who did not ask for it.

budgetclient sends ``stream_options.include_usage`` so that every chat stream reports its usage;
OpenAI then appends one chunk with ``choices == []``, which breaks caller code that reads
``chunk.choices[0]`` on every chunk. The meter reads the usage first; then the caller gets the
stream the plain SDK would have given them:

- the chunk is removed when it carries nothing but usage, the envelope every chunk repeats
  (``id``, ``object``, ``created``, ``model``, ``system_fingerprint``, ``service_tier``, the
  ``obfuscation`` padding and the empty ``choices``) and null fields (``"moderation": null``);
- a chunk that also carries anything else (``moderation`` results, a field a newer API adds) is
  kept, with only its ``usage`` key removed: that payload is the caller's, and the plain SDK,
  which did not ask for usage, would have seen it without one.

This holds for a body read as it streams and for one already read when it arrives (a mocked
wire: ``httpx2.MockTransport`` or respx returning ``content=b"data: ..."``), whose content (and
``Content-Length``) is rewritten the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx2

from ._sse import _Decoder

__all__ = ["hide_usage_chunk"]

_ENVELOPE = frozenset(
    {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
        "obfuscation",
        "choices",
        "usage",
    }
)
"""Keys of a chat (or legacy completions) chunk that carry nothing of their own on the usage chunk."""


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


def _without_usage(event: bytes) -> bytes:
    """``event`` as the caller gets it: unchanged, removed (``b""``), or without its ``usage``."""
    if b"usage" not in event:
        return event
    lines = event.splitlines(keepends=True)
    data = b"".join(line[5:].strip() for line in lines if line.startswith(b"data:"))
    try:
        document = json.loads(data)
    except ValueError:
        return event
    if not (isinstance(document, Mapping) and document.get("choices") == [] and document.get("usage")):
        return event
    if all(key in _ENVELOPE or value is None for key, value in document.items()):
        return b""
    kept = {key: value for key, value in document.items() if key != "usage"}
    newline = b"\r\n" if event.endswith(b"\r\n") else b"\n"
    encoded = b"data: " + json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode() + newline
    out, placed = [], False
    for line in lines:
        if line.startswith(b"data:"):
            if not placed:
                out.append(encoded)
                placed = True
        else:
            out.append(line)
    return b"".join(out)


class _Filter:
    def __init__(self, encoding: str) -> None:
        self._decoder = _Decoder(encoding)
        self._splitter = _EventSplitter()

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(_without_usage(e) for e in self._splitter.feed(self._decoder.decode(chunk)))

    def end(self) -> bytes:
        tail = b"".join(_without_usage(e) for e in self._splitter.feed(self._decoder.flush()))
        return tail + _without_usage(self._splitter.rest())  # a last event with no blank line


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
        _rewrite_read_body(response)
        return
    encoding = response.headers.get("content-encoding", "")
    response.stream = (_AsyncHideUsage if is_async else _SyncHideUsage)(response.stream, encoding)
    for stale in ("content-encoding", "content-length"):  # the body delivered is decoded, and shorter
        if stale in response.headers:
            del response.headers[stale]


def _rewrite_read_body(response: httpx2.Response) -> None:
    """The same filter over a body read before the SDK saw it (``content`` is decoded already).

    ``httpx2.Response`` (and legacy ``httpx``) serve ``content``, ``iter_bytes`` and the SDK's
    SSE decoder from ``_content`` once a body is read; there is no public setter.
    """
    content = getattr(response, "_content", None)
    if not isinstance(content, bytes):
        return  # consumed as a stream without being kept: nothing the caller can read again
    stream_filter = _Filter("")
    filtered = stream_filter.feed(content) + stream_filter.end()
    if filtered == content:
        return
    response._content = filtered
    if "content-encoding" in response.headers:
        del response.headers["content-encoding"]
    if "content-length" in response.headers:
        response.headers["content-length"] = str(len(filtered))
