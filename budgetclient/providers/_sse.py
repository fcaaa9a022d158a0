"""Byte-stream taps shared by the providers: observe a response body as the caller reads it.

The tap sits where the SDK reads raw bytes (``httpx2.Response.stream``), so every call style
(plain, raw, streaming response, stream helpers) is observed without changing what the caller
gets. Bodies are decoded (gzip/deflate/br/zstd) and split into SSE events, AWS event-stream frames
(Bedrock) or lines, or collected as one JSON document; ``on_done(complete)`` fires exactly once,
when the body ends, fails or is closed.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import weakref
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import orjson

__all__ = ["BodyObserver", "SSEParser", "body_read", "loads", "read_json", "tap_response"]


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


_SIMPLE_EVENT = re.compile(r"(?:event: ?([^\n]*)\n)?data: ?([^\n]*)\n\n")
"""One event of an optional ``event`` line and one ``data`` line, as every provider streams."""


class SSEParser:
    """Incremental Server-Sent Events parser yielding ``(event, data)`` pairs.

    With a ``marker``, whole events that do not contain it may be dropped without being parsed:
    for a caller that needs a few events of a stream made mostly of content deltas.
    """

    def __init__(self, marker: bytes | None = None) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._marker = marker

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        buffer = self._buffer + data if self._buffer else data
        if (
            self._marker is not None
            and self._marker not in buffer
            and buffer.endswith(b"\n\n")  # whole events only (a blank line ends one)
            and self._event is None
            and not self._data
        ):
            self._buffer = b""
            return []
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        # complete lines only, so no UTF-8 sequence is cut: one decode for the whole chunk
        text = buffer[: end + 1].decode("utf-8", errors="replace")
        events: list[tuple[str | None, str]] = []
        pos = 0
        if self._event is None and not self._data and "\r" not in text:
            # whole ``event:``/``data:`` events, as providers send them, matched in C
            match = _SIMPLE_EVENT.match(text)
            while match is not None:
                events.append((match[1], match[2]))
                pos = match.end()
                match = _SIMPLE_EVENT.match(text, pos)
            if pos == len(text):
                return events
        for line in text[pos:-1].split("\n"):  # the rest (or any other form), line by line
            if line.endswith("\r"):
                line = line.rstrip("\r")
            if not line:
                if self._data or self._event is not None:
                    events.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
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
    (``on_event`` per Server-Sent Event), ``"aws"`` (``on_event`` per event of an AWS event
    stream, as Bedrock streams: see `_AWSFrames`) or ``"lines"`` (``on_line`` per line, for JSON
    Lines).
    """

    mode: str = "json"
    sse_marker: bytes | None = None
    """Bytes that every event ``on_event`` acts on contains in its name or data (e.g. a common
    prefix of their names); other events may then be skipped unparsed (SSE events and AWS
    event-stream frames alike). None: every event is delivered."""

    def on_event(self, event: str | None, data: str) -> None:
        """One SSE event."""

    def on_json(self, document: Any) -> None:
        """The whole body parsed as JSON."""

    def on_line(self, line: str) -> None:
        """One line of a line-oriented body."""

    def on_done(self, complete: bool, error: BaseException | None) -> None:
        """The body ended (``complete``) or was cut/closed early."""


class _Tap:
    def __init__(self, observer: BodyObserver, encoding: str) -> None:
        self._observer = observer
        # None for an identity body (the usual case): no decode call per chunk
        self._decoder = _Decoder(encoding) if encoding.strip().lower() not in ("", "identity") else None
        self._sse = SSEParser(observer.sse_marker) if observer.mode == "sse" else None
        self._aws = _AWSFrames(observer.sse_marker) if observer.mode == "aws" else None
        self._lines = observer.mode == "lines"
        self._chunks: list[bytes] = []
        self._pending = b""
        self._done = False
        self._broken = False

    def feed(self, raw: bytes) -> None:
        if self._done or self._broken:
            return
        try:
            data = raw if self._decoder is None else self._decoder.decode(raw)
            if self._sse is not None:
                for event, payload in self._sse.feed(data):
                    self._observer.on_event(event, payload)
            elif self._aws is not None:
                for event, payload in self._aws.feed(data):
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
                tail = b"" if self._decoder is None else self._decoder.flush()
                if self._sse is not None:
                    for event, payload in self._sse.feed(tail) + self._sse.close():
                        self._observer.on_event(event, payload)
                elif self._aws is not None:
                    for event, payload in self._aws.feed(tail):
                        self._observer.on_event(event, payload)
                elif self._lines:
                    self._feed_lines(tail + b"\n")
                else:
                    chunks, self._chunks = self._chunks, []
                    if tail:
                        chunks.append(tail)
                    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    self._observer.on_json(_loads(body) if body.strip() else None)
        except Exception as exc:
            complete, error = False, exc
        self._observer.on_done(complete and not self._broken, error)


