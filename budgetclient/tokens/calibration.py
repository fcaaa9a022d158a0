"""Calibration: the learnt ratio between our offline count and what each provider reports.

Claude and Gemini tokenizers are not public, so their text is counted with ``o200k_base`` and the
per-model ratio learnt by ``calibrate`` from the provider's reported input tokens closes the gap.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from dataclasses import dataclass, field

from .._construct import fast_constructor
from .._fork_locks import renew_after_fork
from ..errors import ConfigurationError
from .encodings import model_family

__all__ = [
    "PROVIDERS",
    "TokenEstimate",
    "calibrate",
    "calibrated_estimate",
    "calibration_factor",
    "canonical_provider",
    "reset_calibration",
]

PROVIDERS = ("anthropic", "openai", "google")
_PROVIDER_ALIASES = {"gemini": "google", "vertex": "google", "vertexai": "google"}

CALIBRATION_WINDOW = 32
"""Calibration is the ratio of sums over this many most recent observations per model family."""
_PLAUSIBLE_RATIO = (0.25, 4.0)
"""Observations outside this reported/estimated ratio are ignored: the provider saw input the body
did not contain (Gemini ``cachedContent``, OpenAI ``previous_response_id``) or media was far off."""


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """An offline estimate of one request's input tokens."""

    provider: str
    model: str
    """The model the estimate is for (``""`` when neither the body nor the caller named one)."""
    raw_tokens: int
    """Uncalibrated count; feed this to ``calibrate`` with the provider's reported input tokens."""
    factor: float
    """Learnt reported/estimated ratio for the model family (1.0 before any observation)."""
    tokens: int
    """``raw_tokens`` scaled by ``factor``: the best guess of what the provider will report."""


_new_estimate = fast_constructor(TokenEstimate)
"""``TokenEstimate(...)`` by keyword at a third of the cost (one per budgeted call)."""


@functools.lru_cache(maxsize=64)
def canonical_provider(provider: str) -> str:
    """The canonical provider name (memoised: every estimate and calibration asks)."""
    name = provider.strip().lower()
    name = _PROVIDER_ALIASES.get(name, name)
    if name not in PROVIDERS:
        raise ConfigurationError(
            f"unknown provider {provider!r} for a token estimate; use one of {', '.join(PROVIDERS)}"
        )
    return name


def calibrated_estimate(provider: str, model: str, raw_tokens: int) -> TokenEstimate:
    """``raw_tokens`` counted for ``model`` as a `TokenEstimate`, scaled by the learnt factor."""
    name, key = _calibration_key(provider, model)
    factor = _factors.get(key, 1.0)
    tokens = int(raw_tokens * factor + 0.5)
    return _new_estimate(provider=name, model=model, raw_tokens=raw_tokens, factor=factor, tokens=tokens)


_keys: dict[str, dict[str, tuple[str, tuple[str, str]]]] = {}
"""(canonical provider, calibration key) by provider and model as callers spell them: one
estimate per budgeted call asks, and two dict reads cost less than `canonical_provider` and
`model_family` (each memoised, but through a call)."""


def _calibration_key(provider: str, model: str) -> tuple[str, tuple[str, str]]:
    by_model = _keys.get(provider)
    if by_model is not None:
        found = by_model.get(model)
        if found is not None:
            return found
    name = canonical_provider(provider)  # an unknown provider raises, and is never kept
    found = (name, (name, model_family(model)))
    if len(_keys) >= 64:
        _keys.clear()
    by_model = _keys.setdefault(provider, {})
    if len(by_model) >= 1024:
        by_model.clear()
    by_model[model] = found
    return found


@dataclass(slots=True)
class _Ratio:
    observations: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=CALIBRATION_WINDOW))
    raw_sum: int = 0
    reported_sum: int = 0

    def add(self, raw: int, reported: int) -> None:
        if len(self.observations) == self.observations.maxlen:
            old_raw, old_reported = self.observations[0]
            self.raw_sum -= old_raw
            self.reported_sum -= old_reported
        self.observations.append((raw, reported))
        self.raw_sum += raw
        self.reported_sum += reported


_calibration: dict[tuple[str, str], _Ratio] = {}
_factors: dict[tuple[str, str], float] = {}
"""Each family's current factor, written with its ratio (calibration runs on the record worker)
and read without the lock by every estimate (a dict read is atomic)."""
_calibration_lock = threading.Lock()
renew_after_fork(globals(), "_calibration_lock")


def calibrate(provider: str, model: str, estimated_raw: int, reported: int) -> None:
    """Learn from one call: ``estimated_raw`` (``TokenEstimate.raw_tokens``) vs the provider's
    reported total input tokens (cached tokens included).

    The factor is the ratio of sums over the last ``CALIBRATION_WINDOW`` calls of the model
    family, which weights big requests most, as budgets do. A ratio fixes the tokenizer's scale,
    not per-message framing the estimate guessed wrong, so tiny requests (under a few hundred
    tokens) can stay a few tokens off. Skip calls whose body was not the whole prompt (Gemini
    ``cachedContent``, OpenAI ``previous_response_id``); implausible ratios are ignored anyway.
    """
    key = (canonical_provider(provider), model_family(model))
    if estimated_raw <= 0 or reported <= 0:
        return
    low, high = _PLAUSIBLE_RATIO
    if not low <= reported / estimated_raw <= high:
        return
    with _calibration_lock:
        ratio = _calibration.setdefault(key, _Ratio())
        ratio.add(estimated_raw, reported)
        _factors[key] = ratio.reported_sum / ratio.raw_sum


def calibration_factor(provider: str, model: str) -> float:
    """Reported/estimated ratio learnt for the model family; 1.0 before any observation."""
    return _factors.get(_calibration_key(provider, model)[1], 1.0)


def reset_calibration() -> None:
    """Forget every observation (tests, or after a provider changes its tokenizer)."""
    with _calibration_lock:
        _calibration.clear()
        _factors.clear()
