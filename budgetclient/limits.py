"""Fleet limits: spend caps per tenant, key or job over a UTC calendar window, shared by processes.

``bc.limit("tenant:acme", usd=50, per="day")`` declares a limit (once per process); ``with
bc.limit("tenant:acme"):`` or ``bc.task(..., limits=["tenant:acme"])`` puts calls under it. In
`admission.admit`, after the task budgets, each call's worst case is held on every limit covering
it, in one transaction on the ledger's database (SQLite ``BEGIN IMMEDIATE`` on one host,
PostgreSQL row locks for fleets), so spent ≤ usd holds across processes and hosts. The call's
record settles the hold (the hold is replaced by the actual cost). A hold carries a lease: a
worker killed mid-call frees its hold after ``lease_s`` seconds.

Windows are calendar-aligned in UTC: ``per="hour"`` starts on the hour, ``"day"`` at 00:00 UTC,
``"month"`` on the 1st at 00:00 UTC; ``per=None`` never resets. A call counts in the window it was
admitted in.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Literal, get_args

from ._log import log
from ._warnings import emit_warning
from .config import get_settings, on_settings_change, parse_usd
from .errors import BudgetWarning, ConfigurationError, LimitExceeded, LimitUnavailable
from .ledger.limits_store import Claim, LimitStore, LimitStoreError, SqliteLimitStore, window_of
from .ledger_url import mask_url, scheme_of, sqlite_path_from_url
from .tasks import Task
from .usage import CallRecord

__all__ = [
    "DEFAULT_LEASE_S",
    "LIMITS_ENV",
    "LimitHold",
    "LimitSpec",
    "active",
    "any_covering",
    "covering",
    "declared",
    "limit",
    "load_limits",
    "reserve",
    "store",
]

Period = Literal["hour", "day", "month"]
OnExceed = Literal["raise", "warn"]
DEFAULT_LEASE_S = 900.0
"""How long a hold outlives a worker that never settles it (killed, or its store unreachable).
Longer than any call should take: a call still running when its lease ends no longer holds."""

_clock: Callable[[], float] = time.time
"""The wall clock windows and leases are read from (tests move it)."""


@dataclass(frozen=True, slots=True)
class LimitSpec:
    name: str
    usd: Decimal
    per: Period | None
    on_exceed: OnExceed
    fail_closed: bool
    lease_s: float


_declared: dict[str, LimitSpec] = {}
_declared_lock = threading.Lock()
_active: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("budgetclient_limits", default=())


class limit:
    """Declare a fleet limit (with ``usd``) and/or put calls under it (as a context manager).

    ``on_exceed="raise"`` refuses a call whose worst case does not fit (``bc.LimitExceeded``, not
    sent); ``"warn"`` sends it, counts it and emits one ``bc.BudgetWarning`` per window once the
    limit is passed. ``fail_closed=True``: when the store cannot be reached calls under the limit
    are refused (``bc.LimitUnavailable``); False: they go out unchecked, with a logged warning.
    """

    def __init__(
        self,
        name: str,
        usd: Decimal | float | str | None = None,
        *,
        per: Period | None = None,
        on_exceed: OnExceed = "raise",
        fail_closed: bool = True,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"limit name must be a non-empty string, got {name!r}")
        if per is not None and per not in get_args(Period):
            raise ConfigurationError(f'limit per must be "hour", "day", "month" or None, got {per!r}')
        if on_exceed not in get_args(OnExceed):
            raise ConfigurationError(f'limit on_exceed must be "raise" or "warn", got {on_exceed!r}')
        if not lease_s > 0:
            raise ConfigurationError(f"limit lease_s must be positive seconds, got {lease_s!r}")
        self.name = name
        self._tokens: list[contextvars.Token[tuple[str, ...]]] = []
        if usd is not None:
            spec = LimitSpec(name, parse_usd(usd, "usd"), per, on_exceed, bool(fail_closed), float(lease_s))
            with _declared_lock:
                _declared[name] = spec
        else:
            _lookup(name)

    def __enter__(self) -> LimitSpec:
        self._tokens.append(_active.set((*_active.get(), self.name)))
        return _lookup(self.name)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _active.reset(self._tokens.pop())

    async def __aenter__(self) -> LimitSpec:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def declared() -> tuple[LimitSpec, ...]:
    with _declared_lock:
        return tuple(_declared.values())


def _lookup(name: str) -> LimitSpec:
    with _declared_lock:
        spec = _declared.get(name)
    if spec is None and _load_env_file():
        with _declared_lock:
            spec = _declared.get(name)
    if spec is None:
        raise ConfigurationError(
            f"limit {name!r} is not declared in this process; declare it once with "
            f"bc.limit({name!r}, usd=..., per='day'), or in the TOML file named by {LIMITS_ENV}"
        )
    return spec


LIMITS_ENV = "BUDGETCLIENT_LIMITS"
"""A TOML file of limits for deployments, read on the first use of an undeclared limit name."""
_OPTIONS = frozenset({"usd", "per", "on_exceed", "fail_closed", "lease_s"})
_env_loaded: set[str] = set()


def load_limits(path: str | os.PathLike[str]) -> tuple[LimitSpec, ...]:
    """Declare every limit of a TOML file; a limit declared in code with the same name is replaced.

    ``[limits."tenant:acme"]`` with ``usd = "50"`` (a string keeps cents exact), ``per = "day"``,
    and optionally ``on_exceed``, ``fail_closed``, ``lease_s`` (as for `limit`).
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{where}: cannot read limits: {exc}") from None
    tables = data.get("limits")
    if not isinstance(tables, dict):
        raise ConfigurationError(
            f'{where}: no [limits."NAME"] tables (e.g. [limits."tenant:acme"] usd = "50")'
        )
    specs = []
    for name, table in tables.items():
        if not isinstance(table, dict) or "usd" not in table or set(table) - _OPTIONS:
            raise ConfigurationError(
                f"{where}: limit {name!r} takes usd (required) and "
                f"{sorted(_OPTIONS - {'usd'})}, got {table!r}"
            )
        limit(name, **table)
        specs.append(_lookup(name))
    return tuple(specs)


