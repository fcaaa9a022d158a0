"""Tokens: encodings (`encodings`), memoised and sampled counting (`counting`) and the learnt
calibration against what providers report (`calibration`).

Nothing here reads a request body: the per-provider readers live in ``formats/<provider>/`` and
`budgetclient.estimate.estimate_request` puts the two together.
"""

from __future__ import annotations

from .calibration import (
    PROVIDERS,
    TokenEstimate,
    calibrate,
    calibrated_estimate,
    calibration_factor,
    canonical_provider,
    reset_calibration,
)
from .counting import approximate_count, count_each, count_text, count_texts
from .encodings import SHORT_TEXT_CHARS, encoding_for, load_encoding_file, model_family, short_text_chars

__all__ = [
    "PROVIDERS",
    "SHORT_TEXT_CHARS",
    "TokenEstimate",
    "approximate_count",
    "calibrate",
    "calibrated_estimate",
    "calibration_factor",
    "canonical_provider",
    "count_each",
    "count_text",
    "count_texts",
    "encoding_for",
    "load_encoding_file",
    "model_family",
    "reset_calibration",
    "short_text_chars",
]
