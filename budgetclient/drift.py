"""Fingerprints of the cacheable prefix and explanations of what drifted.

Everything here is pure except the listener hook (`add_drift_listener` / `notify_drift`), which
lets a test suite (`budgetclient.testing.assert_cache_stable`) see every drift a client reports.
A drift is located from the bytes actually sent: the first block whose digest differs, then the
first differing byte inside it, then a best guess at the cause from the bytes around it.

What is drift, and what is not. Drift is a change inside a prefix the previous call of the same
conversation led the next one to repeat: an edited or time-stamped system prompt, a tool whose
definition changed, tools reordered, an earlier message edited, a cache parameter changed. The
SDKs' own helpers change requests between turns in ways that are not: they are a new segment
of the conversation, compared from then on, and never reported.

- Another set of tools (`starts_new_segment`: tools added, removed or replaced, by name), as
  tool runners do; the same tools reordered or redefined is drift.
- A request that stops short of the previous one (a history rewound, a new conversation that
  starts the same way): every block it sends was sent before, byte for byte.
- A request of another shape (`request_shape`: an output format added by ``parse()``, the
  caller's own cache key, a compaction request) is another conversation (`lineage.lineage_key`).
- A re-send of the same body (a retry, a fallback) repeats the prefix; another model is another
  conversation already; Anthropic: the same messages re-sent with other parameters (a fallback
  dropping ``speed``) is a re-send too.
- Providers add their own rules: a compacted history, a trailing assistant prefill.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from operator import attrgetter
from typing import Any, Literal

from ._money import usd
from ._redact import mask_secrets, masked_window
from .blocks import Block, block_digest, first_divergence, raw_bytes
from .hooks import Hooks

_DIGEST = attrgetter("digest")

__all__ = [
    "DriftCause",
    "DriftListener",
    "PrefixDrift",
    "add_drift_listener",
    "EXCERPT_FIELDS",
    "excerpt",
    "explain_drift",
    "fix_hint",
    "mask_secrets",
    "notify_drift",
    "prefix_fingerprint",
    "request_shape",
    "starts_new_segment",
]


DriftCause = Literal["timestamp", "uuid", "key-order", "whitespace", "reordered", "edited", "content"]


@dataclass(frozen=True, slots=True)
class PrefixDrift:
    """Where and why a call's cacheable prefix stopped matching the previous call's."""

    segment: str
    """Path of the first block that differs, e.g. ``"system[0].text"`` or ``"tools[3].input_schema"``."""
    offset: int
    """Byte offset of the first differing byte inside that segment's serialised bytes."""
    before: str
    """Short excerpt of the previous bytes around ``offset`` (secrets masked); in process only:
    never stored in the ledger, ``""`` when read back or with ``configure(drift_excerpts=False)``."""
    after: str
    """Short excerpt of the new bytes around ``offset``; like ``before``."""
    cause: DriftCause
    """Best guess at why the bytes changed."""
    tokens_at_risk: int
    """Estimated tokens of previously cacheable prefix that can no longer be read from cache."""
    est_extra_cost: Decimal | None
    """Estimated extra USD this call pays because of the drift (None when the model is unpriced)."""
    provider_reason: str | None = None
    """The provider's own diagnosis, when it gave one (Anthropic ``cache_miss_reason.type``...)."""
    provider_missed_tokens: int | None = None
    """Tokens the provider says missed the cache because of the change."""
    before_length: int = 0
    """Length in bytes of the segment's previous value (what ``offset`` is measured in)."""
    after_length: int = 0
    """Length in bytes of the segment's new value."""
    before_hash: str = ""
    """BLAKE2b-64 hex of the segment's previous value (``""`` when there was none): tells which
    version of a prompt was sent without storing it."""
    after_hash: str = ""
    """BLAKE2b-64 hex of the segment's new value."""

    @property
    def hint(self) -> str:
        """What to change in the calling code so this drift stops (see `fix_hint`)."""
        return fix_hint(self.cause, self.segment)

    def describe(self) -> str:
        """One line for a person; the excerpts only when this drift still carries them."""
        if self.before or self.after:
            change = f"{self.before!r} -> {self.after!r}"
        else:
            change = f"{self.before_length} -> {self.after_length} bytes"
        return (
            f"{self.segment} changed at byte {self.offset} ({self.cause}): {change}; "
            f"~{self.tokens_at_risk} tokens at risk"
            + (f", ~{usd(self.est_extra_cost)} extra" if self.est_extra_cost is not None else "")
            + f". Fix: {self.hint}"
        )

    def without_excerpts(self) -> PrefixDrift:
        """This drift with no prompt text: what a ledger stores and ``drift_excerpts=False`` shows."""
        return self if not (self.before or self.after) else replace(self, before="", after="")


