"""The agent examples run offline and print what their tool loops answered and cost."""

from __future__ import annotations

import importlib.util
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import budgetclient as bc

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    logging_config = structlog.get_config()  # the examples quieten structlog for their own output
    yield
    bc.uninstrument()  # also when an example failed before its own uninstrument()
    structlog.configure(**logging_config)


@pytest.mark.parametrize(
    ("example", "needs", "answers"),
    [
        ("anthropic_agent.py", (), ["because usage doubled"] * 2),
        (
            "pydantic_ai_agent.py",
            ("pydantic_ai",),
            ["Pack sunglasses for Paris.", "Pack sunglasses for Lisbon."],
        ),
        ("langchain_agent.py", ("langchain_anthropic", "langchain_openai"), ["Oslo is cold."] * 2),
        ("openai_agents_sdk_agent.py", ("agents",), ["Athens is warm", "Seville is warm"]),
    ],
)
def test_agent_example_runs(
    example: str,
    needs: tuple[str, ...],
    answers: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (extra 'frameworks')")
    for name in ENV:  # restored after the test: the examples point the SDKs at their local fakes
        monkeypatch.setenv(name, "")
    runpy.run_path(str(EXAMPLES / example), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    answer_lines = lines[0::2]
    assert len(answer_lines) == len(answers)
    for line, answer in zip(answer_lines, answers, strict=True):
        assert answer in line
    for cost_line in lines[1::2]:
        calls = int(cost_line.split()[0])
        assert calls >= 2  # a tool call and the answer, each metered
