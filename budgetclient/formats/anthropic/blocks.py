"""An Anthropic Messages body as cacheable blocks (`blocks.RequestBlocks`), built fast enough to
run on every call.

`build_request` serialises each block once and reuses what it built for the previous call of a
conversation (process-wide, size-bounded caches keyed by the block's content), so an append-only
conversation costs only its new blocks. `BuiltRequest` keeps the values for the incremental
token estimate (`formats.anthropic.estimate`). Placement and drift never look at these caches:
they receive the finished `RequestBlocks`.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate, chain
from json.encoder import encode_basestring
from operator import attrgetter, itemgetter
from typing import Any, TypeVar, cast

from ..._construct import fast_constructor
from ...blocks import (
    Block,
    RequestBlocks,
    Section,
    TokenCounter,
    block_digest,
    compact_json,
    json_print,
    new_block,
    new_request_blocks,
    raw_bytes,
    value_print,
)
from ...drift import request_shape
from ...lineage import ConversationHead, PrefixShape, text_parts
from ...lineage import prefix_shape as lineage_prefix_shape
from .markers import _marker_ttl
from .reader import anthropic_block_parts, has_custom_tool

__all__ = [
    "BuiltRequest",
    "build_request",
    "tools_print",
    "conversation_head",
    "prefix_shape",
    "request_blocks",
    "request_shape_of",
]

_DIGEST = attrgetter("digest")
_TOKENS = attrgetter("tokens")
_NOT_MARKABLE = frozenset({"thinking", "redacted_thinking"})
_MESSAGE_PARAMS = ("tool_choice", "thinking", "output_config")
"""Parameters that invalidate the messages part of the cache (folded in before the messages)."""
_MEDIA_TOKENS = 1_600
"""An image (Anthropic caps images at ~1.15 MP, i.e. ~1,600 tokens)."""
_PDF_BYTES_PER_PAGE = 100_000
_PDF_PAGE_TOKENS = 2_000


def request_shape_of(body: Mapping[str, Any]) -> str:
    """The request's shape (`drift.request_shape`): its output format (``messages.parse()``,
    ``output_format``) and a compaction request (``compaction``, the tool runner's summary
    request) each read a cache entry of their own, as another model would."""
    output_config = body.get("output_config")
    if output_config is None and body.get("output_format") is None and body.get("compaction") is None:
        return ""  # the usual request: `request_shape` of no fields
    output_format = output_config.get("format") if isinstance(output_config, Mapping) else None
    return request_shape(
        (
            ("output_config.format", output_format),
            ("output_format", body.get("output_format")),
            ("compaction", body.get("compaction")),
        )
    )


def _unmarked(value: Any) -> Any:
    if isinstance(value, Mapping) and "cache_control" in value:
        return {k: v for k, v in value.items() if k != "cache_control"}
    return value


def _marked(items: list[Any]) -> bool:
    return any(isinstance(item, Mapping) and "cache_control" in item for item in items)


def _section_digest(value: Any) -> bytes:
    """Digest of the tools, the system prompt or one message, without cache markers (callers move
    them). Pickled whole (`value_print`, C speed) rather than serialised to JSON per block: this
    runs on every request before anything else is known about it.

    A string or a plain-text message is looked up by its strings first (`_TEXT_DIGESTS`): the
    caller resends the same string objects, so an unchanged system prompt or opening turn costs
    a dict read (their hashes are cached in them), not a pickle and a hash of its whole text."""
    kind = type(value)
    key: tuple[Any, ...] | None = None
    if kind is str:
        key = (value,)
    elif kind is dict and len(value) == 2:
        role = value.get("role")
        content = value.get("content")
        if type(role) is str and next(iter(value)) == "role":  # `_fingerprint`'s message prints
            if type(content) is str:
                key = (role, content)
            elif type(content) is list:
                key = _content_print(role, content)
    if key is None:
        return _section_digest_of(value)
    digest = _TEXT_DIGESTS.get(key)
    if digest is None:
        digest = _section_digest_of(value)
        _TEXT_DIGESTS.put(key, digest, _print_size(key))
    return digest


def _section_digest_of(value: Any) -> bytes:
    if isinstance(value, list):
        if _marked(value):
            value = [_unmarked(item) for item in value]
    elif isinstance(value, Mapping):
        content = value.get("content")
        if isinstance(content, list) and _marked(content):
            value = {**value, "content": [_unmarked(c) for c in content]}
        value = _unmarked(value)
    raw = value_print(value)
    return block_digest(raw if raw is not None else raw_bytes(value))


def _tools_digest(value: Any, given: Print) -> bytes:
    """`_section_digest` of the tools, from their `tools_print` when it is the same pickle: looked
    up by it first (`_TOOLS_DIGESTS`; a dict's hash of the bytes costs a fraction of BLAKE2b's)."""
    global _last_tools
    if type(given) is bytes and type(value) is list:
        # only an unmarked list's print is stored, and an equal print is an equal value: a hit
        # needs no look for markers (20 tool schemas walked in Python)
        last = _last_tools
        if last is not None and given == last[0]:  # the commonest call: the last call's tools
            return last[1]
        digest = _TOOLS_DIGESTS.get(given)
        if digest is None and not _marked(value):
            digest = block_digest(given)
            _TOOLS_DIGESTS.put(given, digest, len(given))
        if digest is not None:
            _last_tools = (given, digest)
            return digest
    if type(value) is list:  # markers moved: the digest of the same tools unmarked
        unmarked = json_print([_unmarked(item) for item in value])
        return block_digest(unmarked) if unmarked is not None else _section_digest(value)
    return _section_digest(value)


_new_head = fast_constructor(ConversationHead)
"""``ConversationHead(...)`` by keyword at a third of the cost (one per call)."""


def prefix_shape(body: Mapping[str, Any]) -> PrefixShape:
    """The tools and system prompt as `lineage.PrefixShape` (`LineageRegistry.match`): equal but
    for digits, the same system, or a system prompt with text added at its end."""
    raw = compact_json([_unmarked(t) for t in _listed(body.get("tools"))]).encode() + b"\x00" + \
        compact_json(body.get("system")).encode()
    return lineage_prefix_shape(raw, text_parts(body.get("system")))


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def tools_print(body: Mapping[str, Any]) -> Print:
    """The ``tools`` list's `blocks.json_print`, made once per request: `conversation_head` and
    `build_request` both take it (printing a tools list is most of what either costs)."""
    tools = body.get("tools")
    return json_print(tools) if isinstance(tools, list) else None


def conversation_head(body: Mapping[str, Any], *, tools: Print = None) -> ConversationHead:
    """The request's start as a `lineage.ConversationHead`: which conversation it continues.

    Cheap: one digest of the tools, one of the system prompt and one of each of the first two
    messages, never the whole prompt. ``tools``: the body's `tools_print`, when already made."""
    fixed: tuple[bytes, ...] = ()
    value = body.get("tools")
    if value:
        fixed = (_tools_digest(value, tools),)
    value = body.get("system")
    if value:
        fixed = (*fixed, _section_digest(value))
    messages = body.get("messages")
    opening = tuple(map(_section_digest, messages[:2])) if isinstance(messages, list) else ()
    return _new_head(fixed=fixed, opening=opening)


