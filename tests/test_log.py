"""budgetclient never prints to an application's stdout; its events reach stdlib logging or structlog."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import logging, sys, warnings
import budgetclient as bc
from budgetclient import metering
warnings.simplefilter("ignore")
if sys.argv[1] == "stdlib-info":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
bc.configure(ledger="memory://x")
ctx = metering.begin_call("anthropic", "claude-sonnet-4-6", "messages")
metering.finish_call(ctx, bc.Usage(input_tokens=10, output_tokens=2, requests=1))
with bc.task("t"):
    pass
bc.flush()
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, timeout=120)


def test_unconfigured_application_sees_nothing() -> None:
    result = run("default")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_stdlib_logging_receives_events_as_key_value_lines() -> None:
    result = run("stdlib-info")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("budgetclient ")]
    assert any("event='llm.call'" in line and "input_tokens=10" in line for line in lines)
    assert any("event='task.end'" in line for line in lines)
