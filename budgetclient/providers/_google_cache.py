"""Managed Gemini context caches: when a stable prefix moves into ``cachedContents``, and for how long.

With ``cache="auto"`` the system instruction, tools and tool config of a ``generateContent``
request (plus a large leading run of user contents repeated from the previous call of the
conversation) can be held in an explicit cache entry. The request is then rewritten on the wire:
those fields are removed (Gemini rejects them next to ``cachedContent``), the leading contents held
in the entry are dropped, and ``cachedContent`` names the entry.

Whether an entry pays is decided by ``cache_pays`` (pure): explicit caching guarantees the cache-read
rate on the prefix, which implicit caching (Gemini 2.5+) may already give for free, so the saving is
counted only on the share of the prefix implicit caching has been missing (the server's counts,
from the first repeat on; before that, what earlier runs of the task with the same prefix showed,
`run_history`, with how many calls such a run makes). Entries are content
addressed per model and shared by every conversation of the client that sends the same prefix;
their TTL is refreshed while in use, and they are deleted on ``close()`` (or interpreter exit).

Billing follows Gemini's: creation is billed as input tokens (a ``cache.create`` record); storage
per token-hour for the entry's life, from its ``createTime`` to its deletion or expiry, measured on
the server's clock (``Date`` headers) and recorded as ``cache.storage`` records, one per span of
the entry's life charged to one task; a task ending while the entry lives is billed its span as it
ends (its cost is complete then), and what follows goes to its parent task, or to no task.
Caches created by the caller with ``client.caches.create`` are metered the same way, their storage
charged until deletion or expiry.

All HTTP here is written as generators that yield ``httpx2.Request`` objects and receive the read
``httpx2.Response`` (or have the transport's exception thrown in), so one implementation serves
the sync and the async client.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx2

from .. import admission, metering, pricing
from .._log import log
from ..blocks import Block, block_digest, raw_bytes
from ..errors import BudgetExceeded
from ..estimate import estimate_request
from ..lineage import ConversationHead, PrefixShape, prefix_shape, text_parts
from ..metering import CallContext
from ..run_history import RunPrior
from ..tasks import Task
from ..tokens import encoding_for
from ..usage import CallRecord, CostBreakdown, Usage
from ._google_body import WireBody
from ._google_estimate import ContentsTally, estimate_body
from ._google_rules import (
    GeminiRoute,
    ServerClock,
    auto_ttl,
    cache_pays,
    content_digest,
    economics_for,
    expected_future_reads,
    min_cache_tokens,
    parse_rfc3339,
)

__all__ = [
    "PrefixCheck",
    "CachedContent",
    "HttpStep",
    "ManagedCaches",
    "conversation_head",
    "request_prefix_shape",
]


PROVIDER = "google"
T = TypeVar("T")
HttpStep = Generator[httpx2.Request, httpx2.Response, T]
"""A piece of work that needs HTTP: yields requests, is sent the (read) responses, returns T."""

_HOUR = Decimal(3600)
_EXPIRY_MARGIN_S = 15.0
"""An entry this close to expiry is treated as gone: a request might reach it just too late."""
_MAX_TRACKED = 1024
_CREATE_BACKOFF_S = 600.0
"""After a refused creation (too small, quota...) the same prefix is not tried again for this long."""


# -- state -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class CachedContent:
    """A ``cachedContents`` entry this client knows of, and what of its storage is billed so far."""

    name: str
    model: str
    base_key: str
    leading: tuple[str, ...]
    """Digests of the leading contents the entry holds after system instruction and tools."""
    tokens: int
    managed: bool
    """Created (and deleted) by budgetclient; False for a cache the caller created."""
    url: httpx2.URL
    headers: dict[str, str]
    create_time: float
    expire_time: float
    ttl_s: int
    accounted_until: float
    task: Task | None
    """Who pays storage accrued since ``accounted_until``: the task that used the entry last."""
    conversation: str | None = None
    uses: int = 0
    lineages: set[str] = field(default_factory=set)


@dataclass(slots=True)
class PrefixStats:
    """How often a stable prefix (per model) has been sent, and how well implicit caching did."""

    seen: int = 0
    last_seen: float | None = None
    max_gap_s: float = 0.0
    total_gap_s: float = 0.0
    gaps: int = 0
    implicit_cached: int = 0
    implicit_prompt: int = 0
    tokens: int | None = None
    refused_at: float | None = None
    raw_tokens: int | None = None
    """The prefix's uncalibrated estimate (the same fields every time: counted once)."""

    @property
    def mean_gap_s(self) -> float:
        return self.total_gap_s / self.gaps if self.gaps else 0.0

    @property
    def implicit_hit_share(self) -> float:
        return min(self.implicit_cached / self.implicit_prompt, 1.0) if self.implicit_prompt else 0.0


