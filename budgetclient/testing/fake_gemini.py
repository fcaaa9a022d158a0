"""An offline Gemini API: an ``httpx2`` handler that answers like ``generativelanguage.googleapis.com``.

It serves ``models/{m}:generateContent``, ``:streamGenerateContent?alt=sse`` (data-only SSE with
running usage totals per chunk, delivered through a lazily read byte stream), ``:countTokens`` and
``cachedContents`` create / get / list / patch / delete, and it computes ``usageMetadata`` with
Gemini's caching rules so that budgetclient, the examples and a user's own tests can run with no
network and no key.

The rules it applies (simplified where noted, and documented so tests can compute expected figures):

- Tokens: every text part costs ``ceil(utf8_bytes / 4)``; any other part (function calls and
  responses, inline data) and the tool declarations cost ``ceil(len(canonical JSON) / 4)``.
  ``fake_token_count()`` exposes the rule.
- A prompt is a sequence of blocks: the system instruction, the tools (with the tool config), and
  each content. ``promptTokenCount`` is their sum, cached content included.
- Implicit caching (Gemini 2.5 and later; off for 1.x / 2.0 and with ``implicit_caching=False``):
  the longest leading run of blocks that an earlier request of the same model sent within
  ``implicit_ttl`` seconds is reported as ``cachedContentTokenCount`` if it reaches the model's
  minimum (``min_cache_tokens``: 4,096 for Pro models, 1,024 otherwise). Real Gemini matches
  token by token and gives no hit guarantee; block granularity keeps expected figures exact.
- Explicit caches: creation fails below the model's minimum (400, like the API); a request with
  ``cachedContent`` may not also set ``systemInstruction``, ``tools`` or ``toolConfig`` (400);
  an unknown or expired cache is 403; its tokens are reported as ``cachedContentTokenCount``.
  Entries expire on the controllable clock; ``cache_lifetimes()`` gives each entry's billable
  life, so storage cost can be computed independently of the code under test.
- Function calling: when function declarations are in effect (in the request or its cache) and
  the last content is not a function response, the model answers with a ``functionCall`` for the
  first declared function, so automatic function calling runs a second hop.
- Every response carries a ``Date`` header from the clock, as the real API does.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2

from ._sse import ChunkStream
from .fake_anthropic import FakeClock

__all__ = ["FakeGemini", "GenerateLog", "fake_token_count", "min_cache_tokens"]

_PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1alpha|v1beta1)/"
    r"(?P<parent>projects/[^/]+/locations/[^/]+/)?"
    r"(?:(?P<model>(?:publishers/[^/]+/)?(?:models|tunedModels)/[^/:]+):(?P<method>[A-Za-z]+)"
    r"|cachedContents(?:/(?P<cache_id>[^/:]+))?)$"
)


def min_cache_tokens(model: str) -> int:
    """Smallest prompt (implicit) or cache (explicit) the fake caches: 4,096 for Pro, else 1,024."""
    return 4096 if "pro" in model.rsplit("/", 1)[-1] else 1024


def _implicit_supported(model: str) -> bool:
    name = model.rsplit("/", 1)[-1]
    return not (name.startswith("gemini-1") or name.startswith("gemini-2.0"))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def fake_token_count(value: Any) -> int:
    """Tokens the fake charges for a content, part, list of them, tool list or plain string."""
    if value is None:
        return 0
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, Sequence):
        return sum(fake_token_count(v) for v in value)
    if isinstance(value, Mapping):
        if "parts" in value:
            return sum(fake_token_count(p) for p in value.get("parts") or ())
        if isinstance(value.get("text"), str) and len(value) <= 2:  # a text part, maybe with "thought"
            return _text_tokens(value["text"])
        return _text_tokens(_canonical(value))
    return _text_tokens(str(value))


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _parse_duration(text: str) -> float:
    if not isinstance(text, str) or not text.endswith("s"):
        raise ValueError(f"bad duration {text!r}")
    return float(text[:-1])


@dataclass(slots=True)
class _Block:
    digest: str
    tokens: int


@dataclass(slots=True)
class FakeCache:
    """One ``cachedContents`` entry as the fake server holds it."""

    name: str
    model: str
    display_name: str | None
    blocks: list[_Block]
    tokens: int
    functions: list[Mapping[str, Any]]
    create_time: float
    update_time: float
    expire_time: float
    deleted_at: float | None = None

    def alive(self, now: float) -> bool:
        return self.deleted_at is None and now < self.expire_time

    def end_time(self, now: float) -> float:
        """When storage stopped (or now, if it still runs): deletion or expiry, whichever first."""
        end = self.expire_time if self.deleted_at is None else min(self.deleted_at, self.expire_time)
        return min(end, now)

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "createTime": _rfc3339(self.create_time),
            "updateTime": _rfc3339(self.update_time),
            "expireTime": _rfc3339(self.expire_time),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }
        if self.display_name:
            body["displayName"] = self.display_name
        return body


@dataclass(slots=True)
class GenerateLog:
    """What the fake answered to one model request (for tests that compute expected costs)."""

    model: str
    stream: bool
    usage_metadata: dict[str, Any]
    cached_content: str | None
    function_call: bool


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class FakeGemini:
    """The fake Gemini API; pass ``.transport()`` (or ``.handler``) to the SDK's HTTP client.

    ``clock`` is the ``FakeClock`` the fake's caches live on (a fresh one by default; share one
    with other fakes to move them together). ``reply_text`` is the model's text answer;
    ``output_tokens`` overrides its token count, ``thoughts_tokens`` / ``tool_use_prompt_tokens`` add
    those usage fields. The options shared with `FakeAnthropic` and `FakeOpenAI` (``clock``,
    ``reply_text``, ``output_tokens``, ``transport()``, ``http_client()``, ``fail_next``,
    ``advance``, ``usages``) have the same names in all three.
    """

    clock: FakeClock = field(default_factory=FakeClock)
    implicit_caching: bool = True
    implicit_ttl: float = 300.0
    reply_text: str = "This is the fake model's answer."
    output_tokens: int | None = None
    thoughts_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    stream_chunks: int = 3
    call_functions: bool = True
    function_args: dict[str, Any] | None = None
    requests: list[httpx2.Request] = field(default_factory=list)
    """Every request received, in order (bodies already read)."""
    generations: list[GenerateLog] = field(default_factory=list)
    """Every answered model request, with the usage the fake reported."""
    caches: dict[str, FakeCache] = field(default_factory=dict)
    """Every cache ever created, by resource name (deleted and expired ones included)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[tuple[int, str]] = []
        self._cut_after: int | None = None
        self._seen_prefixes: dict[str, dict[str, float]] = {}
        self._next_id = 0

    # -- public helpers ----------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward: caches expire, implicit caching forgets."""
        self.clock.advance(seconds)

    def transport(self) -> httpx2.MockTransport:
        """A transport usable by both ``httpx2.Client`` and ``httpx2.AsyncClient``."""
        return httpx2.MockTransport(self.handler)

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(transport=self.transport())

    def async_http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=self.transport())

    @property
    def usages(self) -> list[dict[str, Any]]:
        """The ``usageMetadata`` of every answered model request, in order, as the wire carries it."""
        with self._lock:
            return [dict(g.usage_metadata) for g in self.generations]

    def cut_next_stream(self, after_events: int) -> None:
        """End the next streamed answer with ``httpx2.ReadError`` after ``after_events`` streamed chunks."""
        with self._lock:
            self._cut_after = after_events

    def fail_next(self, status: int, count: int = 1, *, message: str | None = None) -> None:
        """Answer the next ``count`` requests with an API error of HTTP ``status``."""
        with self._lock:
            self._failures.extend([(status, message or "fake failure")] * count)

    def bodies(self, path_contains: str = "") -> list[dict[str, Any]]:
        """JSON bodies of the logged requests whose URL contains ``path_contains``."""
        return [json.loads(r.content) for r in self.requests if r.content and path_contains in str(r.url)]

    def live_caches(self) -> list[FakeCache]:
        now = self.now()
        return [c for c in self.caches.values() if c.alive(now)]

    def cache_lifetimes(self) -> list[tuple[str, int, float]]:
        """``(name, tokens, seconds of billable storage so far)`` for every cache created."""
        now = self.now()
        return [(c.name, c.tokens, c.end_time(now) - c.create_time) for c in self.caches.values()]

    # -- the handler -------------------------------------------------------------------------
    def handler(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        with self._lock:
            self.requests.append(request)
            failure = self._failures.pop(0) if self._failures else None
            try:
                if failure is not None:
                    raise _Fail(*failure)
                return self._route(request)
            except _Fail as exc:
                return self._error(exc.status, exc.message)

    def _route(self, request: httpx2.Request) -> httpx2.Response:
        match = _PATH.match(request.url.path)
        if match is None:
            raise _Fail(404, f"no such method: {request.method} {request.url.path}")
        method = request.method.upper()
        parent = match["parent"] or ""
        if match["model"] is not None:
            if method != "POST":
                raise _Fail(404, "model methods are POST")
            body = self._json(request)
            model = parent + match["model"]
            if match["method"] == "generateContent":
                return self._generate(model, body, stream=False)
            if match["method"] == "streamGenerateContent":
                return self._generate(model, body, stream=True)
            if match["method"] == "countTokens":
                return self._count_tokens(model, body)
            raise _Fail(404, f"unknown model method {match['method']!r}")
        cache_id = match["cache_id"]
        if cache_id is None:
            if method == "POST":
                return self._create_cache(parent, self._json(request))
            if method == "GET":
                now = self.now()
                items = [c.resource() for c in self.caches.values() if c.alive(now)]
                return self._ok({"cachedContents": items} if items else {})
            raise _Fail(404, "unsupported method on cachedContents")
        name = f"{parent}cachedContents/{cache_id}"
        cache = self._live_cache(name)
        if method == "GET":
            return self._ok(cache.resource())
        if method == "PATCH":
            body = self._json(request)
            now = self.now()
            if "ttl" in body:
                cache.expire_time = now + _parse_duration(body["ttl"])
            elif "expireTime" in body:
                cache.expire_time = _parse_rfc3339(body["expireTime"])
            cache.update_time = now
            return self._ok(cache.resource())
        if method == "DELETE":
            cache.deleted_at = self.now()
            return self._ok({})
        raise _Fail(404, "unsupported method on a cached content")

    # -- responses ---------------------------------------------------------------------------
    def _headers(self, content_type: str) -> dict[str, str]:
        return {"content-type": content_type, "date": email.utils.formatdate(self.now(), usegmt=True)}

    def _ok(self, body: dict[str, Any]) -> httpx2.Response:
        raw = json.dumps(body).encode()
        chunks = [raw[i : i + 512] for i in range(0, len(raw), 512)] or [b""]
        return httpx2.Response(
            200, headers=self._headers("application/json; charset=UTF-8"), stream=ChunkStream(chunks)
        )

    def _error(self, status: int, message: str) -> httpx2.Response:
        body = {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}
        return httpx2.Response(
            status,
            headers=self._headers("application/json; charset=UTF-8"),
            content=json.dumps(body).encode(),
        )

    @staticmethod
    def _json(request: httpx2.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError as exc:
            raise _Fail(400, f"invalid JSON payload: {exc}") from exc
        if not isinstance(body, dict):
            raise _Fail(400, "the request body must be a JSON object")
        return body

    # -- prompts and caches ------------------------------------------------------------------
    @staticmethod
    def _prefix_blocks(body: Mapping[str, Any]) -> list[_Block]:
        blocks = []
        system = body.get("systemInstruction")
        if system:
            blocks.append(_Block(_digest({"system": system}), fake_token_count(system)))
        tools = body.get("tools")
        if tools:
            tool_part = {"tools": tools, "toolConfig": body.get("toolConfig")}
            blocks.append(_Block(_digest(tool_part), fake_token_count(tools)))
        return blocks

    @staticmethod
    def _content_blocks(contents: Any) -> list[_Block]:
        return [_Block(_digest(c), fake_token_count(c)) for c in contents or ()]

    @staticmethod
    def _functions(tools: Any) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        for tool in tools or ():
            if isinstance(tool, Mapping):
                decls = tool.get("functionDeclarations") or tool.get("function_declarations") or ()
                found.extend(d for d in decls if isinstance(d, Mapping))
        return found

    def _live_cache(self, name: str) -> FakeCache:
        cache = self.caches.get(name)
        if cache is None or not cache.alive(self.now()):
            raise _Fail(403, f"CachedContent not found (or permission denied): {name}")
        return cache

    def _create_cache(self, parent: str, body: dict[str, Any]) -> httpx2.Response:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Fail(400, "cachedContent.model is required")
        now = self.now()
        if "ttl" in body:
            expire = now + _parse_duration(body["ttl"])
        elif "expireTime" in body:
            expire = _parse_rfc3339(body["expireTime"])
        else:
            expire = now + 3600.0
        blocks = self._prefix_blocks(body) + self._content_blocks(body.get("contents"))
        tokens = sum(b.tokens for b in blocks)
        minimum = min_cache_tokens(model)
        if tokens < minimum:
            raise _Fail(
                400,
                f"Cached content is too small. total_token_count={tokens}, min_total_token_count={minimum}",
            )
        self._next_id += 1
        name = f"{parent}cachedContents/fake{self._next_id:04d}{uuid.uuid4().hex[:8]}"
        cache = FakeCache(
            name=name,
            model=model,
            display_name=body.get("displayName"),
            blocks=blocks,
            tokens=tokens,
            functions=self._functions(body.get("tools")),
            create_time=now,
            update_time=now,
            expire_time=expire,
        )
        self.caches[name] = cache
        return self._ok(cache.resource())

    def _count_tokens(self, model: str, body: dict[str, Any]) -> httpx2.Response:
        inner = body.get("generateContentRequest") or body
        cached = 0
        if inner.get("cachedContent"):
            cached = self._live_cache(str(inner["cachedContent"])).tokens
        blocks = self._prefix_blocks(inner) + self._content_blocks(inner.get("contents"))
        result: dict[str, Any] = {"totalTokens": cached + sum(b.tokens for b in blocks)}
        if cached:
            result["cachedContentTokenCount"] = cached
        return self._ok(result)

    def _implicit_hit(self, model: str, blocks: list[_Block]) -> int:
        """Tokens of the longest leading run of blocks seen recently for this model (0 if too short)."""
        now = self.now()
        seen = self._seen_prefixes.setdefault(model, {})
        for key in [k for k, t in seen.items() if now - t > self.implicit_ttl]:
            del seen[key]
        chain = hashlib.sha256()
        cumulative = 0
        hit = 0
        keys = []
        for block in blocks:
            chain.update(block.digest.encode())
            cumulative += block.tokens
            key = chain.hexdigest()
            keys.append(key)
            if key in seen:
                hit = cumulative
        for key in keys:
            seen[key] = now
        enabled = self.implicit_caching and _implicit_supported(model)
        return hit if enabled and hit >= min_cache_tokens(model) else 0

    def _generate(self, model: str, body: dict[str, Any], *, stream: bool) -> httpx2.Response:
        contents = body.get("contents")
        if not contents:
            raise _Fail(400, "* GenerateContentRequest.contents: contents is not specified")
        cache_name = body.get("cachedContent")
        functions = self._functions(body.get("tools"))
        if cache_name:
            if any(body.get(k) for k in ("systemInstruction", "tools", "toolConfig")):
                raise _Fail(
                    400,
                    "CachedContent can not be used with GenerateContent request setting "
                    "system_instruction, tools or tool_config.\n\nProposed fix: move those values "
                    "to CachedContent from GenerateContent request.",
                )
            cache = self._live_cache(str(cache_name))
            if cache.model.rsplit("/", 1)[-1] != model.rsplit("/", 1)[-1]:
                raise _Fail(400, f"Model {model} does not match the model of {cache.name} ({cache.model})")
            functions = cache.functions
            blocks = self._content_blocks(contents)
            cached = cache.tokens
            prompt = cached + sum(b.tokens for b in blocks)
        else:
            blocks = self._prefix_blocks(body) + self._content_blocks(contents)
            prompt = sum(b.tokens for b in blocks)
            cached = self._implicit_hit(model, blocks)
        last = contents[-1] if isinstance(contents[-1], Mapping) else {}
        answered = any(
            isinstance(p, Mapping) and ("functionResponse" in p or "function_response" in p)
            for p in last.get("parts") or ()
        )
        part: dict[str, Any]
        if functions and self.call_functions and not answered:
            decl = functions[0]
            part = {"functionCall": {"name": decl.get("name"), "args": self._args_for(decl)}}
            output = self.output_tokens if self.output_tokens is not None else fake_token_count(part)
            texts = [part]
        else:
            output = fake_token_count(self.reply_text) if self.output_tokens is None else self.output_tokens
            texts = [{"text": t} for t in self._split(self.reply_text, self.stream_chunks if stream else 1)]
        usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": output}
        if cached:
            usage["cachedContentTokenCount"] = cached
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        if self.tool_use_prompt_tokens:
            usage["toolUsePromptTokenCount"] = self.tool_use_prompt_tokens
        usage["totalTokenCount"] = prompt + output + self.thoughts_tokens + self.tool_use_prompt_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        if cached:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        self._next_id += 1
        response_id = f"fake-{self._next_id:06d}"
        version = model.rsplit("/", 1)[-1]
        self.generations.append(
            GenerateLog(
                model=version,
                stream=stream,
                usage_metadata=dict(usage),
                cached_content=str(cache_name) if cache_name else None,
                function_call="functionCall" in texts[0],
            )
        )
        if not stream:
            return self._ok(
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": texts}, "finishReason": "STOP", "index": 0}
                    ],
                    "usageMetadata": usage,
                    "modelVersion": version,
                    "responseId": response_id,
                }
            )
        return self._stream(texts, usage, version, response_id)

    def _stream(
        self, parts: list[dict[str, Any]], usage: dict[str, Any], version: str, response_id: str
    ) -> httpx2.Response:
        """Data-only SSE; every chunk's usage is the running total of this request (never a delta)."""
        chunks = []
        final_output = usage["candidatesTokenCount"]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            running = dict(usage)
            running["candidatesTokenCount"] = final_output if last else final_output * (i + 1) // len(parts)
            running["totalTokenCount"] = (
                usage["totalTokenCount"] - final_output + running["candidatesTokenCount"]
            )
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
            if last:
                candidate["finishReason"] = "STOP"
            chunk = {
                "candidates": [candidate],
                "usageMetadata": running,
                "modelVersion": version,
                "responseId": response_id,
            }
            chunks.append(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        cut, self._cut_after = self._cut_after, None
        return httpx2.Response(
            200, headers=self._headers("text/event-stream"), stream=ChunkStream(chunks, cut_after=cut)
        )

    @staticmethod
    def _split(text: str, n: int) -> list[str]:
        n = max(1, min(n, len(text) or 1))
        size = math.ceil(len(text) / n) if text else 0
        pieces = [text[i : i + size] for i in range(0, len(text), size)] if size else [""]
        return pieces

    def _args_for(self, decl: Mapping[str, Any]) -> dict[str, Any]:
        if self.function_args is not None:
            return dict(self.function_args)
        schema = (
            decl.get("parameters")
            or decl.get("parametersJsonSchema")
            or decl.get("parameters_json_schema")
            or {}
        )
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        args: dict[str, Any] = {}
        for name, spec in (props or {}).items():
            kind = str((spec or {}).get("type", "string")).lower()
            args[name] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(
                kind, "test"
            )
        return args
