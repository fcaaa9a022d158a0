"""Shared fixtures: an isolated in-memory ledger and settings per test, respx on httpcore2."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import respx
from respx.mocks import HTTPCoreMocker

# The SDKs use httpx2/httpcore2; respx patches httpcore's pools only, so add httpcore2's. Named by
# httpcore2's public exports (the classes httpx2's transports call), not its private module paths,
# so the same registration holds on every httpx2 our pins allow (tests/test_wire_mocks.py checks it).
HTTPCORE2_TARGETS = tuple(
    f"httpcore2.{name}" for name in ("ConnectionPool", "AsyncConnectionPool", "HTTPProxy", "AsyncHTTPProxy")
)
HTTPCoreMocker.add_targets(*HTTPCORE2_TARGETS)

# Tests never read a developer's credentials or profiles, nor reach a real host.
for _var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY",
             "OPENAI_BASE_URL", "GOOGLE_API_KEY", "GEMINI_API_KEY", "BUDGETCLIENT_LEDGER",
             "BUDGETCLIENT_PRICES"):
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test gets its own memory ledger, fresh settings and no leftover price state."""
    from budgetclient import config

    cfg_dir = tmp_path_factory.mktemp("anthropic-config")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(cfg_dir))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg")))
    url = f"memory://{uuid.uuid4().hex}"
    monkeypatch.setenv("BUDGETCLIENT_LEDGER", url)
    config.reset_settings()
    from budgetclient import pricing, tokens

    pricing.reset_price_cache()
    tokens.reset_calibration()
    yield url
    try:
        from budgetclient.ledger import writer

        writer.flush(5)
    except ImportError:
        pass
    config.reset_settings()


@pytest.fixture
def nothing_observes_records(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No listened-to ``llm.call`` line, call hook or OpenTelemetry span (another test's leftovers):
    records are made off the call path (`pending`)."""
    import logging

    import structlog

    from budgetclient import metering
    from budgetclient.hooks import Hooks

    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    monkeypatch.setattr(metering, "_sync_call_hooks", Hooks("meter.hook_failed"))
    monkeypatch.setattr(metering, "_call_start_hooks", Hooks("meter.hook_failed"))
    try:
        yield
    finally:
        structlog.configure(**previous)


@pytest.fixture
def ledger_url(_isolated: str) -> str:
    """The memory:// URL this test's records are written to."""
    return _isolated


@pytest.fixture
def respx_mock_sdk() -> Iterator[respx.MockRouter]:
    """respx router that intercepts the SDKs' httpx2 traffic (no request passes through)."""
    with respx.mock(assert_all_called=False) as router:
        yield router
