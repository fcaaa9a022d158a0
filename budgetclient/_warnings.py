"""How budgetclient emits its warnings: never as an exception that costs the caller a call.

Test suites commonly run with warnings as errors (``-W error``, pytest ``filterwarnings =
error``; the anthropic and openai SDK suites do). There, ``warnings.warn`` raises, and a
`PrefixDriftWarning` raised before a request is sent would abort the caller's call merely
because they switched imports. So a budgetclient warning that a filter turns into an error is
caught and logged (``budgetclient.warning``, ``raised_by_filter=True``) instead; what it reports
is still on the call record and in the log. The explicit ways to make a condition fatal are the
options built for it: ``drift="raise"`` (`PrefixDriftError` before sending), a task's
``budget_usd`` (`BudgetExceeded`), and ``bc.testing.assert_cache_stable`` in a test.
Every other filter (``ignore``, ``once``, ``always``, ``pytest.warns``, ``catch_warnings``)
sees the warning exactly as ``warnings.warn`` would deliver it.
"""

from __future__ import annotations

import sys
import warnings

from ._log import log
from .errors import BudgetClientWarning, PrefixDriftWarning

__all__ = ["emit_warning", "user_stacklevel"]

# Code between the user's call and the place a warning is raised: budgetclient, the SDKs and the
# libraries they call through (HTTP clients, async machinery, decorators).
_LIBRARY_MODULES = (
    "budgetclient", "anthropic", "openai", "google", "httpx2", "httpcore2", "httpx", "httpcore",
    "anyio", "sniffio", "asyncio", "concurrent", "contextlib", "functools", "threading", "pydantic",
    "botocore", "tenacity", "trio",
)  # fmt: skip


def _is_library(module: str) -> bool:
    root = module.partition(".")[0]
    return root in _LIBRARY_MODULES and not module.startswith("budgetclient.testing.")


def user_stacklevel(default: int = 2) -> int:
    """The ``stacklevel`` that makes a warning raised by the caller point at the user's own line.

    Counted from the function calling `user_stacklevel` (1 = that function), up through
    budgetclient, the SDK and its HTTP stack to the first frame of any other module. A fixed
    stacklevel cannot do this: the depth differs by SDK, method, sync/async and middleware.
    ``default`` when every frame is library code (a warning raised on a background thread).
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        if not _is_library(str(frame.f_globals.get("__name__", ""))):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return default


def emit_warning(warning: BudgetClientWarning, *, stacklevel: int = 2) -> None:
    """``warnings.warn(warning, stacklevel=stacklevel)`` as seen by the caller, minus the raise.

    ``stacklevel`` counts from the function calling `emit_warning` (as it would for
    ``warnings.warn`` called there). Never raises.
    """
    try:
        warnings.warn(warning, stacklevel=stacklevel + 1)
    except BudgetClientWarning as raised:
        # an "error" filter: report it without failing the caller's call. A drift's excerpts
        # (prompt text, masked) stay out of logs; its segment and cause are in ``cache.drift``.
        detail = "see cache.drift" if isinstance(raised, PrefixDriftWarning) else str(raised)[:500]
        log.warning(
            "budgetclient.warning",
            category=type(raised).__name__,
            detail=detail,
            raised_by_filter=True,
        )
