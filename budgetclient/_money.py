"""How money is written for people, everywhere budgetclient writes it (reports, alerts, the CLI).

One format, so amounts in a table, an alert line and the HTML report compare at a glance:
``$1,234.5678``, ``$0.0123`` (four decimals, a hundredth of a cent); a non-zero amount below that
is ``<$0.0001`` rather than a misleading ``$0.0000``. Exact values stay in json, csv and the ledger.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["usd"]

_TINY = Decimal("0.0001")


def usd(amount: Decimal | None) -> str:
    """``amount`` as text for people; ``?`` when unknown (an unpriced model)."""
    if amount is None:
        return "?"
    if amount and abs(amount) < _TINY:
        return "<$0.0001" if amount > 0 else "-<$0.0001"
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.4f}"
