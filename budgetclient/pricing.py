"""What one call costs: genai-prices' bundled snapshot, user overrides, and Gemini cache storage.

Each call is priced on its own and money is summed afterwards, because tiers are per request: a
long-context tier applies when *that request's* total input (cached tokens included) passes the
threshold, and then it applies to every token of the bucket (genai-prices' "cliff" model).

Rates are resolved in layers, per price key: ``configure(prices=...)`` > the TOML file named by
``BUDGETCLIENT_PRICES`` > genai-prices. An override may therefore set just one bucket. Buckets
still missing fall back: cache_read and cache_write to the input rate (OpenAI bills no write
premium before GPT-5.6, Gemini bills implicit-cache writes as input), cache_write_long to 2x input
for Anthropic and to cache_write elsewhere, output to 0 (models that bill no output, such as
embeddings). Without an input rate a model has no price: cost ``None``, never 0.

Batch calls use genai-prices' ``processing=batch`` price variant when the model has one at the
request's date; otherwise every standard rate is halved (Anthropic, OpenAI and Gemini all
discount batch by 50%). Override rates are standard rates, so batch calls pay half of them.

Only the bundled snapshot is read: nothing here fetches price updates over the network.
"""

from __future__ import annotations

import os
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any

from . import config
from ._fork_locks import renew_after_fork
from ._guard import guarded
from ._log import log
from ._warnings import emit_warning, user_stacklevel
from .errors import ConfigurationError, UnknownPriceWarning
from .usage import CostBreakdown, Usage, _new_breakdown

__all__ = [
    "Rate",
    "Rates",
    "estimate_input_cost",
    "is_bedrock_id",
    "load_prices_file",
    "price_call",
    "price_usage",
    "rates_for",
    "reset_price_cache",
    "storage_cost",
]


_MILLION = Decimal(1_000_000)
_BATCH_FACTOR = Decimal("0.5")
_BATCH_CONTEXT: Mapping[str, str] = {"processing": "batch"}
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Rate:
    """One bucket's price in USD per million tokens, with genai-prices' cliff tiers."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()
    """``(start, price)`` ascending by start; ``price`` applies to the whole bucket when the
    request's total input tokens exceed ``start``."""

    def at(self, total_input_tokens: int) -> Decimal:
        """The rate in force for a request with this many input tokens (cached ones included)."""
        if not self.tiers:
            return self.base
        for start, price in reversed(self.tiers):
            if total_input_tokens > start:
                return price
        return self.base

    def scaled(self, factor: Decimal) -> Rate:
        return Rate(self.base * factor, tuple((start, price * factor) for start, price in self.tiers))


@dataclass(frozen=True, slots=True)
class Rates:
    """Every rate needed to price one call of ``model``, resolved for one date and batch mode."""

    model: str
    provider: str | None
    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    """Short-TTL cache writes (Anthropic 5m; OpenAI and Gemini bill writes as input unless priced)."""
    cache_write_long: Rate
    """Long-TTL cache writes (Anthropic 1h, OpenAI extended retention)."""
    cache_storage: Decimal | None
    """USD per million token-hours held in an explicit cache (Gemini); None if unknown."""
    source: str
    """The highest layer that supplied a rate: ``"override"``, ``"file"`` or ``"genai-prices"``."""


def price_usage(usage: Usage, rates: Rates) -> CostBreakdown:
    """Price one request's usage; every tier is picked by that request's total input tokens."""
    total_input = usage.input_tokens
    cache_write = (
        usage.cache_write_short_tokens * rates.cache_write.at(total_input)
        + usage.cache_write_long_tokens * rates.cache_write_long.at(total_input)
    )
    return _new_breakdown(
        uncached_input=usage.uncached_input_tokens * rates.input.at(total_input) / _MILLION,
        cache_read=usage.cache_read_tokens * rates.cache_read.at(total_input) / _MILLION,
        cache_write=cache_write / _MILLION,
        # reasoning tokens are a subset of output_tokens: never add them again
        output=usage.output_tokens * rates.output.at(total_input) / _MILLION,
        storage=_ZERO,
    )


def price_call(
    usage: Usage,
    model: str,
    provider: str | None = None,
    *,
    batch: bool = False,
    at: datetime | None = None,
) -> CostBreakdown | None:
    """Cost of one call, or None (with one ``UnknownPriceWarning`` per model) if it has no price."""
    rates = rates_for(model, provider, batch=batch, at=at)
    if rates is None:
        _warn_once(
            model,
            "price.unknown",
            f"no price known for model {model!r} (provider {provider!r}); its cost is recorded as None, "
            "tokens are still counted. Set a price with "
            f"bc.configure(prices={{{model!r}: {{'input': ..., 'output': ...}}}}) or in the TOML file "
            f"named by {config.PRICES_ENV} (USD per million tokens).",
            provider=provider,
        )
        return None
    return price_usage(usage, rates)


