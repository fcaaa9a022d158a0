"""Fingerprints of the cacheable prefix and explanations of what drifted (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

__all__ = ["DriftCause", "PrefixDrift"]

DriftCause = Literal["timestamp", "uuid", "key-order", "whitespace", "reordered", "edited", "content"]


@dataclass(frozen=True, slots=True)
class PrefixDrift:
    """Where and why a call's cacheable prefix stopped matching the previous call's."""

    segment: str
    """Path of the first block that differs, e.g. ``"system[0].text"`` or ``"tools[3].input_schema"``."""
    offset: int
    """Byte offset of the first differing byte inside that segment's serialised bytes."""
    before: str
    """Short excerpt of the previous bytes around ``offset`` (truncated, secrets masked)."""
    after: str
    """Short excerpt of the new bytes around ``offset`` (truncated, secrets masked)."""
    cause: DriftCause
    """Best guess at why the bytes changed."""
    tokens_at_risk: int
    """Estimated tokens of previously cacheable prefix that can no longer be read from cache."""
    est_extra_cost: Decimal | None
    """Estimated extra USD this call pays because of the drift (None when the model is unpriced)."""
    provider_reason: str | None = None
    """The provider's own diagnosis, when it gave one (Anthropic ``cache_miss_reason.type``...)."""
    provider_missed_tokens: int | None = None
    """Tokens the provider says missed the cache because of the change."""

    def describe(self) -> str:
        return (
            f"{self.segment} changed at byte {self.offset} ({self.cause}): "
            f"{self.before!r} -> {self.after!r}; ~{self.tokens_at_risk} tokens at risk"
            + (f", ~${self.est_extra_cost} extra" if self.est_extra_cost is not None else "")
        )
