"""The library's logger: the application's structlog pipeline if it has one, else stdlib logging.

A library must not print to an application's stdout. When the application has configured
structlog, budgetclient's events (``llm.call``, ``task.end``, ``cache.drift``...) flow through
that configuration; otherwise they go to the stdlib logger ``"budgetclient"`` as ``key=value``
lines, where Python's defaults show warnings and errors only (on stderr) until the application
sets a level or handler for it.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["log"]

_stdlib = structlog.wrap_logger(
    logging.getLogger("budgetclient"),  # the same logger as _logger below
    processors=[
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
)
_structlog = structlog.get_logger("budgetclient")


_logger = logging.getLogger("budgetclient")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _disabled(*args: Any, **kwargs: Any) -> None:
    return None


# what a structlog filtering logger (make_filtering_bound_logger) has for a level it drops
_structlog_nop = getattr(structlog.make_filtering_bound_logger(logging.CRITICAL), "debug", None)


class _PublicConfig:
    """structlog's public ``is_configured()`` / ``get_config()`` in the shape of its private
    configuration object, for a structlog without ``structlog._config._CONFIG``."""

    @property
    def is_configured(self) -> bool:
        return structlog.is_configured()

    @property
    def default_wrapper_class(self) -> Any:
        return structlog.get_config()["wrapper_class"]


_STRUCTLOG_CONFIG: Any = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
"""What ``structlog.is_configured()`` and ``get_config()`` read, without ``get_config()``'s copy
(`_PublicConfig` asks them where structlog has no such object)."""
if _STRUCTLOG_CONFIG is None:
    _STRUCTLOG_CONFIG = _PublicConfig()


def _route(_owner: object, name: str = "info", level: int | None = logging.INFO) -> Any:
    """The logging method ``name`` (at stdlib ``level``, None for a non-level name) as configured
    now, or `_disabled` where the configuration drops it. Its defaults and unused first parameter
    let ``_LibraryLogger.info`` be this very function, so the hot level costs no second call."""
    config = _STRUCTLOG_CONFIG
    if config.is_configured:
        if getattr(config.default_wrapper_class, name, None) is _structlog_nop:
            return _disabled
        return getattr(_structlog, name)
    if level is not None and not _logger.isEnabledFor(level):
        return _disabled
    return getattr(_stdlib, name)


class _LibraryLogger:
    """Routes each call at call time, so configuring structlog later takes effect at once.

    On the stdlib route a level nobody listens to costs one cached ``isEnabledFor`` (structlog
    would render the event first); on the structlog route, a level its filtering logger drops costs
    a class lookup (the lazy proxy would assemble a logger first). ``llm.call`` is logged on every
    model call, so callers may skip building the event when they are handed ``_disabled``.
    """

    # the hot level as a property: no failed attribute lookup first, as ``__getattr__`` has
    info = property(_route)

    def __getattr__(self, name: str) -> Any:
        return _route(self, name, _LEVELS.get(name))


log: Any = _LibraryLogger()
