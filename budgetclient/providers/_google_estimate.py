"""A conversation's token estimate in proportion to what it adds, not to its length.

`estimate_request` with an `EstimateMemo` reuses what it collected per content, but still walks
every content and counts every text of the conversation on every call. Here a conversation keeps
the count of the contents it sent last (`ContentsTally`): when the next body's contents start with
those very objects (`_google_body` decodes an unchanged content to the previous call's object),
only the contents after them are read and counted. The result is ``estimate_request``'s:

- the texts are counted in the same order (system instruction, contents, tools, schemas), so the
  new ones share the exact-count budget as they would in a full count (`tokens.count_each`);
- every text of a kept content was counted before and memoised (or counted by its length), so it
  takes no budget and a recount gives its kept count, unless the memo was cleared since
  (`counting.memo_clears`), in which case everything is counted again.

The tally also answers the server-prefix split after the response (``{"contents": ...}`` alone,
the same count by the same argument) without counting the contents a third time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from operator import is_
from typing import Any, NamedTuple

from ..formats.collect import EstimateMemo
from ..formats.google.reader import collect_google
from ..tokens import TokenEstimate, calibrated_estimate, count_each, counting, encoding_for

__all__ = ["ContentsTally", "estimate_body"]

PROVIDER = "google"


class _Counted(NamedTuple):
    """The last estimate's parts, each by the very object it counted, and their raw counts."""

    encoding: str
    clears: int
    """``counting.memo_clears`` before that estimate counted (a clear since voids every count)."""
    contents: list[Any] | None
    contents_raw: int
    system: Any
    system_raw: int
    tools: Any
    config: Any
    config_snake: Any
    rest_raw: int
    """Tools and response schemas."""


class ContentsTally:
    """One conversation's element memo and the raw counts of the body it estimated last."""

    __slots__ = ("_last", "_lock", "memo")

    def __init__(self) -> None:
        self.memo = EstimateMemo()
        self._last: _Counted | None = None
        self._lock = threading.Lock()

    def contents_raw(self, contents: object, encoding: str) -> int | None:
        """The raw count of this very contents list, if it was the last one estimated and still holds."""
        last = self._last
        if last is None or last.contents is not contents or last.encoding != encoding:
            return None
        return last.contents_raw if last.clears == counting.memo_clears else None


def estimate_body(body: Mapping[str, Any], model: str, tally: ContentsTally) -> TokenEstimate:
    """``estimate_request("google", body, model, memo=tally.memo)``, counting only what is new.

    ``body`` must be a decoded wire body (`_google_body`): its values are never changed after.
    """
    clears = counting.memo_clears  # before counting: a clear while counting voids the next call's reuse
    enc = encoding_for(model)
    name = enc.name
    memo = tally.memo
    contents: Any = body.get("contents")
    system = body.get("systemInstruction")
    if system is None:
        system = body.get("system_instruction")
    tools = body.get("tools")
    config = body.get("generationConfig")
    config_snake = body.get("generation_config")
    listed = type(contents) is list
    kept = kept_raw = 0
    system_raw = rest_raw = -1
    last = tally._last
    if last is not None and last.encoding == name and last.clears == clears:
        if last.system is system:
            system_raw = last.system_raw
        if last.tools is tools and last.config is config and last.config_snake is config_snake:
            rest_raw = last.rest_raw
        before = last.contents
        if listed and before is not None and len(before) <= len(contents) and all(map(is_, before, contents)):
            kept, kept_raw = len(before), last.contents_raw
    texts: list[str] = []
    fixed = 0
    seen: dict[int, Any] = {}
    if system_raw < 0:
        part = collect_google({"systemInstruction": system}, memo)
        texts, fixed = part.texts, part.fixed
        seen.update(part.seen or ())
    start = len(texts)
    new = collect_google({"contents": contents[kept:] if kept else contents}, memo)
    texts += new.texts
    end = len(texts)
    if rest_raw < 0:
        rest = collect_google(
            {"tools": tools, "generationConfig": config, "generation_config": config_snake}, memo
        )
        texts += rest.texts
        seen.update(rest.seen or ())
    counts = count_each(enc, texts)
    contents_raw = kept_raw + sum(counts[start:end]) + new.fixed
    if system_raw < 0:
        system_raw = sum(counts[:start]) + fixed
    if rest_raw < 0:
        rest_raw = sum(counts[end:]) + rest.fixed
    seen.update(new.seen or ())
    with tally._lock:
        memo._replace(seen)
        tally._last = _Counted(
            name,
            clears,
            contents if listed else None,
            contents_raw,
            system,
            system_raw,
            tools,
            config,
            config_snake,
            rest_raw,
        )
    return calibrated_estimate(PROVIDER, model, system_raw + contents_raw + rest_raw)
