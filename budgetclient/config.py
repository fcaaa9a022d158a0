"""One place for configuration: ``configure()`` and the environment, read once, passed inward as values."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = ["Settings", "configure", "default_ledger_url", "get_settings", "reset_settings"]

LEDGER_ENV = "BUDGETCLIENT_LEDGER"
PRICES_ENV = "BUDGETCLIENT_PRICES"

_UNSET: Any = object()


def default_ledger_url() -> str:
    """SQLite under ``$XDG_DATA_HOME/budgetclient/ledger.db`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'budgetclient' / 'ledger.db'}"


@dataclass(frozen=True, slots=True)
class Settings:
    """The process-wide settings in force; replaced whole by ``configure()``."""

    ledger_url: str
    """Where records go: ``sqlite:///path``, ``postgresql://...`` or ``memory://``."""
    prices: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    """Per-model price overrides, USD per million tokens (keys: input, output, cache_read,
    cache_write, cache_write_long), plus cache_storage in USD per million token-hours (Gemini
    explicit caches)."""
    prices_file: str | None = None
    """TOML file of overrides (``BUDGETCLIENT_PRICES``); merged under ``prices``."""
    alert_cost_per_task: Decimal | None = None
    """Alert when one task costs more than this (USD); per-name values in ``alert_cost_per_task_by_name``."""
    alert_cost_per_task_by_name: Mapping[str, Decimal] = field(default_factory=dict)
    log_prompts: bool = False
    """Never store prompt text unless explicitly enabled."""


_lock = threading.RLock()
_settings: Settings | None = None
_listeners: list[Any] = []


def _from_environment() -> Settings:
    return Settings(
        ledger_url=os.environ.get(LEDGER_ENV) or default_ledger_url(),
        prices_file=os.environ.get(PRICES_ENV) or None,
    )


def get_settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = _from_environment()
        return _settings


def on_settings_change(callback: Any) -> None:
    """Register ``callback(old, new)``; used by the ledger writer and price cache to reload."""
    with _lock:
        _listeners.append(callback)


# USD per million tokens; cache_storage is USD per million token-hours (Gemini explicit caches).
_PRICE_KEYS = frozenset({"input", "output", "cache_read", "cache_write", "cache_write_long", "cache_storage"})


def normalise_prices(prices: Mapping[str, Mapping[str, Any]], *, source: str) -> dict[str, dict[str, Decimal]]:
    """Validate a ``{model: {bucket: usd_per_million}}`` mapping and turn values into Decimal."""
    if not isinstance(prices, Mapping):
        raise ConfigurationError(
            f"{source}: prices must be a mapping of model name to rates, got {type(prices).__name__}; "
            'e.g. {"my-model": {"input": 3, "output": 15}}'
        )
    result: dict[str, dict[str, Decimal]] = {}
    for model, rates in prices.items():
        if not isinstance(rates, Mapping):
            raise ConfigurationError(
                f"{source}: prices for {model!r} must be a mapping like {{'input': 3, 'output': 15}}, "
                f"got {rates!r}"
            )
        unknown = set(rates) - _PRICE_KEYS
        if unknown:
            raise ConfigurationError(
                f"{source}: unknown price key(s) {sorted(unknown)} for {model!r}; "
                f"allowed keys are {sorted(_PRICE_KEYS)} (USD per million tokens)"
            )
        converted: dict[str, Decimal] = {}
        for key, value in rates.items():
            try:
                amount = Decimal(str(value))
            except ArithmeticError:
                amount = Decimal(-1)
            if isinstance(value, bool) or not amount.is_finite() or amount < 0:
                raise ConfigurationError(
                    f"{source}: price {key}={value!r} for {model!r} must be a non-negative number "
                    "(USD per million tokens)"
                )
            converted[key] = amount
        result[str(model)] = converted
    return result


def configure(
    *,
    ledger: str | None = _UNSET,
    prices: Mapping[str, Mapping[str, Any]] | None = _UNSET,
    prices_file: str | os.PathLike[str] | None = _UNSET,
    alert_cost_per_task: Decimal | float | str | Mapping[str, Decimal | float | str] | None = _UNSET,
    log_prompts: bool = _UNSET,
) -> Settings:
    """Change process-wide settings; arguments left out keep their current value.

    ``ledger`` is a URL (``sqlite:///path``, ``postgresql://...``, ``memory://``; ``None`` restores
    the default). ``prices`` overrides per-model rates in USD per million tokens.
    ``alert_cost_per_task`` is one USD threshold, or a mapping of task name to threshold
    (key ``"*"`` for the default).
    """
    global _settings
    with _lock:
        old = get_settings()
        new = old
        if ledger is not _UNSET:
            if ledger is not None and not isinstance(ledger, str):
                raise ConfigurationError(f"ledger must be a URL string, got {ledger!r}")
            new = replace(new, ledger_url=ledger or os.environ.get(LEDGER_ENV) or default_ledger_url())
        if prices is not _UNSET:
            new = replace(new, prices=normalise_prices(prices or {}, source="configure(prices=...)"))
        if prices_file is not _UNSET:
            new = replace(new, prices_file=None if prices_file is None else os.fspath(prices_file))
        if alert_cost_per_task is not _UNSET:
            new = _with_alert_threshold(new, alert_cost_per_task)
        if log_prompts is not _UNSET:
            new = replace(new, log_prompts=bool(log_prompts))
        _settings = new
        listeners = list(_listeners)
    for callback in listeners:
        callback(old, new)
    return new


def _usd(value: Any, what: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        amount = Decimal(-1)
    if isinstance(value, bool) or not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{what} must be a non-negative USD amount, got {value!r}")
    return amount


def _with_alert_threshold(settings: Settings, value: Any) -> Settings:
    if value is None:
        return replace(settings, alert_cost_per_task=None, alert_cost_per_task_by_name={})
    if isinstance(value, Mapping):
        by_name = {str(k): _usd(v, f"alert_cost_per_task[{k!r}]") for k, v in value.items() if k != "*"}
        default = _usd(value["*"], "alert_cost_per_task['*']") if "*" in value else None
        return replace(settings, alert_cost_per_task=default, alert_cost_per_task_by_name=by_name)
    return replace(settings, alert_cost_per_task=_usd(value, "alert_cost_per_task"))


def reset_settings() -> None:
    """Forget configured values and re-read the environment (for tests)."""
    global _settings
    with _lock:
        old = _settings
        _settings = None
        new = get_settings()
        listeners = list(_listeners)
    if old is not None:
        for callback in listeners:
            callback(old, new)