def _load_env_file() -> bool:
    """Load ``BUDGETCLIENT_LIMITS`` once per path; whether anything new was loaded."""
    path = os.environ.get(LIMITS_ENV)
    if not path or path in _env_loaded:
        return False
    _env_loaded.add(path)
    load_limits(path)
    return True


def active() -> bool:
    """Whether a ``with bc.limit(...)`` scope is open here (cheap: checked on every call)."""
    return bool(_active.get())


def any_covering(task: Task | None) -> bool:
    """Whether `covering` has something for a call in ``task``, without looking any limit up
    (checked on every call)."""
    if _active.get():
        return True
    while task is not None:
        if task.limits:
            return True
        task = task.parent
    return False


def covering(task: Task | None) -> tuple[LimitSpec, ...]:
    """The limits a call in ``task`` falls under: open ``with bc.limit(...)`` scopes, then each
    task's ``limits``, innermost first; each once."""
    names: list[str] = list(_active.get())
    node = task
    while node is not None:
        names.extend(node.limits)
        node = node.parent
    if not names:
        return ()
    return tuple(_lookup(n) for n in dict.fromkeys(names))


# -- the store: the ledger's database -----------------------------------------------------------

_stores: dict[str, LimitStore] = {}
_stores_lock = threading.Lock()
_listening = False


def store(url: str | None = None) -> LimitStore:
    """The limits store in the ledger database at ``url`` (default: the configured ledger)."""
    url = url or get_settings().ledger_url
    with _stores_lock:
        global _listening
        if not _listening:
            _listening = True
            on_settings_change(_settings_changed)  # on first use: importing does no work
        found = _stores.get(url)
        if found is None:
            found = _stores[url] = _open_store(url)
        return found


def _open_store(url: str) -> LimitStore:
    scheme = scheme_of(url)
    if scheme == "sqlite":
        return SqliteLimitStore(sqlite_path_from_url(url))
    if scheme in {"postgresql", "postgres"}:
        from .ledger.limits_postgres import PostgresLimitStore

        return PostgresLimitStore(url)
    if scheme == "memory":
        return SqliteLimitStore(":memory:")  # one process: in-memory ledger, in-memory limits
    raise ConfigurationError(f"ledger {mask_url(url)!r} cannot hold fleet limits; use SQLite or PostgreSQL")


def _after_fork_in_child() -> None:
    """A lock held by another thread at fork stays held in the child: start over with new ones."""
    global _stores_lock, _declared_lock
    _stores_lock, _declared_lock = threading.Lock(), threading.Lock()
    _stores.clear()
    _unsettled.clear()  # the parent settles its own calls


os.register_at_fork(after_in_child=_after_fork_in_child)


def _settings_changed(old: object, new: object) -> None:
    with _stores_lock:
        _stores.clear()


# -- holds ---------------------------------------------------------------------------------------


