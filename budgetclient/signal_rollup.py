"""A task name's replayed signals kept in the ledger's ``rollups`` (`ledger.rollups`), so a report
replays only the runs that ended since the last one.

What a replay of a name's runs (in the order they ended) leaves behind is the alerts it raised, the
runs themselves (the report reads them anyway: the last `signals.history_kept` are the engine's
history) and the prefix keys seen (`signals.SignalEngine.seen_keys`, with their eviction order). The
rollup keeps the alerts and the keys, with how many runs it covers and a digest of their ids in that
order: it holds while the name's first ``n`` runs by end are the same runs, and the thresholds are the
same. A run stored since that ended before the last one covered changes the order, so the digest
differs and the name is replayed from its first run. The checklist's cache figures of the name (a
function of every run's facts) are kept too, for when no run was added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from .config import Settings
from .ledger.base import AlertRecord
from .signals import cost_limit_for
from .usage import TaskRecord

__all__ = ["KeptSignals", "kept_signals", "signals_rollup", "rollup_name"]

CacheItem = tuple[int, int, int, int, int, int]
"""The checklist's cache figures of a name: first eligible call (start in µs, stored order), eligible
calls, cached, repeat input, repeat read."""


class KeptSignals(NamedTuple):
    runs: int
    """The name's first ``runs`` runs by end are covered."""
    seen: dict[str, int]
    alerts: list[AlertRecord]
    own_calls: int
    """Their own calls (`ledger_report.RunFacts.own_calls`, summed)."""
    cache: CacheItem | None
    """None: not kept (a report without the checklist), or no eligible call (``has_cache`` says)."""
    has_cache: bool


def rollup_name(name: str) -> str:
    return f"signals:{name}"


def _fingerprint(name: str, settings: Settings) -> str:
    return repr((settings.signals, cost_limit_for(name, settings)))


def _digest(runs: Sequence[TaskRecord]) -> str:
    return hashlib.blake2b("\0".join(run.id for run in runs).encode(), digest_size=16).hexdigest()


def _alert_json(alert: AlertRecord) -> list[Any]:
    return [alert.id, alert.kind, alert.task_name, alert.task_id, alert.created_at.isoformat(), alert.message,
            alert.value, alert.threshold, alert.details]  # fmt: skip


def _alert_from(data: list[Any]) -> AlertRecord:
    id_, kind, name, task_id, created, message, value, threshold, details = data
    if not isinstance(details, dict):
        raise TypeError("not an alert")
    return AlertRecord(id=id_, kind=kind, task_name=name, task_id=task_id,
                       created_at=datetime.fromisoformat(created), message=message, value=value,
                       threshold=threshold, details=details)  # fmt: skip


def kept_signals(data: Any, name: str, settings: Settings, runs: Sequence[TaskRecord]) -> KeptSignals | None:
    """The kept replay of ``runs`` (the name's runs, in the order they ended), if it still holds."""
    try:
        if not isinstance(data, dict) or data.get("v") != 1 or data["fp"] != _fingerprint(name, settings):
            return None
        n = int(data["n"])
        if n > len(runs) or data["ck"] != _digest(runs[:n]):
            return None
        cache = data["cache"]
        return KeptSignals(
            runs=n, seen={str(key): int(end) for key, end in data["seen"]},
            alerts=[_alert_from(a) for a in data["alerts"]], own_calls=int(data["own"]),
            cache=None if cache is None else _cache_item(cache),
            has_cache=bool(data["has_cache"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _cache_item(data: list[Any]) -> CacheItem:
    first, order, eligible, cached, repeat_input, repeat_read = (int(v) for v in data)
    return (first, order, eligible, cached, repeat_input, repeat_read)


def signals_rollup(
    name: str, settings: Settings, runs: Sequence[TaskRecord], kept: KeptSignals
) -> dict[str, Any]:
    """The rollup of a replay of all of ``runs`` that left ``kept``."""
    return {
        "v": 1, "fp": _fingerprint(name, settings), "n": kept.runs, "ck": _digest(runs[: kept.runs]),
        "seen": list(kept.seen.items()), "alerts": [_alert_json(a) for a in kept.alerts],
        "own": kept.own_calls, "cache": None if kept.cache is None else list(kept.cache),
        "has_cache": kept.has_cache,
    }  # fmt: skip
