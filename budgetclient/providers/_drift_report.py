"""How every provider reports a drift: one log event, the drift listeners, one warning."""

from __future__ import annotations

from .._log import log
from .._warnings import emit_warning
from ..drift import PrefixDrift, drift_fields, notify_drift
from ..errors import PrefixDriftWarning

__all__ = ["announce_drift", "drift_fields"]



def announce_drift(drift: PrefixDrift, *, provider: str, model: str, stacklevel: int = 3) -> None:
    """Log ``cache.drift``, notify drift listeners (``assert_cache_stable``) and warn once."""
    log.warning("cache.drift", provider=provider, model=model, **drift_fields(drift))
    notify_drift(drift)
    emit_warning(PrefixDriftWarning(drift), stacklevel=stacklevel)
