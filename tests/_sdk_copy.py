"""What the SDK hands budgetclient's hook: fresh dicts and lists around the caller's own strings."""

from __future__ import annotations

from typing import Any


def sdk_copy(value: Any) -> Any:
    """A copy with new containers and the same leaves (strings stay the caller's objects)."""
    if type(value) is dict:
        return {k: sdk_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [sdk_copy(v) for v in value]
    return value
