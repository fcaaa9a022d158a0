"""The README's promises, checked: its quick start runs as pasted and prints the right cost, its
set-up commands are the ones CI runs, and it documents every environment variable the code reads."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from contextlib import redirect_stdout
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MILLION = Decimal(1_000_000)

# Published list prices, USD per million tokens (the providers' pricing pages), for the models the
# quick start uses: uncached input, cache read, cache write (5 minutes), output.
PRICE_SHEET = {
    "claude-sonnet-4-6": (Decimal(3), Decimal("0.30"), Decimal("3.75"), Decimal(15)),
    "gpt-5-mini": (Decimal("0.25"), Decimal("0.025"), Decimal(0), Decimal(2)),
    "gemini-2.5-flash": (Decimal("0.30"), Decimal("0.03"), Decimal(0), Decimal("2.50")),
}


def quickstart(name: str) -> str:
    """The fenced Python block right after ``<!-- quickstart: NAME ... -->`` in README.md."""
    pattern = r"<!-- quickstart: " + re.escape(name) + r"\b[^>]*-->\n```python\n(.*?)```"
    match = re.search(pattern, README, re.S)
    assert match, f"README.md has no quick-start block {name!r}"
    return match.group(1)


def anthropic_cost(usage: Mapping[str, Any]) -> Decimal:
    uncached, read, write, output = PRICE_SHEET["claude-sonnet-4-6"]
    assert not (usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens")
    return (usage["input_tokens"] * uncached + usage["cache_read_input_tokens"] * read
            + usage["cache_creation_input_tokens"] * write + usage["output_tokens"] * output) / MILLION


def openai_cost(usage: Mapping[str, Any]) -> Decimal:
    uncached, read, _, output = PRICE_SHEET["gpt-5-mini"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return ((usage["prompt_tokens"] - cached) * uncached + cached * read
            + usage["completion_tokens"] * output) / MILLION


def gemini_cost(usage: Mapping[str, Any]) -> Decimal:
    uncached, read, _, output = PRICE_SHEET["gemini-2.5-flash"]
    cached = usage.get("cachedContentTokenCount", 0)
    answer = usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0)
    return ((usage["promptTokenCount"] - cached) * uncached + cached * read + answer * output) / MILLION


COST_OF = {"anthropic": anthropic_cost, "openai": openai_cost, "gemini": gemini_cost}
CACHE_READ_OF = {
    "anthropic": lambda u: u["cache_read_input_tokens"],
    "openai": lambda u: u["prompt_tokens_details"]["cached_tokens"],
    "gemini": lambda u: u.get("cachedContentTokenCount", 0),
}


@pytest.mark.parametrize("name", sorted(COST_OF))
def test_quickstart_prints_the_cost_of_what_the_fake_billed(name: str) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(quickstart(name), f"README.md:quickstart:{name}", "exec"), namespace)
    usages = namespace["fake"].usages
    assert len(usages) == 3
    expected = sum((COST_OF[name](u) for u in usages), Decimal(0))
    assert any(CACHE_READ_OF[name](u) for u in usages), "the quick start is meant to show cache reads"
    # the block's one line (log lines may share stdout if another test configured structlog so)
    printed = re.search(r"^3 calls, cost \$(\S+), cache hit rate (\d+)%$", out.getvalue(), re.M)
    assert printed, out.getvalue()
    assert Decimal(printed.group(1)) == expected.quantize(Decimal("0.000001"))


def test_quickstart_runs_as_pasted_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """Pasted into ``python`` with nothing set up, and the output the README quotes is what it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETCLIENT_", "ANTHROPIC_"))}
    env.update(XDG_DATA_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-"], input=quickstart("anthropic"), capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"It prints `{done.stdout.strip()}`" in README
    assert not done.stderr


def test_setup_commands_are_the_ones_ci_runs() -> None:
    block = re.match(r"# budgetclient\n\n```bash\n(.*?)```", README, re.S)
    assert block, "README.md must open with its set-up commands"
    commands = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    assert commands[0] == "python -m pip install -e '.[anthropic]' && budgetclient demo"
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


_ENV_READ = re.compile(
    r"""(?:environ(?:\.get)?\(\s*|environ\[\s*|getenv\(\s*|setdefault\(\s*)["']([A-Z][A-Z0-9_]+)["']"""
)
_ENV_TESTED = re.compile(r"""["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+os\.environ""")
_ENV_CONSTANT = re.compile(r"""^[A-Z_]*ENV[A-Z_]*\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.M)


def environment_variables() -> set[str]:
    names: set[str] = set()
    for folder in ("budgetclient", "examples", "scripts", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            names.update(_ENV_READ.findall(text))
            names.update(_ENV_CONSTANT.findall(text))
            names.update(_ENV_TESTED.findall(text))
    return names


def test_every_environment_variable_is_in_the_readme_table() -> None:
    section = README.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "".join(re.findall(r"^\|[^|]*\|", section, re.M))))
    found = {name for name in environment_variables() if not name.startswith("PYTHON")}  # Python's own
    assert {"BUDGETCLIENT_LEDGER", "BUDGETCLIENT_PRICES", "BUDGETCLIENT_ALERT_COST_PER_TASK"} <= found
    assert found <= documented, f"not in the README's table: {sorted(found - documented)}"
