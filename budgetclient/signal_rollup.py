"""A task name's report work kept in the ledger's ``rollups`` (`ledger.rollups`), so a report reads
and replays only the runs that ended since the last one.

What a replay of a name's runs (in the order they ended) leaves behind is the alerts it raised, the
prefix keys seen (`signals.SignalEngine.seen_keys`, in their eviction order) and the name's history,
which is its last `signals.history_kept` runs (read again from the ledger). The rollup keeps the
alerts and the keys, the row's sums over those runs (`run_sums.RunSums`), the checklist's cache
figures of the name (with their own prefix keys and the last run they took in), and its mark: the
last run covered, with how many runs ended up to it and the sum of their stored orders. The mark
holds while the ledger gives the same count and sum up to it (a run stored since that ended before
it, or a deleted one, changes them; stored orders only grow) and the thresholds are the same;
otherwise the name is done from its first run, and the rollup replaced. The prefix keys, the bulk of
it, are kept apart and read only for a name with runs to replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from .config import Settings
from .ledger.base import AlertRecord
from .ledger.run_marks import RunMark
from .run_sums import RunSums
from .signals import cost_limit_for

__all__ = [
    "SEEN_PREFIX", "CacheItem", "CacheState", "KeptSignals", "kept_seen", "kept_signals", "rollup_name",
    "seen_name", "signals_rollup",
]

CacheItem = tuple[int, int, int, int, int, int]
"""The checklist's cache figures of a name: first eligible call (start in µs, stored order), eligible
calls, cached, repeat input, repeat read."""


CacheState = tuple[CacheItem | None, dict[str, int], tuple[int, int] | None]
"""The checklist's cache figures of a name, their prefix keys and the last run they took in (its
first eligible call)."""


class KeptSignals(NamedTuple):
    mark: RunMark
    runs: int
    """Runs that ended up to ``mark``, all covered."""
    orders: int
    """The sum of their stored orders."""
    sums: RunSums
    seen: dict[str, int]
    """Empty as read: `kept_seen` reads them where needed."""
    alerts: list[tuple[RunMark, AlertRecord]]
    """Each with its run's place, to order alerts as a whole replay would."""
    own_calls: int
    """Their own calls (`ledger_report.RunFacts.own_calls`, summed)."""
    cache: CacheItem | None
    has_cache: bool
    """Whether ``cache`` was computed (None then: no eligible call)."""
    cache_seen: dict[str, int]
    """The prefix keys of the checklist's cache figures (empty as read: `kept_seen` reads them)."""
    cache_last: tuple[int, int] | None
    """The last run's first eligible call (start, stored order) that the cache figures took in: a
    run whose first eligible call comes later is added to them, an earlier one has them taken again."""


_VERSION = 4


def rollup_name(name: str) -> str:
    return f"signals:{name}"


def _fingerprint(name: str, settings: Settings) -> str:
    return repr((settings.signals, cost_limit_for(name, settings)))


def _mark_json(mark: RunMark) -> list[Any]:
    return [mark[0].isoformat(), mark[1].isoformat(), mark[2]]


def _mark_from(data: list[Any]) -> RunMark:
    ended, started, order = data
    return (datetime.fromisoformat(ended), datetime.fromisoformat(started), int(order))


def _alert_json(mark: RunMark, alert: AlertRecord) -> list[Any]:
    return [
        _mark_json(mark), alert.id, alert.kind, alert.task_name, alert.task_id, alert.created_at.isoformat(),
        alert.message, alert.value, alert.threshold, alert.details,
    ]  # fmt: skip


def _alert_from(data: list[Any]) -> tuple[RunMark, AlertRecord]:
    mark, id_, kind, name, task_id, created, message, value, threshold, details = data
    if not isinstance(details, dict):
        raise TypeError("not an alert")
    return _mark_from(mark), AlertRecord(
        id=id_, kind=kind, task_name=name, task_id=task_id, created_at=datetime.fromisoformat(created),
        message=message, value=value, threshold=threshold, details=details,
    )  # fmt: skip


def _cache_item(data: list[Any]) -> CacheItem:
    first, order, eligible, cached, repeat_input, repeat_read = (int(v) for v in data)
    return (first, order, eligible, cached, repeat_input, repeat_read)


def kept_signals(data: Any, name: str, settings: Settings) -> KeptSignals | None:
    """The kept work of a name, if taken with these thresholds (its mark is the caller's to check)."""
    try:
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            return None
        if data["fp"] != _fingerprint(name, settings):
            return None
        cache = data["cache"]
        return KeptSignals(
            mark=_mark_from(data["mark"]), runs=int(data["n"]), orders=int(data["orders"]),
            sums=RunSums.from_json(data["sums"]), seen={},
            alerts=[_alert_from(a) for a in data["alerts"]], own_calls=int(data["own"]),
            cache=None if cache is None else _cache_item(cache), has_cache=bool(data["has_cache"]),
            cache_seen={}, cache_last=None if data["cache_last"] is None else _pair(data["cache_last"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError):
        return None


def kept_seen(data: Any, kept: KeptSignals) -> KeptSignals | None:
    """``kept`` with the prefix keys kept beside it (their own rollup, `seen_name`: read only for a
    name with runs to replay), if they are of the same mark."""
    try:
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            return None
        if (data["n"], data["orders"]) != (kept.runs, kept.orders):
            return None
        return kept._replace(
            seen={str(key): int(end) for key, end in data["seen"]},
            cache_seen={str(key): int(end) for key, end in data["cache_seen"]},
        )
    except (KeyError, TypeError, ValueError):
        return None


def _pair(data: list[Any]) -> tuple[int, int]:
    first, second = data
    return (int(first), int(second))


def seen_name(name: str) -> str:
    return f"{SEEN_PREFIX}{name}"


SEEN_PREFIX = "seen:"


def signals_rollup(name: str, settings: Settings, kept: KeptSignals) -> list[tuple[str, Any]]:
    """The rollups of ``kept``: its figures, and apart from them its prefix keys (the bulk of it)."""
    figures = {
        "v": _VERSION, "fp": _fingerprint(name, settings), "mark": _mark_json(kept.mark), "n": kept.runs,
        "orders": kept.orders, "sums": kept.sums.as_json(),
        "alerts": [_alert_json(m, a) for m, a in kept.alerts], "own": kept.own_calls,
        "cache": None if kept.cache is None else list(kept.cache), "has_cache": kept.has_cache,
        "cache_last": None if kept.cache_last is None else list(kept.cache_last),
    }  # fmt: skip
    seen = {
        "v": _VERSION, "n": kept.runs, "orders": kept.orders, "seen": list(kept.seen.items()),
        "cache_seen": list(kept.cache_seen.items()),
    }  # fmt: skip
    return [(rollup_name(name), figures), (seen_name(name), seen)]
