"""Gemini's API rules and budgetclient's caching decisions, as pure functions and values.

URL routes (which model method or cache a request addresses), the minimum cacheable size, the
decision whether an explicit cache entry pays (`cache_pays`), its TTL (`auto_ttl`), the request
rewrite that reads an entry, and the server clock storage is billed on.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx2

from .. import pricing
from .._log import log
from ..formats.google.prefix import PREFIX_FIELDS

__all__ = [
    "CacheEconomics",
    "GeminiRoute",
    "ServerClock",
    "auto_ttl",
    "cache_pays",
    "content_digest",
    "economics_for",
    "expected_future_reads",
    "leading_user_run",
    "min_cache_tokens",
    "parse_rfc3339",
    "parse_route",
    "rewrite_body",
]


PROVIDER = "google"

_ROUTE = re.compile(
    r"^(?P<root>.*?/v\d+(?:alpha|beta)?\d*/)"
    r"(?P<parent>projects/[^/]+/locations/[^/]+/)?"
    r"(?:(?P<model>(?:publishers/[^/]+/)?(?:models|tunedModels)/[^/:]+):(?P<method>[A-Za-z]+)"
    r"|cachedContents(?:/(?P<cache_id>[^/:]+))?)$"
)


def min_cache_tokens(model: str) -> int:
    """Gemini's minimum cacheable prompt: 4,096 tokens for Pro models, 1,024 for Flash and others.

    (ai.google.dev/gemini-api/docs/caching: 1,024 for 2.5 Flash / 3 Flash, 4,096 for 2.5 / 3 Pro.)
    """
    return 4096 if "pro" in model.rsplit("/", 1)[-1] else 1024


@dataclass(frozen=True, slots=True)
class GeminiRoute:
    """What a Gemini API URL addresses: a model method or the ``cachedContents`` collection."""

    method: str
    """``generateContent``, ``streamGenerateContent``, ``countTokens``... or ``cachedContents``."""
    model: str
    """Short model name (``gemini-2.5-flash``), as priced; empty for cache URLs."""
    model_resource: str
    """The model as a cache body names it: ``models/x``, or on Vertex
    ``projects/p/locations/l/publishers/google/models/x``."""
    root: str
    """URL path up to and including the API version, e.g. ``/v1beta/``."""
    parent: str
    """``projects/p/locations/l/`` on Vertex, else empty."""
    cache_id: str | None = None

    @property
    def caches_path(self) -> str:
        return f"{self.root}{self.parent}cachedContents"

    @property
    def is_generate(self) -> bool:
        return self.method in ("generateContent", "streamGenerateContent")


def parse_route(url: httpx2.URL) -> GeminiRoute | None:
    return _route_of_path(url.path)


@functools.lru_cache(maxsize=256)
def _route_of_path(path: str) -> GeminiRoute | None:
    """Memoised: a client sends to a handful of paths (routes are frozen, so sharing them is safe)."""
    match = _ROUTE.match(path)
    if match is None:
        return None
    root, parent = match["root"], match["parent"] or ""
    if match["model"] is None:
        return GeminiRoute("cachedContents", "", "", root, parent, match["cache_id"])
    resource = parent + match["model"]
    return GeminiRoute(match["method"], match["model"].rsplit("/", 1)[-1], resource, root, parent)


# -- decisions (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheEconomics:
    """The three rates that decide whether an explicit cache pays (USD per million tokens)."""

    input: Decimal
    cache_read: Decimal
    storage_per_hour: Decimal


def cache_pays(
    *, future_reads: int, implicit_hit_share: float, expected_hours: Decimal, economics: CacheEconomics
) -> bool:
    """True when the reads expected after creation repay creating and storing the entry.

    Per prefix token, against sending the prefix as before (implicit caching hitting a share ``h``
    of it): each later read saves ``input - cache_read`` on the share implicit caching misses; the
    creating call pays the creation (``input``) and then reads the entry (``cache_read``) where it
    would have paid ``(1 - h) * input + h * cache_read``, so it costs ``h * input + (1 - h) *
    cache_read`` more, plus storage for ``expected_hours``. A short session may end right after
    the creating call: that extra is what it risks.
    """
    hit = Decimal(str(min(max(implicit_hit_share, 0.0), 1.0)))
    miss = 1 - hit
    saving = future_reads * (economics.input - economics.cache_read) * miss
    creating = hit * economics.input + miss * economics.cache_read
    return saving > creating + economics.storage_per_hour * expected_hours


def expected_future_reads(seen: int, *, run_calls: int = 0, calls_per_run: float | None = None) -> int:
    """Reads to expect after the current call of a prefix already sent ``seen`` times: as many as
    the repeats seen so far (``seen - 1``; the first send is no repeat), or, when earlier runs of
    the task made ``calls_per_run`` calls (`run_history`), what is left of such a run after this
    one's ``run_calls`` earlier calls and the current one, whichever is more.
    """
    learnt = int(calls_per_run) - run_calls - 1 if calls_per_run is not None else 0
    return max(seen - 1, learnt, 0)


def auto_ttl(option: str, max_gap_s: float) -> int:
    """Seconds an entry lives without use: 5m / 1h as asked, or for ``auto`` twice the longest
    observed gap between calls of the prefix, kept within [5 min, 1 h]."""
    if option == "5m":
        return 300
    if option == "1h":
        return 3600
    return int(min(max(2 * max_gap_s, 300.0), 3600.0))


def content_digest(value: Any) -> str:
    """Digest of one JSON value as sent (key order kept)."""
    return hashlib.sha256(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def leading_user_run(contents: Sequence[Any]) -> list[Any]:
    """The contents before the first model turn (the opening context of a conversation)."""
    run = []
    for content in contents:
        if not isinstance(content, Mapping) or content.get("role", "user") != "user":
            break
        run.append(content)
    return run


def rewrite_body(body: Mapping[str, Any], cache_name: str, leading: int) -> dict[str, Any]:
    """The request body that reads ``cache_name`` instead of sending what the entry holds."""
    rewritten = {k: v for k, v in body.items() if k not in PREFIX_FIELDS}
    rewritten["contents"] = list(body.get("contents") or ())[leading:]
    rewritten["cachedContent"] = cache_name
    return rewritten


def parse_rfc3339(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        text = value.replace("Z", "+00:00")
        # Python < 3.12 parses at most 6 fractional digits; the API may send 9
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class ServerClock:
    """The API server's time, from ``Date`` headers; storage is billed on the server's clock."""

    def __init__(self) -> None:
        self._offset: float | None = None
        self._last: tuple[str, float] = ("", 0.0)
        """The last ``Date`` parsed: responses within the same second carry the same header."""

    def observe(self, date_header: str | None) -> float:
        """Record a response's ``Date``; returns it as epoch seconds (local estimate if absent)."""
        if date_header:
            header, at = self._last
            if header != date_header:
                try:
                    at = email.utils.parsedate_to_datetime(date_header).timestamp()
                except (TypeError, ValueError):
                    return self.now()
                self._last = (date_header, at)
            self._offset = at - time.time()
            return at
        return self.now()

    def now(self) -> float:
        return time.time() + (self._offset or 0.0)


def economics_for(model: str) -> CacheEconomics | None:
    """The model's input, cache-read and storage rates, or None if any is unknown."""
    try:
        rates = pricing.rates_for(model, PROVIDER)
        if rates is None or rates.cache_storage is None:
            return None
        return CacheEconomics(
            input=rates.input.base, cache_read=rates.cache_read.base, storage_per_hour=rates.cache_storage
        )
    except Exception as exc:
        log.error("price.failed", model=model, error=type(exc).__name__, detail=str(exc)[:200])
        return None