EXCERPT_FIELDS = frozenset({"before", "after"})
"""`PrefixDrift` fields that hold prompt text (masked excerpts): never persisted."""


# --- fix hints ----------------------------------------------------------------------------------

_FIX_HINTS: dict[str, str] = {
    "timestamp": "move the date/time out of the cached prefix: after the last cache breakpoint, "
    "into the user turn (or round it to the day)",
    "uuid": "move per-request ids (request, session, trace ids) out of the cached prefix, "
    "into the user turn or the request's metadata",
    "key-order": "serialise with sorted keys (json.dumps(..., sort_keys=True)) so equal objects "
    "give equal bytes",
    "whitespace": "build the text the same way on every call (strip, normalise spaces and newlines)",
    "reordered": "send tools (and any documents in the prefix) in a fixed order, e.g. sorted by name",
    "edited": "append to the history instead of rewriting earlier messages; if you summarise, do it "
    "once and keep the summary fixed",
    "content": "keep this part identical between calls; put what changes after the last cache breakpoint",
}
_TOOLS_HINT = "define each tool once (a module-level constant) and send the same definitions every call"
_PARAM_HINT = "keep this parameter fixed within a conversation, or start a new one with bc.conversation(...)"
_SECTIONS = ("system", "tools", "messages", "contents", "input", "instructions")


def fix_hint(cause: str, segment: str) -> str:
    """One imperative line: what to change so a drift of ``cause`` in ``segment`` stops.

    Depends only on the cause and the segment path, so a report can give it for drifts read back
    from the ledger (which keeps no excerpts).
    """
    if cause == "content":
        root = re.split(r"[\[.]", segment, maxsplit=1)[0]
        if root == "tools":
            return _TOOLS_HINT
        if root not in _SECTIONS:
            return _PARAM_HINT
    return _FIX_HINTS.get(cause, _FIX_HINTS["content"])


# --- listeners --------------------------------------------------------------------------------

DriftListener = Callable[[PrefixDrift], None]

_drift_listeners: Hooks[None, PrefixDrift] = Hooks("cache.drift_listener_failed")


def add_drift_listener(callback: DriftListener) -> Callable[[], None]:
    """Call ``callback(drift)`` for every drift a client reports; returns a function that removes it.

    Used by `budgetclient.testing.assert_cache_stable`; listeners run on the calling thread and
    must be quick. A listener that raises is logged and skipped, never breaking the call.
    """
    return _drift_listeners.add(callback)


def notify_drift(drift: PrefixDrift) -> None:
    """Hand ``drift`` to every listener (provider middleware calls this once per reported drift)."""
    _drift_listeners.run(drift)


# --- fingerprints -----------------------------------------------------------------------------


def prefix_fingerprint(blocks: Sequence[Block], params: Sequence[tuple[str, int, bytes]] = ()) -> str:
    """Hex fingerprint of a prefix from its per-block digests (each block hashed once, when built)."""
    return chained_prefix_fingerprint(blocks, len(blocks), params)[0]


PrefixHash = tuple[int, tuple[tuple[str, int, bytes], ...], "hashlib.blake2b"]
"""`chained_prefix_fingerprint`'s state: blocks hashed, the parameters hashed before them, and the
BLAKE2b object after them."""


def chained_prefix_fingerprint(
    blocks: Sequence[Block],
    cut: int,
    params: Sequence[tuple[str, int, bytes]],
    base: PrefixHash | None = None,
) -> tuple[str, PrefixHash]:
    """`prefix_fingerprint` of ``blocks[:cut]`` (BLAKE2b of ``p`` + name + NUL + digest of each
    parameter placed before the cut, then ``b`` + digest of each block), and the state to continue
    from on the next call.

    ``base``: the state a previous call left, when ``blocks`` start with the very blocks it hashed
    (an append-only call): only the blocks after them are hashed, the same input byte for byte."""
    included = tuple(p for p in params if p[1] <= cut) if params else ()
    count = base[0] if base is not None else -1
    if base is None or base[1] != included or not 0 < count <= cut:
        h = hashlib.blake2b(digest_size=16)
        for name, _, data in included:
            h.update(b"p" + name.encode() + b"\0" + block_digest(data))
        count = 0
    else:
        h = base[2].copy()
    if cut > count:
        h.update(b"b" + b"b".join(map(_DIGEST, blocks[count:cut])))
    return h.hexdigest(), (cut, included, h)


