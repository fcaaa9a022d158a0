"""Per-client options (``cache``, ``cache_ttl``, ``drift``), validated once at construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .errors import ConfigurationError

__all__ = [
    "OPTION_NAMES",
    "CacheMode",
    "CacheTTL",
    "ClientOptions",
    "DriftMode",
    "pop_option_overrides",
    "split_client_options",
]

CacheMode = Literal["auto", "off"]
CacheTTL = Literal["auto", "5m", "1h"]
DriftMode = Literal["warn", "raise", "off"]

_ALLOWED: dict[str, tuple[str, ...]] = {
    "cache": ("auto", "off"),
    "cache_ttl": ("auto", "5m", "1h"),
    "drift": ("warn", "raise", "off"),
}

OPTION_NAMES: tuple[str, ...] = tuple(_ALLOWED)
"""budgetclient's per-client option names, as the constructors and ``copy()`` take them."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """budgetclient's behaviour for one client (and every ``with_options()`` copy of it)."""

    cache: CacheMode = "auto"
    """``"auto"`` places cache breakpoints; ``"off"`` leaves the request's own markers alone."""
    cache_ttl: CacheTTL = "auto"
    """``"auto"`` picks 5m, or 1h when calls of a conversation are further apart and it pays."""
    drift: DriftMode = "warn"
    """What a changed cacheable prefix does: warn, raise before sending, or nothing.

    ``"warn"`` never fails a call, even under warnings-as-errors (the warning is then logged,
    see `errors.BudgetClientWarning`); ``"raise"`` is the way to make drift fatal."""

    @classmethod
    def create(cls, **values: Any) -> ClientOptions:
        unknown = sorted(set(values) - set(_ALLOWED))
        if unknown:
            raise TypeError(
                f"unknown budgetclient option(s) {', '.join(map(repr, unknown))}; "
                f"the options are {', '.join(_ALLOWED)} (e.g. cache='auto', cache_ttl='auto', drift='warn')"
            )
        for name, value in values.items():
            if value not in _ALLOWED[name]:
                raise ConfigurationError(
                    f"{name}={value!r} is not valid; use one of {', '.join(map(repr, _ALLOWED[name]))}"
                )
        return cls(**values)

    def updated(self, overrides: Mapping[str, Any]) -> ClientOptions:
        """These options with ``overrides`` applied, validated as `create` does."""
        return ClientOptions.create(**{**asdict(self), **overrides})


def split_client_options(kwargs: Mapping[str, Any]) -> tuple[ClientOptions, dict[str, Any]]:
    """Separate budgetclient's options from the SDK constructor's keyword arguments."""
    ours = {k: v for k, v in kwargs.items() if k in _ALLOWED}
    rest = {k: v for k, v in kwargs.items() if k not in _ALLOWED}
    return ClientOptions.create(**ours), rest


def pop_option_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take budgetclient's options out of ``copy()`` / ``with_options()`` keywords.

    Returns those to change: ``None`` (the default those methods show) keeps the client's value.
    """
    given = {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}
    return {name: value for name, value in given.items() if value is not None}