def estimate_input_cost(input_tokens: int, model: str, provider: str | None = None) -> Decimal | None:
    """Upper-bound input cost before sending: every token at the uncached input rate; None if unpriced.

    Used for budget checks, so it never warns (the call itself will, once).
    """
    rates = rates_for(model, provider)
    if rates is None:
        return None
    return input_tokens * rates.input.at(input_tokens) / _MILLION


def storage_cost(
    tokens: int,
    hours: Decimal,
    model: str,
    provider: str | None = "google",
    *,
    at: datetime | None = None,
) -> Decimal | None:
    """Cost of holding ``tokens`` in an explicit cache for ``hours`` (Gemini); None if unpriced."""
    if tokens < 0 or hours < 0:
        raise ValueError(f"storage_cost needs non-negative tokens and hours, got {tokens=}, {hours=}")
    when = _utc(at)
    rates = rates_for(model, provider, at=when)
    if rates is not None:
        rate = rates.cache_storage
    else:  # storage may be known (table or override) for a model genai-prices lacks
        rate = _storage_rate(model, None, when, config.get_settings())
    if rate is None:
        _warn_once(
            f"storage:{model}",
            "price.unknown_storage",
            f"no cache storage price known for model {model!r}; its storage cost is recorded as None. "
            f"Set one with bc.configure(prices={{{model!r}: {{'cache_storage': ...}}}}) "
            "(USD per million token-hours).",
            provider=provider,
        )
        return None
    return tokens * Decimal(str(hours)) * rate / _MILLION


# --- resolution and cache -----------------------------------------------------------------------

_CacheKey = tuple[str, str | None, bool, int]
"""(model, provider, batch, proleptic ordinal of the UTC date)."""

_lock = threading.Lock()
renew_after_fork(globals(), "_lock")
_rates_cache: dict[_CacheKey, Rates | None] = {}
_file_cache: dict[str, dict[str, dict[str, Decimal]]] = {}
_generation = 0
_warned: set[str] = set()


def rates_for(
    model: str, provider: str | None = None, *, batch: bool = False, at: datetime | None = None
) -> Rates | None:
    """The rates in force for ``model`` on ``at``'s UTC date (default: now); None if it has no price.

    Cached per (model, provider, batch, date) until settings change, so the hot path is a dict hit
    (today's date comes from ``time.time()``: no datetime is built unless the rates are resolved).
    """
    if at is None:
        now = time.time()
        day = _EPOCH_ORDINAL + int(now // 86_400)
    else:
        when = _utc(at)
        day = when.toordinal()
    key = (model, provider, batch, day)
    try:
        return _rates_cache[key]
    except KeyError:
        pass
    if at is None:
        when = datetime.fromtimestamp(now, UTC)
    generation = _generation
    rates, cacheable = _resolve(model, provider, batch, when)
    if cacheable:
        with _lock:
            if generation == _generation:  # a reset while resolving means these rates may be stale
                _rates_cache[key] = rates
    return rates


def reset_price_cache() -> None:
    """Forget resolved rates, the parsed price file and which models were warned about (for tests)."""
    _invalidate()
    with _lock:
        _warned.clear()


def _invalidate(*_: Any) -> None:
    global _generation
    with _lock:
        _generation += 1
        _rates_cache.clear()
        _file_cache.clear()


config.on_settings_change(_invalidate)


def load_prices_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Decimal]]:
    """Read a TOML price file (``[models."my-model"]`` tables); ``ConfigurationError`` naming the problem."""
    where = os.fspath(path)
    example = '[models."my-model"]\ninput = 3\noutput = 15'
    try:
        with open(where, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError(
            f"{where}: price file not found ({config.PRICES_ENV}); create it or unset the variable"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read price file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"{where}: not valid TOML ({exc}); expected tables like\n{example}"
        ) from None
    unknown = sorted(set(raw) - {"models"})
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown top-level key(s) {unknown}; put rates under tables like\n{example}"
        )
    return config.normalise_prices(raw.get("models", {}), source=where)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _warn_once(key: str, event: str, message: str, *, provider: str | None) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(event, model=key.removeprefix("storage:"), provider=provider)
    # point at the user's call (3, whoever called price_call / storage_cost, when none is found)
    emit_warning(UnknownPriceWarning(message), stacklevel=user_stacklevel(3))


