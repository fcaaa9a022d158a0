"""Pip constraints that pin budgetclient's library dependencies to their lower bounds.

CI installs ``-e '.[dev]'`` twice: once as a new user would (the latest releases our pins allow)
and once with these constraints (``.ci/lowest.sh``), so both ends of the supported range are
tested. Every requirement in ``[project.dependencies]`` and the optional extras (dev included)
with a lower bound is pinned ``==`` to it, except the test tools in ``TEST_TOOLS``: those resolve
to their latest, since their oldest releases need not run on today's Python and pytest, and they
are not what our users install next to budgetclient.

    python scripts/constraints_lowest.py [pyproject.toml] > lowest.txt   # the constraints
    python scripts/constraints_lowest.py --check [pyproject.toml]        # exit 1 unless installed
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# Tools that run the tests, not libraries budgetclient runs on: left to resolve to their latest.
TEST_TOOLS = frozenset({"pytest", "pytest-asyncio", "respx", "hypothesis", "ruff", "mypy"})
PROJECT = "budgetclient"  # its self-references (``budgetclient[all]`` in dev) are skipped
# Extras the lowest run does not install: the agent frameworks' tests run on the latest releases
# (.ci/run) and skip where the frameworks are absent.
NOT_PINNED_EXTRAS = frozenset({"frameworks"})


def lower_bound(requirement: Requirement) -> str | None:
    """The version a ``>=`` (or ``==``/``~=``) specifier names as the lowest allowed, if any."""
    for spec in requirement.specifier:
        if spec.operator in (">=", "==", "~="):
            return spec.version
    return None


def requirements(pyproject: dict[str, object]) -> Iterable[Requirement]:
    """Every requirement of the project and its extras, but self-references."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    for line in project.get("dependencies", []):
        yield Requirement(line)
    for extra, lines in project.get("optional-dependencies", {}).items():
        if extra in NOT_PINNED_EXTRAS:
            continue
        for line in lines:
            req = Requirement(line)
            if canonicalize_name(req.name) != PROJECT:
                yield req


def lowest_constraints(pyproject: dict[str, object]) -> dict[str, str]:
    """Name -> lower bound, for every library requirement with one; two different bounds are an error.

    opentelemetry-sdk (dev) is a library too: it requires opentelemetry-api at its own version
    exactly, so the two lowest go together.
    """
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


def mismatches(pins: dict[str, str]) -> list[str]:
    """Each pinned package this interpreter lacks or has at another version, as ``name: have, want``."""
    found: list[str] = []
    for name, want in sorted(pins.items()):
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "missing"
        if have == "missing" or Version(have) != Version(want):
            found.append(f"{name}: {have}, want {want}")
    return found


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv[1:] if a != "--check"]
    path = Path(paths[0]) if paths else Path(__file__).resolve().parent.parent / "pyproject.toml"
    pins = lowest_constraints(tomllib.loads(path.read_text(encoding="utf-8")))
    if check:
        wrong = mismatches(pins)
        sys.stdout.writelines(f"not at the lower bound: {line}\n" for line in wrong)
        return 1 if wrong else 0
    sys.stdout.write("# scripts/constraints_lowest.py: each library in pyproject.toml at its lower bound\n")
    sys.stdout.writelines(f"{name}=={low}\n" for name, low in sorted(pins.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
