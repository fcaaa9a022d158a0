"""The admission path's shortcuts give exactly what the general path gives.

`metering.call_cost` keeps the last model's flat rates, `tasks.reserve_budget` holds a chain of
one task without its lists, `calibrated_estimate` keeps each model's calibration key, the
Anthropic estimate skips scanning a string turn's bytes and re-reading a moved turn it knows,
`admit` skips the fleet-limit step when nothing names a limit, and `fast_constructor` fills a
twin's slots in a generated function: each is checked here against values computed in the test.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import FrozenInstanceError, dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient import metering, pricing, tasks
from budgetclient._construct import fast_constructor
from budgetclient.config import get_settings
from budgetclient.errors import ConfigurationError
from budgetclient.estimate import estimate_request
from budgetclient.formats.anthropic.blocks import build_request
from budgetclient.formats.anthropic.estimate import estimate_input
from budgetclient.tokens import calibrate, calibrated_estimate, calibration_factor, reset_calibration
from tests._sdk_copy import sdk_copy

D = Decimal
M = D(1_000_000)


def _rates(name: str, *, tiered: bool = False) -> pricing.Rates:
    tiers = ((200_000, D("6.5")),) if tiered else ()
    return pricing.Rates(
        model=name,
        provider="anthropic",
        input=pricing.Rate(D("3"), tiers),
        output=pricing.Rate(D("15.0"), ((200_000, D("22.5")),) if tiered else ()),
        cache_read=pricing.Rate(D("0.3")),
        cache_write=pricing.Rate(D("3.75")),
        cache_write_long=pricing.Rate(D("6.00")),
        cache_storage=None,
        source="override",
    )


RATES = {"flat-a": _rates("flat-a"), "flat-b": _rates("flat-b"), "tiered": _rates("tiered", tiered=True)}


def _expected(model: str, n: int, out: int, ttl: str | None) -> tuple[Decimal, Decimal]:
    """The worst case written out: every input token at the dearest rate it may meet."""
    big = n > 200_000 and model == "tiered"
    base = D("6.5") if big else D("3")
    dearest = base
    if ttl is not None:
        dearest = max(dearest, D("3.75"))
    if ttl == "1h":
        dearest = max(dearest, D("6.00"))
    output = D("22.5") if big else D("15.0")
    return n * base / M, n * dearest / M + out * output / M


def test_call_cost_is_the_written_out_worst_case_across_models_ttls_and_tiers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pricing, "rates_for", lambda model, provider=None, **_: RATES.get(model))
    cases = [
        (model, n, out, ttl)
        for n in (0, 1, 1_000, 1_234, 250_000)
        for out in (0, 256, 32_768)
        for ttl in (None, "5m", "1h", "5m", None)
        for model in ("flat-a", "tiered", "flat-a", "flat-b")
    ]
    for model, n, out, ttl in cases:
        cost = metering.call_cost("anthropic", model, n, out, cache_write_ttl=ttl)  # type: ignore[arg-type]
        input_usd, worst = _expected(model, n, out, ttl)
        # the same Decimal, digits and exponent: reports and errors print it
        got = (str(cost.input_usd), str(cost.worst_usd))
        assert got == (str(input_usd), str(worst)), (model, n, out, ttl)
    unpriced = metering.call_cost("anthropic", "no-such-model", 10, 10)
    assert unpriced.input_usd is None and unpriced.worst_usd is None


def _task_holding(budget: str) -> tasks.Task:
    return tasks.Task("t", budget_usd=budget)


def test_a_single_budget_is_never_overcommitted_by_concurrent_reservations() -> None:
    t = _task_holding("1.00")
    cost = tasks.CallCost(input_usd=D("0.01"), worst_usd=D("0.07"))
    start = threading.Barrier(8)
    held: list[tasks.Reservation] = []
    refused: list[Exception] = []
    lock = threading.Lock()

    def work() -> None:
        start.wait()
        for _ in range(5):
            try:
                r = tasks.reserve_budget(t, cost, "m")
            except bc.BudgetExceeded as exc:
                with lock:
                    refused.append(exc)
            else:
                assert r is not None
                with lock:
                    held.append(r)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(work) for _ in range(8)]:
            future.result()
    assert len(held) == 14  # 14 * 0.07 = 0.98 <= 1.00 < 15 * 0.07
    assert len(refused) == 40 - 14
    assert t._reserved == D("0.98")
    for r in held:
        assert r.holds == ((t, D("0.07")),)
        r.release()
    assert t._reserved == 0


def test_a_single_budget_holds_what_its_mode_asks_and_refuses_unpriced_as_before() -> None:
    cost = tasks.CallCost(input_usd=D("0.01"), worst_usd=D("0.07"))
    estimate_mode = tasks.Task("e", budget_usd="0.05", budget_mode="estimate")
    r = tasks.reserve_budget(estimate_mode, cost, "m")
    assert r is not None and r.holds == ((estimate_mode, D("0.01")),)
    unpriced = tasks.CallCost(input_usd=None, worst_usd=None)
    with pytest.raises(bc.UnpricedModelError):
        tasks.reserve_budget(tasks.Task("u", budget_usd="1"), unpriced, "m")
    allowed = tasks.Task("a", budget_usd="1", on_unpriced="allow")
    with pytest.warns(bc.UnenforceableBudgetWarning):
        assert tasks.reserve_budget(allowed, unpriced, "m") is None
    assert allowed._reserved == 0
    full = tasks.Task("f", budget_usd="0.06")
    with pytest.raises(bc.BudgetExceeded):
        tasks.reserve_budget(full, cost, "m")
    assert full._reserved == 0


def test_calibrated_estimates_follow_calibration_and_provider_aliases() -> None:
    reset_calibration()
    try:
        assert calibrated_estimate("anthropic", "claude-x-1", 1000).tokens == 1000
        calibrate("anthropic", "claude-x-1-20250101", 1000, 1250)  # the same family
        first = calibrated_estimate("anthropic", "claude-x-1", 1000)
        assert (first.factor, first.tokens, first.raw_tokens) == (1.25, 1250, 1000)
        assert calibration_factor("anthropic", "claude-x-1") == 1.25
        gemini = calibrated_estimate("Gemini", "gemini-x", 400)
        assert gemini.provider == "google" and gemini.tokens == 400
        calibrate("google", "gemini-x", 400, 200)
        assert calibrated_estimate("Gemini", "gemini-x", 400).tokens == 200
        for _ in range(2):  # an unknown provider is refused every time, never remembered
            with pytest.raises(ConfigurationError):
                calibrated_estimate("nope", "claude-x-1", 10)
    finally:
        reset_calibration()


@pytest.mark.parametrize("text", ["thinking", 'a "thinking', "plain words", ""])
def test_string_turns_estimate_incrementally_as_the_whole_body(text: str) -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "system": "You answer briefly.",
        "messages": [{"role": "user", "content": "start"}],
    }
    built = build_request(sdk_copy(body))
    assert estimate_input(built).raw_tokens == estimate_request("anthropic", body).raw_tokens
    for i in range(4):
        body["messages"].append({"role": "assistant", "content": f"{text} {i}" if i % 2 else text})
        body["messages"].append({"role": "user", "content": text or f"go {i}"})
        built = build_request(sdk_copy(body), previous=built)
        assert built.extends is not None
        assert estimate_input(built).raw_tokens == estimate_request("anthropic", body).raw_tokens


def test_limits_named_by_a_parent_task_still_hold_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from budgetclient import admission

    seen: list[Any] = []
    monkeypatch.setattr(admission, "_hold_limits", lambda ctx, request: seen.append(ctx.task))
    request = admission.Admission(provider="anthropic", model="m", operation="messages")
    with bc.task("outer", limits=["tenant:a"]), bc.task("inner") as inner:
        admission.admit(request)
    with bc.task("plain"):
        admission.admit(request)
    admission.admit(request)
    assert seen == [inner]


def test_settings_read_after_configure_are_the_new_ones() -> None:
    before = get_settings()
    bc.configure(allocation_check=True)
    try:
        assert get_settings() is not before and get_settings().allocation_check is not None
    finally:
        bc.configure(allocation_check=False)
    assert get_settings().allocation_check is None


def test_fast_constructors_fill_every_field_with_fresh_factory_defaults() -> None:
    @dataclass(frozen=True, slots=True)
    class Shape:
        a: int
        b: str = "b"
        c: dict[str, int] = field(default_factory=dict)

    new = fast_constructor(Shape)
    x, y = new(a=1), new(a=2, b="z", c={"k": 1})
    assert type(x) is Shape and x == Shape(1) and y == Shape(2, "z", {"k": 1})
    assert x.c == {} and x.c is not new(a=1).c
    with pytest.raises(FrozenInstanceError):
        x.__setattr__("a", 3)
    with pytest.raises(TypeError):
        new(b="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        new(a=1, d=2)  # type: ignore[call-arg]


def test_an_estimate_or_price_fault_is_logged_and_the_call_goes_on_unchecked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bc.configure(prices={"fault-model": {"input": "3", "output": "15"}})

    def broken() -> int:
        raise RuntimeError("estimator bug sk-ant-api03-secretsecretsecret")

    with bc.task("t", budget_usd="1") as t, capture_logs() as logs:
        ctx = metering.begin_call(
            "anthropic", "fault-model", "messages", estimated_input_tokens=broken, max_output_tokens=1_000
        )
        # the estimate counts as 0 tokens: the output limit alone is held
        assert ctx.reservation is not None and ctx.reservation.holds == ((t, 1_000 * D(15) / M),)
        assert ctx.estimated_raw_tokens == 0
        metering.abandon_call(ctx)
        monkeypatch.setattr(metering, "call_cost", lambda *a, **k: 1 / 0)
        unchecked = metering.begin_call(
            "anthropic", "fault-model", "messages", estimated_input_tokens=lambda: 10, max_output_tokens=1
        )
        assert unchecked.reservation is None and unchecked.estimated_raw_tokens == 0
        metering.abandon_call(unchecked)
    (estimate,) = [e for e in logs if e["event"] == "tokens.estimate_failed"]
    assert estimate["error"] == "RuntimeError" and estimate["model"] == "fault-model"
    assert "secretsecret" not in estimate["detail"]
    (price,) = [e for e in logs if e["event"] == "price.estimate_failed"]
    assert price["error"] == "ZeroDivisionError" and price["model"] == "fault-model"
