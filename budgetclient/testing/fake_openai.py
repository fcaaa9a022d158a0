"""A fake OpenAI backend (Chat Completions and Responses) that caches prompts like the real API.

Plug it into the real SDK through an ``httpx2`` transport::

    fake = FakeOpenAI()
    client = bc.OpenAI(api_key="test", http_client=httpx2.Client(transport=fake.transport()))

Usage follows OpenAI's prompt-caching rules, so cost and cache-hit tests are meaningful offline:

- Tokens: a deterministic tokenizer (`tokenize`): one token per word (``\\w+``) or punctuation
  mark, plus one marker token per message, tool, instructions or conversation item.
  The prompt is laid out as tools, then instructions, then input in order.
- Automatic caching (models before gpt-5.6): a prompt of at least 1,024 tokens reads the longest
  prefix it shares with an earlier prompt of the same model and ``prompt_cache_key``, rounded
  down to 1,024 + 128·k tokens. Writes are free and not reported. Entries live 10 minutes after
  their last use (24 hours with ``prompt_cache_retention="24h"``).
- Explicit breakpoints (gpt-5.6 and later): cache entries end exactly at breakpoints: each
  ``prompt_cache_breakpoint`` on a content part, plus an implicit one at the end of the input
  unless ``prompt_cache_options.mode == "explicit"``. At most four are written per request (the
  implicit one and the latest three explicit ones). ``cache_write_tokens`` counts the tokens
  between the cached prefix and the furthest new entry; entries live 30 minutes (or 12 hours)
  after their last use. ``prompt_cache_options.comparison_response_id`` yields
  ``prompt_cache_diagnostics`` on Responses.
- Routing (with ``route_limit_per_min``, e.g. OpenAI's ~15): requests sharing a model, key and
  first 256 prompt tokens go to one machine up to that many a minute; the rest overflow to
  machines that hold nothing for them (no cached tokens, nothing written).
- Streams are built from non-eager byte streams, so byte-level taps are exercised; chat chunks
  carry usage only with ``stream_options.include_usage``, exactly like the real API.

Also served: ``POST /v1/responses/input_tokens``, and ``background=True`` responses (queued,
then finished after ``background_polls`` retrieves). ``fail_next`` and ``cut_next_stream``
simulate HTTP errors and dropped connections. Time comes from ``clock`` (a `FakeClock`, shared
with the Anthropic fake, or any callable returning seconds), so TTLs are tested without sleeping.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from ..cachesim.tokenizer import _TOKEN
from ._reply import FakeReply
from ._reply import as_reply as _reply
from ._sse import ChunkStream
from .fake_anthropic import FakeClock

__all__ = ["FakeClock", "FakeOpenAI", "FakeOpenAIRequest", "FakeReply", "tokenize"]

MIN_CACHEABLE_TOKENS = 1024
CACHE_INCREMENT = 128
IMPLICIT_TTL_S = 600.0
RETENTION_24H_S = 86_400.0
TTL_S = {"30m": 1_800.0, "12h": 43_200.0}
IMAGE_TOKENS = 85
MAX_WRITTEN_BREAKPOINTS = 4

_BREAKPOINT_MODELS = re.compile(r"gpt-(?:5\.(?:[6-9]|[1-9]\d)|[6-9]|[1-9]\d)(?!\d)", re.IGNORECASE)
"""Models that take ``prompt_cache_breakpoint`` / ``prompt_cache_options``: GPT-5.6 and later
(provider-facts.md). Stated here on its own, not imported from the library, so the fake catches
a wrong rule in budgetclient instead of repeating it."""


def supports_prompt_cache_breakpoints(model: str) -> bool:
    """Whether this fake accepts explicit breakpoints for ``model`` (any ``gpt-5.6+`` id, dated,
    fine-tuned ``ft:gpt-5.6:...`` or provider-prefixed)."""
    return _BREAKPOINT_MODELS.search(model) is not None


def tokenize(text: str) -> list[str]:
    """The fakes' tokenizer (`budgetclient.testing.tokenizer`) as a token list, for prefix matching."""
    return _TOKEN.findall(text)


