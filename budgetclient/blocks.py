"""A request as an ordered list of cacheable blocks, provider-neutral.

Prompt caches hash the prompt block by block in a fixed order (Anthropic: tools → system →
messages), so placement and drift detection both work on that list. Each `Block` keeps the bytes
as sent (compact JSON in the caller's key order, cache markers stripped): a fingerprint must
change exactly when the provider's cache key does, and a reordered key *is* a changed key. The
canonical form (sorted keys) is derived on demand, only to tell a key-order change from an edit.

Format modules build blocks (`formats/anthropic/blocks.py`); everything here is pure.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from operator import attrgetter
from typing import Any, Literal

import orjson

from ._construct import fast_constructor

__all__ = [
    "Block",
    "PrefixPrint",
    "RequestBlocks",
    "Section",
    "TokenCounter",
    "Ttl",
    "block_digest",
    "canonical_bytes",
    "compact_json",
    "count_tokens",
    "first_divergence",
    "raw_bytes",
    "value_print",
]

Section = Literal["tools", "system", "messages"]
Ttl = Literal["5m", "1h"]

BYTES_PER_TOKEN = 4
"""Fallback estimate when no tokenizer is available (English prose and JSON average ~4 bytes)."""


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""One encoder for every call (``json.dumps`` with options builds a new one each time)."""


def compact_json(value: Any) -> str:
    """Compact JSON of ``value`` in its own key order, as the SDKs send it (``default=str``)."""
    return _COMPACT.encode(value)


def value_print(value: Any) -> bytes | None:
    """Bytes equal only when two JSON values serialise the same (``None``: not comparable).

    ``pickle`` runs in C, several times faster than serialising to JSON (and than ``marshal``,
    which re-encodes every non-ASCII string), keeps key order and tells ``1`` from ``1.0`` and
    ``True``; its output decodes back to the value, so different values never give equal bytes.
    Its memo writes an object met twice as a back-reference, so the bytes also depend on which
    parts of the value are the same object; the SDKs copy containers anew on every call and keep
    the caller's strings, so an unchanged value gives the same bytes (a different sharing could
    only cost a rebuild, never hide a change).
    """
    try:
        return pickle.dumps(value, 5)
    except Exception:  # not picklable, or too deep: compared by other means
        return None


_JSON_PRINT_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def json_print(value: Any) -> bytes | None:
    """`value_print` for a large, deeply nested value sent as built-in JSON types (a ``tools`` list):
    its compact JSON from ``orjson``, about 2.5x cheaper than a pickle of many small containers.

    Exact for what the SDKs can send: orjson writes each built-in type (``str``, ``int``,
    ``float``, ``bool``, ``None``, ``list``, ``tuple``, ``dict`` with string keys) injectively and
    in key order, as the SDKs' encoders do; anything else (subclasses, dataclasses, dates, models,
    non-string keys, huge ints) is passed through to an error here and pickled instead. NaN and
    infinities, which orjson writes as ``null``, are refused by the SDKs' encoders
    (``allow_nan=False``), so no request is sent with them. A JSON print starts with ``[`` or
    ``{``, a pickle with ``\x80``: the two never compare equal.
    """
    try:
        return orjson.dumps(value, option=_JSON_PRINT_OPTIONS)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return value_print(value)


def raw_bytes(value: Any) -> bytes:
    """Compact JSON of ``value`` in its own key order, ``cache_control`` stripped at the top level."""
    if isinstance(value, Mapping) and "cache_control" in value:
        value = {k: v for k, v in value.items() if k != "cache_control"}
    return compact_json(value).encode()


def canonical_bytes(raw: bytes) -> bytes:
    """Sorted-key compact JSON of serialised bytes (equal canonical bytes = same content)."""
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    except ValueError:
        return raw


def block_digest(raw: bytes) -> bytes:
    """16-byte BLAKE2b of a block's bytes: fast, and collisions are not a practical concern."""
    return hashlib.blake2b(raw, digest_size=16).digest()


