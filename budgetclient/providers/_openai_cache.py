"""OpenAI request preparation (pure): usage in streams, prompt-cache key, breakpoint, stable prefix.

Given the JSON body a caller's SDK call produced, decide what budgetclient sends instead:

- chat streams get ``stream_options.include_usage`` (the only way OpenAI reports stream usage); when
  the caller did not ask for it, the extra usage-only chunk is hidden from them again;
- a ``prompt_cache_key`` stable per conversation, unless the caller set one;
- on models with explicit breakpoints (gpt-5.6+), a ``prompt_cache_breakpoint`` at the end of the
  stable prefix (tools, instructions, leading system/developer messages), within the 4-write cap,
  plus ``prompt_cache_options`` (never beside a caller's ``prompt_cache_retention``);
- the stable prefix itself, as `blocks.Block` s (bytes as sent, markers stripped), for the drift
  check.

Nothing here does I/O; the caller's body is never mutated (changed parts are copied).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..blocks import Block, block_digest, raw_bytes
from ..drift import prefix_fingerprint
from ..options import ClientOptions
from ._openai_usage import supports_prompt_cache_breakpoints

__all__ = [
    "CHAT",
    "COMPACT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "RESPONSES",
    "PreparedRequest",
    "background_poll",
    "cache_params",
    "classify",
    "prepare_request",
    "prompt_cache_key_for",
    "stable_prefix",
]

CHAT = "chat.completions"
RESPONSES = "responses"
COMPLETIONS = "completions"
COMPACT = "responses.compact"
EMBEDDINGS = "embeddings"

MIN_CACHEABLE_TOKENS = 1024
MAX_WRITTEN_BREAKPOINTS = 4
LONG_GAP_S = 30 * 60
"""Calls further apart than the default 30-minute TTL re-write the prefix every time."""

_SUFFIXES = (
    ("/chat/completions", CHAT),
    ("/responses/compact", COMPACT),
    ("/responses", RESPONSES),
    ("/completions", COMPLETIONS),
    ("/embeddings", EMBEDDINGS),
)
_STREAMING_USAGE_OPS = (CHAT, COMPLETIONS)
_BREAKPOINT_PARTS = frozenset(
    {"text", "image_url", "input_audio", "file", "input_text", "input_image", "input_file"}
)
_PREFIX_ROLES = ("system", "developer")

TokenCounter = Callable[[bytes, str], int]
"""``(block digest, text) -> tokens``; the digest lets a caller memoise counts per block."""


def classify(method: str, path: str) -> str | None:
    """The metered operation a request path belongs to, or None for anything that bills nothing."""
    if method.upper() != "POST":
        return None
    path = path.rstrip("/")
    for suffix, operation in _SUFFIXES:
        if path.endswith(suffix):
            return operation
    return None


_RESPONSE_PATH = re.compile(r"/responses/(resp_[^/]+)$")


def background_poll(method: str, path: str) -> str | None:
    """The response id a ``GET /responses/{id}`` (retrieve, or resume a stream) asks about."""
    if method.upper() != "GET":
        return None
    match = _RESPONSE_PATH.search(path.rstrip("/"))
    return match.group(1) if match else None


def prompt_cache_key_for(model: str, task_name: str | None, conversation: str | None) -> str:
    """A ``prompt_cache_key`` that is the same for every call of one conversation, in any process.

    Derived from what names a conversation across runs (task name, model, explicit conversation
    id), never from per-run ids, so a task that runs again reaches the same cache machines.
    """
    material = "\x1f".join(("openai", model, task_name or "", conversation or ""))
    return "bc-" + hashlib.sha256(material.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """What to send for one request, and what budgetclient learnt from it."""

    body: Mapping[str, Any]
    """The body to send (the caller's own object when nothing changed)."""
    changed: bool = False
    hide_usage_chunk: bool = False
    """include_usage was added for metering: drop the usage-only chunk before the caller sees it."""
    prompt_cache_key: str | None = None
    """The key budgetclient added (None when the caller set one or caching is off)."""
    prefix: tuple[Block, ...] = ()
    """The stable prefix as sent by the caller (tools, instructions, leading system messages)."""
    params: tuple[tuple[str, int, bytes], ...] = ()
    """Parameters that change OpenAI's cache key as a whole (see `cache_params`)."""
    prefix_hash: str | None = None
    breakpoints: tuple[str, ...] = ()
    """Paths of the content parts budgetclient marked with ``prompt_cache_breakpoint``."""
    notes: dict[str, Any] = field(default_factory=dict)


def _without_markers(value: Any) -> Any:
    """Cache markers are not prompt content: leave them out of the fingerprint."""
    if isinstance(value, Mapping) and "prompt_cache_breakpoint" in value:
        return {k: v for k, v in value.items() if k != "prompt_cache_breakpoint"}
    return value


def _leading_messages(body: Mapping[str, Any], operation: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``(path, message)`` of the system/developer messages that open the conversation."""
    items = body.get("messages") if operation == CHAT else body.get("input")
    name = "messages" if operation == CHAT else "input"
    leading: list[tuple[str, Mapping[str, Any]]] = []
    if not isinstance(items, Sequence) or isinstance(items, str):
        return leading
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("role") not in _PREFIX_ROLES:
            break
        if operation == RESPONSES and item.get("type", "message") != "message":
            break
        leading.append((f"{name}[{index}]", item))
    return leading


def _block(
    path: str, section: Any, value: Any, count: TokenCounter | None, *, text_type: str = "text", **where: Any
) -> Block:
    """One prefix block; a plain string is recorded in its text-part form (``shorthand``)."""
    shorthand = isinstance(value, str)
    part = {"type": text_type, "text": value} if shorthand else _without_markers(value)
    raw = raw_bytes(part)
    digest = block_digest(raw)
    text = part.get("text") if isinstance(part, Mapping) and isinstance(part.get("text"), str) else None
    tokens = count(digest, text if text is not None else raw.decode()) if count is not None else 0
    markable = shorthand or (isinstance(part, Mapping) and part.get("type") in _BREAKPOINT_PARTS)
    return Block(path, section, raw, digest, tokens, markable, shorthand=shorthand, **where)


def stable_prefix(
    body: Mapping[str, Any], operation: str, count: TokenCounter | None = None
) -> tuple[Block, ...]:
    """The part of a request every call of a conversation should repeat byte for byte.

    Tools first, then ``instructions``, then the leading system/developer messages: the order in
    which they open the prompt. ``count`` gives each block its token estimate (0 without one).
    """
    if operation not in (CHAT, RESPONSES):
        return ()
    text_type = "text" if operation == CHAT else "input_text"
    blocks = [
        _block(f"{key}[{i}]", "tools", tool, count)
        for key in ("tools", "functions")  # ``functions``: the deprecated form of chat tools
        for i, tool in enumerate(body.get(key) or ())
    ]
    instructions = body.get("instructions")
    if operation == RESPONSES and isinstance(instructions, str):
        blocks.append(_block("instructions", "system", instructions, count, text_type=text_type))
    for index, (path, message) in enumerate(_leading_messages(body, operation)):
        role = str(message.get("role"))
        content = message.get("content")
        if isinstance(content, Sequence) and not isinstance(content, str):
            blocks += [
                _block(f"{path}.content[{j}]", "system", part, count, message=index, content=j, role=role)
                for j, part in enumerate(content)
            ]
        else:
            text = content if isinstance(content, str) else ""
            blocks.append(_block(f"{path}.content", "system", text, count, text_type=text_type,
                                 message=index, role=role))
    return tuple(blocks)


_CACHE_PARAMS = {
    CHAT: (
        ("prompt_cache_key",),
        ("reasoning_effort",),
        ("verbosity",),
        ("response_format",),
        ("service_tier",),
    ),
    RESPONSES: (
        ("prompt_cache_key",),
        ("reasoning", "effort"),
        ("text", "verbosity"),
        ("text", "format"),
        ("service_tier",),
    ),
}
"""What OpenAI's ``prompt_cache_diagnostics`` names as reasons besides the prompt itself."""


def cache_params(body: Mapping[str, Any], operation: str) -> tuple[tuple[str, int, bytes], ...]:
    """``(name, 0, bytes)`` of the parameters sent that decide whether any cached prefix is reused."""
    params: list[tuple[str, int, bytes]] = []
    for path in _CACHE_PARAMS.get(operation, ()):
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None:
            params.append((".".join(path), 0, raw_bytes(value)))
    return tuple(params)


def _caller_breakpoints(body: Mapping[str, Any]) -> int:
    count = 0
    for key in ("messages", "input"):
        items = body.get(key)
        if not isinstance(items, Sequence) or isinstance(items, str):
            continue
        for item in items:
            content = item.get("content") if isinstance(item, Mapping) else None
            if isinstance(content, Sequence) and not isinstance(content, str):
                count += sum(1 for p in content if isinstance(p, Mapping) and "prompt_cache_breakpoint" in p)
    return count


def _marked(content: Any, operation: str, marker: Mapping[str, str]) -> Any | None:
    """``content`` with ``marker`` on its last part (a string becomes one text part); None if impossible."""
    if isinstance(content, str):
        kind = "text" if operation == CHAT else "input_text"
        return [{"type": kind, "text": content, "prompt_cache_breakpoint": dict(marker)}]
    if not isinstance(content, Sequence) or not content:
        return None
    last = content[-1]
    if not isinstance(last, Mapping) or last.get("type") not in _BREAKPOINT_PARTS:
        return None
    if "prompt_cache_breakpoint" in last:
        return None  # the caller already marked this spot
    return [*content[:-1], {**last, "prompt_cache_breakpoint": dict(marker)}]


def _ttl(options: ClientOptions, operation: str, gap_s: float | None) -> str:
    """OpenAI TTLs are 30m (default) and, on Responses only, 12h."""
    if operation != RESPONSES or options.cache_ttl == "5m":
        return "30m"
    if options.cache_ttl == "1h":
        return "12h"
    return "12h" if gap_s is not None and gap_s > LONG_GAP_S else "30m"


def prepare_request(
    body: Mapping[str, Any],
    operation: str,
    options: ClientOptions,
    *,
    cache_key: str,
    previous_response_id: str | None = None,
    gap_s: float | None = None,
    count_block: TokenCounter | None = None,
) -> PreparedRequest:
    """Decide the body budgetclient sends for ``body`` (see the module docstring).

    ``count_block`` estimates each prefix block's tokens: the breakpoint's minimum-length check
    and drift's tokens at risk use them (without it the length check is skipped).
    """
    out: dict[str, Any] = dict(body)
    prefix = stable_prefix(body, operation, count_block)
    hide = False
    injected_key: str | None = None
    marked: list[str] = []
    notes: dict[str, Any] = {}

    if operation in _STREAMING_USAGE_OPS and body.get("stream") is True:
        stream_options = body.get("stream_options")
        if not (isinstance(stream_options, Mapping) and stream_options.get("include_usage") is True):
            base = dict(stream_options) if isinstance(stream_options, Mapping) else {}
            out["stream_options"] = {**base, "include_usage": True}
            hide = True

    model = str(body.get("model") or "")
    if options.cache == "auto" and operation in (CHAT, RESPONSES):
        if not body.get("prompt_cache_key"):
            out["prompt_cache_key"] = injected_key = cache_key
        if supports_prompt_cache_breakpoints(model):
            prefix_tokens = sum(b.tokens for b in prefix) if count_block is not None else None
            marked = _place_breakpoint(out, body, operation, options, gap_s, prefix_tokens, notes)
            if body.get("prompt_cache_options") is None and body.get("prompt_cache_retention") is None:
                cache_options: dict[str, Any] = {"mode": "implicit"}
                if operation == RESPONSES and previous_response_id and options.drift != "off":
                    cache_options["comparison_response_id"] = previous_response_id
                if marked or "comparison_response_id" in cache_options:
                    out["prompt_cache_options"] = cache_options

    changed = len(out) != len(body) or any(out[k] is not body[k] for k in body)
    params = cache_params(out, operation)
    return PreparedRequest(
        body=out if changed else body,
        changed=changed,
        hide_usage_chunk=hide,
        prompt_cache_key=injected_key,
        prefix=prefix,
        params=params,
        prefix_hash=prefix_fingerprint(prefix, params) if prefix or params else None,
        breakpoints=tuple(marked),
        notes=notes,
    )


def _instructions_as_message(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``body`` with its ``instructions`` moved into a leading developer message, when equivalent.

    A string ``instructions`` is a developer message at the head of the context, but it cannot
    carry a breakpoint. Moving it is only equivalent in a stateless request: with
    ``previous_response_id`` or ``conversation`` the moved message would be stored and repeated.
    """
    instructions = body.get("instructions")
    if not isinstance(instructions, str) or not instructions:
        return None
    if body.get("previous_response_id") or body.get("conversation"):
        return None
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, Sequence) or not items:
        return None
    moved = {k: v for k, v in body.items() if k != "instructions"}
    moved["input"] = [{"role": "developer", "content": instructions}, *items]
    return moved


def _place_breakpoint(
    out: dict[str, Any],
    body: Mapping[str, Any],
    operation: str,
    options: ClientOptions,
    gap_s: float | None,
    prefix_tokens: int | None,
    notes: dict[str, Any],
) -> list[str]:
    """Mark the end of the stable prefix in ``out``; returns the marked path (or nothing)."""
    key = "messages" if operation == CHAT else "input"
    candidate: Mapping[str, Any] = out
    leading = _leading_messages(candidate, operation)
    if not leading and operation == RESPONSES:
        moved = _instructions_as_message(out)
        if moved is not None:
            candidate, leading = moved, _leading_messages(moved, operation)
    if not leading:
        notes["breakpoint"] = "no system/developer message to mark"
        return []
    caller_options = body.get("prompt_cache_options")
    explicit_mode = isinstance(caller_options, Mapping) and caller_options.get("mode") == "explicit"
    cap = MAX_WRITTEN_BREAKPOINTS if explicit_mode else MAX_WRITTEN_BREAKPOINTS - 1  # implicit uses one
    if _caller_breakpoints(body) + 1 > cap:
        notes["breakpoint"] = "the caller's breakpoints use every slot"
        return []
    if prefix_tokens is not None and prefix_tokens < MIN_CACHEABLE_TOKENS:
        notes["breakpoint"] = f"stable prefix of ~{prefix_tokens} tokens is below {MIN_CACHEABLE_TOKENS}"
        return []
    ttl = _ttl(options, operation, gap_s)
    marker = {"mode": "explicit", "ttl": ttl} if ttl != "30m" else {"mode": "explicit"}
    path, message = leading[-1]
    content = _marked(message.get("content"), operation, marker)
    if content is None:
        notes["breakpoint"] = "the last prefix part cannot carry a breakpoint or is already marked"
        return []
    items = list(candidate[key])
    items[len(leading) - 1] = {**message, "content": content}
    if candidate is not out:
        out.pop("instructions", None)
        notes["instructions"] = "sent as the leading developer message, to carry the breakpoint"
    out[key] = items
    return [f"{path}.content[{len(content) - 1}]"]
