"""Runtime signatures of budgetclient's client classes, built from the installed SDK's.

Our constructors and ``copy`` take ``**kwargs`` (so a new SDK parameter passes through
unchanged), which on its own hides the SDK's parameters from ``inspect.signature``, ``help()``,
IDEs and ``typing.get_type_hints``. What they show is therefore read from the installed SDK at
import time, plus budgetclient's keyword-only options, so it never goes stale. (Type checkers
read the ``TypedDict`` declarations in each provider module instead; a test per provider checks
those against the installed SDK.)
"""

from __future__ import annotations

import inspect
from typing import Any

from .._log import log
from ..options import CacheMode, CacheTTL, ClientOptions, DriftMode

__all__ = ["BUDGET_PARAMETERS", "COPY_PARAMETERS", "combined", "show_sdk_signatures"]

_DEFAULTS = ClientOptions()

BUDGET_PARAMETERS = (
    inspect.Parameter("cache", inspect.Parameter.KEYWORD_ONLY, default=_DEFAULTS.cache, annotation=CacheMode),
    inspect.Parameter(
        "cache_ttl", inspect.Parameter.KEYWORD_ONLY, default=_DEFAULTS.cache_ttl, annotation=CacheTTL
    ),
    inspect.Parameter("drift", inspect.Parameter.KEYWORD_ONLY, default=_DEFAULTS.drift, annotation=DriftMode),
)
"""budgetclient's per-client options (`ClientOptions`), as the constructors take them."""

COPY_PARAMETERS = tuple(p.replace(default=None, annotation=p.annotation | None) for p in BUDGET_PARAMETERS)
"""The same options as ``copy()`` / ``with_options()`` take them: ``None`` keeps the client's."""


def combined(signature: inspect.Signature, extra: tuple[inspect.Parameter, ...]) -> inspect.Signature:
    """``signature`` with ``extra`` keyword-only parameters (before any ``**kwargs``)."""
    params = list(signature.parameters.values())
    names = {p.name for p in params}
    tail = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [p for p in extra if p.name not in names]
    return signature.replace(parameters=[*head, *added, *tail])


def _unavailable(what: str, exc: BaseException) -> None:
    log.warning("sdk.signature_unavailable", sdk=what, error=type(exc).__name__, detail=str(exc)[:200])


def show_sdk_signatures(cls: Any, sdk_cls: Any) -> None:
    """Show ``sdk_cls``'s ``__init__`` and ``copy`` signatures (plus our options) on ``cls``.

    ``typing.get_type_hints`` resolves the SDK's annotations in the SDK's module (through
    ``__wrapped__``; ``inspect`` stops at ``__signature__``). Never fails the import: on an SDK
    that cannot be introspected the generic signatures stay, with one logged warning.
    """
    try:
        for name, extra in (("__init__", BUDGET_PARAMETERS), ("copy", COPY_PARAMETERS)):
            function, sdk_function = getattr(cls, name), getattr(sdk_cls, name)
            function.__signature__ = combined(inspect.signature(sdk_function), extra)
            function.__wrapped__ = sdk_function
            ours = {p.name: p.annotation for p in extra}
            function.__annotations__ = {**ours, **sdk_function.__annotations__}
        init = inspect.signature(cls.__init__)
        cls.__signature__ = init.replace(parameters=list(init.parameters.values())[1:])  # without self
    except (TypeError, ValueError, AttributeError) as exc:
        _unavailable(f"{sdk_cls.__module__}.{sdk_cls.__qualname__}", exc)
