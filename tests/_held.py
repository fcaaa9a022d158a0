"""What a task still holds on its budget, read after the records thread has settled."""

from __future__ import annotations

from decimal import Decimal

from budgetclient.pending import settle
from budgetclient.tasks import Task


def held(t: Task) -> Decimal:
    """``t``'s budget hold once every deferred record is rolled up (`budgetclient.pending`)."""
    settle()
    return t._reserved
