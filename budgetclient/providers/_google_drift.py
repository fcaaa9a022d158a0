"""Gemini prefix drift: fingerprint the stable prefix of a ``generateContent`` body, explain a change.

The stable prefix is what a managed ``cachedContents`` entry would hold: the system instruction,
the tools and the tool config (plus any leading contents held in the entry). Each is split into
segments named like the request (``systemInstruction.parts[0].text``,
``tools[0].functionDeclarations[2]``, ``toolConfig``, ``contents[0]``) whose bytes are the ones
sent, so a change is located to a segment and a byte offset. Pure functions only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..drift import DriftCause, PrefixDrift

__all__ = ["PREFIX_FIELDS", "Segment", "explain_drift", "prefix_segments", "share_at_risk"]

Segment = tuple[str, bytes]

PREFIX_FIELDS = ("systemInstruction", "tools", "toolConfig")
"""Body fields Gemini forbids next to ``cachedContent``: exactly what a managed entry takes over."""

_EXCERPT = 32
_TIMESTAMP = re.compile(
    rb"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?|\d{1,2}:\d{2}(:\d{2})?|\b1[6-9]\d{8}(\.\d+)?\b"
)
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SECRET = re.compile(r"(AIza[0-9A-Za-z_\-]{10,}|sk-[0-9A-Za-z_\-]{10,}|ya29\.[0-9A-Za-z_\-.]{10,})")


def _json(value: Any) -> bytes:
    """Compact JSON in the key order the SDK sent (a reordering is a real byte change)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _content_segments(path: str, content: Any) -> list[Segment]:
    if not isinstance(content, Mapping) or not isinstance(content.get("parts"), list):
        return [(path, _json(content))]
    segments: list[Segment] = []
    for i, part in enumerate(content["parts"]):
        if isinstance(part, Mapping) and isinstance(part.get("text"), str) and len(part) == 1:
            segments.append((f"{path}.parts[{i}].text", part["text"].encode()))
        else:
            segments.append((f"{path}.parts[{i}]", _json(part)))
    return segments


def prefix_segments(body: Mapping[str, Any], leading: Sequence[Any] = ()) -> list[Segment]:
    """Segments of the stable prefix of ``body``, in the order Gemini reads them."""
    segments: list[Segment] = []
    system = body.get("systemInstruction")
    if system is not None:
        segments.extend(_content_segments("systemInstruction", system))
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            decls = tool.get("functionDeclarations") if isinstance(tool, Mapping) else None
            if isinstance(decls, list) and len(tool) == 1:
                segments.extend(
                    (f"tools[{i}].functionDeclarations[{j}]", _json(d)) for j, d in enumerate(decls)
                )
            else:
                segments.append((f"tools[{i}]", _json(tool)))
    elif tools is not None:
        segments.append(("tools", _json(tools)))
    if body.get("toolConfig") is not None:
        segments.append(("toolConfig", _json(body["toolConfig"])))
    for i, content in enumerate(leading):
        segments.extend(_content_segments(f"contents[{i}]", content))
    return segments


def share_at_risk(previous: Sequence[Segment], current: Sequence[Segment]) -> float:
    """Fraction of the previous prefix (by bytes) from the first changed segment on: the part
    implicit caching can no longer match (everything, for the explicit entry holding it)."""
    total = sum(len(data) for _, data in previous)
    if not total:
        return 0.0
    unchanged = 0
    for before, after in zip(previous, current, strict=False):
        if before != after:
            break
        unchanged += len(before[1])
    return (total - unchanged) / total


def _mask(data: bytes) -> str:
    return _SECRET.sub("***", data.decode("utf-8", errors="replace"))


def _excerpt(data: bytes, offset: int) -> str:
    start = max(offset - 8, 0)
    text = _mask(data[start : offset + _EXCERPT])
    return ("…" if start else "") + text + ("…" if offset + _EXCERPT < len(data) else "")


def _around(pattern: re.Pattern[bytes], data: bytes, offset: int) -> bool:
    return any(m.start() <= offset <= m.end() for m in pattern.finditer(data))


def _cause(
    old: bytes | None, new: bytes | None, offset: int, previous: Sequence[Segment], current: Sequence[Segment]
) -> DriftCause:
    if sorted(previous) == sorted(current):
        return "reordered"
    if old is None or new is None:
        return "content"
    try:
        if json.loads(old) == json.loads(new):
            return "key-order" if re.sub(rb"\s", b"", old) != re.sub(rb"\s", b"", new) else "whitespace"
    except ValueError:
        pass
    if re.sub(rb"\s", b"", old) == re.sub(rb"\s", b"", new):
        return "whitespace"
    if _around(_UUID, old, offset) or _around(_UUID, new, offset):
        return "uuid"
    if _around(_TIMESTAMP, old, offset) or _around(_TIMESTAMP, new, offset):
        return "timestamp"
    return "edited"


def explain_drift(
    previous: Sequence[Segment],
    current: Sequence[Segment],
    *,
    tokens_at_risk: int,
    est_extra_cost: Decimal | None,
) -> PrefixDrift | None:
    """Where and why ``current`` stopped matching ``previous``; None when they are identical."""
    if list(previous) == list(current):
        return None
    for index in range(max(len(previous), len(current))):
        before = previous[index] if index < len(previous) else None
        after = current[index] if index < len(current) else None
        if before == after:
            continue
        old = before[1] if before is not None else b""
        new = after[1] if after is not None else b""
        same_place = before is not None and after is not None and before[0] == after[0]
        offset = 0
        if same_place:
            limit = min(len(old), len(new))
            while offset < limit and old[offset] == new[offset]:
                offset += 1
        segment = (after or before or ("prefix", b""))[0]
        return PrefixDrift(
            segment=segment,
            offset=offset,
            before=_excerpt(old, offset),
            after=_excerpt(new, offset),
            cause=_cause(old if same_place else None, new if same_place else None, offset, previous, current),
            tokens_at_risk=tokens_at_risk,
            est_extra_cost=est_extra_cost,
        )
    return None
