"""A ``generateContent`` body as sent, decoded incrementally over an append-only conversation.

An agent resends its whole conversation on every call, so decoding the body and fingerprinting
its stable prefix from scratch costs time in proportion to the conversation, on every call. Here
a body is decoded next to the previous body of the same conversation: a top-level field, or a
content at the same position of ``contents``, whose JSON text is unchanged is not decoded again
but shares the previous call's value, and everything derived from it (the stable prefix's blocks
and key, a content's digest) is computed once. The work per call is a byte comparison of what is
unchanged plus the decoding of what is new.

Reuse is decided by text equality only, so it is exact whatever body is given as ``previous``: a
JSON object, array or string is self-delimiting, so equal text at the same place is the same value.
Anything unexpected (invalid JSON, an unusual encoding) falls back to ``json.loads``. The values
are shared between calls and never mutated by budgetclient. A managed cache's rewrite is spliced
from the sent text as well (`WireBody.rewritten`), so it costs no re-encoding of the body either.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..blocks import Block
from ..formats.google.prefix import PREFIX_FIELDS, prefix_blocks
from ._google_rules import content_digest, leading_user_run, rewrite_body

__all__ = ["BodyHistory", "Piece", "StablePrefix", "WireBody", "blocks_key", "decode_body"]

_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The C scanner behind ``json.loads``: one value at an index, and where it ends."""
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DELIMITER = re.compile(r"[ \t\n\r]*([,}\]])[ \t\n\r]*")
"""What follows a value: ``,``, ``}`` or ``]``, with the whitespace around it."""
_KEY = re.compile(r'"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')
"""A key without escapes, its colon and the whitespace around it (other keys take the scanner)."""


def _skip(text: str, at: int) -> int:
    """The index of the first non-whitespace character at or after ``at``."""
    match = _WHITESPACE.match(text, at)
    return match.end() if match is not None else at


def blocks_key(blocks: Sequence[Block]) -> str:
    """Digest of a prefix's blocks (paths and bytes): the key of a managed cache entry's content."""
    h = hashlib.sha256()
    for block in blocks:
        h.update(block.path.encode() + b"\0" + block.digest)
    return h.hexdigest()


class Piece:
    """One top-level field value or one content, with its JSON text as sent; shared between the
    calls that send the same text."""

    __slots__ = ("_digest", "reusable", "text", "value")

    def __init__(self, text: str, value: Any) -> None:
        self.text = text
        self.value = value
        self.reusable = text.startswith(("{", "[", '"'))
        """Equal text at a place in a body is this value: an object, array or string ends where its
        text ends (a number could continue: ``1`` / ``12``)."""
        self._digest: str | None = None

    @property
    def digest(self) -> str:
        """`content_digest` of the value, computed once."""
        if self._digest is None:
            self._digest = content_digest(self.value)
        return self._digest


@dataclass(slots=True)
class StablePrefix:
    """The system instruction, tools and tool config of a body, as blocks and as a cache key."""

    fields: dict[str, Any]
    blocks: list[Block]
    base_key: str
    head_fixed: tuple[bytes, ...] | None = None
    """`_google_cache.conversation_head`'s digests of these blocks, once computed (shared, like the
    prefix, by the calls that send it)."""


class WireBody:
    """A decoded request body: ``body`` equals ``json.loads`` of the bytes sent."""

    __slots__ = ("_prefix", "body", "contents", "head", "members", "size", "unique_keys")

    def __init__(
        self,
        body: dict[str, Any],
        members: tuple[tuple[str, Piece | None], ...],
        contents: tuple[Piece, ...] | None,
        head: bytes,
        size: int,
        unique_keys: bool,
    ) -> None:
        self.body = body
        self.members = members
        """Top-level fields in wire order; ``None`` stands for ``contents`` held piece by piece."""
        self.contents = contents
        """The pieces of ``contents`` when it is a JSON array, else None."""
        self.head = head
        """The bytes up to the end of the last content (empty if the next body cannot resume here)."""
        self.size = size
        """Bytes and characters held: what `BodyHistory` bounds."""
        self.unique_keys = unique_keys
        self._prefix: StablePrefix | None = None

    def member(self, key: str) -> Piece | None:
        for name, piece in self.members:
            if name == key:
                return piece
        return None

    def prefix(self) -> StablePrefix:
        """The stable prefix (`prefix_blocks`), computed once per distinct prefix text."""
        if self._prefix is None:
            fields = {k: self.body[k] for k in PREFIX_FIELDS if self.body.get(k) is not None}
            blocks = prefix_blocks(fields)
            self._prefix = StablePrefix(fields, blocks, blocks_key(blocks))
        return self._prefix

    def opening(self) -> tuple[list[Any], tuple[str, ...]]:
        """The contents before the first model turn, and their digests."""
        if self.contents is None:
            contents = self.body.get("contents")
            run = leading_user_run(contents if isinstance(contents, list) else [])
            return run, tuple(content_digest(c) for c in run)
        run = leading_user_run(self.body["contents"])
        return run, tuple(piece.digest for piece in self.contents[: len(run)])

    def rewritten(self, cache_name: str, leading: int) -> bytes:
        """`rewrite_body` of ``body`` as bytes, spliced from the sent text where it can be: the
        same JSON as ``json.dumps(rewrite_body(...))`` (the same bytes for a body the SDK wrote)."""
        if self.contents is None or not self.unique_keys:
            return json.dumps(rewrite_body(self.body, cache_name, leading)).encode()
        parts: list[str] = []
        for key, piece in self.members:
            if key in PREFIX_FIELDS:
                continue
            if piece is None:
                parts.append('"contents": [' + ", ".join(p.text for p in self.contents[leading:]) + "]")
            elif key == "cachedContent":  # the key keeps its place, as in a dict
                parts.append(f'"cachedContent": {json.dumps(cache_name)}')
            else:
                parts.append(f"{json.dumps(key)}: {piece.text}")
        if self.member("cachedContent") is None:
            parts.append(f'"cachedContent": {json.dumps(cache_name)}')
        return ("{" + ", ".join(parts) + "}").encode()


