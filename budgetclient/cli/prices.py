"""``budgetclient prices MODEL``: the rates budgetclient will use for a model, and where they came from."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .. import config
from ..errors import ConfigurationError
from ..pricing import Rate, Rates, load_prices_file, rates_for
from . import CommandError
from ._common import parse_since

__all__ = ["register", "run"]

_BUCKETS = (
    ("input", "input (uncached)"),
    ("cache_read", "cache read"),
    ("cache_write", "cache write (short TTL)"),
    ("cache_write_long", "cache write (long TTL)"),
    ("output", "output"),
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "prices",
        help="the rates budgetclient uses for a model (USD per million tokens)",
        description=(
            "Show the per-million-token rates budgetclient prices MODEL with: configure(prices=...) and "
            f"{config.PRICES_ENV} overrides first, then the bundled genai-prices snapshot (no network)."
        ),
    )
    parser.add_argument(
        "model", metavar="MODEL", help="model id as sent to the provider, e.g. claude-sonnet-4-5"
    )
    parser.add_argument("--provider", help="anthropic, openai or google (helps when a name is ambiguous)")
    parser.add_argument("--batch", action="store_true", help="batch rates (usually half the standard ones)")
    parser.add_argument("--at", metavar="DATE", help="rates in force on this date (default: now)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(func=run)


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {
        "base": str(rate.base),
        "tiers": [{"above_input_tokens": s, "rate": str(p)} for s, p in rate.tiers],
    }


def rates_json(rates: Rates) -> dict[str, Any]:
    return {
        "model": rates.model,
        "provider": rates.provider,
        "source": rates.source,
        "unit": "USD per million tokens",
        **{key: _rate_json(getattr(rates, key)) for key, _ in _BUCKETS},
        "cache_storage_per_million_token_hours": None
        if rates.cache_storage is None
        else str(rates.cache_storage),
    }


def _number(value: Decimal) -> str:
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
        whole, _, frac = text.partition(".")
        text = f"{whole}.{frac.ljust(2, '0')}"
    else:
        text += ".00"
    return text


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_BAD_VALUE = re.compile(r"price (\w+)=.*? for '([^']+)'")


def _error_line(path: str, message: str) -> int | None:
    """The line of ``path`` a price-file error is about: TOML's own position, else the bad key."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    found = _TOML_LINE.search(message)
    if found:
        return int(found.group(1))
    if "(at end of document)" in message:
        return max(len(lines), 1)
    bad = _BAD_VALUE.search(message)
    if not bad:
        return None
    key, model = bad.groups()
    table = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("[") and model in stripped:
            table = number
        elif table is not None and stripped.startswith("["):
            break
        elif table is not None and re.match(rf"[\"']?{re.escape(key)}[\"']?\s*=", stripped):
            return number
    return table


def _check_price_file(path: str | None) -> None:
    """A broken price file is an error here, naming file and line (metering only logs it, once)."""
    if not path:
        return
    try:
        load_prices_file(path)
    except ConfigurationError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        line = _error_line(path, message)
        where = f"{path}, line {line}" if line else path
        raise CommandError(f"{where}: {message} (from {config.PRICES_ENV})") from None


def run(args: argparse.Namespace) -> int:
    _check_price_file(config.get_settings().prices_file)
    at = parse_since(args.at) if args.at else datetime.now(UTC)
    rates = rates_for(args.model, args.provider, batch=args.batch, at=at)
    if rates is None:
        raise CommandError(
            f"no price known for model {args.model!r}"
            + (f" (provider {args.provider!r})" if args.provider else "")
            + f"; its calls are recorded with cost None. Add one with bc.configure(prices={{{args.model!r}: "
            f"{{'input': ..., 'output': ...}}}}) or in the TOML file named by {config.PRICES_ENV}"
        )
    if args.format == "json":
        sys.stdout.write(json.dumps(rates_json(rates), indent=2) + "\n")
        return 0
    mode = "batch" if args.batch else "standard"
    lines = [
        f"{rates.model} ({rates.provider or 'unknown provider'}, {mode}, source: {rates.source}, "
        f"{at:%Y-%m-%d})",
        "USD per million tokens:",
    ]
    width = max(len(label) for _, label in _BUCKETS)
    for key, label in _BUCKETS:
        rate: Rate = getattr(rates, key)
        tiers = "".join(f"; {_number(p)} when input > {s:,} tokens" for s, p in rate.tiers)
        lines.append(f"  {label:<{width}}  {_number(rate.base):>10}{tiers}")
    storage = "-" if rates.cache_storage is None else _number(rates.cache_storage)
    lines.append(f"  {'cache storage':<{width}}  {storage:>10} per million token-hours")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