@dataclass(slots=True)
class ConversationPrefix:
    """What one conversation sent last: the prefix fingerprint and its opening contents."""

    key: str
    blocks: list[Block] | None = None
    base_key: str | None = None
    opening: tuple[str, ...] = ()
    entry: str | None = None
    contents_tally: ContentsTally = field(default_factory=ContentsTally)
    """The last count of its contents (`_server_prefix_tokens` reads only the new ones)."""


@dataclass(slots=True)
class PrefixCheck:
    """The stable prefix of one request, as found before sending."""

    route: GeminiRoute
    lineage: ConversationPrefix
    fields: dict[str, Any]
    base_key: str
    blocks: list[Block]
    previous_blocks: list[Block] | None
    previous_base_key: str | None
    opening: tuple[str, ...]
    opening_contents: list[Any]
    previous_opening: tuple[str, ...]
    contents_count: int
    contents: list[Any] = field(default_factory=list)
    """The request's contents as sent by the caller (to split the server's prompt count)."""
    prior: RunPrior | None = None
    """What earlier runs of the task showed for this prefix (`run_history`)."""
    run: tuple[str, str, str] | None = None
    """(task id, model, prefix key): this run's calls of the prefix are counted under it."""
    run_calls: int = 0
    """Calls of this prefix this run made before this one."""


def conversation_head(wire: WireBody) -> ConversationHead:
    """The request's start as a `lineage.ConversationHead` (which conversation it continues): one
    digest of the system instruction, one of the tools and tool config, one of each of the first two
    contents. Built from digests the decoded body already holds."""
    prefix = wire.prefix()
    fixed = prefix.head_fixed
    if fixed is None:
        blocks = prefix.blocks
        fixed = prefix.head_fixed = tuple(
            block_digest(b"".join(b.digest for b in blocks if b.section == section))
            for section in ("system", "tools")
            if any(b.section == section for b in blocks)
        )
    if wire.contents is not None:
        opening = tuple(piece.digest.encode() for piece in wire.contents[:2])
    else:
        contents = wire.body.get("contents")
        listed = contents[:2] if isinstance(contents, list) else []
        opening = tuple(content_digest(c).encode() for c in listed)
    return ConversationHead(fixed=fixed, opening=opening)


def request_prefix_shape(wire: WireBody) -> PrefixShape:
    """The system instruction and tools as a `lineage.PrefixShape` (`lineage.Conversations.match`)."""
    fields = wire.prefix().fields
    system = fields.get("systemInstruction")
    texts = text_parts(system.get("parts") if isinstance(system, Mapping) else system)
    return prefix_shape(raw_bytes(fields), texts)


def _bounded_get(store: OrderedDict[Any, T], key: Any, factory: Callable[[], T]) -> T:
    value = store.get(key)
    if value is None:
        value = store[key] = factory()
        while len(store) > _MAX_TRACKED:
            store.popitem(last=False)
    else:
        store.move_to_end(key)
    return value


_AUTH_HEADERS = ("x-goog-api-key", "authorization", "x-goog-user-project", "user-agent", "x-goog-api-client")


