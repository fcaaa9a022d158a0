"""cachesim: the in-process replay bills exactly as the fake backend does over HTTP, priced by pricing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgetclient.cachesim import replay
from budgetclient.cachesim.traces import reference_traces, tool_loop_trace
from budgetclient.testing import traces as over_http

PER_MILLION = {
    "input": Decimal(3),
    "read": Decimal("0.30"),
    "write_5m": Decimal("3.75"),
    "write_1h": Decimal(6),
    "output": Decimal(15),
}
"""Published Claude Sonnet 4.6 prices (USD per million tokens), stated here independently."""


@pytest.mark.parametrize("strategy", ["none", "system-only", "provider-auto", "budgetclient"])
def test_simulated_backend_reports_what_the_fake_reports(strategy: str) -> None:
    for trace in reference_traces().values():
        simulated = replay.run_trace(trace, strategy)
        fake = over_http.run_trace(trace, strategy)
        assert simulated.usages == fake.usages, trace.name
        assert simulated.ttls == fake.ttls


def test_costs_come_from_the_price_sheet() -> None:
    run = replay.run_trace(tool_loop_trace(calls=6), "budgetclient")
    expected = Decimal(0)
    for usage in run.usages:
        long = usage["cache_creation"]["ephemeral_1h_input_tokens"]
        expected += (
            usage["input_tokens"] * PER_MILLION["input"]
            + usage["cache_read_input_tokens"] * PER_MILLION["read"]
            + (usage["cache_creation_input_tokens"] - long) * PER_MILLION["write_5m"]
            + long * PER_MILLION["write_1h"]
            + usage["output_tokens"] * PER_MILLION["output"]
        ) / 1_000_000
    assert expected > 0
    assert run.cost() == expected


def test_an_unpriced_model_cannot_be_costed() -> None:
    with pytest.raises(LookupError, match="no-such-model"):
        replay.trace_rates("no-such-model")
