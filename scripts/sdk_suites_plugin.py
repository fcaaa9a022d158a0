"""pytest plugin for scripts/sdk_suites.py: swap the SDK's client classes for budgetclient's, record outcomes.

Loaded with ``-p sdk_suites_plugin`` (``scripts/`` on ``PYTHONPATH``) into an SDK's own test suite.

``--sdk-suites-swap=anthropic|openai`` rebinds the names a user imports (``anthropic.Anthropic``,
``anthropic.AsyncAnthropic``; ``openai.OpenAI``, ``openai.AsyncOpenAI``) to ``bc.*`` before the
suite's conftest and test modules are imported, so ``from anthropic import Anthropic`` in a test
module, a conftest fixture or ``anthropic.Anthropic(...)`` at run time all build budgetclient's
client. The SDK's own modules (``anthropic._client.Anthropic`` and every SDK module that imported
the name from the package root) keep the real classes: the SDK's ``type(self) in (Anthropic,
AsyncAnthropic)`` checks must see them, or real drop-in defects would be hidden.

``--sdk-suites-results=PATH`` writes one JSON object: node id -> {"outcome", "message"}.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

SWAPS: dict[str, tuple[str, ...]] = {
    "anthropic": ("Anthropic", "AsyncAnthropic"),
    "openai": ("OpenAI", "AsyncOpenAI"),
}

ALIASES: dict[str, dict[str, str]] = {
    "anthropic": {"Client": "Anthropic", "AsyncClient": "AsyncAnthropic"},
    "openai": {"Client": "OpenAI", "AsyncClient": "AsyncOpenAI"},
}
"""The package root's other names for the same classes, swapped with them while they are the same
object: a suite that enumerates the root's client classes then sees one class per name, as raw."""

# worst outcome wins when a test reports several phases
_RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "xpassed": 3, "failed": 4, "error": 5}
_MESSAGE_CHARS = 1500


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdk-suites")
    group.addoption("--sdk-suites-swap", default="", help="SDK whose client classes become budgetclient's")
    group.addoption("--sdk-suites-results", default="", help="write per-test outcomes (JSON) here")


def _root_imports(package: str, names: tuple[str, ...]) -> list[str]:
    """SDK modules that bind a swapped name from the package root at import time.

    They must be imported before the swap so they keep the real class (e.g. openai's
    ``lib/computer.py`` does ``from .. import OpenAI, AsyncOpenAI``).
    """
    root = importlib.import_module(package)
    base = Path(root.__file__ or "").parent
    pattern = re.compile(r"^from\s+(\.+|" + package + r")\s+import\s+(\([^)]*\)|[^\n]*)", re.M)
    wanted = set(names)
    found: list[str] = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        text = path.read_text(encoding="utf-8", errors="replace")
        for source, imported in pattern.findall(text):
            if source.startswith("."):
                # `from .. import X` inside package a.b.c (module a.b.c.d) resolves to a.b
                is_pkg = path.name == "__init__.py"
                anchor = parts if is_pkg else parts[:-1]
                target = anchor[: len(anchor) - (len(source) - 1)]
                if target != [package]:
                    continue
            bound = {item.split()[0] for item in imported.strip("()").split(",") if item.strip()}
            if module != package and wanted & bound:
                found.append(module)
                break
    return found


def _swap(package: str) -> list[str]:
    names = SWAPS[package]
    sdk = importlib.import_module(package)
    for module in _root_imports(package, names):
        try:
            importlib.import_module(module)
        except ImportError:
            continue  # an optional extra that is not installed: the suite skips it anyway
    import budgetclient

    swapped: list[str] = []
    aliases = [a for a, name in ALIASES[package].items() if getattr(sdk, a, None) is getattr(sdk, name)]
    for name in names:
        ours = getattr(budgetclient, name)
        setattr(sdk, name, ours)
        swapped.append(f"{package}.{name} -> {ours.__module__}.{ours.__qualname__}")
    for alias in aliases:
        setattr(sdk, alias, getattr(sdk, ALIASES[package][alias]))
        swapped.append(f"{package}.{alias} (alias)")
    return swapped


_state: dict[str, Any] = {"swapped": [], "results": {}}


def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Swap before the suite's conftest.py (loaded right after this hook) imports the client classes."""
    package = early_config.known_args_namespace.sdk_suites_swap
    if package:
        _state["swapped"] = _swap(package)


def pytest_report_header(config: pytest.Config) -> str:
    swapped = _state["swapped"]
    return "sdk-suites swap: " + (", ".join(swapped) if swapped else "none (raw SDK classes)")


def pytest_configure(config: pytest.Config) -> None:
    package = config.getoption("sdk_suites_swap")
    if package:
        import budgetclient  # the internal classes must stay the SDK's own (see module docstring)

        internal = importlib.import_module(f"{package}._client")
        for name in SWAPS[package]:
            if getattr(internal, name) is getattr(budgetclient, name):
                raise pytest.UsageError(f"{package}._client.{name} was swapped; only the package root may be")


def _record(nodeid: str, outcome: str, message: str) -> None:
    results: dict[str, dict[str, str]] = _state["results"]
    old = results.get(nodeid)
    if old is None:
        results[nodeid] = {"outcome": outcome, "message": message[-_MESSAGE_CHARS:]}
    elif _RANK[outcome] > _RANK[old["outcome"]]:
        # a teardown error after a failed call: the call's message says why
        keep = old["outcome"] in ("failed", "error")
        results[nodeid] = {
            "outcome": outcome,
            "message": old["message"] if keep else message[-_MESSAGE_CHARS:],
        }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            outcome = "xpassed" if wasxfail else "passed"
        elif report.skipped:
            outcome = "xfailed" if wasxfail else "skipped"
        else:
            outcome = "failed"
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    message = report.longreprtext if outcome in ("failed", "error", "xpassed") else ""
    _record(report.nodeid, outcome, message)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record(report.nodeid, "error", report.longreprtext)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("sdk_suites_results")
    if path and not hasattr(session.config, "workerinput"):  # xdist: the controller writes
        Path(path).write_text(json.dumps(_state["results"], indent=0, sort_keys=True), encoding="utf-8")
