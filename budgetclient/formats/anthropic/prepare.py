"""The Anthropic prepare / observe state machine of one conversation (a lineage).

`prepare_request` runs before each attempt: it builds the blocks (`formats.anthropic.blocks`),
compares them with the previous call of the lineage (`drift`), learns from where they diverged,
places breakpoints (`placement`) and returns a new body with markers (`formats.anthropic.markers`);
the caller's objects are never mutated. `observe_response` runs after it: it learns where the
cache entry ended from the reported usage and merges Anthropic's own
``diagnostics.cache_miss_reason``. Needs no SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from operator import attrgetter
from typing import Any, Literal

from ..._construct import fast_constructor
from ..._guard import guarded
from ...blocks import (
    Block,
    PrefixPrint,
    RequestBlocks,
    Ttl,
    first_divergence,
)
from ...config import get_settings
from ...drift import PrefixDrift, chained_prefix_fingerprint, explain_drift, starts_new_segment
from ...lineage import LineageState
from ...placement import (
    LONG_GAP_S,
    Marker,
    TailRule,
    choose_ttl,
    drift_region_end,
    learn_tail,
    long_gap_share,
    min_cacheable_tokens,
    place_breakpoints,
    trailing_turn_start,
)
from ...pricing import rates_for
from ...usage import Usage
from .blocks import BuiltRequest, Print, build_request
from .markers import apply_markers

__all__ = ["PreparedRequest", "observe_response", "prepare_request"]

_MILLION = Decimal(1_000_000)
ANCHOR_BELOW_SHARE = 0.5
"""Below this share of long gaps, 1h goes on an anchor only (see `placement.place_breakpoints`):
a long pause then costs a rewrite of the last few blocks, cheaper than 1h on every write."""
_DIAGNOSED = frozenset({"model_changed", "system_changed", "tools_changed", "messages_changed"})
_REASON_SEGMENT = {
    "model_changed": "model",
    "system_changed": "system",
    "tools_changed": "tools",
    "messages_changed": "messages",
}


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """What to send for one attempt, and what budgetclient concluded about its prefix."""

    body: dict[str, Any]
    """What to send (a new dict when anything was added; caller's objects never mutated)."""
    prefix_hash: str | None
    """Fingerprint of the cacheable prefix actually sent: through the last breakpoint (caller's,
    automatic or ours), or the tools + system prefix when there is none."""
    drift: PrefixDrift | None
    """Drift against the previous call of this lineage, from the bytes sent."""
    breakpoints: tuple[str, ...]
    """Block paths where budgetclient placed markers."""
    blocks: RequestBlocks | None = None
    markers: tuple[Marker, ...] = ()
    ttl: Ttl | None = None
    cache_points: tuple[int, ...] = ()
    """Every breakpoint of the body sent (caller's, automatic and ours), by block index."""
    expected_divergence: bool = False
    """The previous call's volatile tail was not repeated, as placement expected (not drift)."""
    diagnostics: bool = False
    """Whether ``diagnostics`` was requested from the API."""
    sequence: int = 0
    """The lineage's call number this request was prepared as."""
    built: BuiltRequest | None = None
    """The blocks with their values, for an incremental token estimate (`estimate_input`)."""
    new_segment: bool = False
    """The request starts a new segment of its conversation (tools added or removed, a compacted
    history): nothing was compared, and the API's diagnosis of the change is not drift either."""


_INDEX = attrgetter("index")
_new_prepared = fast_constructor(PreparedRequest)
"""``PreparedRequest(...)`` by keyword at a third of the cost (one per call)."""


def _extra_cost(model: str, total_tokens: int, *, rewrite: bool) -> Callable[[int], Decimal | None]:
    """Price of losing ``n`` cached tokens: a rewrite (or plain input) instead of a cache read."""
    rates = None
    with guarded("price.estimate_failed", model=model):  # pricing must never break placement
        rates = rates_for(model, "anthropic")
    if rates is None:
        return lambda tokens: None
    read = rates.cache_read.at(total_tokens)
    paid = (rates.cache_write if rewrite else rates.input).at(total_tokens)
    return lambda tokens: tokens * (paid - read) / _MILLION


def _lazy_cost(model: str, total_tokens: int, *, rewrite: bool) -> Callable[[int], Decimal | None]:
    """`_extra_cost`, resolving the model's rates only if a drift is actually priced."""
    return lambda tokens: _extra_cost(model, total_tokens, rewrite=rewrite)(tokens)


def _index_of(request: RequestBlocks, path: str | None) -> int | None:
    if path is None:
        return None
    fixed = request.fixed_end
    return next((i for i in range(fixed) if request.blocks[i].path == path), None)


def prepare_request(
    body: Mapping[str, Any],
    *,
    cache: Literal["auto", "off"],
    cache_ttl: Literal["auto", "5m", "1h"],
    drift: Literal["warn", "raise", "off"],
    state: LineageState,
    now: float,
    diagnostics: bool = True,
    tools: Print = None,
) -> PreparedRequest:
    """Fingerprint, compare with the previous call, place breakpoints; the body to send.

    ``tools``: the body's `blocks.tools_print`, when the caller already made it.

    With ``drift="raise"`` and a drift found, the lineage is left as it was: the request will
    not be sent, so the next attempt is compared with the same previous call.
    """
    model = str(body.get("model") or "")
    thread = body.get("thread")
    if thread is not None and isinstance(thread, Mapping) and thread.get("type") == "continue":
        # A server-held thread: the earlier turns (and possibly tools and system) live on the
        # server, so this body is not the prompt; leave it alone and start afresh afterwards.
        with state.lock:
            state.record_gap(now)
            state.forget()
            state.response_id = None
            return PreparedRequest(body=_as_dict(body), prefix_hash=None, drift=None, breakpoints=(),
                                   sequence=state.calls)
    with state.lock:
        built = build_request(body, memo=state.token_memo, previous=_previous_build(state), tools=tools)
        request = built.request
        previous = state.prefix
        found: PrefixDrift | None = None
        expected = False
        count = len(request.blocks)  # (``len(request)`` is a Python call: read once)
        divergence = count
        identical = False
        segment = False
        appended = False
        if previous is not None and APPEND_FAST_PATH and _appended(previous, built):
            appended = True
            # an append-only call (`_appended`): the full path's comparison finds the divergence at
            # the previous call's end, nothing repeated to explain and no new segment
            divergence = len(previous.blocks)
        elif previous is not None:
            divergence = first_divergence(previous.blocks, request.blocks)
            same_params = previous.params == request.params
            identical = divergence == len(previous.blocks) == len(request.blocks) and same_params
            expected = divergence < len(previous.blocks) and divergence >= state.drift_end
            repeated = same_params and divergence >= min(max(state.drift_end, 0), len(previous.blocks))
            segment = (
                _new_segment(previous.blocks, request, divergence)
                if divergence < len(previous.blocks)
                else divergence == len(request.blocks) and not same_params  # a re-send, other settings
            )
            if drift != "off" and not repeated and not segment:  # (a repeated region explains to None)
                found = explain_drift(
                    previous.blocks,
                    request.blocks,
                    region_end=state.drift_end,
                    previous_params=previous.params,
                    current_params=request.params,
                    extra_cost=_lazy_cost(model, request.total_tokens, rewrite=cache == "auto"),
                    excerpts=get_settings().drift_excerpts,
                )
        if found is not None and drift == "raise":
            return PreparedRequest(
                body=dict(body), prefix_hash=None, drift=found, breakpoints=(), blocks=request,
                sequence=state.calls, built=built,
            )

        if segment or appended:  # (`_learn` of an append: no tail, no volatile fixed block)
            state.tail = None
            state.fixed_divergence = state.volatile_fixed = None
        elif previous is not None and not identical:
            _learn(state, previous, divergence)
        paused = state.last_call_at is not None and now - state.last_call_at > LONG_GAP_S
        if not identical:
            state.record_gap(now)
        ends = request.prefix_tokens
        total = ends[-1] if ends else 0  # `total_tokens`, without the property's call
        common = ends[divergence - 1] if 0 < divergence <= count else 0
        evidence = state.gap_evidence()
        ttl = choose_ttl(
            cache_ttl,
            evidence,
            prefix_tokens=total,
            new_tokens=total - common,
        )
        markers: tuple[Marker, ...] = ()
        min_tokens = min_cacheable_tokens(model)
        if cache == "auto" and ttl is not None:
            # after a pause only the 1h entries are left to read
            reusable = state.long_end if paused else state.written_end
            volatile = state.volatile_fixed
            if previous is None:
                reusable = None
            markers = place_breakpoints(
                request,
                ttl=ttl,
                min_tokens=min_tokens,
                tail=state.tail,
                previous_end=reusable if reusable is not None and divergence >= reusable else None,
                volatile_fixed=None if volatile is None else _index_of(request, volatile),
                anchored=cache_ttl == "auto" and long_gap_share(evidence) < ANCHOR_BELOW_SHARE,
                token_scale=state.token_scale,
            )
        # a new segment is compared with nothing: the API's diagnosis would name the change as drift
        ask = diagnostics and drift != "off" and "diagnostics" not in body and not segment
        extra = {"diagnostics": {"previous_message_id": state.response_id}} if ask else None
        send = apply_markers(body, request, markers, extra=extra) if markers or extra else _as_dict(body)

        caller = request.caller_markers()
        # ours are sorted and apart from the caller's (`place_breakpoints`)
        points = sorted({*caller, *map(_INDEX, markers)}) if caller else list(map(_INDEX, markers))
        cut = points[-1] + 1 if points else request.fixed_end
        prefix_hash = None
        if cut:
            # an append-only call hashes only the blocks after the previous call's (`_appended`)
            base = state.prefix_hasher if appended else None
            prefix_hash, state.prefix_hasher = chained_prefix_fingerprint(
                request.blocks, cut, request.params, base
            )
        else:
            state.prefix_hasher = None
        scale = state.token_scale
        # ours passed this very test in `place_breakpoints`: only the caller's may fail it
        live = [p for p in points if ends[p] * scale >= min_tokens] if caller else points

        # an append-only call's stored bytes: the previous prefix's plus the new blocks'
        carried = previous.extended(request) if appended and previous is not None else None
        state.remember(carried or PrefixPrint.of(request), built)
        state.drift_end = _drift_end(request, state.tail)
        state.written_end = live[-1] + 1 if live else None
        long_lived = (
            [p for p in live if _ttl_at(markers, caller, p) == "1h"]
            if ttl == "1h" or "1h" in caller.values()  # else no breakpoint is 1h
            else []
        )
        if long_lived:
            state.long_end = long_lived[-1] + 1
        elif paused or not live:
            state.long_end = None
        state.ttl = ttl if markers else None
        return _new_prepared(
            body=send,
            prefix_hash=prefix_hash,
            drift=found,
            breakpoints=tuple([request.blocks[m.index].path for m in markers]) if markers else (),
            blocks=request,
            markers=markers,
            ttl=ttl,
            cache_points=tuple(points),
            expected_divergence=expected,
            diagnostics=ask,
            sequence=state.calls,
            built=built,
            new_segment=segment,
        )


APPEND_FAST_PATH = True
"""Whether an append-only call skips the generic comparison with the previous call (`_appended`);
off only in tests, which check that both paths send the same bodies and decide the same."""


def _appended(previous: PrefixPrint, built: BuiltRequest) -> bool:
    """Whether ``built`` is the lineage's previous call with blocks appended, proved by the build
    itself: it extends the build whose blocks the lineage remembers (every previous block reused in
    place, `build_request`'s ``extends``), with the same parameters and something new after them.
    A remembered prefix whose bytes were dropped, or any other change, is compared in full."""
    base = built.extends
    request = built.request
    return (
        base is not None
        and base.request.blocks is previous.blocks
        and len(request.blocks) > len(previous.blocks)
        and previous.params == request.params
    )


_COMPACTION = b'"type":"compaction"'


def _new_segment(previous: Sequence[Block], request: RequestBlocks, divergence: int) -> bool:
    """Whether the request diverging from ``previous`` at block ``divergence`` starts a new segment:
    tools added or removed (`drift.starts_new_segment`), or a compacted history (the message at
    the divergence holds a ``compaction`` block, what a compaction response becomes in the next
    request). Looks only at the blocks around the divergence: a volatile tail stays cheap."""
    current = request.blocks
    at = current[divergence] if divergence < len(current) else None
    if previous[divergence].section == "tools" or (at is not None and at.section == "tools"):
        return starts_new_segment(previous, current)
    if at is None or at.message is None:
        return False
    for i in range(divergence, len(current)):
        block = current[i]
        if block.message != at.message:
            return False
        if _COMPACTION in block.raw:
            return True
    return False


def _drift_end(request: RequestBlocks, tail: TailRule | None) -> int:
    """`placement.drift_region_end`, short of a trailing assistant message: a prefill the model
    continues, which the next request sends completed (a refusal fallback's continuation too)."""
    blocks = request.blocks
    end = trailing_turn_start(blocks) if tail is None else drift_region_end(request, tail)  # (the same)
    if not blocks or blocks[-1].section != "messages" or blocks[-1].role != "assistant":
        return end
    last = blocks[-1].message
    start = len(blocks)
    while start > 0 and blocks[start - 1].message == last:
        start -= 1
    return min(end, start)


def _previous_build(state: LineageState) -> BuiltRequest | None:
    built = state.built
    return built if isinstance(built, BuiltRequest) else None


def _ttl_at(markers: Sequence[Marker], caller: Mapping[int, Ttl], index: int) -> Ttl | None:
    for marker in markers:
        if marker.index == index:
            return marker.ttl
    return caller.get(index)


def _as_dict(body: Mapping[str, Any]) -> dict[str, Any]:
    return body if isinstance(body, dict) else dict(body)


def _learn(state: LineageState, previous: PrefixPrint, divergence: int) -> None:
    """Update the volatile-tail rule and the volatile fixed block from where this call diverged."""
    blocks = previous.blocks
    if divergence >= len(blocks):
        state.tail = None
        state.fixed_divergence = None
        state.volatile_fixed = None
        return
    tail = learn_tail(blocks, divergence)
    if tail is not None:
        state.tail = tail
    fixed = blocks[divergence].section != "messages"
    path = blocks[divergence].path if fixed else None
    state.volatile_fixed = path if fixed and path == state.fixed_divergence else None
    state.fixed_divergence = path


def observe_response(
    state: LineageState,
    prepared: PreparedRequest,
    usage: Usage,
    message: Mapping[str, Any] | None,
    *,
    now: float | None = None,
) -> PrefixDrift | None:
    """Learn from the response; the drift to record (``prepared.drift`` merged with the API's reason).

    The reported cache reads + writes say where the deepest entry ended; the reported input
    tokens calibrate our token estimates. A ``cache_miss_reason`` is merged into the local drift,
    or becomes one when we saw none, except a ``messages_changed`` that is the volatile tail
    placement already expected. ``now`` is not read (the gap is timed when the next call is
    prepared); it stays for callers that pass it.

    Runs in the caller's thread before the SDK returns (the next call's placement reads what it
    learns), so it reads only what it needs: a few fields, under the lineage's lock.
    """
    request = prepared.blocks
    with state.lock:
        calls = state.calls
        if calls == prepared.sequence:  # no later call of the lineage prepared since: learn
            response_id = message.get("id") if message is not None else None
            if type(response_id) is str:
                state.response_id = response_id
            reported = usage.input_tokens
            if request is not None and reported > 0:
                ends = request.prefix_tokens
                total = ends[-1] if ends else 0  # request.total_tokens
                scale = state.token_scale
                if total > 0:
                    ratio = reported / total  # clamped to [0.25, 4] without min/max calls
                    ratio = 0.25 if ratio < 0.25 else 4.0 if ratio > 4.0 else ratio
                    scale = state.token_scale = ratio if calls <= 1 else (scale + ratio) / 2
                cached = usage.cache_read_tokens + usage.cache_write_tokens
                points = prepared.cache_points
                if cached == 0:
                    state.written_end = None
                elif points:
                    state.written_end = _nearest_end(points, ends, scale, cached) + 1
    if not prepared.diagnostics or message is None or message.get("diagnostics") is None:
        return prepared.drift  # what `_merge_diagnostics` concludes without a diagnosis, sooner
    return _merge_diagnostics(prepared, message, request.model if request is not None else "")


def _nearest_end(points: Sequence[int], ends: Sequence[int], scale: float, cached: int) -> int:
    """The cache point whose prefix, at ``scale``, ends closest to ``cached`` tokens (the first of
    equals): ``min(points, key=lambda i: abs(ends[i] * scale - cached))`` without a call per point."""
    best = points[0]
    distance = abs(ends[best] * scale - cached)
    for point in points[1:]:
        other = abs(ends[point] * scale - cached)
        if other < distance:
            best, distance = point, other
    return best


def _merge_diagnostics(
    prepared: PreparedRequest, message: Mapping[str, Any] | None, model: str
) -> PrefixDrift | None:
    if not prepared.diagnostics or message is None:
        return prepared.drift
    diagnostics = message.get("diagnostics")
    reason = diagnostics.get("cache_miss_reason") if isinstance(diagnostics, Mapping) else None
    if not isinstance(reason, Mapping) or reason.get("type") not in _DIAGNOSED:
        return prepared.drift
    kind = str(reason["type"])
    missed_value = reason.get("cache_missed_input_tokens")
    missed = missed_value if isinstance(missed_value, int) and not isinstance(missed_value, bool) else None
    if prepared.drift is not None:
        return replace(prepared.drift, provider_reason=kind, provider_missed_tokens=missed)
    if kind == "messages_changed" and prepared.expected_divergence:
        return None
    total = prepared.blocks.total_tokens if prepared.blocks is not None else 0
    cost = _extra_cost(model, total, rewrite=bool(prepared.markers))(missed or 0)
    return PrefixDrift(
        segment=_REASON_SEGMENT[kind],
        offset=0,
        before="",
        after="",
        cause="content",
        tokens_at_risk=missed or 0,
        est_extra_cost=cost if missed is not None else None,
        provider_reason=kind,
        provider_missed_tokens=missed,
    )
