"""Shared hypothesis settings: deterministic (derandomised, no example database), no deadline."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
