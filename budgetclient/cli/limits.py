"""``budgetclient limits``: each fleet limit's current window, spent, reserved and remaining."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from typing import Any

from .. import config
from ..ledger.limits_store import LimitRow, LimitStoreError
from ..ledger_url import mask_url
from . import CommandError
from ._common import ledger_missing

__all__ = ["current_limits", "limit_lines", "register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "limits",
        help="fleet limits (bc.limit): window, spent, reserved and remaining",
        description=(
            "Show every limit recorded in the ledger database: its current window (calendar-aligned, UTC), "
            "what is spent in it, what calls in flight hold (unexpired leases) and what remains."
        ),
    )
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help=f"ledger database holding the limits (default: {config.LEDGER_ENV} or the SQLite file "
        "under $XDG_DATA_HOME)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per limit, one per line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    url = args.ledger or os.environ.get(config.LEDGER_ENV) or config.default_ledger_url()
    if ledger_missing(url):
        raise CommandError(f"no ledger at {mask_url(url)!r} yet: nothing has been held against a limit there")
    try:
        rows = current_limits(url)
    except LimitStoreError as exc:
        raise CommandError(f"cannot read limits from {mask_url(url)!r}: {exc}") from None
    if args.json:
        for row in rows:
            print(json.dumps(_as_dict(row)))
        return 0
    if not rows:
        print(f"no limits recorded in {mask_url(url)}")
        return 0
    header = ("limit", "per", "window (UTC)", "usd", "spent", "reserved", "remaining")
    table = [header] + [
        (r.name, r.per or "-", r.window[:16].replace("T", " "), _usd(r.usd), _usd(r.spent), _usd(r.reserved),
         _usd(_remaining(r)))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        )
    return 0


def current_limits(url: str) -> list[LimitRow]:
    """Every limit recorded in the ledger database at ``url``, in its current window."""
    from ..limits import store

    return store(url).rows(time.time())


def limit_lines(rows: list[LimitRow]) -> list[str]:
    """One line per limit for the end of ``budgetclient report``: spend in its current window."""
    return [
        f"  {r.name} ({r.per or 'no window'}, from {r.window[:16].replace('T', ' ')} UTC): "
        f"{_usd(r.spent)} spent + {_usd(r.reserved)} held of {_usd(r.usd)}, {_usd(_remaining(r))} left"
        for r in rows
    ]


def _remaining(row: LimitRow) -> Decimal:
    return max(row.usd - row.spent - row.reserved, Decimal(0))


def _usd(amount: Decimal) -> str:
    return f"${amount:.6f}".rstrip("0").rstrip(".") if amount else "$0"


def _as_dict(row: LimitRow) -> dict[str, str | None]:
    return {
        "limit": row.name,
        "per": row.per,
        "window_start": row.window,
        "usd": str(row.usd),
        "spent_usd": str(row.spent),
        "reserved_usd": str(row.reserved),
        "remaining_usd": str(_remaining(row)),
    }
