"""A fake Anthropic Messages API that bills prompt caching by the documented rules.

Plug it into the real SDK through an ``httpx2`` transport (or serve it on a local port with
`budgetclient.testing.server.serve`)::

    fake = FakeAnthropic()
    client = anthropic.Anthropic(api_key="test", http_client=fake.http_client())
    client.messages.create(model="claude-sonnet-4-6", max_tokens=64, system=[...], messages=[...])
    fake.clock.advance(360)          # the 5-minute entries written so far are now expired

It answers ``POST /v1/messages`` (JSON or SSE), ``/v1/messages/count_tokens`` and the Message
Batches endpoints with the real API's shapes. ``usage`` follows `_prompt_cache` (breakpoints,
20-block lookback, per-model minimums, 5m/1h TTLs on `FakeClock`) with token counts from
`tokenizer`, so a test can compute every expected number by hand. ``diagnostics`` requests get a
``cache_miss_reason`` from comparing with the stored previous request. Bodies are served lazily,
so code that wraps response streams is exercised as it would be against the network.

Answers are scripted as with the OpenAI fake: ``replies=`` / ``reply()`` queue `FakeReply` values
(text, ``tool_calls`` answered as ``tool_use`` blocks with ``stop_reason="tool_use"``), then
``responder(body)`` is asked, and without either the answer is ``reply_text``. So a real tool
loop (the SDK's tool runner, an agent framework's) runs offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2

from ..cachesim.anthropic import (
    CacheAccounting,
    InvalidRequest,
    PromptBlock,
    PromptCache,
    cache_breakpoints,
    min_cacheable_tokens,
    prompt_blocks,
)
from ..cachesim.tokenizer import block_bytes
from ._reply import FakeReply, as_reply
from ._sse import ChunkStream, sse_event

__all__ = ["FakeAnthropic", "FakeClock", "FakeRequestLog"]

DEFAULT_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: fixed, so ids and timestamps are reproducible
BATCH_EXPIRY_S = 86_400.0
_JSON_CHUNK = 256

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    504: "timeout_error", 529: "overloaded_error",
}
_ERROR_MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "This request would exceed the rate limit for your organization. Please retry later.",
    "api_error": "Internal server error",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "timeout_error": "Request timed out",
    "invalid_request_error": "Invalid request",
}


class FakeClock:
    """A clock that only moves when told to, for cache TTL tests without sleeping."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"FakeClock.advance(seconds={seconds}): time only moves forward")
        with self._lock:
            self._now += seconds


@dataclass(frozen=True, slots=True)
class FakeRequestLog:
    """One HTTP request the fake answered."""

    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    stream: bool
    time: float
    """Clock time at the start of the request (TTLs are measured from here)."""
    usage: dict[str, Any] | None = None
    """The ``usage`` object answered (messages requests only)."""
    message_id: str | None = None
    accounting: CacheAccounting | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class _Fingerprint:
    """What diagnostics compare between a request and the one named by ``previous_message_id``."""

    model: str
    tools: str
    system: str
    messages: tuple[str, ...]
    params: str
    block_keys: tuple[str, ...]
    prefix_tokens: tuple[int, ...]
    cached_tokens: int


@dataclass(slots=True)
class _Batch:
    id: str
    created_at: float
    results: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _strip_markers(value: Any) -> Any:
    if isinstance(value, list):
        return [_strip_markers(item) for item in value]
    if isinstance(value, Mapping):
        return {k: _strip_markers(v) for k, v in value.items() if k != "cache_control"}
    return value


def _fingerprint(body: Mapping[str, Any], blocks: tuple[PromptBlock, ...], accounting: CacheAccounting,
                 ) -> _Fingerprint:
    system = body.get("system")
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    messages = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        messages.append(_digest([message.get("role"), [block_bytes(b).decode() for b in content or []]]))
    return _Fingerprint(
        model=f"{body.get('model')}|{body.get('speed')}",  # a speed change reports as model_changed
        tools=_digest(_strip_markers(body.get("tools") or [])),
        system=_digest(_strip_markers(system or [])),
        messages=tuple(messages),
        params=_digest({k: body.get(k) for k in ("tool_choice", "thinking")}),
        block_keys=tuple(block.key for block in blocks),
        prefix_tokens=tuple(block.prefix_tokens for block in blocks),
        cached_tokens=accounting.cached_prefix_tokens,
    )