class ManagedCaches:
    """Every cache entry one instrumented client knows of, and the prefix statistics behind them."""

    def __init__(self, *, cache_ttl: str = "auto", on_entry: Callable[[], None] | None = None) -> None:
        self.cache_ttl = cache_ttl
        self._on_entry = on_entry
        self.clock = ServerClock()
        self._lock = threading.Lock()
        self._entries: dict[str, CachedContent] = {}
        self._stats: OrderedDict[tuple[str, str], PrefixStats] = OrderedDict()
        self._lineages: OrderedDict[str, ConversationPrefix] = OrderedDict()
        self._creating: set[tuple[str, str, tuple[str, ...]]] = set()
        self._runs: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self.closed = False

    # -- inspection ------------------------------------------------------------------------------
    def entries(self) -> list[CachedContent]:
        with self._lock:
            return list(self._entries.values())

    def has_managed_entries(self) -> bool:
        with self._lock:
            return any(e.managed for e in self._entries.values())

    # -- before a request ------------------------------------------------------------------------
    def check_prefix(self, route: GeminiRoute, wire: WireBody, lineage_key: str, *,
             task_id: str | None = None, prior: RunPrior | None = None) -> PrefixCheck:
        """Fingerprint the request's stable prefix, next to what the conversation sent last;
        ``prior`` is what earlier runs of task ``task_id``'s name showed for this prefix."""
        prefix = wire.prefix()
        opening_contents, opening = wire.opening()
        contents = wire.body.get("contents")
        run = (task_id, route.model, prefix.base_key) if task_id is not None else None
        with self._lock:
            state = _bounded_get(self._lineages, lineage_key, lambda: ConversationPrefix(lineage_key))
            run_calls = self._runs.get(run, 0) if run is not None else 0
            check = PrefixCheck(
                route=route,
                lineage=state,
                fields=prefix.fields,
                base_key=prefix.base_key,
                blocks=prefix.blocks,
                previous_blocks=state.blocks,
                previous_base_key=state.base_key,
                opening=opening,
                opening_contents=opening_contents,
                previous_opening=state.opening,
                contents_count=len(contents) if isinstance(contents, list) else 0,
                contents=contents if isinstance(contents, list) else [],
                prior=prior,
                run=run,
                run_calls=run_calls,
            )
        return check

    def commit(self, check: PrefixCheck) -> None:
        """The request is going out: its prefix becomes the one the conversation's next call is
        compared with (a request refused for drift leaves the lineage as it was)."""
        with self._lock:
            state = check.lineage
            state.blocks, state.base_key, state.opening = check.blocks, check.base_key, check.opening
            if check.run is not None:
                self._runs[check.run] = self._runs.get(check.run, 0) + 1
                self._runs.move_to_end(check.run)
                while len(self._runs) > _MAX_TRACKED:
                    self._runs.popitem(last=False)

    def prefix_tokens(self, check: PrefixCheck) -> int:
        """Tokens of the stable prefix: the size of the entry once known, else an offline estimate."""
        stats = self._stats_for(check)
        if stats.tokens is not None:
            return stats.tokens

        tokens = estimate_request(PROVIDER, check.fields, check.route.model).tokens if check.fields else 0
        stats.tokens = tokens
        return tokens

    def previous_prefix_tokens(self, check: PrefixCheck) -> int:
        """Tokens of the prefix the conversation sent before this call (what a drift puts at risk)."""
        with self._lock:
            stats = self._stats.get((check.route.model, check.previous_base_key or ""))
        if stats is not None and stats.tokens is not None:
            return stats.tokens
        return sum(len(block.raw) for block in check.previous_blocks or ()) // 4

    def _stats_for(self, check: PrefixCheck) -> PrefixStats:
        with self._lock:
            return _bounded_get(self._stats, (check.route.model, check.base_key), PrefixStats)

    def _inherit(self, check: PrefixCheck, replaced: CachedContent) -> None:
        """A conversation's cached prefix changed after it proved its reuse: let the new prefix
        start from the old one's history, so its entry replaces the old one at once. (A prefix
        that changes on every call, e.g. a timestamp, never proves reuse and is never cached.)"""
        if replaced.uses < 2:
            return
        stats = self._stats_for(check)
        with self._lock:
            old = self._stats.get((replaced.model, replaced.base_key))
            if old is None or stats.seen:
                return
            stats.seen, stats.last_seen = old.seen, old.last_seen
            stats.max_gap_s, stats.total_gap_s, stats.gaps = old.max_gap_s, old.total_gap_s, old.gaps
            stats.implicit_cached, stats.implicit_prompt = old.implicit_cached, old.implicit_prompt

    def acquire(self, check: PrefixCheck, request: httpx2.Request) -> HttpStep[CachedContent | None]:
        """The live entry this request should read (created or refreshed if that pays), or None."""
        retired: list[tuple[CachedContent, float]] = []
        headers = {k: v for k, v in request.headers.items() if k.lower() in _AUTH_HEADERS}
        now = self.clock.now()
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.expire_time - now <= _EXPIRY_MARGIN_S:
                    retired.append((entry, entry.expire_time))
                    del self._entries[entry.name]
            entry_found = self._match(check)
            previous = self._entries.get(check.lineage.entry) if check.lineage.entry else None
        self._publish_retired(retired)
        if previous is not None and previous is not entry_found:
            if previous.base_key != check.base_key:
                self._inherit(check, previous)
            yield from self._leave(previous, check.lineage.key)
        if entry_found is not None:
            entry_found.headers = headers
            stale = entry_found.expire_time - now < self._refresh_margin(check, entry_found)
            if entry_found.managed and stale and not (yield from self._refresh(entry_found)):
                return None
            with self._lock:
                entry_found.lineages.add(check.lineage.key)
                check.lineage.entry = entry_found.name
            return entry_found
        with self._lock:
            check.lineage.entry = None
        return (yield from self._maybe_create(check, request, headers))

    def _refresh_margin(self, check: PrefixCheck, entry: CachedContent) -> float:
        """Refresh when less than half the TTL plus a typical gap is left, so the entry outlives
        the gap to the next call (the server time known here may be a gap old)."""
        return entry.ttl_s / 2 + self._stats_for(check).mean_gap_s

    def _match(self, check: PrefixCheck) -> CachedContent | None:
        """The managed entry holding this request's prefix, preferring the one holding most contents."""
        best: CachedContent | None = None
        for entry in self._entries.values():
            if not entry.managed or entry.model != check.route.model or entry.base_key != check.base_key:
                continue
            n = len(entry.leading)
            if n and (n >= check.contents_count or check.opening[:n] != entry.leading):
                continue
            if best is None or n > len(best.leading):
                best = entry
        return best

    def _leading_to_hold(self, check: PrefixCheck) -> int:
        """How many opening contents to put in a new entry: those repeated from the previous call,
        if they alone reach the model's minimum (small openings would tie the entry to one
        conversation for no gain), always leaving at least one content in the request; none when
        another conversation's entry already holds the prefix (no per-conversation copies)."""
        common = 0
        for now_digest, before in zip(check.opening, check.previous_opening, strict=False):
            if now_digest != before:
                break
            common += 1
        common = min(common, check.contents_count - 1)
        if common <= 0:
            return 0
        with self._lock:  # another conversation's entry holds this prefix: one more copy of it per
            shared = any(  # conversation costs more than the opening saves; share a prefix entry
                e.managed and e.model == check.route.model and e.base_key == check.base_key
                for e in self._entries.values()
            )
        if shared:
            return 0

        tokens = estimate_request(
            PROVIDER, {"contents": check.opening_contents[:common]}, check.route.model
        ).tokens
        return common if tokens >= min_cache_tokens(check.route.model) else 0

    def _maybe_create(
        self, check: PrefixCheck, request: httpx2.Request, headers: dict[str, str]
    ) -> HttpStep[CachedContent | None]:
        if not check.fields:
            return None
        model = check.route.model
        stats = self._stats_for(check)
        tokens = self.prefix_tokens(check)
        now = self.clock.now()
        if stats.refused_at is not None and now - stats.refused_at < _CREATE_BACKOFF_S:
            return None
        leading = self._leading_to_hold(check)
        if leading:
            tokens += estimate_request(PROVIDER, {"contents": check.opening_contents[:leading]}, model).tokens
        if tokens < min_cache_tokens(model):
            return None
        economics = economics_for(model)
        if economics is None:
            return None
        prior = check.prior or RunPrior()
        ttl = auto_ttl(self.cache_ttl, max([stats.max_gap_s, *prior.gaps]))
        future_reads = expected_future_reads(
            stats.seen, run_calls=check.run_calls, calls_per_run=prior.calls_per_run
        )
        mean_gap = stats.mean_gap_s or (sum(prior.gaps) / len(prior.gaps) if prior.gaps else 0.0)
        hours = (Decimal(str(future_reads * mean_gap)) + ttl) / _HOUR
        # the server's own counts of this run once a repeat showed them, else earlier runs'
        hit_share = stats.implicit_hit_share if stats.implicit_prompt else prior.implicit_hit_share
        if not cache_pays(
            future_reads=future_reads,
            implicit_hit_share=hit_share or 0.0,
            expected_hours=hours,
            economics=economics,
        ):
            return None
        key = (model, check.base_key, check.opening[:leading])
        with self._lock:
            if key in self._creating:
                return None  # another request of the client is creating it right now
            self._creating.add(key)
        try:
            return (yield from self._create(check, request, headers, leading, ttl, tokens))
        finally:
            with self._lock:
                self._creating.discard(key)

    def _create(
        self,
        check: PrefixCheck,
        request: httpx2.Request,
        headers: dict[str, str],
        leading: int,
        ttl: int,
        estimate: int,
    ) -> HttpStep[CachedContent | None]:
        route = check.route
        body: dict[str, Any] = {
            "model": route.model_resource,
            **check.fields,
            "ttl": f"{ttl}s",
            "displayName": f"budgetclient-{check.base_key[:12]}",
        }
        if leading:
            body["contents"] = check.opening_contents[:leading]
        try:
            ctx = metering.begin_call(
                PROVIDER,
                route.model,
                "cache.create",
                estimated_input_tokens=lambda: estimate,
                conversation=check.lineage.key,
            )
        except BudgetExceeded:
            log.info("cache.skipped", provider=PROVIDER, model=route.model, reason="budget")
            return None
        create = httpx2.Request(
            "POST",
            request.url.copy_with(path=route.caches_path, query=None),
            headers={**headers, "content-type": "application/json"},
            content=json.dumps(body).encode(),
        )
        try:
            response = yield create
        except Exception as exc:
            metering.finish_call(ctx, Usage(), status="error", error=type(exc).__name__)
            return None
        except BaseException as exc:  # an interrupt or cancel: recorded, its hold given back
            admission.failed(ctx, exc)
            raise
        server_now = self.clock.observe(response.headers.get("date"))
        document = _json_or_none(response)
        if response.status_code >= 400 or not isinstance(document, Mapping) or not document.get("name"):
            self._stats_for(check).refused_at = server_now
            metering.finish_call(
                ctx,
                Usage(),
                status="error",
                http_status=response.status_code,
                error=f"HTTP {response.status_code}",
            )
            log.warning(
                "cache.create_failed",
                provider=PROVIDER,
                model=route.model,
                http_status=response.status_code,
                detail=_error_message(document),
            )
            return None
        entry = self._register(
            document,
            route,
            ctx,
            managed=True,
            server_now=server_now,
            ttl=ttl,
            base_key=check.base_key,
            leading=check.opening[:leading],
            headers=headers,
            request_url=request.url,
        )
        with self._lock:
            entry.lineages.add(check.lineage.key)
            check.lineage.entry = entry.name
        log.info(
            "cache.created",
            provider=PROVIDER,
            model=route.model,
            cache=entry.name,
            tokens=entry.tokens,
            ttl_s=ttl,
        )
        return entry

    def _register(
        self,
        document: Mapping[str, Any],
        route: GeminiRoute,
        ctx: CallContext | None,
        *,
        managed: bool,
        server_now: float,
        ttl: int,
        base_key: str,
        leading: tuple[str, ...],
        headers: dict[str, str],
        request_url: httpx2.URL,
    ) -> CachedContent:
        """Record a created entry and bill its creation (input-priced tokens)."""
        usage_metadata = document.get("usageMetadata") or {}
        tokens = usage_metadata.get("totalTokenCount") if isinstance(usage_metadata, Mapping) else None
        tokens = tokens if isinstance(tokens, int) and tokens >= 0 else 0
        name = str(document["name"])
        create_time = parse_rfc3339(document.get("createTime")) or server_now
        expire_time = parse_rfc3339(document.get("expireTime")) or server_now + ttl
        model = str(document.get("model") or route.model).rsplit("/", 1)[-1] or route.model
        entry = CachedContent(
            name=name,
            model=model,
            base_key=base_key,
            leading=leading,
            tokens=tokens,
            managed=managed,
            url=request_url.copy_with(path=f"{route.root}{name}", query=None),
            headers=headers,
            create_time=create_time,
            expire_time=expire_time,
            ttl_s=ttl,
            accounted_until=create_time,
            task=ctx.task if ctx is not None else None,
            conversation=ctx.conversation if ctx is not None else None,
        )
        if ctx is not None:
            metering.finish_call(
                ctx,
                Usage(input_tokens=tokens),
                model=model,
                http_status=200,
                metadata={"cache_name": name, "cache_tokens": tokens, "managed": managed},
            )
        with self._lock:
            self._entries[name] = entry
        if self._on_entry is not None:
            self._on_entry()
        return entry

    def _refresh(self, entry: CachedContent) -> HttpStep[bool]:
        """Extend the entry's life by its TTL; False if it turned out to be gone."""
        patch = httpx2.Request(
            "PATCH",
            entry.url.copy_with(params={"updateMask": "ttl"}),
            headers={**entry.headers, "content-type": "application/json"},
            content=json.dumps({"ttl": f"{entry.ttl_s}s"}).encode(),
        )
        try:
            response = yield patch
        except Exception:
            return True  # still alive for at least half its TTL: use it, refresh next time
        server_now = self.clock.observe(response.headers.get("date"))
        if response.status_code in (403, 404):
            self.drop(entry, at=server_now)
            return False
        document = _json_or_none(response)
        if response.status_code < 400 and isinstance(document, Mapping):
            entry.expire_time = parse_rfc3339(document.get("expireTime")) or server_now + entry.ttl_s
        return True

    def _leave(self, entry: CachedContent, lineage_key: str) -> HttpStep[None]:
        """A conversation moved to another prefix: delete the entry if nobody else reads it."""
        with self._lock:
            entry.lineages.discard(lineage_key)
            orphan = entry.managed and not entry.lineages and self._entries.get(entry.name) is entry
            if orphan:
                del self._entries[entry.name]
        if orphan:
            yield from self._delete(entry)

    def _delete(self, entry: CachedContent) -> HttpStep[None]:
        end = entry.expire_time
        try:
            response = yield httpx2.Request("DELETE", entry.url, headers=entry.headers)
            if response.status_code < 400 or response.status_code == 404:
                end = self.clock.observe(response.headers.get("date"))
            else:
                log.warning(
                    "cache.delete_failed",
                    provider=PROVIDER,
                    cache=entry.name,
                    http_status=response.status_code,
                )
        except Exception as exc:
            log.warning("cache.delete_failed", provider=PROVIDER, cache=entry.name, error=type(exc).__name__)
        log.info("cache.deleted", provider=PROVIDER, cache=entry.name)
        self._publish_retired([(entry, end)])

    def drop(self, entry: CachedContent, *, at: float | None = None) -> None:
        """Forget an entry the server no longer has (expired or deleted elsewhere)."""
        with self._lock:
            if self._entries.get(entry.name) is not entry:
                return
            del self._entries[entry.name]
        self._publish_retired([(entry, self.clock.now() if at is None else at)])

    def close(self) -> HttpStep[None]:
        """Delete every managed entry; bill each entry's storage to its deletion (or expiry)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            self.closed = True
        now = self.clock.now()
        for entry in entries:
            if entry.managed and entry.expire_time - now > 0:
                yield from self._delete(entry)
            else:  # the caller's own caches live on until they expire: that storage is owed
                self._publish_retired([(entry, entry.expire_time)])

    # -- after a response ------------------------------------------------------------------------
    def observe_call(
        self,
        check: PrefixCheck,
        entry: CachedContent | None,
        usage: Usage,
        server_time: float,
        task: Task | None,
        tally: ContentsTally | None = None,
    ) -> None:
        """Learn from one finished request: gaps, implicit hits, entry use; bill storage on task change.

        ``tally`` is the budget estimate's, if it counted this request's contents (reused here)."""
        stats = self._stats_for(check)
        server_prefix = self._server_prefix_tokens(check, usage, tally) if entry is None else 0
        with self._lock:
            if stats.last_seen is not None and server_time >= stats.last_seen:
                gap = server_time - stats.last_seen
                stats.max_gap_s = max(stats.max_gap_s, gap)
                stats.total_gap_s += gap
                stats.gaps += 1
            repeat = stats.seen > 0
            stats.seen += 1
            stats.last_seen = server_time
            if entry is None and repeat and server_prefix:
                stats.implicit_cached += min(usage.cache_read_tokens, server_prefix)
                stats.implicit_prompt += server_prefix
            if entry is not None:
                entry.uses += 1
                if entry.tokens and not entry.leading:
                    stats.tokens = entry.tokens
                switched = entry.task is not task
        if entry is not None and switched:
            self._accrue(entry, server_time)
            entry.task = task

    def _server_prefix_tokens(self, check: PrefixCheck, usage: Usage, tally: ContentsTally | None) -> int:
        """The stable prefix's size as the server counts it: its share of the request by our own
        estimate, applied to the prompt tokens the server reported. Implicit hits are judged
        against this, so an estimate off by any factor cannot make a full hit look partial."""
        if not check.fields or usage.input_tokens <= 0:
            return 0
        model = check.route.model
        stats = self._stats_for(check)
        prefix = stats.raw_tokens
        if prefix is None:
            prefix = stats.raw_tokens = estimate_request(PROVIDER, check.fields, model).raw_tokens
        if prefix <= 0:
            return 0
        rest = tally.contents_raw(check.contents, encoding_for(model).name) if tally is not None else None
        if rest is None:
            rest = estimate_body({"contents": check.contents}, model, check.lineage.contents_tally).raw_tokens
        return max(round(usage.input_tokens * prefix / (prefix + rest)), 1)

    def observe_user_cache(
        self,
        route: GeminiRoute,
        method: str,
        request_url: httpx2.URL,
        document: Any,
        server_now: float,
        ctx: CallContext | None,
    ) -> None:
        """Track a cache the caller manages through ``client.caches``: creation, TTL changes, deletion."""
        name = f"{route.parent}cachedContents/{route.cache_id}" if route.cache_id else None
        if method == "POST" and isinstance(document, Mapping) and document.get("name"):
            self._register(
                document,
                route,
                ctx,
                managed=False,
                server_now=server_now,
                ttl=0,
                base_key="",
                leading=(),
                headers={},
                request_url=request_url,
            )
            return
        with self._lock:
            entry = self._entries.get(name) if name else None
        if entry is None:
            return
        if method == "DELETE":
            self.drop(entry, at=server_now)
        elif isinstance(document, Mapping):
            expire = parse_rfc3339(document.get("expireTime"))
            if expire is not None:
                entry.expire_time = expire

    # -- storage ---------------------------------------------------------------------------------
    def task_ending(self, task: Task) -> None:
        """Bill the storage ``task`` owes up to now (server clock), so its cost is complete when it
        ends; storage from here on goes to its parent task (or to no task), whoever holds on."""
        with self._lock:
            owed = [entry for entry in self._entries.values() if entry.task is task]
        now = self.clock.now()
        for entry in owed:
            self._accrue(entry, now)
            with self._lock:
                if entry.task is task:
                    entry.task = task.parent
    def _publish_retired(self, retired: Sequence[tuple[CachedContent, float]]) -> None:
        for entry, end in retired:
            self._accrue(entry, end)

    def _accrue(self, entry: CachedContent, until: float) -> None:
        """Bill storage from ``accounted_until`` to ``until`` (never past expiry) to ``entry.task``."""
        with self._lock:  # one span is billed once, whichever thread gets here first
            start = entry.accounted_until
            end = max(min(until, entry.expire_time), start)
            entry.accounted_until = end
            task = entry.task
        seconds = end - start
        if seconds <= 0 or not entry.tokens:
            return
        try:
            # microsecond boundaries in Decimal: consecutive spans add up exactly to the whole life
            hours = (Decimal(str(round(end, 6))) - Decimal(str(round(start, 6)))) / _HOUR
            cost = pricing.storage_cost(entry.tokens, hours, entry.model, PROVIDER)
            record = CallRecord(
                id=uuid.uuid4().hex,
                provider=PROVIDER,
                model=entry.model,
                operation="cache.storage",
                started_at=datetime.fromtimestamp(start, UTC),
                duration_s=seconds,
                usage=Usage(),
                cost=cost,
                cost_breakdown=None if cost is None else CostBreakdown(storage=cost),
                task_id=task.id if task is not None else None,
                task_name=task.name if task is not None else None,
                conversation=entry.conversation,
                metadata={
                    "cache_name": entry.name,
                    "cache_tokens": entry.tokens,
                    "storage_hours": str(hours),
                    "managed": entry.managed,
                },
            )
        except Exception as exc:
            log.error("meter.failed", stage="cache.storage", error=type(exc).__name__, detail=str(exc)[:200])
            return
        metering.publish_call(record, task)


def _json_or_none(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except Exception:
        return None


def _error_message(document: Any) -> str | None:
    if isinstance(document, Mapping) and isinstance(document.get("error"), Mapping):
        message = document["error"].get("message")
        return str(message)[:200] if message is not None else None
    return None
