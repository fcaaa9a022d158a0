"""Conversations ("lineages"): which calls are consecutive turns of one prompt, and what they taught us.

A lineage lives in a scope, client + provider + model + task plus the request's shape (see
`lineage_key`), where requests are matched to conversations by content (`Conversations.match`:
the one sharing the longest prefix, as the provider's cache does; one rule for Anthropic, OpenAI
and Gemini), so sub-agents on one client are conversations of their own; an explicit
``bc.conversation("id")`` names the lineage instead and wins over the task (a conversation may
span several tasks).
Its `LineageState` holds what placement and drift detection learn from one call for the next:
the previous prefix fingerprint, the previous response id (for Anthropic ``diagnostics``), call
times (for the TTL choice) and where consecutive calls diverged (the volatile tail).

States live in a bounded `LineageRegistry`: at most ``max_lineages`` (least recently used dropped)
and at most ``max_bytes`` of remembered prefix bytes; past that budget the oldest lineages keep
their per-block hashes (drift is still detected) but drop the bytes used to quote excerpts.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .blocks import PrefixPrint, block_digest
from .drift import PrefixHash
from .placement import TailRule

__all__ = [
    "ConversationHead",
    "Conversations",
    "LineageRegistry",
    "LineageState",
    "PrefixShape",
    "conversation",
    "current_conversation",
    "lineage_key",
    "prefix_shape",
    "text_parts",
]

_conversation: ContextVar[str | None] = ContextVar("budgetclient_conversation", default=None)

GAP_HISTORY = 8
"""How many recent gaps between calls a lineage remembers for the TTL decision."""
MAX_PER_SCOPE = 32
"""Live conversations matched by content within one scope (client + model + task); LRU beyond."""


LATEST_FAST_PATH = True
"""Whether `Conversations.match` answers a request continuing the scope's latest conversation with
the same head without the walk; off only in tests, which check both ways match the same."""

_FINGERPRINTS: dict[tuple[bytes, ...], str] = {}
"""`ConversationHead.fingerprint` by the stable prefix's digests (one per call otherwise)."""
_FINGERPRINTS_MAX = 4_096


