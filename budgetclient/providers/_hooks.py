"""One warning per changed SDK hook, for every provider.

Where budgetclient must touch a private SDK attribute, a release that renamed or reshaped it
sends the call down the public seam (or metering only) instead of failing it. That fallback
loses something (placement, a credential path, a metered copy), so it is logged once per hook
and process as ``sdk.hook_unavailable``, naming the provider, the hook, the installed SDK
version and what budgetclient does instead. The contract tests in ``tests/providers`` catch the
same change in CI.
"""

from __future__ import annotations

import threading

from .._fork_locks import renew_after_fork
from .._log import log

__all__ = ["hook_unavailable"]

_warned: set[tuple[str, str, str]] = set()
_warned_lock = threading.Lock()
renew_after_fork(globals(), "_warned_lock")


def hook_unavailable(provider: str, sdk_version: str, hook: str, *, problem: str, fallback: str) -> None:
    """Log ``sdk.hook_unavailable`` once per (provider, hook, problem) for the whole process."""
    key = (provider, hook, problem)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(
        "sdk.hook_unavailable",
        provider=provider,
        hook=hook,
        sdk_version=sdk_version,
        problem=problem,
        fallback=fallback,
    )
