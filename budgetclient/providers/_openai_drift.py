"""OpenAI prefix drift: explain a changed stable prefix, and merge ``prompt_cache_diagnostics``."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from ..drift import PrefixDrift, notify_drift
from ..errors import PrefixDriftWarning

__all__ = ["announce_drift", "drift_fields", "explain_prefix_drift", "merge_diagnostics"]

log = structlog.get_logger("budgetclient")

_EXCERPT = 24


def explain_prefix_drift(
    previous: Sequence[tuple[str, bytes]], current: Sequence[tuple[str, bytes]], model: str
) -> PrefixDrift | None:
    """Where and why ``current`` stopped matching ``previous`` (None when they are identical)."""
    for index in range(max(len(previous), len(current))):
        before = previous[index] if index < len(previous) else None
        after = current[index] if index < len(current) else None
        if before == after:
            continue
        path = (after or before or ("prefix", b""))[0]
        old = before[1] if before is not None else b""
        new = after[1] if after is not None else b""
        offset = 0
        while offset < min(len(old), len(new)) and old[offset] == new[offset]:
            offset += 1
        at_risk = sum(len(data) for _, data in previous[index:]) // 4
        return PrefixDrift(
            segment=path,
            offset=offset,
            before=old[max(offset - 8, 0) : offset + _EXCERPT].decode(errors="replace"),
            after=new[max(offset - 8, 0) : offset + _EXCERPT].decode(errors="replace"),
            cause="content",
            tokens_at_risk=at_risk,
            est_extra_cost=None,
        )
    return None


def merge_diagnostics(
    drift: PrefixDrift | None, diagnostics: Mapping[str, Any], model: str
) -> PrefixDrift | None:
    """Add OpenAI's own ``cache_miss`` reason and missed tokens to the drift found locally."""
    if diagnostics.get("type") != "cache_miss":
        return drift
    reason = diagnostics.get("reason")
    missed = diagnostics.get("cache_missed_tokens")
    reason_text = reason if isinstance(reason, str) else None
    missed_tokens = missed if isinstance(missed, int) and not isinstance(missed, bool) else None
    if drift is not None:
        return replace(drift, provider_reason=reason_text, provider_missed_tokens=missed_tokens)
    return drift


def drift_fields(drift: PrefixDrift) -> dict[str, Any]:
    return {
        "segment": drift.segment,
        "offset": drift.offset,
        "cause": drift.cause,
        "tokens_at_risk": drift.tokens_at_risk,
        "est_extra_cost": None if drift.est_extra_cost is None else str(drift.est_extra_cost),
        "provider_reason": drift.provider_reason,
    }


def announce_drift(drift: PrefixDrift, model: str) -> None:
    log.warning("cache.drift", provider="openai", model=model, **drift_fields(drift))
    try:
        notify_drift(drift)
    except Exception as exc:
        log.error("cache.drift_notify_failed", error=type(exc).__name__)
    warnings.warn(PrefixDriftWarning(drift), stacklevel=2)
