"""One place for configuration: ``configure()`` and the environment, read once, passed inward as values."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._fork_locks import renew_after_fork
from .allocation import AllocationTargets
from .errors import ConfigurationError
from .hooks import Hooks
from .ledger_url import check_url

__all__ = [
    "Settings",
    "SignalThresholds",
    "configure",
    "default_ledger_url",
    "get_settings",
    "reset_settings",
]

LEDGER_ENV = "BUDGETCLIENT_LEDGER"
PRICES_ENV = "BUDGETCLIENT_PRICES"
ALERT_COST_ENV = "BUDGETCLIENT_ALERT_COST_PER_TASK"
LEDGER_EXIT_TIMEOUT_ENV = "BUDGETCLIENT_LEDGER_EXIT_TIMEOUT"
"""Seconds the process waits at exit (and on SIGTERM) for queued records; ``0`` waits not at all."""
DEFAULT_LEDGER_EXIT_TIMEOUT_S = 10.0
"""``0.50`` or ``triage=0.50,summarize=0.10,*=1`` (USD); lets ``budgetclient check`` see the thresholds."""
DRIFT_EXCERPTS_ENV = "BUDGETCLIENT_DRIFT_EXCERPTS"
"""``0`` / ``false`` / ``no`` / ``off`` turns drift excerpts off (``configure(drift_excerpts=False)``)."""
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})

_UNSET: Any = object()


def default_ledger_url() -> str:
    """SQLite under ``$XDG_DATA_HOME/budgetclient/ledger.db`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'budgetclient' / 'ledger.db'}"


@dataclass(frozen=True, slots=True)
class SignalThresholds:
    """When the warning signals of ``budgetclient.signals`` fire; set with ``configure(signals={...})``.

    Defaults follow the guide: cost per task 1.5x its baseline, output more than 3x input, and
    conservative floors so that a handful of runs cannot raise an alarm.
    """

    cost_baseline_factor: float = 1.5
    """Alert when a task costs more than this times the median of earlier tasks of its name..."""
    cost_baseline_window: int = 20
    """...over at most this many earlier priced tasks of that name..."""
    cost_baseline_min_history: int = 5
    """...once at least this many exist..."""
    calls_rise_tolerance: float = 1.2
    """...and only while its call count stays within this factor of their median (more calls explain
    more cost)."""
    cache_hit_rate_min: float = 0.5
    """Alert when calls that repeat an already-sent prefix read less than this share of their input
    from cache."""
    cache_min_input_tokens: int = 1024
    """Calls with less input are ignored by the cache signal (below the providers' minimum cacheable
    length)."""
    failure_cost_share_max: float = 0.25
    """Alert when failed tasks account for more than this share of a task name's recent cost..."""
    failure_window: int = 20
    """...over its last this-many tasks (the one that just failed included)..."""
    failure_min_runs: int = 5
    """...once at least this many tasks are in that window."""
    failure_cost_max: Decimal | None = None
    """Alert when one failed task costs more than this (USD); None disables the absolute check."""
    output_input_ratio_max: float = 3.0
    """Alert when a task's output tokens exceed this multiple of its input tokens."""


_SIGNAL_LIMITS: dict[str, tuple[type, float, float | None]] = {
    # name: (type, lowest allowed, highest allowed)
    "cost_baseline_factor": (float, 1.0, None),
    "cost_baseline_window": (int, 1, None),
    "cost_baseline_min_history": (int, 1, None),
    "calls_rise_tolerance": (float, 1.0, None),
    "cache_hit_rate_min": (float, 0.0, 1.0),
    "cache_min_input_tokens": (int, 0, None),
    "failure_cost_share_max": (float, 0.0, 1.0),
    "failure_window": (int, 1, None),
    "failure_min_runs": (int, 1, None),
    "output_input_ratio_max": (float, 0.0, None),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """The process-wide settings in force; replaced whole by ``configure()``."""

    ledger_url: str
    """Where records go: ``sqlite:///path``, ``postgresql://...`` or ``memory://``."""
    ledger_exit_timeout: float = DEFAULT_LEDGER_EXIT_TIMEOUT_S
    """Longest wait at exit or SIGTERM for queued records to reach the ledger (seconds)."""
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
    drift_excerpts: bool = True
    """Quote a few masked bytes around a drift in `PrefixDriftWarning` / `PrefixDriftError`
    (in process only; the ledger never stores them). False: offsets, lengths and hashes only."""
    signals: SignalThresholds = field(default_factory=SignalThresholds)
    """Thresholds of the warning signals (cost baseline, cache hit rate, failure cost, output ratio)."""
    otel: bool = False
    """Export a span per task and call usage, and token metrics, through OpenTelemetry."""
    otel_mode: str = "auto"
    """Which span carries a call's usage: ``"auto"`` (another instrumentation's GenAI span for the
    call when there is one, enriched; else budgetclient's own), ``"enrich"`` (only theirs) or
    ``"own"`` (always budgetclient's). ``configure(otel="own")`` sets it and turns export on."""
    allocation_check: AllocationTargets | None = None
    """``None``: off. Otherwise the ``plan.AllocationTargets`` each request sent is checked against
    (``plan.allocation_exceeded`` is logged per component over its share of the window)."""


_lock = threading.RLock()
renew_after_fork(globals(), "_lock")
_settings: Settings | None = None
_settings_listeners: Hooks[None, Settings, Settings] = Hooks("config.listener_failed")


def _from_environment() -> Settings:
    settings = Settings(
        ledger_url=os.environ.get(LEDGER_ENV) or default_ledger_url(),
        prices_file=os.environ.get(PRICES_ENV) or None,
        drift_excerpts=os.environ.get(DRIFT_EXCERPTS_ENV, "").strip().lower() not in _FALSE_WORDS,
    )
    exit_timeout = os.environ.get(LEDGER_EXIT_TIMEOUT_ENV, "").strip()
    if exit_timeout:
        try:
            seconds = _exit_timeout(exit_timeout, LEDGER_EXIT_TIMEOUT_ENV)
            settings = replace(settings, ledger_exit_timeout=seconds)
        except ConfigurationError as exc:
            from ._warnings import emit_warning
            from .errors import BudgetClientWarning

            emit_warning(BudgetClientWarning(f"{LEDGER_EXIT_TIMEOUT_ENV} ignored: {exc}"), stacklevel=2)
    alert_cost = os.environ.get(ALERT_COST_ENV, "").strip()
    if alert_cost:
        try:
            settings = _with_alert_threshold(settings, _parse_alert_cost(alert_cost))
        except ConfigurationError as exc:
            # reading settings happens on the metering path, which must never raise: warn and go on
            from ._warnings import emit_warning
            from .errors import BudgetClientWarning

            emit_warning(BudgetClientWarning(f"{ALERT_COST_ENV} ignored: {exc}"), stacklevel=2)
    return settings


def _exit_timeout(value: object, source: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 <= seconds < float("inf"):
        raise ConfigurationError(f"{source}={value!r}: expected a number of seconds >= 0, e.g. 10")
    return seconds


def _parse_alert_cost(text: str) -> str | dict[str, str]:
    """``0.5`` -> one threshold; ``a=0.5,b=1,*=2`` -> per task name (``*`` is the default)."""
    if "=" not in text:
        return text
    by_name: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(
                f"{ALERT_COST_ENV}={text!r}: expected USD or name=USD pairs, e.g. 'triage=0.5,*=1'"
            )
        by_name[name.strip()] = value.strip()
    return by_name


def get_settings() -> Settings:
    settings = _settings  # read on every call: no lock once settings exist and first use ran
    if settings is not None and _first_use_done:
        return settings
    return _load_settings()


def _load_settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = _from_environment()
        settings = _settings
    if not _first_use_done:
        _run_first_use()
    return settings


_first_use: list[Callable[[], None]] = []
_first_use_done = False


def on_first_use(callback: Callable[[], None]) -> None:
    """Run ``callback()`` once, when settings are first read or configured, instead of at import.

    Every metered call and every task end reads settings before it reaches a hook, so this is how
    the package starts its process-wide subscribers (signals, OpenTelemetry) lazily.
    """
    with _lock:
        done = _first_use_done
        if not done:
            _first_use.append(callback)
    if done:
        callback()


def _run_first_use() -> None:
    global _first_use_done
    with _lock:
        if _first_use_done:
            return
        _first_use_done = True
        callbacks = list(_first_use)
    for callback in callbacks:
        callback()


def on_settings_change(callback: Callable[[Settings, Settings], None]) -> Callable[[], None]:
    """Register ``callback(old, new)``; used by the ledger writer and price cache to reload.

    Listeners run unguarded, in the caller of ``configure()``: a setting a listener cannot apply
    (``otel=True`` without opentelemetry) is the caller's error to see."""
    return _settings_listeners.add(callback)


# USD per million tokens; cache_storage is USD per million token-hours (Gemini explicit caches).
_PRICE_KEYS = frozenset({"input", "output", "cache_read", "cache_write", "cache_write_long", "cache_storage"})


def normalise_prices(
    prices: Mapping[str, Mapping[str, Any]], *, source: str
) -> dict[str, dict[str, Decimal]]:
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
    ledger_exit_timeout: float | None = _UNSET,
    prices: Mapping[str, Mapping[str, Any]] | None = _UNSET,
    prices_file: str | os.PathLike[str] | None = _UNSET,
    alert_cost_per_task: Decimal | float | str | Mapping[str, Decimal | float | str] | None = _UNSET,
    log_prompts: bool = _UNSET,
    drift_excerpts: bool = _UNSET,
    signals: SignalThresholds | Mapping[str, Any] | None = _UNSET,
    otel: bool | str = _UNSET,
    allocation_check: bool | AllocationTargets | None = _UNSET,
) -> Settings:
    """Change process-wide settings; arguments left out keep their current value.

    ``ledger`` is a URL (``sqlite:///path``, ``postgresql://...``, ``memory://``; ``None`` restores
    the default); a URL no backend can use raises `ConfigurationError` here, not at the first write.
    ``ledger_exit_timeout`` is the longest wait at exit or SIGTERM for queued records (seconds;
    ``None`` restores the default, 10). ``prices`` overrides per-model rates in USD per million tokens.
    ``alert_cost_per_task`` is one USD threshold, or a mapping of task name to threshold
    (key ``"*"`` for the default). ``signals`` changes warning-signal thresholds (a mapping of
    `SignalThresholds` fields, merged over the current ones; ``None`` restores the defaults).
    ``drift_excerpts=False`` keeps prompt text out of drift warnings and exceptions too (also
    ``BUDGETCLIENT_DRIFT_EXCERPTS=0``; the ledger never stores it either way).
    ``otel=True`` exports spans and metrics through OpenTelemetry (needs ``budgetclient[otel]``);
    ``otel="auto" | "enrich" | "own"`` also says which span carries a call's usage (True is "auto").
    ``allocation_check=True`` checks every request sent against the guide's 32k allocation (or
    pass a ``bc.plan.AllocationTargets``); ``False`` turns it off.
    """
    global _settings
    _run_first_use()
    with _lock:
        old = get_settings()
        new = old
        if ledger is not _UNSET:
            if ledger is not None and not isinstance(ledger, str):
                raise ConfigurationError(f"ledger must be a URL string, got {ledger!r}")
            url = check_url(ledger) if ledger else os.environ.get(LEDGER_ENV) or default_ledger_url()
            new = replace(new, ledger_url=url)
        if ledger_exit_timeout is not _UNSET:
            seconds = DEFAULT_LEDGER_EXIT_TIMEOUT_S if ledger_exit_timeout is None else ledger_exit_timeout
            new = replace(new, ledger_exit_timeout=_exit_timeout(seconds, "ledger_exit_timeout"))
        if prices is not _UNSET:
            new = replace(new, prices=normalise_prices(prices or {}, source="configure(prices=...)"))
        if prices_file is not _UNSET:
            new = replace(new, prices_file=None if prices_file is None else os.fspath(prices_file))
        if alert_cost_per_task is not _UNSET:
            new = _with_alert_threshold(new, alert_cost_per_task)
        if log_prompts is not _UNSET:
            new = replace(new, log_prompts=bool(log_prompts))
        if drift_excerpts is not _UNSET:
            new = replace(new, drift_excerpts=bool(drift_excerpts))
        if signals is not _UNSET:
            new = replace(new, signals=_signal_thresholds(new.signals, signals))
        if otel is not _UNSET:
            new = _with_otel(new, otel)
        if allocation_check is not _UNSET:
            new = replace(new, allocation_check=_allocation_targets(allocation_check))
        _settings = new
        listeners = _settings_listeners.hooks
    for callback in listeners:
        callback(old, new)
    return new


OTEL_MODES = ("auto", "enrich", "own")


def _with_otel(settings: Settings, value: Any) -> Settings:
    if isinstance(value, str):
        if value not in OTEL_MODES:
            raise ConfigurationError(
                f"otel must be True, False or one of {', '.join(map(repr, OTEL_MODES))}, got {value!r}"
            )
        return replace(settings, otel=True, otel_mode=value)
    return replace(settings, otel=True, otel_mode="auto") if value else replace(settings, otel=False)


def _allocation_targets(value: object) -> AllocationTargets | None:
    if value is None or value is False:
        return None
    if value is True:
        return AllocationTargets.guide_default()
    if isinstance(value, AllocationTargets):
        return value
    raise ConfigurationError(
        f"allocation_check must be True, False or a bc.plan.AllocationTargets, got {value!r}"
    )


def parse_usd(value: Any, what: str) -> Decimal:
    """A non-negative finite USD amount from a number or string; ConfigurationError otherwise."""
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
        by_name = {str(k): parse_usd(v, f"alert_cost_per_task[{k!r}]") for k, v in value.items() if k != "*"}
        default = parse_usd(value["*"], "alert_cost_per_task['*']") if "*" in value else None
        return replace(settings, alert_cost_per_task=default, alert_cost_per_task_by_name=by_name)
    return replace(settings, alert_cost_per_task=parse_usd(value, "alert_cost_per_task"))


def _signal_thresholds(current: SignalThresholds, value: Any) -> SignalThresholds:
    if value is None:
        return SignalThresholds()
    if isinstance(value, SignalThresholds):
        value = {name: getattr(value, name) for name in (*_SIGNAL_LIMITS, "failure_cost_max")}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"signals must be a mapping of threshold names to values, got {value!r}; "
            "e.g. configure(signals={'cost_baseline_factor': 2.0})"
        )
    allowed = sorted((*_SIGNAL_LIMITS, "failure_cost_max"))
    changes: dict[str, Any] = {}
    for name, raw in value.items():
        if name == "failure_cost_max":
            changes[name] = None if raw is None else parse_usd(raw, "signals['failure_cost_max']")
            continue
        if name not in _SIGNAL_LIMITS:
            raise ConfigurationError(f"unknown signal threshold {name!r}; allowed: {allowed}")
        kind, low, high = _SIGNAL_LIMITS[name]
        ok = isinstance(raw, int | float | Decimal) and not isinstance(raw, bool)
        if ok and kind is int:
            ok = isinstance(raw, int)
        number = float(raw) if ok else float("nan")
        if not ok or not (number >= low and (high is None or number <= high)):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise ConfigurationError(
                f"signals[{name!r}] must be {'an int' if kind is int else 'a number'} {bounds}, got {raw!r}"
            )
        changes[name] = int(raw) if kind is int else number
    return replace(current, **changes)


def reset_settings() -> None:
    """Forget configured values and re-read the environment (for tests)."""
    global _settings
    with _lock:
        old = _settings
        _settings = None
        new = get_settings()
        listeners = _settings_listeners.hooks
    if old is not None:
        for callback in listeners:
            callback(old, new)