def request_shape(fields: Sequence[tuple[str, Any]]) -> str:
    """A short name for the ``(field, value)`` pairs that make a request read a cache entry of
    its own as a whole (see `lineage.lineage_key`); ``""`` when there are none (the usual case)."""
    present = [(name, value) for name, value in fields if value is not None]
    if not present:
        return ""
    return hashlib.blake2b(raw_bytes(present), digest_size=8).hexdigest()


def starts_new_segment(previous: Sequence[Block], current: Sequence[Block]) -> bool:
    """Whether ``current`` offers the model another set of tools than ``previous`` (tools added,
    removed or replaced, by name): a tool runner changing what the model may call, not drift.

    The same tools reordered, or one of them with an edited definition, is still drift. A
    conversation whose remembered bytes were dropped (`lineage.LineageRegistry`'s byte budget)
    has no names to compare: there, only tools added or removed with the others unchanged count.
    """
    old_tools = [block for block in previous if block.section == "tools"]
    new_tools = [block for block in current if block.section == "tools"]
    if all(block.raw for block in old_tools) and all(block.raw for block in new_tools):
        return set(map(_tool_name, old_tools)) != set(map(_tool_name, new_tools))
    old, new = [block.digest for block in old_tools], [block.digest for block in new_tools]
    if len(old) == len(new):
        return False
    short, long = (old, new) if len(old) < len(new) else (new, old)
    remaining = iter(long)
    return all(digest in remaining for digest in short)  # a subsequence: ``in`` consumes the iterator


def _tool_name(block: Block) -> str:
    """A tool's identity: its ``name`` (Anthropic, Responses, Gemini declarations), its
    ``function.name`` (Chat Completions), else its ``type`` or only key (built-in tools)."""
    value = _parse(block.raw)
    if isinstance(value, dict):
        function = value.get("function")
        name = value.get("name") or (function.get("name") if isinstance(function, dict) else None)
        if isinstance(name, str):
            return name
        kind = value.get("type")
        if isinstance(kind, str):
            return kind
        if len(value) == 1:
            return f"{block.path}:{next(iter(value))}"
    return block.path + ":" + block.digest.hex()


# --- excerpts ------------------------------------------------------------------------------------

EXCERPT_BEFORE = 24
EXCERPT_AFTER = 40


def _char_start(data: bytes, i: int) -> int:
    while 0 < i < len(data) and data[i] & 0xC0 == 0x80:
        i -= 1
    return i


def excerpt(data: bytes, offset: int) -> str:
    """A short window of ``data`` around ``offset``, cut on character boundaries, secrets masked.

    Secrets are found in a wider window first, so a key cut by the excerpt's edge is still masked.
    """
    if not data:
        return ""
    lo = _char_start(data, max(offset - EXCERPT_BEFORE, 0))
    hi = _char_start(data, min(offset + EXCERPT_AFTER, len(data)))
    return ("…" if lo > 0 else "") + masked_window(data, lo, hi) + ("…" if hi < len(data) else "")


# --- explaining a divergence --------------------------------------------------------------------

_UUID = re.compile(
    rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\b[0-9a-f]{32}\b"
)
_MONTH = rb"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_TIMESTAMP = re.compile(
    rb"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    rb"|\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[AaPp]\.?[Mm]\.?)?"
    rb"|\b1[5-9]\d{8}(?:\d{3})?(?:\.\d+)?\b"
    rb"|\b\d{1,2}/\d{1,2}/\d{2,4}\b"
    rb"|(?i:\b" + _MONTH + rb"\s+\d{1,2}(?:st|nd|rd|th)?(?:,?\s+\d{4})?)"
    rb"|(?i:\b\d{1,2}\s+" + _MONTH + rb"\s+\d{4})"
    rb"|(?i:\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b)"
)
_WHITESPACE = re.compile(r"\s+")


def _covers(pattern: re.Pattern[bytes], data: bytes, offset: int) -> bool:
    return any(m.start() <= offset <= m.end() and m.end() > m.start() for m in pattern.finditer(data))


_INSERT_SLACK = 48
"""Bytes of words around an inserted value ("Today is ...") still counted as inserting that value."""