class _AWSFrames:
    """AWS event-stream frames (``application/vnd.amazon.eventstream``, Bedrock's
    ``invoke-with-response-stream``) as ``(event type, event JSON)`` pairs.

    Framing and checksums are botocore's (`botocore.eventstream.EventStreamBuffer`; Bedrock clients
    need botocore to sign requests, so it is there whenever such a body is). Each ``chunk`` event
    carries one Messages stream event, base64-encoded in its JSON payload: the same JSON a
    first-party stream sends as SSE ``data``. Exception frames carry no usage and are skipped (the
    SDK raises them). A body cut inside a frame leaves it unread: the record is as complete as the
    events that arrived (``message_stop`` or not). With a ``marker``, events without it are
    dropped unparsed, as `SSEParser` drops them.
    """

    def __init__(self, marker: bytes | None = None) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()
        self._marker = marker

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        self._buffer.add_data(data)
        events: list[tuple[str | None, str]] = []
        for message in self._buffer:
            headers = message.headers
            if headers.get(":message-type") != "event" or headers.get(":event-type") != "chunk":
                continue
            chunk = loads(message.payload.decode("utf-8"))
            raw = chunk.get("bytes") if isinstance(chunk, dict) else None
            if not isinstance(raw, str):
                continue
            event = base64.b64decode(raw)
            if self._marker is not None and self._marker not in event:
                continue  # its type, in its JSON, is not one the observer acts on
            text = event.decode("utf-8", errors="replace")
            document = loads(text)
            kind = document.get("type") if isinstance(document, dict) else None
            events.append((kind if isinstance(kind, str) else None, text))
        return events


_decoder = json.JSONDecoder()


def loads(text: str) -> Any:
    """``json.loads(text)``, a few microseconds faster for a text that is exactly one document.

    ``json.loads`` scans for whitespace around the document with two regular expressions; SSE
    data and response bodies have none. Anything else goes to ``json.loads`` (same errors).
    """
    try:
        document, end = _decoder.raw_decode(text)
    except ValueError:
        return json.loads(text)
    return document if end == len(text) else json.loads(text)


_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
"""``bytes.translate`` table: every digit to ``0``, every other byte to a space."""
_LONG_NUMBER = b"0" * 19
"""19 digits in a row, translated: orjson reads an integer past 64 bits as a float."""


def _loads(body: bytes) -> Any:
    """``json.loads(body)``: the same document at a third of the cost for a body that starts ``{``.

    Such a body is parsed by orjson (a UTF-8 object, as ``json.loads`` would sniff it), which gives
    the same document as ``json.loads`` except for an integer of 19 digits or more (read as a
    float: such a body goes to ``json``) and what it refuses (invalid UTF-8, lone surrogates,
    ``NaN``, a float out of range): that goes to ``json``, which decides as before.
    """
    if body[:1] == b"{" and body[1:2] != b"\x00":
        if _LONG_NUMBER not in body.translate(_DIGITS):
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
        return loads(body.decode("utf-8", "surrogatepass"))
    return json.loads(body)


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


def body_read(response: httpx2.Response) -> bool:
    """Whether ``response``'s body was read already (its ``content`` is there, or its stream gone)."""
    return response.is_stream_consumed or getattr(response, "_content", None) is not None


def read_json(response: httpx2.Response) -> Any:
    """The JSON document of a body already read (`body_read`), None when it is blank; raises what
    reading or parsing it raises, as `tap_response` would report it.

    A document is parsed once for its observer and for the SDK: the response's next ``json()``
    call (the SDK's own parse, right after the attempt) gets it instead of parsing the body again
    (`_parsed_once`). Nothing else holds it by then, so that call's caller owns it as usual.
    """
    content = response.content
    if content[:1] != b"{" and not content.strip():  # a body of JSON's own: no copy to test
        return None
    document = _loads(content)
    if type(document) is dict and type(response).json is _RESPONSE_JSON:
        # a partial, not an object of a class of ours: built in C (a weak reference: no cycle, so an
        # unparsed response is freed at once)
        response.__dict__["json"] = functools.partial(_parsed_once, weakref.ref(response), [document])
    return document


_RESPONSE_JSON = httpx2.Response.json
"""What ``httpx2.Response.json`` does: ``json.loads(self.content, **kwargs)``."""


def _parsed_once(response_ref: weakref.ref[httpx2.Response], documents: list[Any], **kwargs: Any) -> Any:
    """``response.json()`` as `read_json` set it: the first call returns the document it parsed (what
    ``json.loads(response.content)`` returns) and gives the response its class's ``json`` back."""
    response = response_ref()
    if response is None:  # unreachable: called as the response's attribute
        raise ReferenceError("the response is gone")
    attributes = response.__dict__
    current = attributes.get("json")
    if type(current) is functools.partial and current.func is _parsed_once:
        attributes.pop("json", None)
    try:
        document = documents.pop()  # atomic: handed out once, whichever thread asks first
    except IndexError:
        return _RESPONSE_JSON(response, **kwargs)
    return _RESPONSE_JSON(response, **kwargs) if kwargs else document


def tap_response(response: httpx2.Response, observer: BodyObserver) -> None:
    """Observe ``response``'s body: at once if already read, else as the caller reads it."""
    if body_read(response):
        tap = _Tap(observer, "")  # ``content`` is already decoded
        try:
            content = response.content
        except Exception as exc:
            tap.finish(False, exc)
            return
        tap.feed(content)
        tap.finish(True)
        return
    tap = _Tap(observer, response.headers.get("content-encoding", ""))
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
