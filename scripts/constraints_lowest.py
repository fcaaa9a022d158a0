"""Print a pip constraints file that pins budgetclient's library dependencies to their lower bounds.

CI installs ``-e '.[dev]'`` twice: once as a new user would (the latest releases our pins allow)
and once with this file (``pip install -c lowest.txt -e '.[dev]'``), so both ends of the
supported range are tested. Every requirement in ``[project.dependencies]`` and the optional
extras that has a ``>=`` lower bound is pinned ``==`` to it, except the test tools in
``TEST_TOOLS``: those resolve normally, since their oldest releases need not run on today's
Python and pytest, and their versions are not what our users choose.

    python scripts/constraints_lowest.py [pyproject.toml] > lowest.txt
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Tools that run the tests, not libraries budgetclient runs on: left to resolve to their latest.
TEST_TOOLS = frozenset({"pytest", "pytest-asyncio", "respx", "hypothesis", "ruff", "mypy"})

# Libraries in the dev extra stay pinned (opentelemetry-sdk requires opentelemetry-api at its own
# version exactly, so the two lowest go together). The project's self-references are skipped.
PROJECT = "budgetclient"


def lower_bound(requirement: Requirement) -> str | None:
    """The version a ``>=`` (or ``==``/``~=``) specifier names as the lowest allowed, if any."""
    for spec in requirement.specifier:
        if spec.operator in (">=", "==", "~="):
            return spec.version
    return None


def requirements(pyproject: dict[str, object]) -> Iterable[Requirement]:
    """Every requirement of the project and its extras, but self-references (``budgetclient[all]``)."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    for line in project.get("dependencies", []):
        yield Requirement(line)
    for lines in project.get("optional-dependencies", {}).values():
        for line in lines:
            req = Requirement(line)
            if canonicalize_name(req.name) != PROJECT:
                yield req


def lowest_constraints(pyproject: dict[str, object]) -> dict[str, str]:
    """Name -> lower bound, for every library requirement with one; conflicting bounds are an error."""
    pins: dict[str, str] = {}
    for req in requirements(pyproject):
        name = canonicalize_name(req.name)
        low = lower_bound(req)
        if name in TEST_TOOLS or low is None:
            continue
        if pins.get(name, low) != low:
            raise SystemExit(f"{name}: lower bounds {pins[name]} and {low} in pyproject.toml; make them one")
        pins[name] = low
    return pins


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml"
    pins = lowest_constraints(tomllib.loads(path.read_text(encoding="utf-8")))
    sys.stdout.write("# scripts/constraints_lowest.py: each library in pyproject.toml at its lower bound\n")
    sys.stdout.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