@dataclass(frozen=True, slots=True)
class ConversationHead:
    """A cheap fingerprint of a request's first blocks, to tell which conversation it continues.

    ``fixed``: digests of the stable prefix (the tools, then the system prompt);
    ``opening``: digests of the first two messages (what a conversation keeps while its stable
    prefix changes; two, so another agent handed the same first message is told apart once
    both have answered).
    """

    fixed: tuple[bytes, ...]
    opening: tuple[bytes, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Short hex of the stable prefix (tools and system), as the run history keys it."""
        fixed = self.fixed
        known = _FINGERPRINTS.get(fixed)  # the digests come from caches: their hashes are kept
        if known is None:
            known = block_digest(b"".join(fixed)).hex()[:16]
            if len(_FINGERPRINTS) >= _FINGERPRINTS_MAX:
                _FINGERPRINTS.clear()
            _FINGERPRINTS[fixed] = known
        return known

    def continues(self, other: ConversationHead) -> bool:
        """Whether this request opens as ``other`` did: the same messages as far as both go."""
        depth = min(len(self.opening), len(other.opening))
        return depth > 0 and self.opening[:depth] == other.opening[:depth]

    def shared(self, other: ConversationHead) -> int:
        """Blocks of the stable prefix, then of the opening, that both heads start with."""
        n = 0
        for a, b in zip(self.fixed, other.fixed, strict=False):
            if a != b:
                return n
            n += 1
        if len(self.fixed) != len(other.fixed):
            return n
        for a, b in zip(self.opening, other.opening, strict=False):
            if a != b:
                break
            n += 1
        return n


_DIGITS = re.compile(rb"[0-9]+")
MIN_SHARED_BYTES = 1024
"""Two system prompts sharing less text than this are never one conversation's (a short common
preamble is not an edit; a prompt that short is below every provider's cacheable minimum)."""
_FIRST_CHECKPOINT = 64


@dataclass(frozen=True, slots=True)
class PrefixShape:
    """What tells an edited stable prefix from another agent's, for a request no live conversation
    shares its whole stable prefix or its opening with (`Conversations.match`).

    ``masked``: digest of the tools and system with every run of digits masked; ``system``: digest
    of the system text as sent; ``heads`` / ``tails``: digests of the first / last 64, 128, 256...
    bytes of the system text (digits masked), so how much two texts share at their start and at
    their end is known to within a factor of two without keeping either text.
    """

    masked: bytes
    system: bytes
    text_len: int
    heads: tuple[bytes, ...] = ()
    tails: tuple[bytes, ...] = ()

    def resembles(self, known: PrefixShape) -> bool:
        """The same prompt edited: equal but for numbers (a timestamp, a date, a counter), the same
        system prompt with other tools, or a system prompt that keeps at least a quarter of its
        text (and `MIN_SHARED_BYTES`) at its start and end around an edit (a line added, removed
        or reworded). Two agents' own prompts share neither."""
        if self.masked == known.masked or (known.text_len and self.system == known.system):
            return True
        shared = _shared(self.heads, known.heads) + _shared(self.tails, known.tails)
        return shared >= MIN_SHARED_BYTES and 4 * shared >= max(self.text_len, known.text_len)


def _shared(a: tuple[bytes, ...], b: tuple[bytes, ...]) -> int:
    """Bytes two texts surely share, from their checkpoint digests (a lower bound, within 2x)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return _FIRST_CHECKPOINT << (n - 1) if n else 0


def _checkpoints(text: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    sizes: list[int] = []
    size = _FIRST_CHECKPOINT
    while size <= len(text):
        sizes.append(size)
        size *= 2
    return tuple(block_digest(text[:n]) for n in sizes), tuple(block_digest(text[-n:]) for n in sizes)


def text_parts(value: Any) -> list[str]:
    """The texts of a system prompt written as a string or as a list of ``{"text": ...}`` parts."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    return [part["text"] for part in value if isinstance(part, Mapping) and isinstance(part.get("text"), str)]


def prefix_shape(stable: bytes, system_texts: Iterable[str]) -> PrefixShape:
    """The `PrefixShape` of a stable prefix serialised as ``stable`` whose system prompt reads
    ``system_texts`` (its text parts, in order)."""
    text = "\x00".join(system_texts).encode()
    masked_text = _DIGITS.sub(b"0", text)
    heads, tails = _checkpoints(masked_text)
    return PrefixShape(
        masked=block_digest(_DIGITS.sub(b"0", stable)),
        system=block_digest(text),
        text_len=len(masked_text),
        heads=heads,
        tails=tails,
    )


@contextmanager
def conversation(conversation_id: str) -> Iterator[None]:
    """Treat every call inside this scope as a turn of conversation ``conversation_id``.

    Without it, calls of one client, model and task are matched to conversations by content. Scope
    follows ``contextvars`` (asyncio tasks inherit it; threads through ``copy_context``).
    """
    if not isinstance(conversation_id, str) or not conversation_id:
        raise ValueError(
            f"bc.conversation() needs a non-empty string id, got {conversation_id!r}; "
            'e.g. bc.conversation(f"ticket-{ticket.id}")'
        )
    token = _conversation.set(conversation_id)
    try:
        yield
    finally:
        _conversation.reset(token)


def current_conversation() -> str | None:
    """The id of the innermost ``bc.conversation`` scope, or None."""
    return _conversation.get()


def lineage_key(
    client_key: str,
    provider: str,
    model: str,
    task_id: str | None,
    conversation: str | None,
    shape: str = "",
) -> str:
    """Stable key of the lineage a call belongs to; an explicit conversation wins over the task.

    ``shape`` names what makes a request read a cache entry of its own as a whole, besides the
    model: an output format (``parse()`` helpers), the caller's own cache key, a compaction
    request. Requests of another shape are another conversation, never drift of this one: a
    ``parse()`` between two plain calls of one conversation leaves both comparisons intact.
    """
    scope = f"conversation:{conversation}" if conversation is not None else f"task:{task_id or '-'}"
    key = f"{provider}|{model}|{client_key}|{scope}"
    return f"{key}|shape:{shape}" if shape else key


class Built(Protocol):
    """What a provider keeps of its previous request, sized for the registry's byte budget."""

    @property
    def stored_bytes(self) -> int: ...


@dataclass(eq=False)
class LineageState:
    """Mutable memory of one conversation; guard every read-modify-write with ``lock``."""

    key: str
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    prefix: PrefixPrint | None = None
    """Fingerprint of the previous call's blocks, as sent (per-block hashes, optionally bytes)."""
    drift_end: int = 0
    """Blocks of ``prefix`` that the next call is expected to repeat (the drift-checked region)."""
    written_end: int | None = None
    """Block count of the deepest prefix the previous call wrote or read (its cache entry end)."""
    long_end: int | None = None
    """Block count of the deepest prefix written with a 1h TTL (what survives a long pause)."""
    response_id: str | None = None
    """``id`` of the previous response, for Anthropic ``diagnostics.previous_message_id``."""
    calls: int = 0
    last_call_at: float | None = None
    gaps: list[float] = field(default_factory=list)
    """Recent gaps between calls, seconds (most recent last, at most ``GAP_HISTORY``)."""
    prior_gaps: list[float] | None = None
    """Gaps earlier runs of the same task showed (`run_history`); None until looked up."""
    tail: TailRule | None = None
    volatile_fixed: str | None = None
    """Path of a tools/system block that changed on each of the last calls (a timestamp...)."""
    ttl: Literal["5m", "1h"] | None = None
    """TTL chosen for the previous call (None before the first call or when nothing was placed)."""
    token_memo: dict[bytes, int] = field(default_factory=dict, repr=False)
    """Token counts by block digest, so each distinct block is counted once per conversation."""
    fixed_divergence: str | None = None
    """Path of the tools/system block where the previous comparison diverged, if it did there."""
    token_scale: float = 1.0
    """Reported / estimated input tokens of recent calls (corrects the minimum-length test)."""
    built: Built | None = field(default=None, repr=False)
    """The provider's build of the previous request (its values and blocks), so the next request
    is built from what changed; dropped with the prefix bytes it shares."""
    built_bytes: int = 0
    """``built.stored_bytes`` when it was remembered (what the registry accounted for it)."""
    prefix_hasher: PrefixHash | None = field(default=None, repr=False)
    """The previous call's `drift.chained_prefix_fingerprint` state, continued by an append-only call."""
    _registry: LineageRegistry | None = field(default=None, repr=False)

    def record_gap(self, now: float) -> None:
        if self.last_call_at is not None and now >= self.last_call_at:
            gap = now - self.last_call_at
            self.gaps.append(gap)
            del self.gaps[:-GAP_HISTORY]
            if self._registry is not None:
                self._registry._note_gap(self.key, gap)
        self.last_call_at = now
        self.calls += 1

    def gap_evidence(self) -> list[float]:
        """Gaps to decide the TTL on: this conversation's own once it has a few, topped up before
        that with gaps other conversations of the same client showed, and before those the gaps
        of earlier runs of the same task (`prior_gaps`), most recent last."""
        own = list(self.gaps)
        if len(own) >= 3:
            return own
        others = self._registry.recent_gaps(exclude=self.key) if self._registry is not None else []
        earlier = [*(self.prior_gaps or ()), *others][-(GAP_HISTORY - len(own)):]
        return [*earlier, *own]

    def remember(self, prefix: PrefixPrint, built: Built | None = None) -> None:
        """Keep ``prefix`` (and the provider's ``built`` request) for the next call, accounting
        their bytes; call with ``lock`` held."""
        old = self.prefix
        delta = -self.built_bytes - (old.stored_bytes if old is not None else 0)
        self.prefix = prefix
        self.built = built
        self.built_bytes = built_bytes = built.stored_bytes if built is not None else 0
        if self._registry is not None:
            self._registry._account(self, prefix.stored_bytes + built_bytes + delta)

    @property
    def stored_bytes(self) -> int:
        return (self.prefix.stored_bytes if self.prefix is not None else 0) + self.built_bytes

    def forget(self) -> None:
        """Forget the previous call's prefix (the next call starts a fresh comparison)."""
        if self._registry is not None:
            self._registry._account(self, -self.stored_bytes)
        self.prefix = None
        self.built = None
        self.built_bytes = 0
        self.written_end = self.long_end = None

    def _drop_bytes(self) -> int:
        """Forget the remembered bytes (keep the hashes), unless another thread holds this state."""
        if not self.lock.acquire(blocking=False):
            return 0
        try:
            prefix = self.prefix
            freed = self.stored_bytes
            if prefix is None or not freed:
                return 0
            self.prefix = prefix.without_bytes()
            self.built = None
            self.built_bytes = 0
            return freed
        finally:
            self.lock.release()


_Known = tuple[ConversationHead, PrefixShape | None]
"""A live conversation's last head and, once computed, its masked prefix shape."""


class Conversations:
    """Live conversations per scope, matched by content: the key of the one a request continues.

    The same rule for every provider (Anthropic, OpenAI, Gemini), so two sub-agents on one client
    and task are two conversations everywhere, and drift is reported only against the conversation
    a request continues. Bounded: `MAX_PER_SCOPE` conversations per scope, ``max_scopes`` scopes (LRU).
    """

    def __init__(self, max_scopes: int = 10_000) -> None:
        self.max_scopes = max_scopes
        self._scopes: OrderedDict[str, OrderedDict[str, _Known]] = OrderedDict()
        self._opened = 0
        self._lock = threading.Lock()

    def match(
        self, scope: str, head: ConversationHead, similar: Callable[[], PrefixShape] | None = None
    ) -> str:
        """The conversation of ``scope`` that this request continues, by content (like the cache).

        The rule, the same for Anthropic, OpenAI and Gemini:

        1. the live conversation sharing the longest prefix with ``head`` among those that share
           its whole stable prefix (tools + system): a turn of it;
        2. else the one with the same opening messages: its tools or system changed under it
           (drift, reported on it);
        3. else, for a request of at most one message (a one-shot call, or an agent's first), the
           most recent one whose stable prefix ``similar`` (`PrefixShape.resembles`) says is the
           same prompt edited: only a number differs (a timestamp), or the same system prompt
           with other tools, or a system prompt keeping a quarter of its text around an edit.
           Drift of it: a one-shot call whose prompt changed is reported and learnt;
        4. else a new conversation: the request shares no conversation's system prompt (another
           sub-agent on the client, even with the same tools), never drift of another one.

        ``similar`` runs only when no stable prefix matches. Agents whose prompts resemble as
        in 3 are joined on the second agent's first call, and told apart from their second call
        on (by their openings). The first conversation of a scope keeps the scope's key, so a
        lone one is unchanged.
        """
        with self._lock:
            heads = self._scopes.get(scope)
            if heads and LATEST_FAST_PATH:
                # the commonest call: the scope's latest conversation, continued with the same head;
                # the walk below would choose it too (the highest score, ties to the most recent)
                latest = next(reversed(heads))
                if heads[latest][0] == head:
                    self._scopes.move_to_end(scope)
                    return latest
            if heads is None:
                heads = self._scopes[scope] = OrderedDict()
                while len(self._scopes) > self.max_scopes:
                    self._scopes.popitem(last=False)
            else:
                self._scopes.move_to_end(scope)
            best: str | None = None
            best_score = -1
            stable = len(head.fixed)
            exact = False
            for key, (known, _) in reversed(heads.items()):  # most recent first: ties go to it
                score = head.shared(known)
                full = score >= stable and len(known.fixed) == stable
                if (full or head.continues(known)) and score > best_score:  # a full match scores highest
                    best, best_score, exact = key, score, full
            shape = None
            if not exact and similar is not None:
                shape = similar()
                if best is None and len(head.opening) <= 1:  # a one-shot call, or an agent's first
                    best = next((key for key, (_, known_shape) in reversed(heads.items())
                                 if known_shape is not None and shape.resembles(known_shape)), None)
            if best is None:
                if not heads:
                    best = scope
                else:
                    self._opened += 1
                    best = f"{scope}#{self._opened}"
            if shape is None and best in heads:
                shape = heads[best][1]  # the same stable prefix: the same shape
            heads[best] = (head, shape)
            heads.move_to_end(best)
            while len(heads) > MAX_PER_SCOPE:
                heads.popitem(last=False)
        return best


class LineageRegistry:
    """Thread-safe LRU of lineage states, bounded by count and by remembered prefix bytes."""

    def __init__(self, max_lineages: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_lineages < 1 or max_bytes < 0:
            raise ValueError(
                "LineageRegistry needs max_lineages >= 1 and max_bytes >= 0, "
                f"got {max_lineages=}, {max_bytes=}"
            )
        self.max_lineages = max_lineages
        self.max_bytes = max_bytes
        self._states: OrderedDict[str, LineageState] = OrderedDict()
        self._bytes = 0
        self._gaps: deque[tuple[str, float]] = deque(maxlen=4 * GAP_HISTORY)
        self.conversations = Conversations(max_lineages)
        self._lock = threading.Lock()

    def match(self, scope: str, head: ConversationHead,
              similar: Callable[[], PrefixShape] | None = None) -> LineageState:
        """The state of the conversation of ``scope`` this request continues (`Conversations.match`)."""
        return self.get(self.conversations.match(scope, head, similar))

    def get(self, key: str) -> LineageState:
        """The state of lineage ``key``, created on first use; marks it most recently used."""
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return state
            state = LineageState(key=key, _registry=self)
            self._states[key] = state
            while len(self._states) > self.max_lineages:
                _, old = self._states.popitem(last=False)
                self._bytes -= old.stored_bytes
                old._registry = None
            return state

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._states

    def recent_gaps(self, *, exclude: str | None = None) -> list[float]:
        """Gaps between calls recently seen in any lineage (but ``exclude``), oldest first."""
        with self._lock:
            return [gap for key, gap in self._gaps if key != exclude]

    def _note_gap(self, key: str, gap: float) -> None:
        with self._lock:
            self._gaps.append((key, gap))

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def _account(self, state: LineageState, delta: int) -> None:
        # Called with ``state.lock`` held. Other states' locks are only tried, never waited for,
        # so two threads accounting at once cannot deadlock; a busy state keeps its bytes for now.
        with self._lock:
            if state._registry is not self:
                return
            self._bytes += delta
            if self._bytes <= self.max_bytes:
                return
            for other in list(self._states.values()):
                if self._bytes <= self.max_bytes:
                    break
                if other is not state:
                    self._bytes -= other._drop_bytes()
            if self._bytes > self.max_bytes:
                self._bytes -= state._drop_bytes()