class LimitHold:
    """One call's worst case held on its limits; settled by its record, released if never sent."""

    def __init__(self, store: LimitStore, hold_id: str, claims: Sequence[Claim], worst: Decimal) -> None:
        self._store = store
        self.id = hold_id
        self.claims = tuple(claims)
        self.worst = worst
        self._done = False
        self._lock = threading.Lock()

    def _take(self) -> bool:
        with self._lock:
            done, self._done = self._done, True
            return not done

    def settle(self, record: CallRecord) -> None:
        """Replace the hold by the call's cost (its worst case if it could not be priced)."""
        if not self._take():
            return
        cost = record.cost if record.cost is not None else self.worst
        try:
            self._store.settle(self.id, self.claims, cost)
        except LimitStoreError as exc:
            with _stores_lock:  # retried before this process's next reservation (`_settle_late`)
                _unsettled.append((self._store, self.id, self.claims, cost))
            log.warning(
                "limit.settle_failed", hold=self.id, cost_usd=str(cost), error=str(exc),
                limits=[c.name for c in self.claims],
            )  # fmt: skip

    def release(self) -> None:
        """Give the hold back: the call was not sent."""
        if not self._take():
            return
        try:
            self._store.release(self.id)
        except LimitStoreError as exc:
            log.warning("limit.release_failed", hold=self.id, error=str(exc))


_warned: set[tuple[str, str]] = set()
_unsettled: list[tuple[LimitStore, str, tuple[Claim, ...], Decimal]] = []
"""Settlements the store refused (unreachable): spend is never forgotten, only counted late."""


def _settle_late() -> None:
    with _stores_lock:
        pending, _unsettled[:] = list(_unsettled), []
    for index, (target, hold_id, claims, cost) in enumerate(pending):
        try:
            target.settle(hold_id, claims, cost)
        except LimitStoreError:
            with _stores_lock:
                _unsettled.extend(pending[index:])
            return


def reserve(specs: Iterable[LimitSpec], worst: Decimal | None, model: str) -> LimitHold | None:
    """Hold ``worst`` on every limit in ``specs`` at once, or raise with nothing held.

    Raises ``LimitExceeded`` when an enforcing limit has no room (or the model has no price), and
    ``LimitUnavailable`` when the store cannot be reached and a limit is ``fail_closed``.
    """
    specs = sorted(specs, key=lambda s: s.name)  # one lock order for every caller
    if not specs:
        return None
    now = _clock()
    claims = [Claim(s.name, window_of(s.per, now), s.usd, s.per, s.on_exceed == "raise") for s in specs]
    if worst is None:
        for spec, claim in zip(specs, claims, strict=True):
            if claim.enforce:
                raise LimitExceeded(spec.name, spec.usd, claim.window, Decimal(0), None, model)
        return None
    hold_id = uuid.uuid4().hex
    target = store()
    if _unsettled:
        _settle_late()
    try:
        found = target.reserve(hold_id, claims, worst, now, max(s.lease_s for s in specs))
    except (LimitStoreError, ConfigurationError) as exc:
        closed = [s.name for s in specs if s.fail_closed]
        log.warning(
            "limit.store_unavailable",
            limits=[s.name for s in specs],
            fail_closed=bool(closed),
            error=str(exc),
        )
        if closed:
            raise LimitUnavailable(
                f"limits {closed} cannot be checked: their store, the ledger database "
                f"{mask_url(get_settings().ledger_url)!r}, is unreachable ({exc}); the request was not sent "
                "because the limits are fail_closed=True (the default). Declare them with "
                "bc.limit(name, usd=..., fail_closed=False) to send calls unchecked while the store is down, "
                "or point BUDGETCLIENT_LEDGER / bc.configure(ledger=...) at a reachable database."
            ) from exc
        return None
    if found.refused is not None:
        spec = next(s for s in specs if s.name == found.refused)
        window = window_of(spec.per, now)
        log.warning(
            "limit.exceeded", limit=spec.name, window=window, usd=str(spec.usd),
            spent_and_held_usd=str(found.totals.get(spec.name)), worst_case_usd=str(worst), model=model,
        )  # fmt: skip
        raise LimitExceeded(
            spec.name, spec.usd, window, found.totals.get(spec.name, Decimal(0)), worst, model
        )
    for spec, claim in zip(specs, claims, strict=True):
        total = found.totals.get(spec.name, Decimal(0)) + worst
        if not claim.enforce and total > spec.usd and (spec.name, claim.window) not in _warned:
            _warned.add((spec.name, claim.window))
            log.warning("limit.passed", limit=spec.name, window=claim.window, usd=str(spec.usd))
            emit_warning(
                BudgetWarning(
                    f"limit {spec.name!r} (window starting {claim.window} UTC, usd={spec.usd}) is passed: "
                    f"spent and held with this call may reach {total} (on_exceed='warn': calls still go out)"
                ),
                stacklevel=5,
            )
    return LimitHold(target, hold_id, claims, worst)
