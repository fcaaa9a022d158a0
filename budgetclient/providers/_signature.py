"""Runtime signatures of budgetclient's client classes, built from the installed SDK's.

Our constructors take ``**kwargs`` (so a new SDK parameter passes through unchanged), which on its
own hides the SDK's parameters from ``inspect.signature``, ``help()`` and IDEs. The signature
shown is therefore built at import time from the installed SDK's ``__init__``, plus
budgetclient's keyword-only options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._log import log

__all__ = ["BUDGET_PARAMETERS", "COPY_PARAMETERS", "adopt_method_signature", "adopt_signature", "combined"]

BUDGET_PARAMETERS = (
    inspect.Parameter("cache", inspect.Parameter.KEYWORD_ONLY, default="auto", annotation="CacheMode"),
    inspect.Parameter("cache_ttl", inspect.Parameter.KEYWORD_ONLY, default="auto", annotation="CacheTTL"),
    inspect.Parameter("drift", inspect.Parameter.KEYWORD_ONLY, default="warn", annotation="DriftMode"),
)
"""budgetclient's per-client options (`ClientOptions`), as the constructors take them."""


COPY_PARAMETERS = tuple(
    p.replace(default=None, annotation=f"{p.annotation} | None") for p in BUDGET_PARAMETERS
)
"""The same options as ``copy()`` / ``with_options()`` take them: ``None`` keeps the client's."""


def combined(signature: inspect.Signature, extra: tuple[inspect.Parameter, ...]) -> inspect.Signature:
    """``signature`` with ``extra`` keyword-only parameters (before any ``**kwargs``)."""
    params = list(signature.parameters.values())
    names = {p.name for p in params}
    tail = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [p for p in extra if p.name not in names]
    return signature.replace(parameters=[*head, *added, *tail])


def adopt_signature(
    cls: Any, sdk_cls: Any, *, extra: tuple[inspect.Parameter, ...] = BUDGET_PARAMETERS
) -> None:
    """Show ``sdk_cls``'s constructor signature (plus ``extra``) on ``cls`` and ``cls.__init__``.

    Never fails the import: on an SDK whose constructor cannot be introspected the generic
    signature stays, with one logged warning.
    """
    try:
        init = combined(inspect.signature(sdk_cls.__init__), extra)
        unbound = init.replace(parameters=list(init.parameters.values())[1:])  # without ``self``
        cls.__init__.__signature__ = init
        cls.__signature__ = unbound
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning(
            "sdk.signature_unavailable",
            sdk_class=f"{sdk_cls.__module__}.{sdk_cls.__qualname__}",
            error=type(exc).__name__,
            detail=str(exc)[:200],
        )


def adopt_method_signature(
    method: Callable[..., Any], sdk_method: Callable[..., Any], *, extra: tuple[inspect.Parameter, ...] = ()
) -> None:
    """Show ``sdk_method``'s signature (plus ``extra``) on ``method`` (a ``**kwargs`` override of it)."""
    try:
        signature = combined(inspect.signature(sdk_method), extra)
        setattr(method, "__signature__", signature)  # noqa: B010 (a function attribute)
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning("sdk.signature_unavailable", method=getattr(sdk_method, "__qualname__", "?"),
                    error=type(exc).__name__, detail=str(exc)[:200])
