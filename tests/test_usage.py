from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import budgetclient as bc
from budgetclient.usage import CostBreakdown


def test_fields_and_derived_values() -> None:
    u = bc.Usage(
        input_tokens=1000,
        cache_read_tokens=600,
        cache_write_tokens=300,
        cache_write_long_tokens=100,
        output_tokens=50,
        reasoning_tokens=20,
        requests=1,
    )
    assert u.uncached_input_tokens == 1000 - 600 - 300
    assert u.cache_write_short_tokens == 200
    assert u.cache_hit_rate == 600 / 1000
    assert bc.Usage().cache_hit_rate == 0.0


def test_usage_is_frozen() -> None:
    u = bc.Usage(input_tokens=1)
    with pytest.raises(AttributeError):
        u.input_tokens = 2  # type: ignore[misc]


def test_negative_or_non_int_rejected_with_field_name() -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        bc.Usage(input_tokens=-1)
    with pytest.raises(ValueError, match="output_tokens"):
        bc.Usage(output_tokens=1.5)  # type: ignore[arg-type]


counts = st.integers(min_value=0, max_value=10**9)
usages = st.builds(
    bc.Usage,
    input_tokens=counts,
    cache_read_tokens=counts,
    cache_write_tokens=counts,
    cache_write_long_tokens=counts,
    output_tokens=counts,
    reasoning_tokens=counts,
    requests=st.integers(0, 100),
)


@given(st.lists(usages, max_size=8))
def test_sum_adds_every_field(items: list[bc.Usage]) -> None:
    total = sum(items)
    expected = bc.Usage() if not items else total
    assert isinstance(expected, bc.Usage)
    for name in (
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_long_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
    ):
        assert getattr(expected, name) == sum(getattr(u, name) for u in items)


@given(usages, usages)
def test_addition_commutes(a: bc.Usage, b: bc.Usage) -> None:
    assert a + b == b + a


def test_otel_attribute_names() -> None:
    u = bc.Usage(
        input_tokens=10, cache_read_tokens=4, cache_write_tokens=3, output_tokens=7, reasoning_tokens=2
    )
    assert u.otel_attributes() == {
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "gen_ai.usage.cache_creation.input_tokens": 3,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.reasoning.output_tokens": 2,
    }


def test_cost_breakdown_total_and_sum() -> None:
    a = CostBreakdown(
        uncached_input=Decimal("0.1"),
        cache_read=Decimal("0.02"),
        cache_write=Decimal("0.3"),
        output=Decimal("1"),
        storage=Decimal("0.004"),
    )
    assert a.total == Decimal("1.424")
    assert sum([a, a]) == a + a
    assert (a + a).total == Decimal("2.848")