@dataclass(frozen=True, slots=True)
class FakeOpenAIRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The parsed JSON body (None when there was none)."""
    status: int
    time: float
    """Clock time when the request arrived."""
    usage: dict[str, Any] | None = None
    """The usage the fake computed, as the wire carries it (also when a stream left it out)."""


@dataclass(slots=True)
class _Prompt:
    """A request laid out as tokens, with the positions where explicit breakpoints end."""

    tokens: list[str] = field(default_factory=list)
    breakpoints: list[tuple[int, str | None]] = field(default_factory=list)
    """``(position, ttl)`` of each ``prompt_cache_breakpoint``."""

    def add(self, marker: str, text: str = "") -> None:
        self.tokens.append(f"<|{marker}|>")
        self.tokens.extend(tokenize(text))

    def add_parts(self, role: str, content: Any) -> None:
        self.tokens.append(f"<|{role}|>")
        if isinstance(content, str):
            self.tokens.extend(tokenize(content))
            return
        for part in content or ():
            if not isinstance(part, Mapping):
                continue
            kind = str(part.get("type", ""))
            if "image" in kind:
                self.tokens.extend(["<|image|>"] * IMAGE_TOKENS)
            elif "text" in part:
                self.tokens.extend(tokenize(str(part["text"])))
            else:
                self.tokens.extend(tokenize(json.dumps(part, sort_keys=True)))
            marker = part.get("prompt_cache_breakpoint")
            if isinstance(marker, Mapping):
                ttl = marker.get("ttl")
                self.breakpoints.append((len(self.tokens), ttl if isinstance(ttl, str) else None))


ROUTE_PREFIX_TOKENS = 256
"""OpenAI routes a request by a hash of about the first 256 prompt tokens and the cache key."""


def _prefix_hashes(tokens: Sequence[str]) -> list[str]:
    """``hashes[n]`` identifies ``tokens[:n]``."""
    digest = hashlib.sha256()
    hashes = [digest.hexdigest()]
    for token in tokens:
        digest.update(token.encode())
        digest.update(b"\x00")
        hashes.append(digest.copy().hexdigest())
    return hashes


@dataclass(slots=True)
class _Entry:
    length: int
    expires_at: float
    ttl_s: float


@dataclass(slots=True)
class _StoredResponse:
    model: str
    cache_key: str | None
    tools_hash: str
    conversation: list[str]
    """Input and output tokens of the response, for ``previous_response_id``."""
    reusable: int
    """Tokens of the prompt that could be reused by a later request."""
    hashes: list[str]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {body}\n\n".encode()


class FakeOpenAI:
    """In-process OpenAI API: ``POST /v1/chat/completions``, ``/v1/responses`` and friends.

    ``replies`` (or ``reply()``) queue answers; when the queue is empty, ``responder(body)`` is
    asked, then ``reply_text``, and without either the fake answers ``"ok"`` plus a few words of
    the last user input. ``output_tokens`` overrides the output token count of every answer.
    """

    def __init__(
        self,
        clock: FakeClock | Callable[[], float] | None = None,
        *,
        reply_text: str | None = None,
        output_tokens: int | None = None,
        replies: Iterable[FakeReply | str] = (),
        responder: Callable[[Mapping[str, Any]], FakeReply | str] | None = None,
        words_per_delta: int = 3,
        background_polls: int = 1,
        route_limit_per_min: int | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.route_limit_per_min = route_limit_per_min
        """Requests per minute one route (model, key, first 256 prompt tokens) takes; more overflow
        to other machines, which hold no cache for it (None: unlimited)."""
        self._routes: dict[tuple[str, str | None, str], list[float]] = {}
        self.reply_text = reply_text
        self.output_tokens = output_tokens
        self.responder = responder
        self.words_per_delta = max(1, words_per_delta)
        self.background_polls = background_polls
        """How many retrieves of a ``background=True`` response answer ``in_progress`` before it is done."""
        self.requests: list[FakeOpenAIRequest] = []
        self._replies: list[FakeReply] = [_reply(r) for r in replies]
        self._failures: list[tuple[int, str | None]] = []
        self._cuts: list[int] = []
        self._cache: dict[tuple[str, str | None], dict[str, _Entry]] = {}
        self._responses: dict[str, _StoredResponse] = {}
        self._background: dict[str, list[Any]] = {}
        """Background responses: id -> [final response, polls left before it completes]."""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def now(self) -> float:
        clock = self.clock
        return clock.now() if isinstance(clock, FakeClock) else clock()

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (cache entries expire on it); needs a `FakeClock`."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("FakeOpenAI.advance needs a FakeClock; this fake reads a clock function")
        self.clock.advance(seconds)

    @property
    def usages(self) -> list[dict[str, Any]]:
        """The usage of every answered model request, in order, as the wire carries it."""
        with self._lock:
            return [r.usage for r in self.requests if r.usage is not None]

    # -- test controls -------------------------------------------------------------------------
    def reply(self, *replies: FakeReply | str) -> None:
        """Queue the next answers (a string is a text answer)."""
        with self._lock:
            self._replies.extend(_reply(r) for r in replies)

    def fail_next(self, status: int = 500, count: int = 1, *, message: str | None = None) -> None:
        """Answer the next ``count`` model requests with HTTP ``status`` (retried by the SDK on 429/5xx)."""
        with self._lock:
            self._failures.extend([(status, message)] * count)

    def cut_next_stream(self, after_events: int = 2) -> None:
        """Break the next streamed answer's connection after ``after_events`` SSE events."""
        with self._lock:
            self._cuts.append(after_events)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- HTTP ----------------------------------------------------------------------------------
    def transport(self) -> httpx2.MockTransport:
        """An ``httpx2`` transport (sync and async) answering from this fake."""
        return httpx2.MockTransport(self.handler)

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(transport=self.transport())

    def async_http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self.transport())

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one ``httpx2`` request."""
        arrived = self.now()
        try:
            body = json.loads(request.content) if request.content else None
        except ValueError:
            body = None
        response, usage = self._answer(request.method, request.url.path, body)
        with self._lock:
            self.requests.append(
                FakeOpenAIRequest(
                    request.method,
                    request.url.path,
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                    response.status_code,
                    arrived,
                    usage,
                )
            )
        return response

    def _answer(self, method: str, path: str, body: Any) -> tuple[httpx2.Response, dict[str, Any] | None]:
        if method == "GET" and "/responses/" in path:
            return self._retrieve(path.rsplit("/", 1)[-1])
        if method != "POST" or not isinstance(body, Mapping):
            return _error(404, f"the fake OpenAI backend does not serve {method} {path}"), None
        if path.endswith("/responses/input_tokens"):
            prompt, _ = self._responses_prompt(body)
            return _json(200, {"object": "response.input_tokens", "input_tokens": len(prompt.tokens)}), None
        if not path.endswith(("/chat/completions", "/responses")):
            return _error(404, f"the fake OpenAI backend does not serve POST {path}"), None
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            status, message = failure
            return _error(status, message or f"simulated HTTP {status}"), None
        if path.endswith("/chat/completions"):
            return self._chat(body)
        return self._respond(body)

    # -- caching -------------------------------------------------------------------------------
    def _cache_usage(self, body: Mapping[str, Any], prompt: _Prompt) -> tuple[int, int, int, list[str]]:
        """``(cached, written, written_12h, prefix hashes)`` for this prompt, updating the cache."""
        model = str(body.get("model", ""))
        key = body.get("prompt_cache_key")
        bucket_key = (model, key if isinstance(key, str) else None)
        tokens = prompt.tokens
        hashes = _prefix_hashes(tokens)
        now = self.now()
        explicit = supports_prompt_cache_breakpoints(model)
        options = body.get("prompt_cache_options")
        options = options if isinstance(options, Mapping) else {}
        with self._lock:
            if self.route_limit_per_min is not None:
                route = (*bucket_key, hashes[min(len(tokens), ROUTE_PREFIX_TOKENS)])
                recent = [t for t in self._routes.get(route, ()) if now - t < 60.0]
                self._routes[route] = [*recent, now]
                if len(recent) >= self.route_limit_per_min:  # overflowed: a machine without the prefix
                    return 0, 0, 0, hashes
            bucket = self._cache.setdefault(bucket_key, {})
            for digest in [d for d, e in bucket.items() if e.expires_at <= now]:
                del bucket[digest]
            cached = 0
            if len(tokens) >= MIN_CACHEABLE_TOKENS:
                for n in range(len(tokens), MIN_CACHEABLE_TOKENS - 1, -1):
                    entry = bucket.get(hashes[n])
                    if entry is not None and entry.length == n:
                        cached = n
                        entry.expires_at = now + entry.ttl_s
                        break
            if not explicit:
                ttl_s = RETENTION_24H_S if body.get("prompt_cache_retention") == "24h" else IMPLICIT_TTL_S
                n = MIN_CACHEABLE_TOKENS
                while n <= len(tokens):
                    bucket[hashes[n]] = _Entry(n, now + ttl_s, ttl_s)
                    n += CACHE_INCREMENT
                if cached:
                    steps = (cached - MIN_CACHEABLE_TOKENS) // CACHE_INCREMENT
                    cached = MIN_CACHEABLE_TOKENS + steps * CACHE_INCREMENT
                return cached, 0, 0, hashes
            request_ttl = options.get("ttl") if options.get("ttl") in TTL_S else "30m"
            points = [(p, ttl or request_ttl) for p, ttl in prompt.breakpoints]
            if options.get("mode") == "explicit":
                points = points[-MAX_WRITTEN_BREAKPOINTS:]
            else:
                points = [*points[-(MAX_WRITTEN_BREAKPOINTS - 1) :], (len(tokens), request_ttl)]
            written_to = written_long_to = cached
            for position, ttl in points:
                if position < MIN_CACHEABLE_TOKENS:
                    continue
                ttl_s = TTL_S.get(str(ttl), TTL_S["30m"])
                current = bucket.get(hashes[position])
                if current is None or current.length != position:
                    bucket[hashes[position]] = _Entry(position, now + ttl_s, ttl_s)
                    written_to = max(written_to, position)
                    if ttl == "12h":
                        written_long_to = max(written_long_to, position)
            return cached, written_to - cached, written_long_to - cached, hashes

    # -- answers -------------------------------------------------------------------------------
    def _next_reply(self, body: Mapping[str, Any], last_user_text: str) -> FakeReply:
        with self._lock:
            if self._replies:
                return self._replies.pop(0)
        if self.responder is not None:
            return _reply(self.responder(body))
        if self.reply_text is not None:
            return FakeReply(text=self.reply_text)
        words = tokenize(last_user_text)[:8]
        return FakeReply(text="ok: " + " ".join(words) if words else "ok")

    def _output_tokens(self, reply: FakeReply) -> int:
        return self.output_tokens if self.output_tokens is not None else _output_tokens(reply)

    def _take_cut(self) -> int | None:
        with self._lock:
            return self._cuts.pop(0) if self._cuts else None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    # -- Chat Completions ----------------------------------------------------------------------
    def _chat_prompt(self, body: Mapping[str, Any]) -> tuple[_Prompt, str]:
        prompt = _Prompt()
        for tool in body.get("tools") or ():
            prompt.add("tool", json.dumps(tool, sort_keys=True))
        last_user = ""
        for message in body.get("messages") or ():
            if not isinstance(message, Mapping):
                continue
            role = str(message.get("role", "user"))
            prompt.add_parts(role, message.get("content"))
            for call in message.get("tool_calls") or ():
                function = (call.get("function") if isinstance(call, Mapping) else None) or {}
                prompt.tokens.extend(tokenize(f"{function.get('name', '')} {function.get('arguments', '')}"))
            if role == "user":
                last_user = _text_of(message.get("content"))
        return prompt, last_user

    def _chat(self, body: Mapping[str, Any]) -> tuple[httpx2.Response, dict[str, Any]]:
        prompt, last_user = self._chat_prompt(body)
        cached, written, _, _ = self._cache_usage(body, prompt)
        reply = self._next_reply(body, last_user)
        model = str(body.get("model", ""))
        output = self._output_tokens(reply)
        details: dict[str, int] = {"cached_tokens": cached, "audio_tokens": 0}
        if supports_prompt_cache_breakpoints(model):
            details["cache_write_tokens"] = written
        usage = {
            "prompt_tokens": len(prompt.tokens),
            "completion_tokens": output,
            "total_tokens": len(prompt.tokens) + output,
            "prompt_tokens_details": details,
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0},
        }
        completion_id = self._new_id("chatcmpl")
        created = int(self.now())
        tool_calls = [
            {
                "id": f"call_{completion_id[-6:]}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(dict(arguments))},
            }
            for i, (name, arguments) in enumerate(reply.tool_calls)
        ]
        finish = "tool_calls" if tool_calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return _json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
            ), usage
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_fake"}

        def chunk(delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}
            data: dict[str, Any] = {**base, "choices": [choice]}
            if include_usage:
                data["usage"] = None
            return _sse(data)

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in _pieces(reply.text, self.words_per_delta)]
        for i, (name, arguments) in enumerate(reply.tool_calls):
            head = {"index": i, "id": tool_calls[i]["id"], "type": "function",
                    "function": {"name": name, "arguments": ""}}
            events.append(chunk({"tool_calls": [head]}))
            rest = {"index": i, "function": {"arguments": json.dumps(dict(arguments))}}
            events.append(chunk({"tool_calls": [rest]}))
        events.append(chunk({}, finish))
        if include_usage:
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(_sse("[DONE]"))
        return _event_stream(events, self._take_cut()), usage

    # -- Responses -----------------------------------------------------------------------------
    def _responses_prompt(self, body: Mapping[str, Any]) -> tuple[_Prompt, str]:
        prompt = _Prompt()
        for tool in body.get("tools") or ():
            prompt.add("tool", json.dumps(tool, sort_keys=True))
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            prompt.add("developer", instructions)
        previous = body.get("previous_response_id")
        with self._lock:
            stored = self._responses.get(previous) if isinstance(previous, str) else None
        if stored is not None:
            prompt.tokens.extend(stored.conversation)
        last_user = ""
        items = body.get("input")
        if isinstance(items, str):
            prompt.add("user", items)
            return prompt, items
        for item in items or ():
            if not isinstance(item, Mapping):
                continue
            kind = item.get("type", "message")
            if kind == "message":
                role = str(item.get("role", "user"))
                prompt.add_parts(role, item.get("content"))
                if role == "user":
                    last_user = _text_of(item.get("content"))
            elif kind == "function_call":
                prompt.add("function_call", f"{item.get('name', '')} {item.get('arguments', '')}")
            elif kind == "function_call_output":
                output = item.get("output")
                prompt.add("function_call_output", output if isinstance(output, str) else json.dumps(output))
            elif kind != "reasoning":
                prompt.add(str(kind), json.dumps(item, sort_keys=True))
        return prompt, last_user

    def _diagnostics(
        self, body: Mapping[str, Any], prompt: _Prompt, hashes: list[str]
    ) -> dict[str, Any] | None:
        options = body.get("prompt_cache_options")
        if not isinstance(options, Mapping) or "comparison_response_id" not in options:
            return None
        with self._lock:
            compared = self._responses.get(str(options.get("comparison_response_id")))
        if compared is None:
            return {"type": "comparison_response_not_found"}
        reason = None
        if compared.model != body.get("model"):
            reason = "model_changed"
        elif compared.cache_key != body.get("prompt_cache_key"):
            reason = "prompt_cache_key_changed"
        elif compared.tools_hash != _tools_hash(body):
            reason = "tools_changed"
        common = 0
        limit = min(compared.reusable, len(prompt.tokens))
        while common < limit and compared.hashes[common + 1] == hashes[common + 1]:
            common += 1
        if reason is None and common >= compared.reusable:
            return {"type": "cache_hit"}
        return {
            "type": "cache_miss",
            "reason": reason or "input_changed",
            "cache_missed_tokens": compared.reusable - common,
            "comparison_reusable_tokens": compared.reusable,
        }

    def _respond(self, body: Mapping[str, Any]) -> tuple[httpx2.Response, dict[str, Any] | None]:
        prompt, last_user = self._responses_prompt(body)
        cached, written, written_long, hashes = self._cache_usage(body, prompt)
        diagnostics = self._diagnostics(body, prompt, hashes)
        reply = self._next_reply(body, last_user)
        model = str(body.get("model", ""))
        output_tokens = self._output_tokens(reply)
        response_id = self._new_id("resp")
        usage = {
            "input_tokens": len(prompt.tokens),
            "input_tokens_details": {
                "cached_tokens": cached,
                "cache_write_tokens": written,
                "cache_write_tokens_details": {
                    "ttl_30m_tokens": written - written_long,
                    "ttl_12h_tokens": written_long,
                },
            },
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": len(prompt.tokens) + output_tokens,
        }
        output: list[dict[str, Any]] = []
        if reply.text:
            output.append({
                "type": "message",
                "id": f"msg_{response_id[-6:]}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
            })
        for i, (name, arguments) in enumerate(reply.tool_calls):
            output.append({
                "type": "function_call",
                "id": f"fc_{response_id[-6:]}_{i}",
                "call_id": f"call_{response_id[-6:]}_{i}",
                "name": name,
                "arguments": json.dumps(dict(arguments)),
                "status": "completed",
            })
        conversation = prompt.tokens[len(_leading(body)) :] + ["<|assistant|>"] + ["<|out|>"] * output_tokens
        key = body.get("prompt_cache_key")
        with self._lock:
            self._responses[response_id] = _StoredResponse(
                model=model,
                cache_key=key if isinstance(key, str) else None,
                tools_hash=_tools_hash(body),
                conversation=conversation,
                reusable=len(prompt.tokens),
                hashes=hashes,
            )
        final: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(self.now()),
            "status": "completed",
            "model": model,
            "output": output,
            "instructions": body.get("instructions"),
            "tools": list(body.get("tools") or []),
            "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": key,
            "error": None,
            "incomplete_details": None,
            "metadata": {},
            "text": {"format": {"type": "text"}},
            "usage": usage,
            "service_tier": "default",
        }
        if isinstance(body.get("prompt_cache_options"), Mapping):
            options = dict(body["prompt_cache_options"])
            final["prompt_cache_options"] = {"mode": options.get("mode", "implicit"),
                                             "ttl": options.get("ttl", "30m"),
                                             "comparison_response_id": options.get("comparison_response_id")}
        if diagnostics is not None:
            final["prompt_cache_diagnostics"] = diagnostics
        if body.get("background") and not body.get("stream"):
            with self._lock:
                self._background[response_id] = [final, self.background_polls]
            return _json(200, {**final, "status": "queued", "output": [], "usage": None}), None
        if not body.get("stream"):
            return _json(200, final), usage
        return _event_stream(_response_events(final), self._take_cut()), usage

    def _retrieve(self, response_id: str) -> tuple[httpx2.Response, dict[str, Any] | None]:
        """``GET /responses/{id}`` of a background response: in progress, then the final answer."""
        with self._lock:
            entry = self._background.get(response_id)
            if entry is None:
                return _error(404, f"no background response {response_id!r}"), None
            final, polls_left = entry
            entry[1] = polls_left - 1
        if polls_left > 0:
            return _json(200, {**final, "status": "in_progress", "output": [], "usage": None}), None
        # the log carries a response's usage once: later retrieves bill nothing new
        return _json(200, final), final["usage"] if polls_left == 0 else None


def _response_events(final: Mapping[str, Any]) -> list[bytes]:
    """The SSE event sequence of a streamed Responses answer ending in ``response.completed``."""
    sequence = itertools.count()
    snapshot = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[bytes] = []

    def emit(kind: str, **data: Any) -> None:
        events.append(_sse({"type": kind, "sequence_number": next(sequence), **data}, kind))

    emit("response.created", response=snapshot)
    emit("response.in_progress", response=snapshot)

    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            emit("response.content_part.added", **where, part=part)
            for piece in _pieces(text, 3):
                emit("response.output_text.delta", **where, delta=piece, logprobs=[])
            emit("response.output_text.done", **where, text=text, logprobs=[])
            emit("response.content_part.done", **where, part={**part, "text": text})
        else:
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "arguments": ""})
            emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                 delta=item["arguments"])
            emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                 arguments=item["arguments"], name=item["name"])
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=final)
    return events


def _leading(body: Mapping[str, Any]) -> list[str]:
    """Tokens of the tools and instructions, which ``previous_response_id`` does not carry over."""
    prompt = _Prompt()
    for tool in body.get("tools") or ():
        prompt.add("tool", json.dumps(tool, sort_keys=True))
    if isinstance(body.get("instructions"), str):
        prompt.add("developer", body["instructions"])
    return prompt.tokens


def _tools_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body.get("tools") or [], sort_keys=True).encode()).hexdigest()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _output_tokens(reply: FakeReply) -> int:
    calls = sum(len(tokenize(f"{name} {json.dumps(dict(args))}")) for name, args in reply.tool_calls)
    return len(tokenize(reply.text)) + calls + reply.reasoning_tokens


def _pieces(text: str, words: int) -> list[str]:
    """``text`` split into deltas of a few words that join back to exactly ``text``."""
    parts = re.findall(r"\S+\s*|\s+", text)
    return ["".join(parts[i : i + words]) for i in range(0, len(parts), words)]




def _json(status: int, document: Any) -> httpx2.Response:
    data = json.dumps(document, separators=(",", ":")).encode()
    middle = len(data) // 2
    return httpx2.Response(
        status,
        headers={"content-type": "application/json", "x-request-id": "req_fake"},
        stream=ChunkStream([data[:middle], data[middle:]]),
    )


def _event_stream(events: Sequence[bytes], cut_after: int | None) -> httpx2.Response:
    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8", "x-request-id": "req_fake"},
        stream=ChunkStream(events, cut_after=cut_after),
    )


def _error(status: int, message: str) -> httpx2.Response:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "server_error")
    response = _json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})
    response.headers["retry-after-ms"] = "1"
    return response
