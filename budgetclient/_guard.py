"""The one "never break the user's call" rule, written once.

Metering (pricing, task roll-up, ledger, logs, alerts, hooks) runs inside the user's request; a
fault there must cost neither the request nor the record. Every such step runs in `guarded`:
an ``Exception`` is logged (type and a bounded detail, never a credential: a step's own error
text is cut at 200 characters and masked by `_redact.mask_secrets`) and swallowed;
``KeyboardInterrupt`` and cancellation pass.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from ._log import log
from ._redact import mask_secrets

__all__ = ["guarded", "report_fault"]


class guarded:
    """Context manager: log ``event`` (with ``fields``) for an ``Exception`` raised inside, and swallow it.

    A class rather than ``@contextmanager``: it runs several times on every metered call.
    """

    __slots__ = ("event", "fields")

    def __init__(self, event: str, **fields: Any) -> None:
        self.event = event
        self.fields = fields

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report_fault(self.event, exc, **self.fields)
        return True


def report_fault(event: str, exc: Exception, **fields: Any) -> None:
    """What `guarded` does with a fault, for a hot path that catches it itself
    (``try``/``except Exception``: no context manager object to build on every call)."""
    log.error(event, error=type(exc).__name__, detail=mask_secrets(str(exc)[:200]), **fields)