def _file_overrides(settings: config.Settings) -> Mapping[str, Mapping[str, Decimal]]:
    """The price file's overrides; a broken file is logged once and ignored (pricing never raises)."""
    path = settings.prices_file
    if not path:
        return {}
    cached = _file_cache.get(path)
    if cached is None:
        try:
            cached = load_prices_file(path)
        except ConfigurationError as exc:
            log.error("price.file_invalid", path=path, error=str(exc))
            cached = {}
        with _lock:
            _file_cache[path] = cached
    return cached


def _find_override(prices: Mapping[str, Mapping[str, Decimal]], model: str) -> Mapping[str, Decimal]:
    """Exact name first, then the longest key the name starts with ("claude-x" covers dated ids)."""
    if model in prices:
        return prices[model]
    lowered = model.lower()
    best = ""
    for key in prices:
        k = key.lower()
        if k == lowered:
            return prices[key]
        if lowered.startswith(k) and len(k) > len(best):
            best = key
    return prices[best] if best else {}


_BUCKET_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_long")
# genai-prices price keys for each bucket, in order of preference
_GENAI_KEYS: dict[str, tuple[str, ...]] = {
    "input": ("input_mtok",),
    "output": ("output_mtok",),
    "cache_read": ("cache_read_mtok",),
    "cache_write": ("cache_write_mtok", "cache_write_5m_mtok"),
    "cache_write_long": ("cache_write_1h_mtok",),
}


def _resolve(model: str, provider: str | None, batch: bool, when: datetime) -> tuple[Rates | None, bool]:
    """Merge the three layers for one model; returns (rates, whether they may be cached by date)."""
    settings = config.get_settings()
    configured = _find_override(settings.prices, model)
    from_file = _find_override(_file_overrides(settings), model)
    genai = _genai_rates(model, provider, batch, when)
    genai_rates, genai_provider, genai_id, cacheable = genai if genai else ({}, None, None, True)

    merged: dict[str, Rate] = {}
    source: str | None = None
    for name, layer in (("override", configured), ("file", from_file)):
        if layer and source is None:
            source = name
        for key in _BUCKET_KEYS:
            if key in layer and key not in merged:
                rate = Rate(layer[key])
                merged[key] = rate.scaled(_BATCH_FACTOR) if batch else rate
    for key, rate in genai_rates.items():
        merged.setdefault(key, rate)
    if genai_rates and source is None:
        source = "genai-prices"

    input_rate = merged.get("input")
    if input_rate is None or source is None:
        return None, cacheable
    resolved_provider = genai_provider or provider
    anthropic = resolved_provider == "anthropic" or model.lower().startswith("claude")
    cache_write = merged.get("cache_write", input_rate)
    storage = _storage_rate(model, genai_id, when, settings, configured, from_file)
    rates = Rates(
        model=model,
        provider=resolved_provider,
        input=input_rate,
        output=merged.get("output", Rate(_ZERO)),
        cache_read=merged.get("cache_read", input_rate),
        cache_write=cache_write,
        cache_write_long=merged.get(
            "cache_write_long", input_rate.scaled(Decimal(2)) if anthropic else cache_write
        ),
        cache_storage=storage,
        source=source,
    )
    return rates, cacheable


def is_bedrock_id(model: str) -> bool:
    """Whether ``model`` names an Anthropic model by its Bedrock id (``anthropic.…``,
    ``us.anthropic.…``, ``global.anthropic.…``, an inference-profile ARN): AWS bills by that id,
    and its region scope sets the price (regional ids cost more than global)."""
    return "anthropic." in model.lower()


def _price_table(model: str, provider: str | None) -> str | None:
    """The genai-prices provider whose table prices ``model``: AWS's for a Bedrock id."""
    if provider in ("anthropic", None) and is_bedrock_id(model):
        return "aws"
    return provider


def _lookup_name(model: str) -> str:
    """Drop Gemini resource prefixes (``models/``, ``publishers/google/models/``) genai-prices won't match."""
    return model.rsplit("models/", 1)[-1] if "models/" in model else model


_genai: tuple[ModuleType, type] | None = None
"""genai-prices' ``data_snapshot`` module and ``TimeOfDateConstraint``, imported on first use and
kept: a stream abandoned until interpreter shutdown is priced during finalisation, when imports fail."""


def _genai_api() -> tuple[ModuleType, type]:
    global _genai
    if _genai is None:
        from genai_prices import data_snapshot  # bundled snapshot only; never auto-updates
        from genai_prices.types import TimeOfDateConstraint

        _genai = (data_snapshot, TimeOfDateConstraint)
    return _genai


