"""Reference traces replayed on `FakeAnthropic`: the cache simulation of `budgetclient.cachesim`,
driven through the fake's HTTP handler, as the benchmark, the demo and the tests use it.

The traces, strategies and pricing live in `budgetclient.cachesim` (the planner uses them too);
this module adds only what needs the fake backend: `send` and `run_trace(..., fake=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2

from ..cachesim.replay import (
    STRATEGIES,
    BudgetclientStrategy,
    Strategy,
    TraceRun,
    trace_rates,
    usage_cost,
    usage_of,
)
from ..cachesim.replay import run_trace as _replay
from ..cachesim.traces import (
    MODEL,
    Trace,
    TraceCall,
    agent_traces,
    guide_session_trace,
    long_gaps_trace,
    multi_agent_trace,
    periodic_trace,
    rag_trace,
    reference_traces,
    summarised_trace,
    tool_change_trace,
    tool_loop_trace,
    wide_turns_trace,
)
from .fake_anthropic import FakeAnthropic, FakeClock

__all__ = [
    "MODEL",
    "STRATEGIES",
    "BudgetclientStrategy",
    "Strategy",
    "Trace",
    "TraceCall",
    "TraceRun",
    "agent_traces",
    "guide_session_trace",
    "long_gaps_trace",
    "multi_agent_trace",
    "periodic_trace",
    "rag_trace",
    "reference_traces",
    "run_trace",
    "send",
    "strategies",
    "summarised_trace",
    "tool_change_trace",
    "tool_loop_trace",
    "trace_rates",
    "usage_cost",
    "usage_of",
    "wide_turns_trace",
]

MESSAGES_URL = "https://api.anthropic.com/v1/messages"

strategies = STRATEGIES
"""Alias: ``strategies[name](body, state, now) -> body to send``."""


def send(fake: FakeAnthropic, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST one Messages body to the fake backend; the decoded response (raises on an API error)."""
    response = fake.handler(httpx2.Request("POST", MESSAGES_URL, json=dict(body)))
    document: dict[str, Any] = json.loads(response.read())
    if response.status_code != 200:
        raise AssertionError(f"fake backend answered {response.status_code}: {document}")
    return document


class _OverHTTP:
    """A `cachesim.replay.ReplayBackend` that answers through the fake's HTTP handler."""

    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake

    @property
    def clock(self) -> FakeClock:
        return self.fake.clock

    def send(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return send(self.fake, body)


def run_trace(trace: Trace, strategy: str | Strategy, *, fake: FakeAnthropic | None = None,
              keep_bodies: bool = False) -> TraceRun:
    """Replay ``trace`` against a fresh fake backend (or ``fake``) with one strategy."""
    backend = _OverHTTP(fake or FakeAnthropic(clock=FakeClock()))
    return _replay(trace, strategy, backend=backend, keep_bodies=keep_bodies)