class _Parse:
    """The decoding of one body's text (or of the text after a previous body's head): a small
    recursive-descent parser for the top-level object and ``contents``, the C scanner for values."""

    def __init__(self, text: str, previous: WireBody | None, *, resumed: bool = False) -> None:
        self.text = text
        self.before = dict(previous.members) if previous is not None else {}
        self.before_contents: Sequence[Piece] = ()
        if previous is not None and previous.contents is not None and not resumed:
            self.before_contents = previous.contents
        self.body: dict[str, Any] = {}
        self.members: list[tuple[str, Piece | None]] = []
        self.pieces: list[Piece] | None = None
        self.values: list[Any] = []
        self.head_end = -1
        """Where the last content parsed in ``text`` ends (-1: none in this text)."""

    def object(self, at: int) -> int:
        at = _skip(self.text, at + 1)
        if self.text.startswith("}", at):
            return at + 1
        return self.object_rest(self.member(at))

    def object_rest(self, at: int) -> int:
        return self._rest(at, "}", self.member)

    def _rest(self, at: int, close: str, item: Callable[[int], int]) -> int:
        """After an object's member or an array's element: the next ones, up to ``close``."""
        text = self.text
        while True:
            delimiter = _DELIMITER.match(text, at)
            if delimiter is None or delimiter.group(1) not in (",", close):
                raise ValueError(f"expected ',' or '{close}' at {at}")
            if delimiter.group(1) == close:
                return delimiter.end()
            at = item(delimiter.end())

    def member(self, at: int) -> int:
        text = self.text
        simple = _KEY.match(text, at)
        if simple is not None:
            key, at = simple.group(1), simple.end()
        else:  # a key with escapes
            if not text.startswith('"', at):
                raise ValueError(f"expected a key at {at}")
            key, at = _scan(text, at)
            at = _skip(text, at)
            if not text.startswith(":", at):
                raise ValueError(f"expected ':' at {at}")
            at = _skip(text, at + 1)
        if key == "contents" and text.startswith("[", at):
            self.pieces, self.values, self.head_end = [], [], -1
            self.members.append((key, None))
            self.body[key] = self.values
            at = _skip(text, at + 1)
            if text.startswith("]", at):
                return at + 1
            return self.array_rest(self.element(at))
        piece = self.before.get(key)
        if piece is not None and piece.reusable and text.startswith(piece.text, at):
            at += len(piece.text)
        else:
            value, end = _scan(text, at)
            piece, at = Piece(text[at:end], value), end
        self.members.append((key, piece))
        self.body[key] = piece.value
        return at

    def element(self, at: int) -> int:
        """One content, the previous call's piece if its text is here."""
        assert self.pieces is not None
        index = len(self.pieces)
        old = self.before_contents[index] if index < len(self.before_contents) else None
        if old is not None and old.reusable and self.text.startswith(old.text, at):
            piece, at = old, at + len(old.text)
        else:
            value, end = _scan(self.text, at)
            piece, at = Piece(self.text[at:end], value), end
        self.pieces.append(piece)
        self.values.append(piece.value)
        self.head_end = at
        return at

    def array_rest(self, at: int) -> int:
        return self._rest(at, "]", self.element)

    def finish(self, at: int, previous: WireBody | None, head: bytes, size: int) -> WireBody:
        if _skip(self.text, at) != len(self.text):
            raise ValueError(f"extra data at {at}")
        unique = len(self.members) == len(self.body)
        contents = tuple(self.pieces) if self.pieces is not None else None
        if any(k == "contents" and p is not None for k, p in self.members):
            contents = None  # a later ``contents`` that is not an array replaced the array
        if not unique or not contents or not contents[-1].reusable:
            head = b""
        wire = WireBody(self.body, tuple(self.members), contents, head, size + len(head), unique)
        if previous is not None and previous._prefix is not None and unique and previous.unique_keys:
            mine = dict(self.members)
            if all(mine.get(k) is self.before.get(k) for k in PREFIX_FIELDS):
                wire._prefix = previous._prefix
        return wire


