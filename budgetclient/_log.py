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
    logging.getLogger("budgetclient"),
    processors=[
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
)
_structlog = structlog.get_logger("budgetclient")


class _LibraryLogger:
    """Routes each call at call time, so configuring structlog later takes effect at once."""

    def __getattr__(self, name: str) -> Any:
        target = _structlog if structlog.is_configured() else _stdlib
        return getattr(target, name)


log: Any = _LibraryLogger()
