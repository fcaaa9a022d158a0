"""Every exception and warning budgetclient raises, in one hierarchy.

Catch `BudgetClientError` for anything the library itself decided to raise; the SDK's own
errors (``anthropic.APIStatusError`` and friends) pass through unchanged.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .drift import PrefixDrift

__all__ = [
    "BudgetClientError",
    "BudgetClientWarning",
    "BudgetExceeded",
    "BudgetWarning",
    "ConfigurationError",
    "LedgerError",
    "LimitExceeded",
    "LimitUnavailable",
    "PlanError",
    "PrefixDriftError",
    "PrefixDriftWarning",
    "UnenforceableBudgetWarning",
    "UnknownPriceWarning",
    "UnpricedModelError",
]


class BudgetClientError(Exception):
    """Base class of every error budgetclient raises on its own account."""


class ConfigurationError(BudgetClientError, ValueError):
    """A configuration value (argument, environment variable or file) is invalid."""


class LedgerError(BudgetClientError):
    """The ledger URL or database cannot be used."""


class PlanError(BudgetClientError, ValueError):
    """A budget plan is malformed."""


class BudgetExceeded(BudgetClientError):
    """A call would take a task past its ``budget_usd``; the request was not sent."""

    def __init__(
        self,
        task_name: str,
        budget_usd: Decimal,
        spent_usd: Decimal,
        estimate_usd: Decimal | None,
        model: str,
        *,
        worst_case: bool = False,
        message: str | None = None,
    ) -> None:
        self.task_name = task_name
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        """Spent plus what calls in flight hold."""
        self.estimate_usd = estimate_usd
        """What this call would hold: its worst case (``budget_mode="cap"``) or input estimate."""
        self.model = model
        label = "worst_case_usd" if worst_case else "estimated_input_usd"
        super().__init__(
            message
            or f"task {task_name!r} would exceed its budget: spent_and_held_usd={spent_usd} + "
            f"{label}={estimate_usd} for model {model!r} > budget_usd={budget_usd}; "
            "the request was not sent. Raise budget_usd, lower max_tokens, shrink the request, "
            "or pick a cheaper model."
        )


class UnpricedModelError(BudgetExceeded):
    """A budgeted task refused a call whose model has no known price (so no cap could hold)."""

    def __init__(self, task_name: str, budget_usd: Decimal, model: str) -> None:
        super().__init__(
            task_name,
            budget_usd,
            Decimal(0),
            None,
            model,
            message=(
                f"task {task_name!r} has budget_usd={budget_usd}, but model {model!r} has no known "
                "price, so the request was not sent. Add its price (USD per million tokens) with "
                f"bc.configure(prices={{{model!r}: {{'input': ..., 'output': ...}}}}), or send "
                "unpriced calls unchecked with bc.task(..., on_unpriced='allow')."
            ),
        )


class LimitExceeded(BudgetExceeded):
    """A call would take a fleet limit (``bc.limit``) past its cap in its window; it was not sent."""

    def __init__(
        self,
        limit: str,
        usd: Decimal,
        window: str,
        spent_usd: Decimal,
        estimate_usd: Decimal | None,
        model: str,
    ) -> None:
        self.limit = limit
        self.window = window
        detail = (
            f"model {model!r} has no known price, so no worst case could be held against it"
            if estimate_usd is None
            else f"spent_and_held_usd={spent_usd} + worst_case_usd={estimate_usd} for model {model!r} "
            f"> usd={usd}"
        )
        super().__init__(
            f"limit:{limit}",
            usd,
            spent_usd,
            estimate_usd,
            model,
            worst_case=True,
            message=(
                f"limit {limit!r} (window starting {window} UTC) would be exceeded: {detail}; the request "
                "was not sent. Wait for the next window, raise the limit's usd, lower max_tokens, or "
                "declare it with on_exceed='warn'."
            ),
        )


class LimitUnavailable(BudgetClientError):
    """The store holding fleet limits (the ledger database) could not be reached; nothing was sent."""


class PrefixDriftError(BudgetClientError):
    """With ``drift="raise"``: the cacheable prefix changed since the previous call; not sent."""

    def __init__(self, drift: PrefixDrift) -> None:
        self.drift = drift
        super().__init__(f"cacheable prefix drifted before sending: {drift.describe()}")


class BudgetClientWarning(UserWarning):
    """Base class of budgetclient's warnings.

    A warnings filter that turns them into errors (``-W error``, pytest ``filterwarnings =
    error``) never aborts a call: the warning is logged as ``budgetclient.warning`` instead and
    what it reports stays on the call record. Make a condition fatal with the option built for
    it: ``drift="raise"``, a task's ``budget_usd``, or ``bc.testing.assert_cache_stable``.
    """


class UnknownPriceWarning(BudgetClientWarning):
    """A model has no known price; its cost is recorded as ``None`` (never 0)."""


class BudgetWarning(BudgetClientWarning):
    """A task crossed its ``warn_at`` share of ``budget_usd``."""


class UnenforceableBudgetWarning(BudgetWarning):
    """A budget was set, but the model has no price, so the budget cannot be enforced."""


class PrefixDriftWarning(BudgetClientWarning):
    """The cacheable prefix changed since the previous call of the same conversation.

    Emitted once per call (not per retry); under warnings-as-errors it is logged, not raised (see
    `BudgetClientWarning`): the drift is still on the record (``CallRecord.drift``), in the
    ``cache.drift`` log event and seen by ``bc.testing.assert_cache_stable``.
    """

    def __init__(self, drift: PrefixDrift) -> None:
        self.drift = drift
        super().__init__(f"cacheable prefix drifted: {drift.describe()}")