def _byte_length(text: str, chars: int) -> int:
    """UTF-8 bytes of ``text[:chars]``."""
    return chars if text.isascii() else len(text[:chars].encode("utf-8", "surrogatepass"))


def _resume(content: bytes, previous: WireBody) -> WireBody:
    """Decode a body that starts with ``previous.head``: only the text after it is read."""
    start = len(previous.head)
    tail = content[start:].decode("utf-8", "surrogatepass")
    parse = _Parse(tail, previous, resumed=True)
    for key, piece in previous.members:
        if piece is None:
            break
        parse.members.append((key, piece))
        parse.body[key] = piece.value
    assert previous.contents is not None
    parse.pieces, parse.values = list(previous.contents), list(previous.body["contents"])
    parse.members.append(("contents", None))
    parse.body["contents"] = parse.values
    at = parse.object_rest(parse.array_rest(0))
    head = previous.head
    if parse.head_end >= 0:  # new contents: the head now ends after the last of them
        head = content[: start + _byte_length(tail, parse.head_end)]
    return parse.finish(at, previous, head, len(content))


def _fallback(text: str) -> WireBody | None:
    """``json.loads``, for what the incremental decoder does not handle (it raises as json does)."""
    body = json.loads(text)
    if not isinstance(body, dict):
        return None
    members = tuple((k, Piece("", v)) for k, v in body.items())  # no text: never reused
    return WireBody(body, members, None, b"", len(text), False)


def decode_body(content: bytes, previous: WireBody | None = None) -> WireBody | None:
    """``content`` decoded as ``json.loads`` would (None if not a JSON object), reusing what
    ``previous`` decoded where the text is unchanged. Raises ``ValueError`` for invalid JSON."""
    if previous is not None and previous.head and content.startswith(previous.head):
        try:
            return _resume(content, previous)
        except (ValueError, StopIteration, RecursionError):
            pass
    encoding = json.detect_encoding(content)
    text = content.decode(encoding, "surrogatepass")
    at = _skip(text, 0)
    if not text.startswith("{", at):
        return _fallback(text)
    try:
        parse = _Parse(text, previous)
        end = parse.object(at)
        head = b""
        if encoding == "utf-8" and parse.head_end > 0:
            head = content[
                : parse.head_end if len(text) == len(content) else _byte_length(text, parse.head_end)
            ]
        return parse.finish(end, previous, head, len(content))
    except (ValueError, StopIteration, RecursionError):
        return _fallback(text)


class BodyHistory:
    """The last body each conversation sent, bounded in number and in total size (LRU): by default
    32 conversations and 32 MiB of request bytes (a 150k-token conversation holds about 1.2 MiB)."""

    def __init__(self, *, max_bodies: int = 32, max_chars: int = 32 << 20) -> None:
        self._max_bodies = max_bodies
        self._max_chars = max_chars
        self._lock = threading.Lock()
        self._bodies: OrderedDict[str, WireBody] = OrderedDict()
        self._chars = 0
        self._last: WireBody | None = None

    def decode(self, conversation: str, content: bytes) -> WireBody | None:
        """Decode the body a conversation sends, next to its previous one (or, for its first
        call, the last body of any conversation: they often share the system prompt and tools)."""
        with self._lock:
            previous = self._bodies.get(conversation, self._last)
        wire = decode_body(content, previous)
        if wire is not None:
            self._remember(conversation, wire)
        return wire

    def _remember(self, conversation: str, wire: WireBody) -> None:
        with self._lock:
            old = self._bodies.pop(conversation, None)
            if old is not None:
                self._chars -= old.size
            self._last = wire
            if wire.size > self._max_chars:
                return
            self._bodies[conversation] = wire
            self._chars += wire.size
            while len(self._bodies) > self._max_bodies or self._chars > self._max_chars:
                _, dropped = self._bodies.popitem(last=False)
                self._chars -= dropped.size
