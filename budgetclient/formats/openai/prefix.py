"""OpenAI request preparation (pure): usage in streams, prompt-cache key, breakpoint, stable prefix.

Given the JSON body a caller's SDK call produced, decide what budgetclient sends instead:

- chat streams get ``stream_options.include_usage`` (the only way OpenAI reports stream usage); when
  the caller did not ask for it, the extra usage-only chunk is hidden from them again;
- a ``prompt_cache_key`` named by the stable prefix's content (every conversation sending that
  prefix shares the servers holding it warm; a prefix-less request keys by conversation), unless
  the caller set one;
- on models with explicit breakpoints (gpt-5.6+), a ``prompt_cache_breakpoint`` at the end of the
  stable prefix (tools, instructions, leading system/developer messages), within the 4-write cap,
  plus ``prompt_cache_options`` (never beside a caller's ``prompt_cache_retention``);
- the stable prefix itself, as `blocks.Block` s (bytes as sent, markers stripped), for the drift
  check. A conversation repeats its prefix every call, so the previous call's blocks are reused
  for values that have not changed (`PrefixMemo`): only new or edited blocks are serialised,
  hashed and counted.

Nothing here does I/O; the caller's body is never mutated (changed parts are copied).
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._construct import fast_constructor
from ...blocks import Block, block_digest, json_print, raw_bytes, value_print
from ...drift import prefix_fingerprint, request_shape
from ...lineage import ConversationHead, PrefixShape, text_parts
from ...lineage import prefix_shape as lineage_prefix_shape
from ...options import ClientOptions
from .usage import supports_prompt_cache_breakpoints

__all__ = [
    "CHAT",
    "COMPACT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "RESPONSES",
    "PrefixMemo",
    "PreparedOpenAIRequest",
    "ROUTE_LIMIT_PER_MIN",
    "RequestPrints",
    "RouteSpreader",
    "background_poll",
    "build_prefix",
    "cache_params",
    "classify",
    "conversation_head",
    "prepare_request",
    "prefix_cache_key",
    "prefix_shape",
    "prompt_cache_key_for",
    "request_prints",
    "request_shape_of",
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


@functools.lru_cache(maxsize=4096)
def prefix_cache_key(model: str, fingerprint: str) -> str:
    """The ``prompt_cache_key`` of a stable prefix: the same for every task, agent and process that
    sends that prefix to ``model`` (OpenAI routes by prefix and key, so they share warm machines),
    different for different prefixes (so agents with different prompts do not crowd one route)."""
    return "bc-" + hashlib.sha256(f"openai\x1f{model}\x1fprefix\x1f{fingerprint}".encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=4096)
def prompt_cache_key_for(model: str, task_name: str | None, conversation: str | None) -> str:
    """A ``prompt_cache_key`` that is the same for every call of one conversation, in any process.

    Derived from what names a conversation across runs (task name, model, explicit conversation
    id), never from per-run ids, so a task that runs again reaches the same cache machines.
    """
    material = "\x1f".join(("openai", model, task_name or "", conversation or ""))
    return "bc-" + hashlib.sha256(material.encode()).hexdigest()[:24]


ROUTE_LIMIT_PER_MIN = 15
"""Requests per minute one prefix + ``prompt_cache_key`` route takes before OpenAI overflows it to
other machines, which do not hold the prefix (OpenAI prompt-caching guide: "~15 requests per
minute")."""
_ROUTES_TRACKED = 4096


class RouteSpreader:
    """Spreads conversations sharing one prefix's key over several keys once its rate passes the
    per-route limit: a conversation keeps the route it was given (its cache is warm there) while
    that route is below the limit; a new one, or one whose route is full (its next request would
    overflow to a machine without the prefix anyway), joins the first route below the limit, or
    opens the next (``<key>-<n>``).

    Time is passed in (seconds); nothing here does I/O.
    """

    def __init__(self, limit_per_min: int = ROUTE_LIMIT_PER_MIN) -> None:
        self.limit = limit_per_min
        self._lock = threading.Lock()
        self._routes: OrderedDict[str, list[deque[float]]] = OrderedDict()
        self._placed: OrderedDict[tuple[str, str], int] = OrderedDict()

    def key_for(self, key: str, conversation: str, now: float) -> str:
        with self._lock:
            routes = self._routes.get(key)
            if routes is None:
                routes = self._routes[key] = [deque()]
                while len(self._routes) > _ROUTES_TRACKED:
                    self._routes.popitem(last=False)
            else:
                self._routes.move_to_end(key)
            for times in routes:
                while times and now - times[0] >= 60.0:
                    times.popleft()
            shard = self._placed.get((key, conversation))
            if shard is None or shard >= len(routes) or len(routes[shard]) >= self.limit:
                shard = next((i for i, t in enumerate(routes) if len(t) < self.limit), len(routes))
                if shard == len(routes):
                    routes.append(deque())
                self._placed[(key, conversation)] = shard
                while len(self._placed) > _ROUTES_TRACKED:
                    self._placed.popitem(last=False)
            else:
                self._placed.move_to_end((key, conversation))
            routes[shard].append(now)
        return key if shard == 0 else f"{key}-{shard}"


@dataclass(frozen=True, slots=True)
class PreparedOpenAIRequest:
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
    memo: PrefixMemo | None = None
    """The prefix blocks with what they were built from, for the next call of the conversation."""
    tools_print: bytes | None = None
    """The ``tools`` list's print (`RequestPrints.tools`): the budget estimate compares it with the
    conversation's last one instead of walking the tools again."""


_new_prepared = fast_constructor(PreparedOpenAIRequest)
"""``PreparedOpenAIRequest(...)`` at a fifth of the cost (one per request)."""
_new_head = fast_constructor(ConversationHead)


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
    if type(items) is not list and (not isinstance(items, Sequence) or isinstance(items, str)):
        return leading
    for index, item in enumerate(items):
        if type(item) is not dict and not isinstance(item, Mapping):
            break
        if item.get("role") not in _PREFIX_ROLES:
            break
        if operation == RESPONSES and item.get("type", "message") != "message":
            break
        leading.append((f"{name}[{index}]", item))
    return leading


@dataclass(frozen=True, slots=True)
class PrefixMemo:
    """One request's prefix blocks with fingerprints of the values they were built from.

    The next call of the conversation reuses the whole prefix when its values fingerprint the
    same (the usual case: the request's `RequestPrints`, made once per request for this and for
    `conversation_head`), else each block whose value is unchanged; so an unchanged prefix is
    neither serialised, hashed nor counted again. Equal prints mean equal values, which serialise
    to equal JSON.
    """

    source: tuple[Any, ...] | None
    """`RequestPrints.source` of what the prefix was built from (None when it holds values that
    cannot be printed)."""
    blocks: tuple[Block, ...]
    items: Mapping[str, tuple[_Fingerprint, Block]]
    """Each block by path, with the fingerprint of its own value."""
    counted: bool
    """Whether the blocks' tokens were counted (a memo without counts cannot serve a counted call)."""
    stored_bytes: int = 0
    """Bytes the fingerprints keep alive, for the lineage's memory bound (the blocks' bytes are
    the lineage's remembered prefix)."""
    hashed: dict[tuple[tuple[str, int, bytes], ...], str] = field(default_factory=dict, compare=False)
    """The prefix's fingerprint with the last cache parameters it was hashed with."""

    def prefix_hash(self, params: tuple[tuple[str, int, bytes], ...]) -> str | None:
        """`drift.prefix_fingerprint` of the blocks and ``params``, computed once per parameters."""
        if not self.blocks and not params:
            return None
        known = self.hashed.get(params)
        if known is None:
            known = prefix_fingerprint(self.blocks, params)
            if len(self.hashed) > 1:  # the parameters sent and none (the cache key's fingerprint)
                self.hashed.clear()
            self.hashed[params] = known
        return known


_Fingerprint = tuple[str, str | None, str | bytes]
"""``(text type, role, the string itself or the value's marshal bytes)``."""

def _fingerprint(value: Any, text_type: str, role: str | None) -> _Fingerprint | None:
    if type(value) is str:
        return (text_type, role, value)  # compared by identity first, then by bytes
    data = value_print(value)
    return None if data is None else (text_type, role, data)


class _PrefixBuilder:
    """Builds prefix blocks, reusing the previous call's block wherever the value is unchanged."""

    __slots__ = ("count", "items", "previous", "stored")

    def __init__(self, count: TokenCounter | None, previous: PrefixMemo | None) -> None:
        self.count = count
        self.previous = previous.items if previous is not None else None
        self.items: dict[str, tuple[_Fingerprint, Block]] = {}
        self.stored = 0

    def block(
        self, path: str, section: Any, value: Any, *, text_type: str = "text", **where: Any
    ) -> Block:
        fingerprint = _fingerprint(value, text_type, where.get("role"))
        known = self.previous.get(path) if self.previous is not None else None
        # ``==`` on str and bytes checks identity first; a str never equals bytes
        if known is not None and fingerprint is not None and known[0] == fingerprint:
            block = known[1]
        else:
            block = _block(path, section, value, self.count, text_type=text_type, **where)
        if fingerprint is not None:
            self.items[path] = (fingerprint, block)
            self.stored += len(fingerprint[2])
        return block


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
    return build_prefix(body, operation, count)[0]


def build_prefix(
    body: Mapping[str, Any],
    operation: str,
    count: TokenCounter | None = None,
    previous: PrefixMemo | None = None,
    prints: RequestPrints | None = None,
) -> tuple[tuple[Block, ...], PrefixMemo]:
    """`stable_prefix` plus its memo, reusing ``previous`` (the last call's memo) where unchanged.

    ``prints``: the body's `request_prints`, when already made."""
    if previous is not None and previous.counted != (count is not None):
        previous = None
    if operation not in (CHAT, RESPONSES):
        return (), PrefixMemo(None, (), {}, count is not None)
    if prints is None:
        prints = request_prints(body, operation)
    tools, functions = body.get("tools"), body.get("functions")
    instructions = prints.instructions
    leading = prints.leading
    source = prints.source
    if previous is not None and source is not None and previous.source == source:
        return previous.blocks, previous
    builder = _PrefixBuilder(count, previous)
    text_type = "text" if operation == CHAT else "input_text"
    block = builder.block
    blocks = [
        block(f"{key}[{i}]", "tools", tool)
        for key, listed in (("tools", tools), ("functions", functions))  # ``functions``: deprecated
        for i, tool in enumerate(listed or ())
    ]
    if isinstance(instructions, str):
        blocks.append(block("instructions", "system", instructions, text_type=text_type))
    for index, (path, message) in enumerate(leading):
        role = str(message.get("role"))
        content = message.get("content")
        if isinstance(content, Sequence) and not isinstance(content, str):
            blocks += [
                block(f"{path}.content[{j}]", "system", part, message=index, content=j, role=role)
                for j, part in enumerate(content)
            ]
        else:
            text = content if isinstance(content, str) else ""
            blocks.append(
                block(f"{path}.content", "system", text, text_type=text_type, message=index, role=role)
            )
    prefix = tuple(blocks)
    stored = builder.stored + (prints.size if source is not None else 0)
    return prefix, PrefixMemo(source, prefix, builder.items, count is not None, stored)


def _digest(value: Any) -> bytes:
    """Digest of one section as the caller wrote it; pickled whole (`value_print`, C speed), JSON
    only for values it cannot take."""
    raw = value_print(value)
    return block_digest(raw if raw is not None else raw_bytes(value))


def _message_without_markers(item: Any) -> Any:
    """A message without the cache markers on its parts (callers move them)."""
    content = item.get("content") if isinstance(item, Mapping) else None
    if not isinstance(content, list) or not any(
        isinstance(part, Mapping) and "prompt_cache_breakpoint" in part for part in content
    ):
        return item
    return {**item, "content": [_without_markers(part) for part in content]}


def _head_parts(body: Mapping[str, Any], operation: str) -> tuple[Any, Any, list[Any]]:
    """The tools, the system part (instructions and leading system/developer messages) and the
    items after them, as the caller wrote them."""
    tools = [body.get("tools") or [], body.get("functions") or []]
    leading = _leading_messages(body, operation)
    instructions = body.get("instructions") if operation == RESPONSES else None
    system = None
    if instructions or leading:
        system = [instructions, [_message_without_markers(m) for _, m in leading]]
    items = body.get("messages") if operation == CHAT else body.get("input")
    if isinstance(items, str):
        items = [items]
    rest = list(items[len(leading):]) if isinstance(items, Sequence) and not isinstance(items, str) else []
    return (tools if tools[0] or tools[1] else None), system, rest


def conversation_head(
    body: Mapping[str, Any], operation: str, prints: RequestPrints | None = None
) -> ConversationHead:
    """The request's start as a `lineage.ConversationHead` (which conversation it continues): one
    digest of the tools, one of the system part, one of each of the first two later messages.

    Each digest is found by the section's print (`RequestPrints`; ``prints``: the body's, when
    already made), so an unchanged section is neither pickled nor hashed again."""
    if prints is None:
        prints = request_prints(body, operation)
    tools, functions = body.get("tools"), body.get("functions")
    fixed: list[bytes] = []
    if tools or functions:
        listed = prints.tools if tools else _ABSENT
        deprecated = prints.functions if functions else _ABSENT
        if listed is None or deprecated is None:
            fixed.append(_digest([tools or [], functions or []]))
        else:
            fixed.append(_tools_digest((listed, deprecated)))
    leading = prints.leading
    instructions = prints.instructions
    if instructions or leading:
        unmarked = tuple(
            printed if type(printed) is tuple else _message_print(_message_without_markers(message))
            for printed, (_, message) in zip(prints.messages, leading, strict=True)
        )
        if prints.source is None or None in unmarked:
            system = [instructions, [_message_without_markers(m) for _, m in leading]]
            fixed.append(_digest(system))
        else:
            fixed.append(_print_digest(("system", prints.instructions_print, unmarked)))
    items = body.get("messages") if operation == CHAT else body.get("input")
    if isinstance(items, str):
        items = [items]
    first = len(leading)
    rest = items[first : first + 2] if isinstance(items, Sequence) and not isinstance(items, str) else ()
    opening: list[bytes] = []
    for message in rest:
        if type(message) is dict and len(message) == 2:  # a plain-text turn: its print, inline
            role, content = message.get("role"), message.get("content")
            if type(role) is str and type(content) is str and next(iter(message)) == "role":
                opening.append(_print_digest((role, content)))
                continue
        opening.append(_opening_digest(_message_without_markers(message)))
    return _new_head(fixed=tuple(fixed), opening=tuple(opening))


_ABSENT = b""
"""The print of a section the request leaves out (no value prints empty)."""
_PrintOf = bytes | tuple[Any, ...] | str


@dataclass(slots=True)
class RequestPrints:
    """A request's tools, instructions and leading system/developer messages, printed once per
    request: `build_prefix` compares them with the last call's, `conversation_head` finds its
    digests by them, and the budget estimate compares the tools by their print
    (`PreparedOpenAIRequest.tools_print`). Printing the ``tools`` list (20 schemas, rebuilt by the
    SDK on every call) is most of what any of them costs.

    Prints are equal only when the values serialise the same: the tools' `blocks.json_print`, a
    pickle (`blocks.value_print`), a string itself, or for a plain-text message
    ``{"role": r, "content": c}`` (in that key order) the pair ``(r, c)``, compared by identity
    first (the SDK keeps the caller's strings). None: a value that cannot be printed.
    """

    tools: bytes | None
    functions: bytes | None
    instructions: Any
    """The ``instructions`` value as sent (Responses; None for chat)."""
    instructions_print: _PrintOf | None
    leading: list[tuple[str, Mapping[str, Any]]]
    """`_leading_messages` of the body."""
    messages: tuple[_PrintOf | None, ...]
    """The leading messages' prints (cache markers included)."""
    source: tuple[Any, ...] | None
    """What `PrefixMemo.source` compares: the operation and every print above (None when a value
    cannot be printed)."""
    size: int
    """Bytes (characters) the prints keep alive."""


def request_prints(body: Mapping[str, Any], operation: str) -> RequestPrints:
    """The body's `RequestPrints`."""
    listed, deprecated = body.get("tools"), body.get("functions")
    tools = _ABSENT if listed is None else _list_print(listed)
    functions = _ABSENT if deprecated is None else _list_print(deprecated)
    instructions = body.get("instructions") if operation == RESPONSES else None
    instructions_print: _PrintOf | None = (
        instructions if instructions is None or type(instructions) is str else value_print(instructions)
    )
    leading = _leading_messages(body, operation)
    messages = tuple([_message_print(message) for _, message in leading])
    # ``None in``: prints are bytes, strings and tuples, none of them equal to None
    if tools is None or functions is None or None in messages or (
        instructions is not None and instructions_print is None
    ):
        return RequestPrints(tools, functions, instructions, instructions_print, leading, messages, None, 0)
    # `_print_size` of the parts, written out (bytes, a string or None, pairs of strings or bytes)
    size = len(tools) + len(functions) + (len(instructions_print) if instructions_print is not None else 0)
    for printed in messages:
        if type(printed) is tuple:
            size += len(printed[0]) + len(printed[1])
        elif printed is not None:
            size += len(printed)
    source = (operation, tools, functions, instructions_print, messages)
    return RequestPrints(tools, functions, instructions, instructions_print, leading, messages, source, size)


def _list_print(value: Any) -> bytes | None:
    """A ``tools`` / ``functions`` value's print (`_ABSENT` when it is left out)."""
    if value is None:
        return _ABSENT
    return json_print(value) if type(value) is list else value_print(value)


def _message_print(message: Any) -> _PrintOf | None:
    """``(role, content)`` of a plain-text message (two string values, ``role`` first), else its
    pickle: a pair never equals a pickle, and equal pairs are messages that serialise the same."""
    if type(message) is dict and len(message) == 2:
        role, content = message.get("role"), message.get("content")
        if type(role) is str and type(content) is str and next(iter(message)) == "role":
            return (role, content)
    return value_print(message)


def _print_size(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is tuple:
        return sum(_print_size(part) for part in value)
    return len(value)


_DIGESTS: dict[Any, bytes] = {}
"""`conversation_head`'s digests by the print they digest (bounded by `_DIGESTS_MAX` entries and
`_DIGESTS_MAX_SIZE` bytes of prints kept)."""
_DIGESTS_MAX = 4_096
_DIGESTS_MAX_SIZE = 32 << 20
_digests_size = 0
_last_tools: tuple[tuple[bytes, bytes], bytes] = ((_ABSENT, _ABSENT), b"")
"""The last tools print and its digest: one comparison of bytes instead of hashing them (an agent's
tools are the same on every call)."""


def _print_digest(key: Any) -> bytes:
    """The digest of a print (its pickle's BLAKE2b), made once per print."""
    global _digests_size
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = block_digest(pickle.dumps(key, 5))
        size = _print_size(key)
        if len(_DIGESTS) >= _DIGESTS_MAX or _digests_size + size > _DIGESTS_MAX_SIZE:
            _DIGESTS.clear()
            _digests_size = 0
        _DIGESTS[key] = digest
        _digests_size += size
    return digest


def _tools_digest(key: tuple[bytes, bytes]) -> bytes:
    global _last_tools
    last_key, last_digest = _last_tools
    if key == last_key:
        return last_digest
    digest = _print_digest(key)
    _last_tools = (key, digest)
    return digest


def _opening_digest(message: Any) -> bytes:
    printed = _message_print(message)
    return _digest(message) if printed is None else _print_digest(printed)


def prefix_shape(body: Mapping[str, Any], operation: str) -> PrefixShape:
    """The tools and system part as a `lineage.PrefixShape` (`lineage.Conversations.match`)."""
    tools, system, _ = _head_parts(body, operation)
    texts: list[str] = []
    if system is not None:
        instructions, leading = system
        if isinstance(instructions, str):
            texts.append(instructions)
        for message in leading:
            texts += text_parts(message.get("content"))
    return lineage_prefix_shape(raw_bytes([tools, system]), texts)


def request_shape_of(body: Mapping[str, Any], operation: str) -> str:
    """The caller's request's shape (`drift.request_shape`): an output format (``response_format``,
    ``text.format``: what ``parse()`` adds) and the caller's own ``prompt_cache_key`` each select a
    cache entry of their own; requests that differ in them are separate conversations, not drift."""
    if operation == CHAT:
        output_format = body.get("response_format")
    elif operation == RESPONSES:
        text = body.get("text")
        output_format = text.get("format") if isinstance(text, Mapping) else None
    else:
        return ""
    caller_key = body.get("prompt_cache_key") or None
    if output_format is None and caller_key is None:  # the usual request: `request_shape`'s answer
        return ""
    return request_shape((("format", output_format), ("prompt_cache_key", caller_key)))


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
_CACHE_PARAM_NAMES = {
    operation: tuple((".".join(path), path) for path in paths) for operation, paths in _CACHE_PARAMS.items()
}
_json_string: Callable[[str], str] = json.encoder.encode_basestring  # what ensure_ascii=False uses


def cache_params(body: Mapping[str, Any], operation: str) -> tuple[tuple[str, int, bytes], ...]:
    """``(name, 0, bytes)`` of the parameters sent that decide whether any cached prefix is reused."""
    params: list[tuple[str, int, bytes]] = []
    for name, path in _CACHE_PARAM_NAMES.get(operation, ()):
        value: Any = body
        for key in path:  # a dict is told from a `Mapping` without the ABC's check
            value = value.get(key) if type(value) is dict or isinstance(value, Mapping) else None
        if value is not None:
            # a string (the usual parameter) as `raw_bytes` writes it, without building an encoder
            data = _json_string(value).encode() if type(value) is str else raw_bytes(value)
            params.append((name, 0, data))
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
    route_key: Callable[[str], str] | None = None,
    previous_response_id: str | None = None,
    gap_s: float | None = None,
    count_block: TokenCounter | None = None,
    previous: PrefixMemo | None = None,
    prints: RequestPrints | None = None,
) -> PreparedOpenAIRequest:
    """Decide the body budgetclient sends for ``body`` (see the module docstring).

    ``count_block`` estimates each prefix block's tokens: the breakpoint's minimum-length check
    and drift's tokens at risk use them (without it the length check is skipped). ``previous`` is
    the memo of the conversation's last call (`PreparedOpenAIRequest.memo`): unchanged blocks are reused;
    ``prints``: the body's `request_prints`, when already made.
    ``cache_key`` is the key of a request without a stable prefix; ``route_key`` maps a prefix's
    key to the one to send (the caller spreads a busy prefix over several routes).
    """
    out: dict[str, Any] = dict(body)
    if prints is None and operation in (CHAT, RESPONSES):
        prints = request_prints(body, operation)
    prefix, memo = build_prefix(body, operation, count_block, previous, prints)
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
            fingerprint = memo.prefix_hash(()) if prefix else None
            if fingerprint is not None:
                cache_key = prefix_cache_key(model, fingerprint)
                if route_key is not None:
                    cache_key = route_key(cache_key)
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
    # the key budgetclient adds follows the prefix: a change of it is the prefix's, not a parameter's
    params = cache_params(body, operation)
    return _new_prepared(
        body=out if changed else body,
        changed=changed,
        hide_usage_chunk=hide,
        prompt_cache_key=injected_key,
        prefix=prefix,
        params=params,
        prefix_hash=memo.prefix_hash(params),
        breakpoints=tuple(marked),
        notes=notes,
        memo=memo,
        tools_print=prints.tools if prints is not None and prints.tools else None,
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
