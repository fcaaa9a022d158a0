"""OpenAI prefix drift around `drift.explain_drift`: its price, OpenAI's own diagnosis, the warning."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from ..drift import PrefixDrift
from ..pricing import rates_for
from ._drift_report import announce_drift as _announce
from ._drift_report import drift_fields

__all__ = ["announce_drift", "drift_fields", "extra_cost", "merge_diagnostics"]


_MILLION = Decimal(1_000_000)


def extra_cost(tokens: int, model: str) -> Decimal | None:
    """Tokens no longer read from cache pay the input rate instead of the cache-read rate."""
    rates = rates_for(model, "openai")
    if rates is None:
        return None
    return tokens * (rates.input.at(tokens) - rates.cache_read.at(tokens)) / _MILLION


def merge_diagnostics(drift: PrefixDrift, diagnostics: Mapping[str, Any]) -> PrefixDrift:
    """Add OpenAI's own ``cache_miss`` reason and missed tokens to the drift found locally.

    A ``cache_miss`` with no local drift is not turned into one: it usually names a change past
    the stable prefix (a conversation edited or trimmed), which is not drift of the prefix.
    """
    if diagnostics.get("type") != "cache_miss":
        return drift
    reason = diagnostics.get("reason")
    missed = diagnostics.get("cache_missed_tokens")
    return replace(
        drift,
        provider_reason=reason if isinstance(reason, str) else None,
        provider_missed_tokens=missed if isinstance(missed, int) and not isinstance(missed, bool) else None,
    )


def announce_drift(drift: PrefixDrift, model: str) -> None:
    _announce(drift, provider="openai", model=model, stacklevel=4)
