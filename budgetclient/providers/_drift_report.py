"""How every provider reports a drift: once, as a `PrefixDriftWarning` at the user's call.

The ``cache.drift`` event carries the same facts for log pipelines at INFO level, so a drift is
reported once at WARNING: the warning (or, when a warnings-as-errors filter would raise it, the
``budgetclient.warning`` log line that replaces it). The drift listeners (``assert_cache_stable``)
see every drift.
"""

from __future__ import annotations

from .._log import log
from .._warnings import emit_warning, user_stacklevel
from ..drift import PrefixDrift, drift_fields, notify_drift
from ..errors import PrefixDriftWarning

__all__ = ["announce_drift", "drift_fields"]



def announce_drift(drift: PrefixDrift, *, provider: str, model: str, stacklevel: int = 3) -> None:
    """Log ``cache.drift`` (INFO), notify drift listeners and warn once, pointing at the user's call.

    ``stacklevel`` is the fallback when no frame outside budgetclient and the SDK is found.
    """
    log.info("cache.drift", provider=provider, model=model, hint=drift.hint, **drift_fields(drift))
    notify_drift(drift)
    emit_warning(PrefixDriftWarning(drift), stacklevel=user_stacklevel(stacklevel))