def _cache_miss_reason(previous: _Fingerprint, current: _Fingerprint) -> dict[str, Any] | None:
    """Why ``current`` could not reuse ``previous``'s prefix; ``None`` when only messages were appended."""
    common = 0
    for prev_key, key, tokens in zip(previous.block_keys, current.block_keys, current.prefix_tokens,
                                     strict=False):
        if prev_key != key:
            break
        common = tokens
    missed = max(0, previous.cached_tokens - common)
    if previous.model != current.model:
        kind = "model_changed"
    elif previous.tools != current.tools:
        kind = "tools_changed"
    elif previous.system != current.system:
        kind = "system_changed"
    elif current.messages[: len(previous.messages)] != previous.messages:
        kind = "messages_changed"
    elif previous.params != current.params:
        return {"type": "unavailable"}
    else:
        return None
    return {"type": kind, "cache_missed_input_tokens": missed}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _text_pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _json_pieces(value: Any) -> list[str]:
    """A tool input's JSON in a few pieces, as the API streams ``input_json_delta``."""
    text = json.dumps(value, ensure_ascii=False)
    return [text[i : i + 16] for i in range(0, len(text), 16)] or [text]




class _FakeTransport(httpx2.MockTransport):
    """MockTransport whose simulated latency sleeps without blocking an event loop."""

    def __init__(self, backend: FakeAnthropic) -> None:
        super().__init__(backend.respond)
        self.backend = backend

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        if self.backend.latency_s:
            time.sleep(self.backend.latency_s)
        return self.backend.respond(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        if self.backend.latency_s:
            await asyncio.sleep(self.backend.latency_s)
        return self.backend.respond(request)


class FakeAnthropic:
    """A fake Anthropic backend with a prompt cache, usable as a transport handler or a server.

    ``output_tokens`` tokens are reported for each reply of ``reply_text`` (fewer if ``max_tokens``
    is lower); ``min_cacheable`` overrides the per-model minimums by model-id prefix (``"*"`` for
    every model). ``eager_json`` serves JSON bodies already read, like ``Response(content=...)``.
    ``requests`` logs every HTTP request answered, errors, token counts and batch calls included;
    ``cache`` holds the prompt-cache entries and ``clock`` the time they are measured on.
    ``replies`` / `reply` queue scripted answers (`FakeReply`, or a string for text); when the
    queue is empty ``responder(body)`` is asked, and without one the answer is ``reply_text``.
    """

    def __init__(self, *, clock: FakeClock | None = None, output_tokens: int = 20, reply_text: str = "ok",
                 min_cacheable: Mapping[str, int] | None = None, latency_s: float = 0.0,
                 eager_json: bool = False, replies: Iterable[FakeReply | str] = (),
                 responder: Callable[[Mapping[str, Any]], FakeReply | str] | None = None) -> None:
        self.clock = clock or FakeClock()
        self.output_tokens = output_tokens
        self.reply_text = reply_text
        self.min_cacheable = dict(min_cacheable or {})
        self.latency_s = latency_s
        self.eager_json = eager_json
        self.cache = PromptCache()
        self.requests: list[FakeRequestLog] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._failures: list[tuple[int, str | None, str | None]] = []
        self._cut_after: int | None = None
        self._fingerprints: dict[str, _Fingerprint] = {}
        self._batches: dict[str, _Batch] = {}
        self.responder = responder
        self._replies: list[FakeReply] = [as_reply(r) for r in replies]

    # -- wiring ------------------------------------------------------------------------------

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request (for ``httpx2.MockTransport`` or the local server), after ``latency_s``."""
        if self.latency_s:
            time.sleep(self.latency_s)
        return self.respond(request)

    def transport(self) -> httpx2.MockTransport:
        """A transport for ``httpx2.Client`` and ``httpx2.AsyncClient`` alike."""
        return _FakeTransport(self)

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(transport=self.transport())

    def async_http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self.transport())

    # -- test controls ---------------------------------------------------------------------

    def reply(self, *replies: FakeReply | str) -> None:
        """Queue the next answers (a string is a text answer)."""
        with self._lock:
            self._replies.extend(as_reply(r) for r in replies)

    def fail_next(self, status: int, count: int = 1, *, message: str | None = None,
                  error_type: str | None = None) -> None:
        """Answer the next ``count`` requests with an API error (``error_type`` defaults by status).

        Error responses carry ``retry-after: 0`` (and ``retry-after-ms: 1``, so SDK retries are fast).
        """
        with self._lock:
            self._failures.extend([(status, error_type, message)] * count)

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (cache entries expire on it)."""
        self.clock.advance(seconds)

    @property
    def usages(self) -> list[dict[str, Any]]:
        """The ``usage`` of every answered messages request, in order, as the wire carries it."""
        with self._lock:
            return [r.usage for r in self.requests if r.usage is not None]

    def cut_next_stream(self, after_events: int) -> None:
        """End the next streamed response abruptly (``httpx2.ReadError``) after ``after_events`` events."""
        with self._lock:
            self._cut_after = after_events

    def min_cacheable_tokens(self, model: str) -> int:
        """The minimum cacheable prefix this fake applies to ``model``."""
        return min_cacheable_tokens(model, self.min_cacheable)

    def accounting(self, body: Mapping[str, Any], *, at: float | None = None) -> CacheAccounting:
        """What a messages request would be billed now (or at ``at``), without touching the cache."""
        blocks = prompt_blocks(body)
        points = cache_breakpoints(body, blocks)
        now = self.clock.now() if at is None else at
        return self.cache.account(blocks, points, now=now, min_tokens=self.min_cacheable_tokens(
            str(body.get("model", ""))), commit=False)

    # -- dispatch ----------------------------------------------------------------------------

    def respond(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request without simulated latency."""
        try:
            raw = request.content
        except httpx2.RequestNotRead:
            raw = request.read()
        path = request.url.path
        start = path.find("/v1/")
        route = path[start:] if start >= 0 else path
        with self._lock:
            now = self.clock.now()
            body: dict[str, Any] | None = None
            if raw:
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    return self._error(request, None, now, 400, "invalid_request_error",
                                       "The request body is not valid JSON.")
                if not isinstance(parsed, dict):
                    return self._error(request, None, now, 400, "invalid_request_error",
                                       "The request body must be a JSON object.")
                body = parsed
            if self._failures:
                status, kind, message = self._failures.pop(0)
                kind = kind or _DEFAULT_ERROR_TYPES.get(status, "api_error")
                text = message or _ERROR_MESSAGES.get(kind, kind)
                return self._error(request, body, now, status, kind, text, retryable=True)
            try:
                return self._route(request, route, body, now)
            except InvalidRequest as exc:
                return self._error(request, body, now, 400, "invalid_request_error", str(exc))

    def _route(self, request: httpx2.Request, route: str, body: dict[str, Any] | None,
               now: float) -> httpx2.Response:
        method = request.method
        if method == "POST" and route == "/v1/messages":
            return self._messages(request, body or {}, now)
        if method == "POST" and route == "/v1/messages/count_tokens":
            return self._count_tokens(request, body or {}, now)
        if route == "/v1/messages/batches":
            if method == "POST":
                return self._create_batch(request, body or {}, now)
            if method == "GET":
                docs = [self._batch_doc(b, request) for b in reversed(self._batches.values())]
                return self._json(request, body, now, 200, {
                    "data": docs, "has_more": False,
                    "first_id": docs[0]["id"] if docs else None, "last_id": docs[-1]["id"] if docs else None,
                })
        match = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results|/cancel)?", route)
        if match and match[1] in self._batches:
            batch = self._batches[match[1]]
            if method == "GET" and match[2] is None:
                return self._json(request, body, now, 200, self._batch_doc(batch, request))
            if method == "GET" and match[2] == "/results":
                return self._batch_results(request, batch, now)
            if method == "POST" and match[2] == "/cancel":
                batch.cancel_requested = True
                return self._json(request, body, now, 200, self._batch_doc(batch, request))
            if method == "DELETE" and match[2] is None:
                del self._batches[batch.id]
                return self._json(request, body, now, 200, {"id": batch.id, "type": "message_batch_deleted"})
        return self._error(request, body, now, 404, "not_found_error",
                           f"No fake route for {method} {request.url.path}")

    # -- messages ----------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        digest = hashlib.sha256(f"{prefix}{next(self._ids)}".encode()).hexdigest()
        return f"{prefix}01{digest[:22]}"

    def _message(self, body: Mapping[str, Any], now: float, *, service_tier: str = "standard",
                 ) -> tuple[dict[str, Any], CacheAccounting]:
        """Bill and answer one messages request (the cache is updated); raises `InvalidRequest`."""
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if name not in body:
                raise InvalidRequest(f"{name}: Field required")
            if not isinstance(body[name], kind) or isinstance(body[name], bool):
                raise InvalidRequest(f"{name}: Input should be a valid {kind.__name__}")
        if not body["messages"]:
            raise InvalidRequest("messages: at least one message is required")
        if body["max_tokens"] < 0:
            raise InvalidRequest("max_tokens: Input should be greater than or equal to 0")
        model: str = body["model"]
        blocks = prompt_blocks(body)
        points = cache_breakpoints(body, blocks)
        accounting = self.cache.account(blocks, points, now=now, min_tokens=self.min_cacheable_tokens(model))
        output = min(self.output_tokens, body["max_tokens"])
        message_id = self._new_id("msg_")
        content = self._content(body) if output > 0 else []
        stop_reason = "tool_use" if any(block["type"] == "tool_use" for block in content) else "end_turn"
        message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "max_tokens" if output < self.output_tokens else stop_reason,
            "stop_sequence": None,
            "usage": accounting.usage(output, service_tier=service_tier),
        }
        fingerprint = _fingerprint(body, blocks, accounting)
        diagnostics = body.get("diagnostics")
        if isinstance(diagnostics, Mapping):
            previous_id = diagnostics.get("previous_message_id")
            reason: dict[str, Any] | None = None
            if previous_id is not None:
                previous = self._fingerprints.get(str(previous_id))
                reason = ({"type": "previous_message_not_found"} if previous is None
                          else _cache_miss_reason(previous, fingerprint))
            message["diagnostics"] = {"cache_miss_reason": reason}
        self._fingerprints[message_id] = fingerprint
        return message, accounting

    def _content(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The answer's content blocks: the next scripted reply, the responder's, or ``reply_text``."""
        if self._replies:
            reply: FakeReply | None = self._replies.pop(0)
        else:
            reply = as_reply(self.responder(body)) if self.responder is not None else None
        if reply is None:
            return [{"type": "text", "text": self.reply_text}]
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        for name, arguments in reply.tool_calls:
            content.append({"type": "tool_use", "id": self._new_id("toolu_"), "name": name,
                            "input": dict(arguments)})
        return content

    def _messages(self, request: httpx2.Request, body: dict[str, Any], now: float) -> httpx2.Response:
        stream = bool(body.get("stream"))
        message, accounting = self._message(body, now)
        log = FakeRequestLog(request.method, request.url.path, body, 200, stream, now, message["usage"],
                             message["id"], accounting)
        self.requests.append(log)
        if not stream:
            return self._body(200, message)
        cut, self._cut_after = self._cut_after, None
        chunks = [sse_event(name, data) for name, data in _stream_events(message)]
        return httpx2.Response(200, headers=self._headers("text/event-stream"),
                               stream=ChunkStream(chunks, cut_after=cut))

    def _count_tokens(self, request: httpx2.Request, body: dict[str, Any], now: float) -> httpx2.Response:
        if "model" not in body:
            raise InvalidRequest("model: Field required")
        if not body.get("messages"):
            raise InvalidRequest("messages: Field required")
        blocks = prompt_blocks(body)
        cache_breakpoints(body, blocks)
        total = blocks[-1].prefix_tokens if blocks else 0
        return self._json(request, body, now, 200, {"input_tokens": total})

    # -- batches -----------------------------------------------------------------------------

    def _create_batch(self, request: httpx2.Request, body: dict[str, Any], now: float) -> httpx2.Response:
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            raise InvalidRequest("requests: at least one request is required")
        ids = [item.get("custom_id") if isinstance(item, Mapping) else None for item in items]
        if any(not isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            raise InvalidRequest("requests: every request needs a unique string custom_id")
        batch = _Batch(self._new_id("msgbatch_"), now)
        for item in items:
            params = item.get("params")
            try:
                if not isinstance(params, Mapping):
                    raise InvalidRequest("params: Field required")
                if params.get("stream"):
                    raise InvalidRequest("stream: streaming is not supported in batches")
                message, _ = self._message(params, now, service_tier="batch")
                result: dict[str, Any] = {"type": "succeeded", "message": message}
            except InvalidRequest as exc:
                result = {"type": "errored", "error": {
                    "type": "error", "error": {"type": "invalid_request_error", "message": str(exc)}}}
            batch.results.append({"custom_id": item["custom_id"], "result": result})
        self._batches[batch.id] = batch
        doc = self._batch_doc(batch, request)
        doc.update(processing_status="in_progress", ended_at=None, results_url=None,
                   request_counts={"processing": len(items), "succeeded": 0, "errored": 0,
                                   "canceled": 0, "expired": 0})
        return self._json(request, body, now, 200, doc)

    def _batch_doc(self, batch: _Batch, request: httpx2.Request) -> dict[str, Any]:
        kinds = [r["result"]["type"] for r in batch.results]
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": kinds.count("succeeded"),
                               "errored": kinds.count("errored"), "canceled": 0, "expired": 0},
            "created_at": _iso(batch.created_at),
            "ended_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + BATCH_EXPIRY_S),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.created_at) if batch.cancel_requested else None,
            "results_url": f"{origin}/v1/messages/batches/{batch.id}/results",
        }

    def _batch_results(self, request: httpx2.Request, batch: _Batch, now: float) -> httpx2.Response:
        self.requests.append(FakeRequestLog(request.method, request.url.path, None, 200, True, now))
        lines = [json.dumps(result).encode() + b"\n" for result in batch.results]
        return httpx2.Response(200, headers=self._headers("application/binary"), stream=ChunkStream(lines))

    # -- responses ---------------------------------------------------------------------------

    def _headers(self, content_type: str) -> dict[str, str]:
        return {"content-type": content_type, "request-id": self._new_id("req_")}

    def _body(self, status: int, document: Any, headers: Mapping[str, str] | None = None) -> httpx2.Response:
        raw = json.dumps(document).encode()
        all_headers = {**self._headers("application/json"), **(headers or {})}
        if self.eager_json:
            return httpx2.Response(status, headers=all_headers, content=raw)
        chunks = [raw[i : i + _JSON_CHUNK] for i in range(0, len(raw), _JSON_CHUNK)]
        return httpx2.Response(status, headers=all_headers, stream=ChunkStream(chunks))

    def _json(self, request: httpx2.Request, body: dict[str, Any] | None, now: float, status: int,
              document: Any) -> httpx2.Response:
        self.requests.append(FakeRequestLog(request.method, request.url.path, body, status, False, now))
        return self._body(status, document)

    def _error(self, request: httpx2.Request, body: dict[str, Any] | None, now: float, status: int,
               error_type: str, message: str, *, retryable: bool = False) -> httpx2.Response:
        stream = bool(body and body.get("stream"))
        self.requests.append(FakeRequestLog(request.method, request.url.path, body, status, stream, now,
                                            error_type=error_type))
        headers = {"retry-after": "0", "retry-after-ms": "1"} if retryable else {}
        request_id = self._new_id("req_")
        document = {"type": "error", "error": {"type": error_type, "message": message},
                    "request_id": request_id}
        return self._body(status, document, {"request-id": request_id, **headers})


def _stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of ``message``: usage first in ``message_start``, cumulative in ``message_delta``."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": min(1, usage["output_tokens"])}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            start_block: dict[str, Any] = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": piece}
                      for piece in _json_pieces(block["input"])]
        else:
            start_block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _text_pieces(block["text"])]
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": start_block}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    # Like the real API, message_delta repeats the cumulative input and cache counts.
    repeated = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    delta_usage = {name: usage[name] for name in repeated}
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": delta_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
