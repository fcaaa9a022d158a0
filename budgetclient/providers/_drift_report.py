"""How every provider reports a drift: one log event, the drift listeners, one warning."""

from __future__ import annotations

from typing import Any

from .._log import log
from .._warnings import emit_warning
from ..drift import PrefixDrift, notify_drift
from ..errors import PrefixDriftWarning

__all__ = ["announce_drift", "drift_fields"]


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


def announce_drift(drift: PrefixDrift, *, provider: str, model: str, stacklevel: int = 3) -> None:
    """Log ``cache.drift``, notify drift listeners (``assert_cache_stable``) and warn once."""
    log.warning("cache.drift", provider=provider, model=model, **drift_fields(drift))
    notify_drift(drift)
    emit_warning(PrefixDriftWarning(drift), stacklevel=stacklevel)
