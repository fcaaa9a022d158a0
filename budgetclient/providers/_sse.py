"""Byte-stream taps shared by the providers: observe a response body as the caller reads it.

The tap sits where the SDK reads raw bytes (``httpx2.Response.stream``), so every call style
(plain, raw, streaming response, stream helpers) is observed without changing what the caller
gets. Bodies are decoded (gzip/deflate/br/zstd) and split into SSE events or collected as one
JSON document; ``on_done(complete)`` fires exactly once, when the body ends, fails or is closed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

__all__ = ["BodyObserver", "SSEParser", "tap_response"]


class _Decoder:
    """Incremental Content-Encoding decoder (identity, gzip, deflate, and what httpx2 supports)."""

    def __init__(self, encoding: str) -> None:
        self._zlib: Any = None
        self._other: Any = None
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            return
        if enc == "gzip":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif enc == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            from httpx2 import _decoders  # private, but the only place br/zstd decoders live

            decoder_cls = _decoders.SUPPORTED_DECODERS.get(enc)
            if decoder_cls is None:
                raise ValueError(f"unsupported content-encoding {encoding!r}")
            self._other = decoder_cls()

    def decode(self, data: bytes) -> bytes:
        if self._zlib is not None:
            return bytes(self._zlib.decompress(data))
        if self._other is not None:
            out = self._other.decode(data)
            return out if isinstance(out, bytes) else b"".join(out)
        return data

    def flush(self) -> bytes:
        if self._zlib is not None:
            return bytes(self._zlib.flush())
        if self._other is not None:
            out = self._other.flush()
            return out if isinstance(out, bytes) else b"".join(out)
        return b""


class SSEParser:
    """Incremental Server-Sent Events parser yielding ``(event, data)`` pairs."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        self._buffer += data
        events: list[tuple[str | None, str]] = []
        while True:
            idx = self._buffer.find(b"\n")
            if idx < 0:
                break
            line = self._buffer[:idx].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buffer = self._buffer[idx + 1 :]
            if not line:
                if self._data or self._event is not None:
                    events.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
        return events

    def close(self) -> list[tuple[str | None, str]]:
        events = self.feed(b"\n\n") if self._buffer else []
        if self._data:
            events.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return events


class BodyObserver:
    """Receives a response body; subclasses fold it into usage.

    ``mode`` says how the body is split: ``"json"`` (one document, ``on_json``), ``"sse"``
    (``on_event`` per Server-Sent Event) or ``"lines"`` (``on_line`` per line, for JSON Lines).
    """

    mode: str = "json"

    def on_event(self, event: str | None, data: str) -> None:
        """One SSE event."""

    def on_json(self, document: Any) -> None:
        """The whole body parsed as JSON."""

    def on_line(self, line: str) -> None:
        """One line of a line-oriented body."""

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        """The body ended (``complete``) or was cut/closed early."""


class _Tap:
    def __init__(self, response: httpx2.Response, observer: BodyObserver) -> None:
        self._observer = observer
        self._decoder = _Decoder(response.headers.get("content-encoding", ""))
        self._sse = SSEParser() if observer.mode == "sse" else None
        self._lines = observer.mode == "lines"
        self._chunks: list[bytes] = []
        self._pending = b""
        self._done = False
        self._broken = False

    def feed(self, raw: bytes) -> None:
        if self._done or self._broken:
            return
        try:
            data = self._decoder.decode(raw)
            if self._sse is not None:
                for event, payload in self._sse.feed(data):
                    self._observer.on_event(event, payload)
            elif self._lines:
                self._feed_lines(data)
            else:
                self._chunks.append(data)
        except Exception:
            self._broken = True

    def _feed_lines(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            if line.strip():
                self._observer.on_line(line.decode("utf-8", errors="replace"))

    def finish(self, complete: bool, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        try:
            if complete and not self._broken:
                tail = self._decoder.flush()
                if self._sse is not None:
                    for event, payload in self._sse.feed(tail) + self._sse.close():
                        self._observer.on_event(event, payload)
                elif self._lines:
                    self._feed_lines(tail + b"\n")
                else:
                    body = b"".join([*self._chunks, tail])
                    self._chunks = []
                    self._observer.on_json(json.loads(body) if body.strip() else None)
        except Exception as exc:
            complete, error = False, exc
        self._observer.on_done(complete and not self._broken, error)


class _SyncTap(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, tap: _Tap) -> None:
        self._inner = inner
        self._tap = tap

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._tap.feed(chunk)
                yield chunk
        except GeneratorExit:
            self._tap.finish(False)
            raise
        except BaseException as exc:
            self._tap.finish(False, exc)
            raise
        self._tap.finish(True)

    def close(self) -> None:
        self._tap.finish(False)
        self._inner.close()

    def __getattr__(self, name: str) -> Any:  # e.g. ``elapsed`` set by transports
        return getattr(self._inner, name)


class _AsyncTap(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, tap: _Tap) -> None:
        self._inner = inner
        self._tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._tap.feed(chunk)
                yield chunk
        except GeneratorExit:
            self._tap.finish(False)
            raise
        except BaseException as exc:
            self._tap.finish(False, exc)
            raise
        self._tap.finish(True)

    async def aclose(self) -> None:
        self._tap.finish(False)
        await self._inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def tap_response(response: httpx2.Response, observer: BodyObserver) -> None:
    """Observe ``response``'s body: at once if already read, else as the caller reads it."""
    if response.is_stream_consumed or getattr(response, "_content", None) is not None:
        tap = _Tap(response, observer)
        try:
            content = response.content
        except Exception as exc:
            tap.finish(False, exc)
            return
        # ``content`` is already decoded: bypass the decoder
        tap._decoder = _Decoder("")
        tap.feed(content)
        tap.finish(True)
        return
    tap = _Tap(response, observer)
    stream = response.stream
    if isinstance(stream, httpx2.AsyncByteStream) and not isinstance(stream, httpx2.SyncByteStream):
        response.stream = _AsyncTap(stream, tap)
    elif isinstance(stream, httpx2.SyncByteStream) and not isinstance(stream, httpx2.AsyncByteStream):
        response.stream = _SyncTap(stream, tap)
    elif isinstance(stream, httpx2.SyncByteStream):
        # a stream that is both (e.g. a test double): pick by how the client reads it
        response.stream = _DualTap(stream, tap)
    else:
        tap.finish(False)


class _DualTap(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    def __init__(self, inner: Any, tap: _Tap) -> None:
        self._sync = _SyncTap(inner, tap)
        self._async = _AsyncTap(inner, tap)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._sync)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._async.__aiter__()

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()