def _approximate(text: str, model: str) -> int:
    return (len(text.encode()) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def _tiktoken_counter() -> Callable[[str, str], int]:
    try:
        from .tokens import count_text
    except ImportError:  # pragma: no cover - tokens.py ships with the package
        return _approximate
    return count_text


_counter: Callable[[str, str], int] | None = None


def count_tokens(text: str, model: str) -> int:
    """Exact tokens of ``text`` for ``model`` (tokenizer of `budgetclient.tokens`, ~4 bytes/token
    without it): the one place placement and drift count tokens."""
    global _counter
    if _counter is None:
        _counter = _tiktoken_counter()
    return _counter(text, model)


class TokenCounter:
    """Counts the new blocks of one request: exactly up to ``budget_chars``, then by the density
    measured so far, so the first call of a 150k-token conversation stays a few milliseconds."""

    def __init__(self, model: str, budget_chars: int = 32_768) -> None:
        self.model = model
        self.budget = budget_chars
        self.chars = 0
        self.tokens = 0
        self.short, self.rule = _short_text_rule(model)
        """`count_tokens` of a text shorter than ``short`` is ``rule(text)``, called directly (an
        agent's new turns: four calls fewer each)."""

    def __call__(self, text: str) -> int:
        n = len(text)
        if n <= self.budget:
            self.budget -= n
            count = self.rule(text) if n < self.short else count_tokens(text, self.model)
            self.chars += n
            self.tokens += count
            return count
        density = self.tokens / self.chars if self.chars >= 256 else 1 / BYTES_PER_TOKEN
        return max(1, round(n * density)) if text else 0


_rules: dict[str, tuple[int, Callable[[str], int]]] = {}
"""`_short_text_rule` by model name."""


def _short_text_rule(model: str) -> tuple[int, Callable[[str], int]]:
    """(length, rule): `count_tokens` of ``model``'s texts shorter than the length is the rule's."""
    found = _rules.get(model)
    if found is None:
        try:
            from .tokens import approximate_count, short_text_chars
        except ImportError:  # pragma: no cover - tokens ships with the package (`_tiktoken_counter`)
            found = (0, len)
        else:
            found = (short_text_chars(model), approximate_count)
        if len(_rules) >= 1024:
            _rules.clear()
        _rules[model] = found
    return found


@dataclass(frozen=True, slots=True)
class Block:
    """One cacheable block of a request, in cache order."""

    path: str
    """Where it sits in the request: ``"tools[3]"``, ``"system[0]"``, ``"messages[4].content[0]"``;
    a string ``system`` or message ``content`` is one block named ``"system"`` / ``"messages[4].content"``."""
    section: Section
    raw: bytes
    """Compact JSON as sent, without ``cache_control``; string shorthand as its text-block form."""
    digest: bytes
    tokens: int
    """Estimated tokens of this block alone."""
    markable: bool
    """Whether a cache marker may sit here (not on thinking / redacted_thinking / empty text)."""
    marker: Ttl | None = None
    """TTL of the caller's own ``cache_control`` on this block, if any."""
    message: int | None = None
    """Index of the message this block belongs to (None for tools and system)."""
    content: int | None = None
    """Index inside the message's content list, or inside ``tools`` / ``system`` (None for string
    shorthand)."""
    role: str | None = None
    shorthand: bool = False
    """The caller sent a plain string (the text is the segment's bytes when explaining drift)."""

    def canonical(self) -> bytes:
        """Sorted-key bytes: equal for two blocks that differ only in key order."""
        return canonical_bytes(self.raw)

    def without_bytes(self) -> Block:
        return replace(self, raw=b"")


@dataclass(frozen=True, slots=True)
class RequestBlocks:
    """The cacheable blocks of one request plus the parameters folded into its cache key."""

    model: str
    blocks: tuple[Block, ...]
    params: tuple[tuple[str, int, bytes], ...] = ()
    """``(name, position, bytes)`` of cache-relevant parameters (``tool_choice``, ``thinking``,
    ``speed``...): ``position`` is the block index they precede in the cache key."""
    top_level_ttl: Ttl | None = None
    """TTL of a top-level (automatic) ``cache_control``: a breakpoint on the last markable block."""
    prefix_tokens: tuple[int, ...] = field(default=())
    """Cumulative tokens through each block."""
    _fixed_end: int = field(default=-1, repr=False, compare=False)
    _markers: dict[int, Ttl] | None = field(default=None, repr=False, compare=False)
    _tools_end: int = field(default=-2, repr=False, compare=False)
    """`placement`'s last markable tool block once found (-1: none; -2: not looked for yet)."""

    def __post_init__(self) -> None:
        # per-call work on every request: kept in C (map/accumulate), no Python loop per block
        if not self.prefix_tokens:
            object.__setattr__(self, "prefix_tokens", tuple(accumulate(map(_TOKENS, self.blocks))))

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def total_tokens(self) -> int:
        return self.prefix_tokens[-1] if self.prefix_tokens else 0

    @property
    def fixed_end(self) -> int:
        """Number of tools and system blocks (the stable prefix every call repeats)."""
        if self._fixed_end < 0:
            end = next((i for i, block in enumerate(self.blocks) if block.section == "messages"), None)
            object.__setattr__(self, "_fixed_end", len(self.blocks) if end is None else end)
        return self._fixed_end

    @property
    def message_count(self) -> int:
        last = next((b.message for b in reversed(self.blocks) if b.message is not None), None)
        return 0 if last is None else last + 1

    def message_start(self, message: int) -> int:
        """Index of the first block of message ``message`` (len(blocks) past the end)."""
        for i, block in enumerate(self.blocks):
            if block.message is not None and block.message >= message:
                return i
        return len(self.blocks)

    def last_markable_at_or_before(self, index: int) -> int | None:
        for i in range(min(index, len(self.blocks) - 1), -1, -1):
            if self.blocks[i].markable:
                return i
        return None

    @property
    def automatic_index(self) -> int | None:
        """Block the top-level ``cache_control`` applies to (None without one)."""
        if self.top_level_ttl is None:
            return None
        return self.last_markable_at_or_before(len(self.blocks) - 1)

    def caller_markers(self) -> dict[int, Ttl]:
        """Breakpoints the caller placed: block markers plus the top-level one."""
        if self._markers is None:
            markers: dict[int, Ttl] = {}
            if any(map(_MARKER, self.blocks)):
                markers = {i: b.marker for i, b in enumerate(self.blocks) if b.marker is not None}
            auto = self.automatic_index
            if auto is not None and auto not in markers and self.top_level_ttl is not None:
                markers[auto] = self.top_level_ttl
            object.__setattr__(self, "_markers", markers)
        assert self._markers is not None
        return dict(self._markers)

    def digests(self) -> tuple[bytes, ...]:
        return tuple(map(_DIGEST, self.blocks))


@dataclass(frozen=True, slots=True)
class PrefixPrint:
    """What a lineage remembers of its previous call: per-block hashes and (budget allowing) bytes."""

    blocks: tuple[Block, ...]
    params: tuple[tuple[str, int, bytes], ...] = ()
    has_bytes: bool = True

    _stored: int = field(default=-1, repr=False, compare=False)

    @classmethod
    def of(cls, request: RequestBlocks) -> PrefixPrint:
        if cls is PrefixPrint:
            return new_prefix_print(blocks=request.blocks, params=request.params)
        return cls(request.blocks, request.params)

    def extended(self, request: RequestBlocks) -> PrefixPrint:
        """`of` ``request``, which starts with this prefix's blocks (an append-only call): the
        stored bytes are this prefix's plus the new blocks', not summed over every block again."""
        stored = -1
        if self.has_bytes and self._stored >= 0:
            stored = self._stored + sum(map(len, map(_RAW, request.blocks[len(self.blocks) :])))
        return new_prefix_print(blocks=request.blocks, params=request.params, _stored=stored)

    @property
    def stored_bytes(self) -> int:
        if not self.has_bytes:
            return 0
        if self._stored < 0:
            object.__setattr__(self, "_stored", sum(map(len, map(_RAW, self.blocks))))
        return self._stored

    def without_bytes(self) -> PrefixPrint:
        return PrefixPrint(tuple(b.without_bytes() for b in self.blocks), self.params, has_bytes=False)

    def digests(self) -> tuple[bytes, ...]:
        return tuple(map(_DIGEST, self.blocks))


new_block = fast_constructor(Block)
"""``Block(...)`` by keyword at a third of the cost: one or two are built on every call."""
new_request_blocks = fast_constructor(RequestBlocks)
"""``RequestBlocks(...)`` by keyword, ``prefix_tokens`` given (its ``__post_init__`` does not run)."""
new_prefix_print = fast_constructor(PrefixPrint)

_TOKENS = attrgetter("tokens")
_DIGEST = attrgetter("digest")
_RAW = attrgetter("raw")
_MARKER = attrgetter("marker")


def first_divergence(previous: Sequence[Block], current: Sequence[Block]) -> int:
    """Index of the first block whose bytes differ (``len(previous)`` if ``current`` extends it)."""
    n = min(len(previous), len(current))
    # an unchanged prefix reuses the previous call's Block objects: one C-level comparison
    # (identical elements compare equal without a look inside; equal blocks have equal digests)
    if type(previous) is tuple and type(current) is tuple and previous[:n] == current[:n]:
        return n
    for i, (old, new) in enumerate(zip(previous, current, strict=False)):
        if old.digest != new.digest:
            return i
    return n
