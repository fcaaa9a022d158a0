"""Wire-level doubles for driving the real SDKs: canned bodies served through non-eager streams."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2


class ChunkStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body delivered in chunks, read lazily like a socket (``Response(content=...)`` is eager).

    ``cut_after`` raises ``cut_error`` (a read error) after that many chunks, like a dropped connection.
    """

    def __init__(
        self, chunks: list[bytes], cut_after: int | None = None,
        cut_error: type[httpx2.TransportError] = httpx2.ReadError,
    ) -> None:  # fmt: skip
        self.chunks = chunks
        self.cut_after = cut_after
        self.cut_error = cut_error
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if self.cut_after is not None and i >= self.cut_after:
                raise self.cut_error("connection reset by peer")
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if self.cut_after is not None and i >= self.cut_after:
                raise self.cut_error("connection reset by peer")
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def json_response(
    body: dict[str, Any], *, status: int = 200, gzip_body: bool = False, chunk: int = 37
) -> httpx2.Response:
    raw = json.dumps(body).encode()
    headers = {"content-type": "application/json", "request-id": "req_test"}
    if gzip_body:
        raw = gzip.compress(raw)
        headers["content-encoding"] = "gzip"
    return httpx2.Response(
        status, headers=headers, stream=ChunkStream([raw[i : i + chunk] for i in range(0, len(raw), chunk)])
    )


def sse_response(
    events: list[tuple[str | None, dict[str, Any]]], *, cut_after: int | None = None, crlf: bool = False,
    cut_error: type[httpx2.TransportError] = httpx2.ReadError,
) -> httpx2.Response:
    nl = "\r\n" if crlf else "\n"
    chunks = []
    for name, data in events:
        text = (f"event: {name}{nl}" if name else "") + f"data: {json.dumps(data)}{nl}{nl}"
        chunks.append(text.encode())
    stream = ChunkStream(chunks, cut_after=cut_after, cut_error=cut_error)
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def aws_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message, encoded here from the format's definition (big-endian total
    and header lengths, CRC32 of the prelude, string headers, payload, CRC32 of it all)."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def bedrock_stream_response(
    events: list[tuple[str | None, dict[str, Any]]], *, chunk: int = 7, cut_after: int | None = None,
    truncate: int = 0, exception: str | None = None,
) -> httpx2.Response:
    """Messages stream events as Bedrock's ``invoke-with-response-stream`` sends them: each one a
    ``chunk`` event whose JSON payload holds the event base64-encoded, the body read in ``chunk``-byte
    pieces (frames split anywhere), ``truncate`` bytes cut off its end; ``exception`` (e.g.
    ``throttlingException``) ends the stream with an exception frame of that type."""
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    payloads = [{"bytes": base64.b64encode(json.dumps(data).encode()).decode()} for _, data in events]
    body = b"".join(aws_frame(headers, json.dumps(payload).encode()) for payload in payloads)
    if exception is not None:
        error = {":exception-type": exception, ":content-type": "application/json"}
        body += aws_frame({**error, ":message-type": "exception"}, b'{"message": "Too many requests"}')
    body = body[: len(body) - truncate]
    return httpx2.Response(
        200,
        headers={"content-type": "application/vnd.amazon.eventstream"},
        stream=ChunkStream([body[i : i + chunk] for i in range(0, len(body), chunk)], cut_after=cut_after),
    )


@dataclass
class Wire:
    """A MockTransport handler that answers from a queue of response factories and logs requests."""

    responders: list[Callable[[httpx2.Request], httpx2.Response]] = field(default_factory=list)
    default: Callable[[httpx2.Request], httpx2.Response] | None = None
    requests: list[httpx2.Request] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        if self.responders:
            return self.responders.pop(0)(request)
        assert self.default is not None, f"unexpected request {request.method} {request.url}"
        return self.default(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self))

    def async_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self))


# -- Anthropic payloads ------------------------------------------------------------------------


def anthropic_usage(
    input_tokens: int,
    output_tokens: int,
    *,
    read: int = 0,
    write_5m: int = 0,
    write_1h: int = 0,
    thinking: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "service_tier": "standard",
    }
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return usage


def anthropic_message(
    usage: dict[str, Any],
    *,
    model: str = "claude-sonnet-4-6",
    msg_id: str = "msg_01",
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [{"type": "text", "text": "Hello!"}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_stream_events(
    usage: dict[str, Any], *, model: str = "claude-sonnet-4-6", deltas: tuple[int, ...] | None = None
) -> list[tuple[str | None, dict[str, Any]]]:
    """message_start with the input/cache usage, then cumulative message_delta usages."""
    start_usage = {**usage, "output_tokens": 1}
    message = anthropic_message(start_usage, model=model, content=[])
    message["stop_reason"] = None
    finals = deltas or (usage["output_tokens"],)
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    for out in finals:
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": out},
                },
            )
        )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def anthropic_error(status: int, kind: str = "api_error") -> httpx2.Response:
    return httpx2.Response(
        status,
        headers={"content-type": "application/json", "retry-after": "0"},
        json={"type": "error", "error": {"type": kind, "message": "boom"}},
    )
