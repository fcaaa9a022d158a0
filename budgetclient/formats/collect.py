"""What a request body contains, provider-neutral: texts to count plus tokens known without counting.

The per-provider readers in ``formats/<provider>/reader.py`` walk a body into a `_Collected`;
`budgetclient.estimate` counts it. The fixed figures (media, framing) are documented per constant.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._fork_locks import renew_after_fork
from ..blocks import compact_json, value_print

__all__ = [
    "ANTHROPIC_TOOL_PREAMBLE",
    "AUDIO_TOKENS_PER_KB",
    "EstimateMemo",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "OPENAI_LOW_DETAIL_IMAGE_TOKENS",
    "PDF_PAGE_TOKENS",
    "REPLY_PRIMING",
    "TOOL_OVERHEAD",
    "VIDEO_TOKENS_PER_KB",
]

IMAGE_TOKENS = {"anthropic": 1_600, "openai": 765, "google": 1_120}
"""Fixed per-image estimates: Anthropic's ~1.15 MP cap (w*h/750), OpenAI high detail at
1024x1024 (85 + 4*170; ``detail: "low"`` is 85), Gemini 3's default high media resolution."""
OPENAI_LOW_DETAIL_IMAGE_TOKENS = 85
PDF_PAGE_TOKENS = {"anthropic": 2_000, "openai": 2_000, "google": 560}
"""Per PDF page: Anthropic and OpenAI send each page's text and an image of it; Gemini an image."""
_PDF_BYTES_PER_PAGE_GUESS = 100_000
AUDIO_TOKENS_PER_KB = 2.0
"""Gemini audio is 32 tokens/s; at a typical 128 kbit/s that is 2 tokens per KB."""
VIDEO_TOKENS_PER_KB = 0.26
"""Gemini video is ~263 tokens/s; at ~8 Mbit/s that is ~0.26 tokens per KB."""

MESSAGE_OVERHEAD = {"anthropic": 3, "openai": 3, "google": 2}
TOOL_OVERHEAD = {"anthropic": 8, "openai": 8, "google": 4}
REPLY_PRIMING = {"anthropic": 3, "openai": 3, "google": 0}
ANTHROPIC_TOOL_PREAMBLE = 346
"""Anthropic adds a tool-use system prompt (346 tokens on Claude 4-era models) when tools are sent."""

_OPAQUE_KEYS = frozenset(
    {
        "cache_control",
        "signature",
        "encrypted_content",
        "data",
        "file_data",
        "thoughtSignature",
        "thought_signature",
        "citations",
        "id",
        "call_id",
        "tool_use_id",
        "tool_call_id",
    }
)


class EstimateMemo:
    """What `estimate_request` collected per body element (a Gemini content or tool declaration),
    by object identity, so a conversation's next estimate walks only its new elements.

    Only for bodies whose objects are never changed after the call: budgetclient's own decoded
    request bodies, which reuse the previous call's unchanged elements. It holds the elements it
    describes (an id is not reused while its object lives) and keeps the last call's only.
    """

    __slots__ = ("_items", "_lock")

    def __init__(self) -> None:
        self._items: dict[int, tuple[Any, list[str], int]] = {}
        self._lock = threading.Lock()

    def _get(self, value: Any) -> tuple[list[str], int] | None:
        hit = self._items.get(id(value))
        return (hit[1], hit[2]) if hit is not None and hit[0] is value else None

    def _replace(self, items: dict[int, tuple[Any, list[str], int]]) -> None:
        with self._lock:
            self._items = items


@dataclass(slots=True)
class _Collected:
    """Text to count plus tokens known without counting (overheads, media)."""

    provider: str
    texts: list[str] = field(default_factory=list)
    fixed: int = 0
    memo: EstimateMemo | None = None
    seen: dict[int, tuple[Any, list[str], int]] | None = None

    def element(self, value: Any, collect: Callable[[_Collected, Any], None]) -> None:
        """``collect(self, value)``, or what it collected for this very object last time."""
        if self.memo is None or self.seen is None or type(value) not in (dict, list):
            collect(self, value)
            return
        hit = self.memo._get(value)
        if hit is None:
            part = _Collected(self.provider)
            collect(part, value)
            hit = (part.texts, part.fixed)
        texts, fixed = hit
        self.texts.extend(texts)
        self.fixed += fixed
        self.seen[id(value)] = (value, texts, fixed)

    def text(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.texts.append(value)

    def json(self, value: Any) -> None:
        """Tool schemas, tool inputs and results: counted as compact JSON, as sent."""
        if value is not None and value != {} and value != []:
            if isinstance(value, Mapping) and "cache_control" in value:
                value = {k: v for k, v in value.items() if k != "cache_control"}
            self.texts.append(_json_text(value))

    def unknown(self, value: Any) -> None:
        """A block type this module does not know: its JSON minus ids, signatures and payloads."""
        self.json(_scrub(value))


_JSON_TEXTS: dict[bytes, str] = {}
_JSON_TEXTS_MAX = 4_096
_json_texts_lock = threading.Lock()
renew_after_fork(globals(), "_json_texts_lock")
_JSON_TEXT_MAX_CHARS = 16_384


def _json_text(value: Any) -> str:
    """``compact_json(value)``, the same string object as last time for the same value: tool
    schemas are resent on every call, and a repeated string's count is a memo hit on its cached
    hash. Keyed by `blocks.value_print`; other values are serialised every time.
    """
    key = value_print(value)
    if key is None:
        return compact_json(value)
    text = _JSON_TEXTS.get(key)
    if text is None:
        text = compact_json(value)
        if len(text) <= _JSON_TEXT_MAX_CHARS:
            with _json_texts_lock:
                if len(_JSON_TEXTS) >= _JSON_TEXTS_MAX:
                    _JSON_TEXTS.clear()
                _JSON_TEXTS[key] = text
    return text


def _scrub(value: Any) -> Any:
    """Drop cache markers, ids, signatures and base64 payloads that are never prompt text."""
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items() if k not in _OPAQUE_KEYS}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value[:100]:
        return ""
    return value


def _base64_size(data: str) -> int:
    return len(data) * 3 // 4


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def _pdf_pages(data: str) -> int:
    """Pages in a base64 PDF by counting page objects; a size guess when they are compressed."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data)
    except (binascii.Error, ValueError):
        return 1
    return len(_PDF_PAGE.findall(raw)) or max(1, len(raw) // _PDF_BYTES_PER_PAGE_GUESS)


def _media(out: _Collected, mime: str | None, data: str | None, *, detail: str | None = None) -> None:
    """Add the fixed estimate for one image, PDF, audio or video part."""
    mime = (mime or "").lower()
    if data and data.startswith("data:") and not mime:
        mime = data[5 : data.find(";")].lower()
    if mime == "application/pdf":
        pages = _pdf_pages(data) if data else 1
        out.fixed += pages * PDF_PAGE_TOKENS[out.provider]
    elif mime.startswith("audio/") and data:
        out.fixed += round(_base64_size(data) / 1024 * AUDIO_TOKENS_PER_KB)
    elif mime.startswith("video/") and data:
        out.fixed += round(_base64_size(data) / 1024 * VIDEO_TOKENS_PER_KB)
    elif detail == "low":
        out.fixed += OPENAI_LOW_DETAIL_IMAGE_TOKENS
    else:
        out.fixed += IMAGE_TOKENS[out.provider]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [] if value is None else [value]