def _genai_rates(
    model: str, provider: str | None, batch: bool, when: datetime
) -> tuple[dict[str, Rate], str, str, bool] | None:
    """genai-prices' rates as (rates, provider id, model id, cacheable), or None if it has none.

    Anything genai-prices raises means "no price": pricing must never break a call.
    """
    with guarded("price.lookup_failed", model=model, provider=provider):
        data_snapshot = _genai_api()[0]  # bundled snapshot only; never auto-updates
        try:
            snapshot = data_snapshot.get_snapshot()
            provider_id = _price_table(model, provider)
            if provider_id is not None:
                try:
                    snapshot.find_provider(None, provider_id, None)
                except LookupError:
                    provider_id = None  # a provider genai-prices doesn't know: match on the model name
            found_provider, info = snapshot.find_provider_model(_lookup_name(model), None, provider_id, None)
            own_model = any(m is info for m in found_provider.models)
            use_variant = batch and own_model and _has_batch_variant(info, when)
            prices = info.get_prices(when, _BATCH_CONTEXT if use_variant else None)
            rates: dict[str, Rate] = {}
            for bucket, keys in _GENAI_KEYS.items():
                for key in keys:
                    value = getattr(prices, key, None)
                    if value is not None:
                        rate = _to_rate(value)
                        rates[bucket] = rate.scaled(_BATCH_FACTOR) if batch and not use_variant else rate
                        break
            return rates, str(found_provider.id), str(info.id), not _time_of_day_priced(info)
        except LookupError:
            return None
    return None


def _to_rate(value: Any) -> Rate:
    if isinstance(value, Decimal):
        return Rate(value)
    return Rate(Decimal(value.base), tuple((int(t.start), Decimal(t.price)) for t in value.tiers))


def _has_batch_variant(info: Any, when: datetime) -> bool:
    for variant in info.price_variants or ():
        if variant.constraint is not None and not variant.constraint.active(when):
            continue
        if all(_BATCH_CONTEXT.get(k) == v for k, v in variant.when.items()):
            return True
    return False


def _time_of_day_priced(info: Any) -> bool:
    """Off-peak prices change within a day, so a per-date cache entry would be wrong."""
    TimeOfDateConstraint = _genai_api()[1]
    conditional = info.prices if isinstance(info.prices, list) else []
    constraints = [getattr(p, "constraint", None) for p in conditional]
    constraints += [v.constraint for v in info.price_variants or ()]
    return any(isinstance(c, TimeOfDateConstraint) for c in constraints)


# --- Gemini explicit-cache storage --------------------------------------------------------------

# USD per million token-hours, by model-name prefix (longest wins). genai-prices has no storage unit.
# Each entry is a schedule of (first UTC date, price); None means "not known" (blocks a shorter
# prefix from applying to a model priced differently). Source: ai.google.dev/gemini-api/docs/pricing.
_INTRO_FLASH_3 = ((date.min, Decimal("0.50")), (date(2027, 1, 1), Decimal("1.00")))
_STORAGE_PRICES: dict[str, tuple[tuple[date, Decimal | None], ...]] = {
    "gemini-2.5-pro": ((date.min, Decimal("4.50")),),
    "gemini-2.5-flash": ((date.min, Decimal("1.00")),),
    "gemini-2.5-flash-lite": ((date.min, Decimal("1.00")),),
    "gemini-2.0-flash": ((date.min, Decimal("1.00")),),
    "gemini-2.0-flash-lite": ((date.min, Decimal("1.00")),),
    "gemini-3-pro": ((date.min, Decimal("4.50")),),
    "gemini-3-flash": _INTRO_FLASH_3,
    "gemini-3.5-flash": _INTRO_FLASH_3,
    "gemini-3.5-flash-lite": ((date.min, None),),
    "gemini-3.6-flash": _INTRO_FLASH_3,
    "gemini-3.7-flash": _INTRO_FLASH_3,
    "gemini-3.8-flash": _INTRO_FLASH_3,
}


def _storage_rate(
    model: str,
    genai_id: str | None,
    when: datetime,
    settings: config.Settings,
    configured: Mapping[str, Decimal] | None = None,
    from_file: Mapping[str, Decimal] | None = None,
) -> Decimal | None:
    """USD per million token-hours: overrides first, then the table (by name, then genai-prices id)."""
    if configured is None:
        configured = _find_override(settings.prices, model)
    if from_file is None:
        from_file = _find_override(_file_overrides(settings), model)
    for layer in (configured, from_file):
        if "cache_storage" in layer:
            return layer["cache_storage"]
    for name in (_lookup_name(model).lower(), genai_id):
        if not name:
            continue
        prefix = max((p for p in _STORAGE_PRICES if name.startswith(p)), key=len, default=None)
        if prefix is not None:
            price: Decimal | None = None
            for start, amount in _STORAGE_PRICES[prefix]:
                if when.date() >= start:
                    price = amount
            return price
    return None
