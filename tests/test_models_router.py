"""bc.models.Router: sub-task kinds to model tiers, and spend per tier from the task's call records."""

from __future__ import annotations

from decimal import Decimal

import pytest

import budgetclient as bc
from budgetclient.errors import ConfigurationError
from budgetclient.models import Router
from budgetclient.testing import FakeAnthropic, FakeClock

M = Decimal(1_000_000)
RATES = {"claude-haiku-4-5": (Decimal(1), Decimal(5)), "claude-sonnet-4-6": (Decimal(3), Decimal(15))}


def _router() -> Router:
    return Router(
        {"small": "claude-haiku-4-5", "large": "claude-sonnet-4-6"},
        {"summarize": "small", "classify": "small"},
        default="large",
        rules=[lambda kind: "small" if kind.startswith("extract") else None],
    )


def test_route_by_kind_rule_and_default() -> None:
    router = _router()
    assert router.route("summarize") == "claude-haiku-4-5"
    assert router.route("extract_dates") == "claude-haiku-4-5"
    assert router.route("plan") == "claude-sonnet-4-6"
    assert router.tier_of("claude-haiku-4-5-20251001") == "small"
    assert router.tier_of("gpt-4o") is None


def test_router_validation() -> None:
    with pytest.raises(ConfigurationError, match="default tier"):
        Router({"a": "m"}, default="b")
    with pytest.raises(ConfigurationError, match="unknown tier"):
        Router({"a": "m"}, {"k": "z"}, default="a")


def test_per_tier_summary_from_metered_calls() -> None:
    fake = FakeAnthropic(clock=FakeClock(), output_tokens=30)
    client = bc.Anthropic(api_key="test", http_client=fake.http_client())
    router = _router()
    expected = {"small": Decimal(0), "large": Decimal(0)}
    with bc.task("triage") as task:
        for kind in ("summarize", "plan", "classify", "plan", "extract_names"):
            model = router.route(kind)
            response = client.messages.create(
                model=model,
                max_tokens=100,
                messages=[{"role": "user", "content": f"do the {kind} step " * 20}],
            )
            u = response.usage
            rate_in, rate_out = RATES[model]
            cost = (u.input_tokens * rate_in + u.output_tokens * rate_out) / M
            tier = router.tier(kind)
            expected[tier] += cost
    summary = router.summary(task.records)
    assert summary["small"].calls == 3 and summary["large"].calls == 2
    assert summary["small"].cost == expected["small"]
    assert summary["large"].cost == expected["large"]
    assert summary["small"].usage.output_tokens == 3 * 30
