"""Cache markers on an Anthropic Messages body: ``cache_control`` read and written.

Markers are added only as ``cache_control`` keys (stripped from the cache key by the API and from
our fingerprints), and a marked string ``content`` / ``system`` becomes the one-text-block list
the API treats it as; no block is ever inserted, removed or reordered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...blocks import (
    RequestBlocks,
    Ttl,
)
from ...placement import (
    Marker,
)

__all__ = ["apply_markers", "cache_control"]

def cache_control(ttl: Ttl) -> dict[str, str]:
    """The marker for ``ttl`` (5m is the API default, so it is sent without ``ttl``)."""
    return {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": "1h"}


def _marker_ttl(value: Any) -> Ttl | None:
    if value is None or not isinstance(value, Mapping):  # most blocks: no ABC check
        return None
    return "1h" if value.get("ttl") == "1h" else "5m"



def apply_markers(
    body: Mapping[str, Any],
    request: RequestBlocks,
    markers: Sequence[Marker],
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``body`` with ``cache_control`` on the marked blocks (and ``extra`` top-level keys).

    Copy-on-write along each marked path: untouched lists and blocks are shared, not copied.
    """
    new = dict(body)
    if extra:
        new.update(extra)
    copied: dict[str, list[Any]] = {}  # the lists copied so far, by key (each copied once)
    blocks = request.blocks
    for marker in markers:
        block = blocks[marker.index]
        control = {"type": "ephemeral"} if marker.ttl == "5m" else cache_control(marker.ttl)
        section = block.section
        if section != "messages" and block.shorthand:
            new["system"] = [{"type": "text", "text": body["system"], "cache_control": control}]
        elif section != "messages":
            items = copied.get(section)
            if items is None:
                items = copied[section] = new[section] = list(new[section])
            assert block.content is not None
            items[block.content] = {**items[block.content], "cache_control": control}
        else:
            assert block.message is not None
            messages = copied.get("messages")
            if messages is None:
                messages = copied["messages"] = new["messages"] = list(new["messages"])
            message = dict(messages[block.message])
            if block.shorthand:
                message["content"] = [{"type": "text", "text": message["content"], "cache_control": control}]
            else:
                assert block.content is not None
                content = list(message["content"])
                content[block.content] = {**content[block.content], "cache_control": control}
                message["content"] = content
            messages[block.message] = message
    return new