def _media_tokens(value: Any) -> tuple[Any, int]:
    """``value`` with base64 payloads replaced by nothing, and the tokens those payloads stand for."""
    if isinstance(value, list):
        total = 0
        items = []
        for item in value:
            stripped, tokens = _media_tokens(item)
            items.append(stripped)
            total += tokens
        return items, total
    if not isinstance(value, Mapping):
        return value, 0
    if value.get("type") == "base64" and isinstance(value.get("data"), str):
        media = str(value.get("media_type") or "")
        if media == "application/pdf":
            size = len(value["data"]) * 3 // 4
            return {}, _PDF_PAGE_TOKENS * max(1, -(-size // _PDF_BYTES_PER_PAGE))
        return {}, _MEDIA_TOKENS
    if value.get("type") in ("url", "file") and value.get("url", value.get("file_id")) is not None:
        return {}, _MEDIA_TOKENS
    total = 0
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "cache_control":
            continue
        stripped, tokens = _media_tokens(item)
        out[key] = stripped
        total += tokens
    return out, total


def _same_kept_or_not(raw: bytes) -> bool:
    """Whether a block counts the same in the last assistant turn as elsewhere: only thinking
    differs, so its estimate is kept under both keys (``digest`` and ``digest + b"!"``)."""
    return b'"thinking"' not in raw


_COUNTED_BY_PARTS = frozenset(
    {"tool_use", "server_tool_use", "mcp_tool_use", "tool_result", "mcp_tool_result", "search_result"}
)
"""Blocks counted by the texts the budget estimate reads (`tokens.anthropic_block_parts`)."""


def _estimate(value: Any, raw: bytes, count: TokenCounter) -> tuple[int, tuple[list[str], int] | None]:
    """The block's tokens, and the parts they were counted from when those are the estimate's.

    A tool result or tool use is counted from the texts the budget estimate counts (its content,
    its name and input), not from its JSON: each new text is tokenized once per call, and the
    estimate finds the count in the token memo. Tool results are most of what an agent appends.
    """
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "text" and isinstance(value.get("text"), str):
            text = value["text"]
            return count(text), ([text] if text else [], 0)
        if kind == "thinking" and isinstance(value.get("thinking"), str):
            return count(value["thinking"]), None
        if kind == "redacted_thinking":
            return 0, None
        if b'"data":"' in raw or b'"url":"' in raw or b'"file_id":"' in raw:
            stripped, media = _media_tokens(value)
            return count(raw_bytes(stripped).decode()) + media, None
        if type(kind) is str and kind in _COUNTED_BY_PARTS:
            parts = anthropic_block_parts(False, value, keep_thinking=True)
            texts, fixed = parts
            return sum(map(count, texts)) + fixed, parts
    return count(raw.decode("utf-8", errors="replace")), None


# Serialised bytes and digest per block content, so an append-only conversation serialises and
# hashes only its new blocks: keys are built from the block's values (strings compare by identity
# first and cache their hash), which costs per node, not per byte of prompt text.
_SERIALISED: dict[Any, tuple[bytes, bytes]] = {}
_SERIALISED_MAX_BYTES = 64 * 1024 * 1024
_serialised_bytes = 0


class _Unkeyable(Exception):
    pass


def _key(value: Any, top: bool = False) -> Any:
    kind = type(value)
    if kind is str:
        return value
    if kind is dict:
        items = []
        for k, v in value.items():
            if type(k) is not str:
                raise _Unkeyable
            if top and k == "cache_control":
                continue  # raw_bytes strips it
            items.append((k, _key(v)))
        return (dict, tuple(items))
    if kind is list:
        return (list, tuple(_key(v) for v in value))
    if kind is int or kind is bool or value is None:
        return (kind, value)  # 1, True and 1.0 serialise differently
    if kind is float:
        return (float, repr(value))  # -0.0 == 0.0, but not in JSON
    raise _Unkeyable  # other types serialise through default=str: not cached


def _serialised(label: bytes, value: Any, content_key: Any = None) -> tuple[bytes, bytes]:
    """``raw_bytes(value)`` and its labelled digest, from the cache when this content was seen
    (``content_key`` is ``_key(value, top=True)`` when the caller has it already)."""
    global _serialised_bytes
    try:
        key: Any = (label, _key(value, top=True) if content_key is None else content_key)
    except (_Unkeyable, RecursionError):
        raw = raw_bytes(value)
        return raw, block_digest(label + raw)
    hit = _SERIALISED.get(key)
    if hit is not None:
        return hit
    raw = raw_bytes(value)
    entry = (raw, block_digest(label + raw))
    if _serialised_bytes + len(raw) > _SERIALISED_MAX_BYTES:
        _SERIALISED.clear()
        _BLOCKS.clear()  # blocks hold the same bytes: both are bounded together
        _serialised_bytes = 0
    _SERIALISED[key] = entry
    _serialised_bytes += len(raw)
    return entry


_BLOCKS: dict[Any, Block] = {}
"""Finished blocks by position and content (the same content at the same place is the same block)."""
_BLOCKS_MAX = 65_536
K = TypeVar("K")
V = TypeVar("V")


class _Bounded(dict[K, V]):
    """A process-wide cache emptied when it reaches ``max_entries`` or ``max_size`` (what `put`
    callers say their values weigh): cheaper per lookup than an LRU, and a conversation refills it
    with its own entries within one call. Lookups are plain ``dict`` reads."""

    def __init__(self, max_entries: int, max_size: int) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_size = max_size
        self.size = 0

    def put(self, key: K, value: V, size: int) -> None:
        if len(self) >= self.max_entries or self.size + size > self.max_size:
            self.clear()
            self.size = 0
        self[key] = value
        self.size += size


_TEXT_BLOCKS: _Bounded[tuple[Any, ...], Block] = _Bounded(_BLOCKS_MAX, _SERIALISED_MAX_BYTES)
"""`_BLOCKS` for string shorthands, keyed by the text itself, weighed by their bytes."""
_TEXT_BLOCK_HEAD = b'{"type":"text","text":'
_json_string = encode_basestring
"""A JSON string literal exactly as `blocks.compact_json` writes one (``ensure_ascii=False``)."""
_LISTS: _Bounded[tuple[str, str, bytes, Print], tuple[Block, ...]] = _Bounded(256, _SERIALISED_MAX_BYTES)
"""The blocks of whole ``tools`` / ``system`` lists by model and value print (see `_Builder.add_list`)."""
_MESSAGE_LISTS: _Bounded[tuple[str, str, bytes, Print], tuple[Block, ...]] = _Bounded(
    _BLOCKS_MAX, _SERIALISED_MAX_BYTES
)
"""The blocks of a message's ``content`` list by model, label (index and role) and message print."""


_TEXT_DIGESTS: _Bounded[tuple[Any, ...], bytes] = _Bounded(_BLOCKS_MAX, _SERIALISED_MAX_BYTES)
"""`_section_digest` of string shorthands and messages by their `_fingerprint` (weighed by their
characters)."""

_TOOLS_DIGESTS: _Bounded[bytes, bytes] = _Bounded(256, _SERIALISED_MAX_BYTES)
"""`_tools_digest` by the tools' `tools_print` (weighed by its bytes)."""
_last_tools: tuple[bytes, bytes] | None = None
"""The last `_TOOLS_DIGESTS` entry answered, compared before the lookup: equal prints compare in
``memcmp``, where the lookup hashes the whole print anew (a new ``bytes`` object each call)."""

Print = bytes | tuple[Any, ...] | None
"""What a value is compared by on the next call (see `_fingerprint`)."""


_ROLE_CONTENT = ("role", "content")
_ROLE_CONTENT_LIST = list(_ROLE_CONTENT)
_ROLE_AND_CONTENT = itemgetter("role", "content")
_STR_ONLY = frozenset({str})


def _fingerprint(value: Any) -> Print:
    """Something equal only when two JSON values serialise the same (``None``: not comparable).

    A plain-text message (``{"role": ..., "content": "..."}``) or a string is kept as its strings:
    the caller resends the same string objects, so the comparison is an identity check, whatever
    the text's length. A message whose content is a list of blocks is kept as `_content_print`
    (its strings too, the rest pickled). Anything else is compared by `blocks.value_print` (in
    C, exact).
    """
    kind = type(value)
    if kind is str:
        return (value,)
    if kind is dict and len(value) == 2:
        role = value.get("role")
        content = value.get("content")
        if type(role) is str and next(iter(value)) == "role":
            if type(content) is str:
                return (role, content)
            if type(content) is list:
                printed = _content_print(role, content)
                if printed is not None:
                    return printed
    return value_print(value)


def _content_print(role: str, content: list[Any]) -> tuple[Any, ...] | None:
    """A message's ``content`` list kept as the caller's strings: ``None``, the role, then each
    block as the tuple of its ``(key, value)`` pairs, a value that is not a string as its
    `value_print`. The SDK copies the dicts on every call but keeps the caller's strings, so
    comparing two of these is mostly identity checks, where pickling copies every byte of text.

    Exact: keys are strings, values strings or bytes (``str`` never equals ``bytes``), in their
    order, so equal prints are equal strings and equal pickles in the same places: the same JSON.
    The leading ``None`` keeps it apart from the all-string prints of `_fingerprint`. ``None``: a
    block that is not a ``dict`` with string keys, or a value that cannot be pickled.
    """
    out: list[Any] = [None, role]
    append = out.append
    for block in content:
        if type(block) is not dict:
            return None
        if _STR_ONLY.issuperset(map(type, chain(block, block.values()))):
            append(tuple(block.items()))  # all strings: the pairs themselves
            continue
        pairs = []
        for key, item in block.items():
            if type(key) is not str:
                return None
            if type(item) is not str:
                item = value_print(item)
                if item is None:
                    return None
            pairs.append((key, item))
        append(tuple(pairs))
    return tuple(out)


def _message_prints(messages: list[Any]) -> tuple[list[Print], bool]:
    """`_fingerprint` of each message, and whether all are plain text. A conversation of plain-text
    messages only (every message a ``dict`` whose keys are ``role`` then ``content``, both strings)
    is printed in C: its prints are those pairs, with no Python call per message."""
    n = len(messages)
    if (
        list(map(type, messages)).count(dict) == n
        # their keys in a row are ``role, content, role, content...``: each message's keys are
        # ``("role", "content")`` (a tuple of each costs twice as much). No length check needed: a
        # dict's keys are distinct, so no run of them spans two of that pattern's pairs, and 2n
        # keys in n runs of at most two are two each
        and list(chain.from_iterable(messages)) == _ROLE_CONTENT_LIST * n
    ):
        prints: list[Print] = list(map(_ROLE_AND_CONTENT, messages))
        if list(map(type, chain.from_iterable(prints))).count(str) == 2 * n:  # type: ignore[arg-type]
            return prints, True
    return [_fingerprint(message) for message in messages], False


Seed = dict[int, tuple[int, str]]
"""A pickler memo of strings (``id`` → (index, string), indices ``0..n-1``), see `_seal`."""

Sealed = tuple[bytes, Seed, int]
"""A conversation's `_seal`, its seed, and the seal's size when the seed was made."""

_SEAL_PROTOCOL = 2
"""Unframed, and a list's items written one after the other between ``(`` and ``e``: the seal of a
longer conversation starts with the bytes of the shorter one's items."""
_SEAL_MAX_MESSAGES = 1_000
"""The pickler writes a list's items in batches of 1,000: more, and a batch ends in the middle."""
_SEEDED_CHARS = 256
"""Strings at least this long are seeded (shorter ones cost less to copy than to look up)."""


def _seal(messages: list[Any], seed: Seed) -> bytes | None:
    """The messages pickled with ``seed`` as the pickler's memo: a string of the seed is written as
    a reference to its index, not copied, so the pickle of a conversation costs its structure,
    not its text. Made with the same seed, one seal starting with another's items
    (`_extends_seal`) proves those messages unchanged, the seeded strings by identity: exact, as
    `blocks.value_print`. ``None``: not picklable."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, _SEAL_PROTOCOL)
    pickler.memo = seed  # the memo setter copies it: the seed stays as it is
    try:
        pickler.dump(messages)
    except Exception:  # not picklable, or too deep: the messages are printed one by one
        return None
    return buffer.getvalue()


def _extends_seal(now: bytes, before: bytes) -> bool:
    """Whether seal ``now`` holds ``before``'s messages first, unchanged, then only whole messages.

    Both lists have 2 to `_SEAL_MAX_MESSAGES` items, all ``dict``s, written ``] BINPUT ( item... e .``.
    After ``before``'s items, ``now`` either ends as it did or starts a new dict (``}``): a
    continuation of the last one (more keys for it) would start with ``(`` or a key, never ``}``."""
    if not before.endswith(b"e."):
        return False
    items = len(before) - 2
    if not now.startswith(before[:items]):
        return False
    following = now[items : items + 1]
    return following == b"}" or now == before


def _seed_of(prints: Sequence[Print]) -> Seed:
    """The long strings the messages' prints hold (the caller's), at indices ``0..n-1``."""
    seed: Seed = {}
    for printed in prints:
        if type(printed) is not tuple:
            continue
        texts = (
            printed
            if printed[:1] != (None,)
            else (printed[1], *(v for pairs in printed[2:] for _, v in pairs))
        )
        for text in texts:
            if type(text) is str and len(text) >= _SEEDED_CHARS and id(text) not in seed:
                seed[id(text)] = (len(seed), text)
    return seed


def _print_size(value: Print) -> int:
    if value is None:
        return 0
    if isinstance(value, bytes):
        return len(value)
    if value and value[0] is None:  # `_content_print`: the role, then each block's pairs
        return len(value[1]) + sum(len(k) + len(v) for block in value[2:] for k, v in block)
    return sum(map(len, value))  # the caller's strings, kept alive by this reference


@dataclass(slots=True)
class BuiltRequest:
    """One request's blocks plus fingerprints of the values they came from, so the next request of
    the conversation rebuilds only what changed (`build_request` ``previous=``) and its token
    estimate counts only new blocks (`estimate_input`)."""

    request: RequestBlocks
    tools: Print
    system: Print
    messages: list[Print]
    tools_span: tuple[int, int]
    system_span: tuple[int, int]
    messages_span: tuple[int, int]
    message_spans: list[tuple[int, int]]
    """Each message's blocks, relative to the first message block."""
    messages_estimable: bool
    last_assistant: int
    """Index of the last assistant message (-1 if none): its thinking counts as input."""
    tool_overhead: tuple[int, bool]
    """Number of tools and whether one is a custom tool (`tokens.anthropic_overhead` inputs)."""
    messages_count: int
    estimable: bool
    """The body has the shapes `tokens.estimate_request` reads (else estimate the whole body)."""
    estimates: dict[bytes, int] = field(default_factory=dict)
    """Estimated tokens per block digest (``!``-suffixed in the last assistant message)."""
    extends: BuiltRequest | None = None
    """The previous build, when this request starts with all of its blocks (append-only)."""
    blocks_estimate: int | None = None
    """Sum of the blocks' estimates, once `estimate_input` ran (the next call starts from it)."""

    messages_bytes: int = 0
    """`_print_size` of the messages' prints (carried over from the previous build when extended)."""
    seal: Sealed | None = None
    """The messages' `_seal` and its seed, when one is not plain text: the next call's messages
    sealed with the same seed and starting with this one's items (`_extends_seal`) prove every
    message of this call unchanged at once, and only the new ones are printed."""
    values: dict[int, Any] | None = None
    """The values of the blocks built by this call, by ``id(block)``: their estimate reads them
    instead of decoding the block's bytes. Dropped once estimated or superseded (the caller may edit
    its objects after the request is sent)."""

    fixed_bytes: int = field(default=-1, compare=False, repr=False)
    """`_print_size` of the tools' and system's prints, once asked (carried over when extended)."""

    @property
    def stored_bytes(self) -> int:
        if self.fixed_bytes < 0:
            self.fixed_bytes = _print_size(self.tools) + _print_size(self.system)
        return self.fixed_bytes + self.messages_bytes

    def message_span(self, m: int) -> tuple[int, int]:
        """Where message ``m``'s blocks sit in ``request.blocks``."""
        a, b = self.message_spans[m]
        offset = self.messages_span[0]
        return offset + a, offset + b


class _Builder:
    def __init__(self, model: str, memo: dict[bytes, int] | None) -> None:
        self.model = model
        self.count = TokenCounter(model)
        self.memo = memo if memo is not None else {}
        self.blocks: list[Block] = []
        self.values: dict[int, Any] = {}

    def reuse(self, previous: BuiltRequest, span: tuple[int, int]) -> None:
        start, end = span
        self.blocks.extend(previous.request.blocks[start:end])

    def _take(self, block: Block) -> Block:
        """Append a block that may come from a process-wide cache, with this conversation's count
        for its digest (a count can depend on what else was new in the call that made it)."""
        known = self.memo.get(block.digest)
        if known is not None and known != block.tokens:
            block = replace(block, tokens=known)
        self.blocks.append(block)
        return block

    def add_list(
        self,
        section: Section,
        items: list[Any],
        print_: Print,
        *,
        label: bytes,
        path: str | None = None,
        message: int | None = None,
        role: str | None = None,
        was: Sequence[Block] | None = None,
    ) -> None:
        """`add` of each block of a ``tools`` or ``system`` list or of a message's ``content``
        list (``path`` names it), taken whole from a cache when the same list (by value) was
        built before at the same place: a new conversation or task starts with the tools of the
        previous one, and walking 20 tool schemas block by block costs a millisecond.

        A message's blocks are not looked up one by one in `_BLOCKS` (`_key` walks each value in
        Python): the message's print, made anyway to compare it next call, already says whether
        it is new. ``was`` are the blocks this message had in the conversation's previous call
        (it was edited): each block whose bytes did not change is reused.
        """
        cache = _LISTS if message is None else _MESSAGE_LISTS
        # a pickle, or a message's `_content_print` (self-describing as well: a value, no context)
        keyed = isinstance(print_, bytes) or (type(print_) is tuple and print_ and print_[0] is None)
        key = (self.model, section, label, print_) if keyed else None
        cached = cache.get(key) if key is not None else None
        if cached is None:
            start = len(self.blocks)
            before = {b.content: b for b in was} if was else None
            for i, item in enumerate(items):
                self.add(
                    section, f"{path or section}[{i}]", item,
                    label=label, message=message, content=i, role=role,
                    keyed=message is None, was=before.get(i) if before else None,
                )  # fmt: skip
            if key is not None:
                built = tuple(self.blocks[start:])
                cache.put(key, built, _print_size(print_) + sum(len(b.raw) for b in built))
            return
        values = self.values
        for block, item in zip(cached, items, strict=True):
            values[id(self._take(block))] = item

    def add_text(self, section: Section, path: str, text: str, *, label: bytes, message: int | None = None,
                 role: str | None = None, cached: bool = True) -> None:
        """`add` of a string shorthand (``"content": "..."``, ``"system": "..."``): the one-text-block
        list the API reads it as, without building that block to serialise it (most new turns).

        ``cached=False``: neither looked up nor kept in `_TEXT_BLOCKS`, for a turn appended to the
        conversation (`_appended_text`), which its next call reuses from this build: the cache
        would only serve a conversation built from scratch with the same turn at the same place.
        """
        key = block = None
        if cached:
            key = (self.model, section, path, label, message, role, text)
            block = _TEXT_BLOCKS.get(key)
        if block is None:
            raw = b"".join((_TEXT_BLOCK_HEAD, _json_string(text).encode(), b"}"))
            digest = block_digest(label + raw)
            tokens = self.memo.get(digest)
            block = new_block(
                path=path,
                section=section,
                raw=raw,
                digest=digest,
                tokens=self.count(text) if tokens is None else tokens,
                markable=bool(text),  # the API rejects cache_control on an empty text block
                message=message,
                role=role,
                shorthand=True,
            )
            if key is not None:
                _TEXT_BLOCKS.put(key, block, len(raw))
            self.blocks.append(block)
        else:
            block = self._take(block)
        self.values[id(block)] = text

    def add(
        self,
        section: Section,
        path: str,
        value: Any,
        *,
        label: bytes,
        message: int | None = None,
        content: int | None = None,
        role: str | None = None,
        shorthand: bool = False,
        keyed: bool = True,
        was: Block | None = None,
    ) -> None:
        """Build one block, or take it from `_BLOCKS` (``keyed``: looked up by position and value),
        or take ``was`` (this block in the previous call) when its bytes are the same."""
        is_mapping = type(value) is dict or isinstance(value, Mapping)
        marker = _marker_ttl(value.get("cache_control")) if is_mapping else None
        content_key: Any = None
        key: Any = None
        if keyed:
            try:
                content_key = _key(value, top=True)
                key = (
                    self.model, section, path, label, message, content, role, shorthand, marker, content_key,
                )  # fmt: skip
            except (_Unkeyable, RecursionError):
                content_key = key = None
        block = _BLOCKS.get(key) if key is not None else None
        if block is not None:
            self.values[id(self._take(block))] = value
            return
        if keyed:
            raw, digest = _serialised(label, value, content_key)
        else:
            raw = raw_bytes(value)
            if was is not None and (was.path, was.role, was.marker, was.raw) == (path, role, marker, raw):
                self.values[id(self._take(was))] = value
                return
            digest = block_digest(label + raw)
        tokens = self.memo.get(digest)
        if tokens is None:
            tokens, parts = _estimate(value, raw, self.count)
            if parts is not None and _same_kept_or_not(raw):
                # what the estimate would collect again: the same with or without thinking kept
                size = sum(map(len, parts[0]))
                _PARTS.put(digest, parts, size)
                _PARTS.put(digest + b"!", parts, size)
        kind = value.get("type") if is_mapping else None
        if not isinstance(kind, str):
            kind = None  # a malformed block (e.g. an unhashable "type") must not crash placement
        # the API rejects cache_control on thinking blocks and on empty text blocks
        markable = is_mapping and kind not in _NOT_MARKABLE and (kind != "text" or bool(value.get("text")))
        block = new_block(
            path=path,
            section=section,
            raw=raw,
            digest=digest,
            tokens=tokens,
            markable=markable,
            marker=marker,
            message=message,
            content=content,
            role=role,
            shorthand=shorthand,
        )
        self.blocks.append(block)
        self.values[id(block)] = value
        if key is not None:
            if len(_BLOCKS) >= _BLOCKS_MAX:
                _BLOCKS.clear()
            _BLOCKS[key] = block


def request_blocks(body: Mapping[str, Any], *, memo: dict[bytes, int] | None = None) -> RequestBlocks:
    """The cacheable blocks of a Messages body in cache order (tools → system → messages).

    ``memo`` maps block digests to token counts; it is replaced in place by the counts of this
    request's blocks, so a conversation counts each distinct block once.
    """
    return build_request(body, memo=memo).request


def build_request(
    body: Mapping[str, Any],
    *,
    memo: dict[bytes, int] | None = None,
    previous: BuiltRequest | None = None,
    tools: Print = None,
) -> BuiltRequest:
    """`request_blocks`, reusing ``previous``'s blocks for the tools, the system prompt and every
    message whose value is unchanged: an append-only conversation builds its new blocks only,
    and compares the rest in C (`_fingerprint`) rather than serialising and hashing it again.

    ``previous`` must be a build of a request of the same conversation (a lineage's previous call);
    ``tools``, when given, the body's `tools_print`.
    """
    given_tools = tools
    model = str(body.get("model") or "")
    if previous is not None and previous.request.model != model:
        previous = None
    if previous is not None and APPEND_FAST_PATH and previous.seal is None:
        appended = _appended_text(body, model, memo, previous, given_tools)
        if appended is not None:
            return appended
    builder = _Builder(model, memo)
    params: list[tuple[str, int, bytes]] = []
    estimable = True
    tools = body.get("tools")
    tools_print = None
    custom = False
    if isinstance(tools, list):
        tools_print = given_tools if given_tools is not None else json_print(tools)
        if previous is not None and tools_print is not None and tools_print == previous.tools:
            builder.reuse(previous, previous.tools_span)
            custom = previous.tool_overhead[1]
        else:
            builder.add_list("tools", tools, tools_print, label=b"t")
            custom = has_custom_tool(tools)
    elif tools is not None:
        estimable = False
    tools_span = (0, len(builder.blocks))
    if body.get("speed") is not None:
        params.append(("speed", len(builder.blocks), raw_bytes(body["speed"])))
    system = body.get("system")
    start = len(builder.blocks)
    system_print = _fingerprint(system) if isinstance(system, str | list) else None
    if system is not None and not isinstance(system, str | list):
        estimable = False
    elif previous is not None and system_print is not None and system_print == previous.system:
        builder.reuse(previous, previous.system_span)
    elif isinstance(system, str):
        builder.add_text("system", "system", system, label=b"s")
    elif isinstance(system, list):
        builder.add_list("system", system, system_print, label=b"s")
    system_span = (start, len(builder.blocks))
    for name in _MESSAGE_PARAMS:
        if body.get(name) is not None:
            params.append((name, len(builder.blocks), raw_bytes(body[name])))
    messages = body.get("messages")
    seal: Sealed | None = None
    messages_bytes = 0
    extends = False
    spans: list[tuple[int, int]] = []
    prints: list[Print] = []
    last_assistant = -1
    messages_ok = True
    if isinstance(messages, list):
        first = len(builder.blocks)
        old = previous.messages if previous is not None else []
        sealed = previous.seal if previous is not None else None
        known = len(old)
        printed: list[Print] | None = None
        # dicts only: after a dict's items the pickler starts a new item with "}" (EMPTY_DICT) and
        # never continues the dict so (`_extends_seal`); an empty list could be appended to
        sealable = 2 <= len(messages) <= _SEAL_MAX_MESSAGES and list(map(type, messages)).count(dict) == len(
            messages
        )
        if sealed is not None and sealable and known <= len(messages):
            now = _seal(messages, sealed[1])
            if now is not None and len(now) <= 2 * sealed[2] + 65_536 and _extends_seal(now, sealed[0]):
                # the previous call's messages, unchanged: only the new ones are printed (text the
                # seed does not hold is copied in each seal: past a limit, the seed is made again)
                printed = old + _message_prints(messages[known:])[0]
                seal = (now, sealed[1], sealed[2])
        if printed is None:
            printed, plain = _message_prints(messages)
            if not plain and sealable:
                seed = _seed_of(printed)
                now = _seal(messages, seed)
                seal = (now, seed, len(now)) if now is not None else None
        prints = printed
        reused = 0
        if previous is not None and len(old) <= len(prints) and prints[: len(old)] == old and None not in old:
            # the common case, an append-only conversation: every previous message is unchanged
            reused = len(old)
            messages_bytes = previous.messages_bytes
            builder.reuse(previous, previous.messages_span)
            extends = builder.blocks == list(previous.request.blocks)
            spans = list(previous.message_spans)
            last_assistant = previous.last_assistant
            messages_ok = previous.messages_estimable
        messages_bytes += sum(map(_print_size, prints[reused:]))
        for m in range(reused, len(messages)):
            message = messages[m]
            start = len(builder.blocks) - first
            if not isinstance(message, Mapping):
                messages_ok = False
                spans.append((start, start))
                continue
            if message.get("role") == "assistant":
                last_assistant = m
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                messages_ok = False
            if prints[m] is not None and m < len(old) and prints[m] == old[m]:
                assert previous is not None
                builder.reuse(previous, previous.message_span(m))
                spans.append((start, len(builder.blocks) - first))
                continue
            role = str(message.get("role") or "")
            label = f"m{m}:{role}:".encode()
            if isinstance(content, str):
                path = f"messages[{m}].content"
                builder.add_text("messages", path, content, label=label, message=m, role=role)
            elif isinstance(content, list):
                was = None
                if m < len(old):  # an edited message: its unchanged blocks are reused
                    assert previous is not None
                    a, b = previous.message_span(m)
                    was = previous.request.blocks[a:b]
                path = f"messages[{m}].content"
                builder.add_list(
                    "messages", content, prints[m], label=label, path=path, message=m, role=role, was=was
                )
            spans.append((start, len(builder.blocks) - first))
    elif messages is not None:
        messages_ok = False
    messages_span = (system_span[1], len(builder.blocks))
    estimable = estimable and messages_ok
    if memo is not None:
        kept = builder.blocks
        if extends and previous is not None:  # the memo holds the previous blocks: add the new ones
            kept = kept[len(previous.request.blocks) :]
        else:
            memo.clear()
        memo.update(zip(map(_DIGEST, kept), map(_TOKENS, kept), strict=True))
    if previous is not None:
        previous.extends = None  # no chain of builds: only the last one is kept
        previous.values = None
    request = new_request_blocks(
        model=model,
        blocks=tuple(builder.blocks),
        params=tuple(params),
        prefix_tokens=tuple(accumulate(map(_TOKENS, builder.blocks))),
        top_level_ttl=_marker_ttl(body.get("cache_control")),
        _fixed_end=system_span[1],  # every block after the system prompt is a message's
    )
    return BuiltRequest(
        request=request,
        tools=tools_print,
        system=system_print,
        messages=prints,
        tools_span=tools_span,
        system_span=system_span,
        messages_span=messages_span,
        message_spans=spans,
        messages_estimable=messages_ok,
        last_assistant=last_assistant,
        tool_overhead=(len(tools) if isinstance(tools, list) else 0, custom),
        messages_count=len(prints),
        messages_bytes=messages_bytes,
        estimable=estimable,
        estimates=previous.estimates if previous is not None else {},
        extends=previous if extends and previous is not None else None,
        seal=seal,
        values=builder.values,
    )


APPEND_FAST_PATH = True
"""Whether `build_request` takes `_appended_text` when it applies; off only in tests, which check
that both ways build the same request."""


def _appended_text(
    body: Mapping[str, Any],
    model: str,
    memo: dict[bytes, int] | None,
    previous: BuiltRequest,
    given_tools: Print,
) -> BuiltRequest | None:
    """`build_request` of the commonest call, built as the delta it is: ``previous``'s request with
    plain-text turns appended (the same tools by their `tools_print`, the same string system
    prompt, the same parameters, every earlier message the same strings). The blocks, spans,
    prints and counts are exactly the general path's, with none of its per-part branches; any
    other shape returns ``None`` (the general path then builds it)."""
    tools = body.get("tools")
    system = body.get("system")
    messages = body.get("messages")
    if type(tools) is not list:
        return None
    if given_tools is None:
        given_tools = json_print(tools)
    if (
        type(given_tools) is not bytes
        or given_tools != previous.tools
        or type(system) is not str
        or previous.system != (system,)
        or type(messages) is not list
        or body.get("speed") is not None
    ):
        return None
    old = previous.messages
    known = len(old)
    if len(messages) <= known:
        return None
    request = previous.request
    fixed_end = previous.system_span[1]
    params: tuple[tuple[str, int, bytes], ...] = ()
    if request.params or not body.keys().isdisjoint(_MESSAGE_PARAMS):  # (else none, as before)
        params = tuple(
            (name, fixed_end, raw_bytes(body[name])) for name in _MESSAGE_PARAMS if body.get(name) is not None
        )
        if params != request.params:
            return None
    prints, plain = _message_prints(messages)
    if not plain or prints[:known] != old:
        return None
    added = cast("list[tuple[str, str]]", prints[known:])  # plain text: `_print_size` is their lengths
    builder = _Builder(model, memo)
    blocks = builder.blocks
    blocks.extend(request.blocks)
    first = previous.messages_span[0]
    spans = list(previous.message_spans)
    last_assistant = previous.last_assistant
    start = len(blocks) - first
    for m, (role, content) in enumerate(added, known):
        if role == "assistant":
            last_assistant = m
        builder.add_text(
            "messages", f"messages[{m}].content", content, label=f"m{m}:{role}:".encode(),
            message=m, role=role, cached=False,
        )  # fmt: skip
        spans.append((start, start + 1))  # a string is one block
        start += 1
    new = blocks[len(request.blocks) :]
    if memo is not None:
        memo.update(zip(map(_DIGEST, new), map(_TOKENS, new), strict=True))
    previous.extends = None
    previous.values = None
    ends = request.prefix_tokens
    prefix_tokens = ends + tuple(accumulate(map(_TOKENS, new), initial=ends[-1] if ends else 0))[1:]
    top_level = _marker_ttl(body.get("cache_control"))
    return BuiltRequest(
        request=new_request_blocks(
            model=model,
            blocks=tuple(blocks),
            params=params,
            top_level_ttl=top_level,
            prefix_tokens=prefix_tokens,
            _fixed_end=fixed_end,
            # the new turns are string shorthands, which carry no marker: the caller's markers are
            # the previous request's, unless a top-level one moves with the end
            _markers=request._markers if top_level is None and request.top_level_ttl is None else None,
            _tools_end=request._tools_end,  # the same tools and system blocks
        ),
        tools=given_tools,
        system=(system,),
        messages=prints,
        tools_span=previous.tools_span,
        system_span=previous.system_span,
        messages_span=(fixed_end, len(blocks)),
        message_spans=spans,
        messages_estimable=previous.messages_estimable,
        last_assistant=last_assistant,
        tool_overhead=(len(tools), previous.tool_overhead[1]),
        messages_count=len(prints),
        messages_bytes=previous.messages_bytes + sum(map(len, chain.from_iterable(added))),
        estimable=previous.messages_estimable,
        estimates=previous.estimates,
        extends=previous,
        seal=None,
        values=builder.values,
        fixed_bytes=previous.fixed_bytes,  # equal prints
    )


_PARTS: _Bounded[bytes, tuple[list[str], int]] = _Bounded(65_536, 32 * 1024 * 1024)
"""`tokens.anthropic_block_parts` by block digest (``!``-suffixed when thinking counts), weighed
by the characters of their texts."""
