"""budgetclient: drop-in LLM clients that make token spend a measured, engineered quantity.

Change one import (``bc.Anthropic()`` for ``anthropic.Anthropic()``, or ``bc.wrap(client)``) and
every call gets cache breakpoints, a prefix-drift check, and is metered into the running task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import config as _config
from .clients import wrap
from .config import Settings, configure, get_settings
from .drift import PrefixDrift
from .errors import (
    BudgetClientError,
    BudgetClientWarning,
    BudgetExceeded,
    BudgetWarning,
    ConfigurationError,
    LedgerError,
    LimitExceeded,
    LimitUnavailable,
    PlanError,
    PrefixDriftError,
    PrefixDriftWarning,
    UnenforceableBudgetWarning,
    UnknownPriceWarning,
    UnpricedModelError,
)
from .ledger.writer import flush
from .limits import limit
from .options import ClientOptions
from .signals import on_alert
from .tasks import Task, current_task, task, task_executor, track_task
from .usage import CallRecord, CostBreakdown, TaskRecord, Usage

if TYPE_CHECKING:
    from . import history, models, plan, testing
    from . import toolsets as tools
    from .lineage import conversation
    from .providers._instrument import instrument, uninstrument
    from .providers.anthropic import Anthropic, AsyncAnthropic
    from .providers.google import GenAIClient
    from .providers.openai import AsyncOpenAI, OpenAI

__version__ = "0.1.0"

__all__ = [
    "Anthropic",
    "AsyncAnthropic",
    "AsyncOpenAI",
    "BudgetClientError",
    "BudgetClientWarning",
    "BudgetExceeded",
    "BudgetWarning",
    "CallRecord",
    "ClientOptions",
    "ConfigurationError",
    "CostBreakdown",
    "GenAIClient",
    "LedgerError",
    "LimitExceeded",
    "LimitUnavailable",
    "OpenAI",
    "PlanError",
    "PrefixDrift",
    "PrefixDriftError",
    "PrefixDriftWarning",
    "Settings",
    "Task",
    "TaskRecord",
    "UnenforceableBudgetWarning",
    "UnpricedModelError",
    "UnknownPriceWarning",
    "Usage",
    "configure",
    "conversation",
    "current_task",
    "flush",
    "on_alert",
    "plan",
    "get_settings",
    "history",
    "instrument",
    "limit",
    "models",
    "task",
    "task_executor",
    "testing",
    "tools",
    "track_task",
    "uninstrument",
    "wrap",
]

# SDK-backed clients load on first use, so ``import budgetclient`` works with any subset of the
# provider extras installed.
_LAZY = {
    "Anthropic": ("providers.anthropic", "anthropic"),
    "AsyncAnthropic": ("providers.anthropic", "anthropic"),
    "OpenAI": ("providers.openai", "openai"),
    "AsyncOpenAI": ("providers.openai", "openai"),
    "GenAIClient": ("providers.google", "google"),
    "conversation": ("lineage", ""),
    "instrument": ("providers._instrument", ""),
    "uninstrument": ("providers._instrument", ""),
}




def _start_subscribers() -> None:
    """Install `metering.SUBSCRIBERS` in order (alerts, OpenTelemetry): on first use, not at import.

    OpenTelemetry export follows configure(otel=...) and imports nothing from opentelemetry until
    it is enabled."""
    import importlib

    from .metering import SUBSCRIBERS

    for _, module in SUBSCRIBERS:
        importlib.import_module(f".{module}", __name__).install()


_config.on_first_use(_start_subscribers)

# submodules reached as attributes: bc.testing, bc.plan, bc.history, bc.tools, bc.models
_SUBMODULES = {
    "testing": "testing",
    "plan": "plan",
    "history": "history",
    "tools": "toolsets",
    "models": "models",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    if name in _LAZY:
        module, extra = _LAZY[name]
        import importlib

        try:
            mod = importlib.import_module(f".{module}", __name__)
        except ImportError as exc:
            if not extra:
                raise
            raise ImportError(
                f"bc.{name} needs the provider SDK: pip install 'budgetclient[{extra}]' ({exc})"
            ) from exc
        value = getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'budgetclient' has no attribute {name!r}")
