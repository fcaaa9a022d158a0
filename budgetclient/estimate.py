"""An offline, calibrated estimate of a request's input tokens, for any provider's body.

The one entry point: `estimate_request` reads the body with its provider's reader
(``formats/<provider>/reader.py``), counts the texts (`tokens.counting`) and scales the count
by the learnt calibration (`tokens.calibration`). The pre-call budget reservation, history
trimming and Gemini's cache decision all use it; ``.tokens`` is the calibrated figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .formats.anthropic.reader import collect_anthropic
from .formats.collect import EstimateMemo, _Collected
from .formats.google.reader import collect_google
from .formats.openai.reader import collect_openai
from .tokens import TokenEstimate, calibrated_estimate, canonical_provider, count_texts, encoding_for

__all__ = ["EstimateMemo", "TokenEstimate", "estimate_request"]

_READERS: Mapping[str, Callable[[Mapping[str, Any]], _Collected]] = {
    "anthropic": collect_anthropic,
    "openai": collect_openai,
    "google": collect_google,
}


def estimate_request(
    provider: str, body: Mapping[str, Any], model: str | None = None, *, memo: EstimateMemo | None = None
) -> TokenEstimate:
    """Estimate a request's input tokens: text and JSON of structured parts, overheads, media.

    ``model`` wins over ``body["model"]`` (Gemini bodies carry no model; it is in the URL).
    ``memo`` (Gemini bodies only, see `EstimateMemo`) skips the elements seen in the last call.
    """
    name = canonical_provider(provider)
    if model is None:
        body_model = body.get("model")
        model = body_model if isinstance(body_model, str) else ""
    if name == "google" and memo is not None:
        collected = collect_google(body, memo)
        assert collected.seen is not None
        memo._replace(collected.seen)
    else:
        collected = _READERS[name](body)
    raw = count_texts(encoding_for(model), collected.texts) + collected.fixed
    return calibrated_estimate(name, model, raw)