def _changed_spans(old: bytes, new: bytes, offset: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The differing middle of ``old`` and ``new``: after the common prefix, before the common suffix."""
    limit = min(len(old), len(new)) - offset
    suffix = _common_prefix(old[::-1][:limit], new[::-1][:limit])
    return (offset, len(old) - suffix), (offset, len(new) - suffix)


def _mostly(pattern: re.Pattern[bytes], data: bytes, span: tuple[int, int]) -> bool:
    """Whether values matching ``pattern`` make up the changed ``span`` of ``data``, but for a few words."""
    start, end = span
    if end <= start:
        return False
    inside = sum(min(m.end(), end) - max(m.start(), start) for m in pattern.finditer(data)
                 if m.end() > start and m.start() < end and m.end() > m.start())
    return inside > 0 and (end - start) - inside <= _INSERT_SLACK


def _squash(value: Any) -> Any:
    """``value`` with all whitespace removed from its strings (JSON structure kept)."""
    if isinstance(value, str):
        return _WHITESPACE.sub("", value)
    if isinstance(value, list):
        return [_squash(v) for v in value]
    if isinstance(value, dict):
        return {k: _squash(v) for k, v in value.items()}
    return value


def _value_bytes(value: Any) -> tuple[bytes, bool]:
    if isinstance(value, str):
        return value.encode(), True
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode(), False


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _locate(old: Block | None, new: Block | None) -> tuple[str, bytes, bytes, bool]:
    """The segment path, the old and new bytes the offset is measured in, and whether they are text.

    Tools and system blocks are narrowed to the first top-level field whose value changed
    (``"tools[3].input_schema"``, ``"system[0].text"``); a text value is measured in its UTF-8
    text, any other value in its compact JSON as sent. Message blocks are named whole
    (``"messages[4].content[0]"``, measured in the block's compact JSON); string shorthand
    (``"system"``, ``"messages[4].content"``) is measured in its text.
    """
    if old is None or new is None:
        block = new if new is not None else old
        assert block is not None
        return block.path, old.raw if old else b"", new.raw if new else b"", False
    if old.path != new.path or not old.raw or not new.raw:
        return new.path, old.raw, new.raw, False
    if old.shorthand and new.shorthand:
        before, after = _parse(old.raw), _parse(new.raw)
        if isinstance(before, dict) and isinstance(after, dict):
            text_before, text_after = before.get("text"), after.get("text")
            if isinstance(text_before, str) and isinstance(text_after, str):
                return new.path, text_before.encode(), text_after.encode(), True
    if new.section != "messages":
        before, after = _parse(old.raw), _parse(new.raw)
        if isinstance(before, dict) and isinstance(after, dict) and set(before) == set(after):
            for key, value in after.items():
                old_bytes, is_text = _value_bytes(before[key])
                new_bytes, _ = _value_bytes(value)
                if old_bytes != new_bytes:
                    return f"{new.path}.{key}", old_bytes, new_bytes, is_text and isinstance(before[key], str)
    return new.path, old.raw, new.raw, False


def _reordered(previous: Sequence[Block], current: Sequence[Block], index: int) -> bool:
    if index >= len(previous) or index >= len(current):
        return False
    old, new = previous[index], current[index]
    if old.section != new.section:
        return False
    before = {b.digest for b in previous if b.section == old.section}
    after = {b.digest for b in current if b.section == new.section}
    return new.digest in before and old.digest in after


def _cause(
    old: Block | None, new: Block | None, old_bytes: bytes, new_bytes: bytes, is_text: bool, offset: int
) -> DriftCause:
    if old_bytes and new_bytes:
        if is_text:
            before: Any = old_bytes.decode("utf-8", errors="replace")
            after: Any = new_bytes.decode("utf-8", errors="replace")
        else:
            before, after = _parse(old_bytes), _parse(new_bytes)
            if before is not None and before == after:
                return "key-order"
        if before is not None and after is not None and _squash(before) == _squash(after):
            return "whitespace"
        if _covers(_UUID, old_bytes, offset) or _covers(_UUID, new_bytes, offset):
            return "uuid"
        if _covers(_TIMESTAMP, old_bytes, offset) or _covers(_TIMESTAMP, new_bytes, offset):
            return "timestamp"
    if old_bytes or new_bytes:
        # a date or id inserted (or removed) next to unchanged text: the change is mostly that value
        old_changed, new_changed = _changed_spans(old_bytes, new_bytes, offset)
        for cause, pattern in (("uuid", _UUID), ("timestamp", _TIMESTAMP)):
            if _mostly(pattern, old_bytes, old_changed) or _mostly(pattern, new_bytes, new_changed):
                return cause  # type: ignore[return-value]
    if old is not None and new is not None and new.section == "messages" and old.path == new.path:
        return "edited"
    return "content"


def explain_drift(
    previous: Sequence[Block],
    current: Sequence[Block],
    *,
    region_end: int | None = None,
    previous_params: Sequence[tuple[str, int, bytes]] = (),
    current_params: Sequence[tuple[str, int, bytes]] = (),
    extra_cost: Callable[[int], Decimal | None] | None = None,
    excerpts: bool = True,
) -> PrefixDrift | None:
    """Where and why ``current`` stopped repeating the first ``region_end`` blocks of ``previous``.

    None when it repeats them (appending is not drift), or when ``current`` starts a new segment
    (`starts_new_segment`). Offsets are computed only here, once a digest differs.
    ``tokens_at_risk`` is the part of the previous prefix from the change on; ``extra_cost(tokens)``
    prices it (None when unknown). ``excerpts=False`` (``configure(drift_excerpts=False)``) quotes
    no prompt text at all: lengths and hashes only.
    """
    end = len(previous) if region_end is None else max(0, min(region_end, len(previous)))
    index = first_divergence(previous[:end], current)
    param = _param_change(previous_params, current_params, min(index, end))
    if param is None and (index >= end or index >= len(current)):
        return None  # appended to, or stopped short of, what was sent: no byte sent before differs
    if index < end and starts_new_segment(previous, current):
        return None
    if param is not None:
        name, position, old_bytes, new_bytes = param
        at_risk = sum(block.tokens for block in previous[position:end])
        cost = extra_cost(at_risk) if extra_cost else None
        return _drift(name, old_bytes, new_bytes, "content", at_risk, cost, excerpts)
    old = previous[index] if index < len(previous) else None
    new = current[index] if index < len(current) else None
    at_risk = sum(block.tokens for block in previous[index:end])
    cost = extra_cost(at_risk) if extra_cost else None
    if _reordered(previous, current, index):
        assert new is not None and old is not None
        return _drift(new.path, old.raw, new.raw, "reordered", at_risk, cost, excerpts)
    segment, old_bytes, new_bytes, is_text = _locate(old, new)
    if old is not None and new is not None and old.path != new.path:
        # a block was removed or inserted at a section boundary: name the section that changed size
        section = old.section
        shrank = sum(b.section == section for b in current) < sum(b.section == section for b in previous)
        segment = old.path if shrank else new.path
    cause = _cause(old, new, old_bytes, new_bytes, is_text, _common_prefix(old_bytes, new_bytes))
    return _drift(segment, old_bytes, new_bytes, cause, at_risk, cost, excerpts)


def _drift(
    segment: str,
    old_bytes: bytes,
    new_bytes: bytes,
    cause: DriftCause,
    tokens_at_risk: int,
    cost: Decimal | None,
    excerpts: bool,
) -> PrefixDrift:
    offset = _common_prefix(old_bytes, new_bytes)
    return PrefixDrift(
        segment=segment,
        offset=offset,
        before=excerpt(old_bytes, offset) if excerpts else "",
        after=excerpt(new_bytes, offset) if excerpts else "",
        cause=cause,
        tokens_at_risk=tokens_at_risk,
        est_extra_cost=cost,
        before_length=len(old_bytes),
        after_length=len(new_bytes),
        before_hash=_value_hash(old_bytes),
        after_hash=_value_hash(new_bytes),
    )


def _value_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest() if data else ""


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on slices: fast for long blocks (memcmp, not a Python loop)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _param_change(
    previous: Sequence[tuple[str, int, bytes]], current: Sequence[tuple[str, int, bytes]], limit: int
) -> tuple[str, int, bytes, bytes] | None:
    """The first cache-relevant parameter (at a position before ``limit``) that changed."""
    old = {name: (position, data) for name, position, data in previous}
    new = {name: (position, data) for name, position, data in current}
    changed: list[tuple[int, str, bytes, bytes]] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before is not None and after is not None and before[1] == after[1]:
            continue
        positions = [entry[0] for entry in (before, after) if entry is not None]
        position = min(positions)
        if position <= limit:
            changed.append((position, name, before[1] if before else b"", after[1] if after else b""))
    if not changed:
        return None
    position, name, old_bytes, new_bytes = min(changed)
    return name, position, old_bytes, new_bytes


def drift_fields(drift: PrefixDrift) -> dict[str, Any]:
    """The log fields of a drift: where, why, lengths and hashes; never the excerpts (prompt text)."""
    return {
        "segment": drift.segment,
        "offset": drift.offset,
        "cause": drift.cause,
        "before_length": drift.before_length,
        "after_length": drift.after_length,
        "before_hash": drift.before_hash,
        "after_hash": drift.after_hash,
        "tokens_at_risk": drift.tokens_at_risk,
        "est_extra_cost": None if drift.est_extra_cost is None else str(drift.est_extra_cost),
        "provider_reason": drift.provider_reason,
    }
