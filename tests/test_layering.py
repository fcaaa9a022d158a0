"""The package's import rules, read from the source with ``ast`` (docs/architecture.md, "Layering").

Every ``import`` counts: module level and inside functions (a function-level import is still a
dependency, it only hides a cycle until the function runs). Imports under ``if TYPE_CHECKING:``
never run, so they are left out of the cycle check but still obey the layering rules.

Layers:

- the *facade* (``budgetclient/__init__.py``, ``__main__``, ``clients.py``) and ``cli/`` sit on
  top and may import anything;
- ``providers/`` holds the SDK hooks: the only library code that imports an SDK or ``httpx2``
  (``httpx2`` is the SDKs' wire type: the transport and response objects a hook has to touch);
- ``testing/`` holds the fake backends: a leaf that no library module imports (only the facade's
  ``bc.testing`` attribute and the CLI's demo and fake server reach it); its fakes are ``httpx2``
  transports, so ``httpx2`` is its wire type too, but it imports no SDK and no ``providers``;
- everything else is the *core* (``formats/`` included): no SDK, no ``httpx2``, no ``providers``,
  no ``testing``.

The same file keeps the layout's other one-place rules: nothing runs at import, every hook registry
is a `hooks.Hooks`, one class name per concept, "plan" only in ``bc.plan``, broad excepts through
`_guard.guarded` (or a stated reason), Anthropic's cache limits only in `cachesim.anthropic`.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "budgetclient"

SDKS = ("anthropic", "openai", "google.genai", "google")
WIRE = ("httpx2", "httpx", "httpcore2", "httpcore")
FACADE = {"budgetclient", "budgetclient.__main__", "budgetclient.clients"}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    type_only: bool


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, is_package = _module_name(path)
        out[name] = (path, is_package)
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node``, with whether it sits in an ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_only
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), type_only)
        else:
            yield from _walk(child, type_only)


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement loads (``from pkg import sub`` loads ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def _imports() -> list[Import]:
    out = []
    for module, (path, is_package) in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, type_only in _walk(tree):
            for target in _targets(module, is_package, node):
                out.append(Import(module, target, node.lineno, type_only))
    return out


IMPORTS = _imports()


def _loads(source: str, target: str) -> list[str]:
    """The package modules an import runs: the target and its subpackages' ``__init__``.

    The root package and the importer's own packages are already initialised (or initialising)
    when the import runs, so they add no edge.
    """
    if not target.startswith("budgetclient."):
        return []
    parts = target.split(".")
    out = []
    for i in range(2, len(parts) + 1):
        name = ".".join(parts[:i])
        if name in MODULES and not (source == name or source.startswith(name + ".")):
            out.append(name)
    return out


def _graph() -> dict[str, dict[str, Import]]:
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in IMPORTS:
        if imp.type_only:
            continue
        for name in _loads(imp.source, imp.target):
            graph[imp.source].setdefault(name, imp)
    return graph


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle path per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_in(graph, set(c), c[0]) for c in components]


def _path_in(graph: dict[str, dict[str, Import]], members: set[str], start: str) -> list[str]:
    """A shortest cycle through ``start`` inside one component (breadth-first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start]


def _describe(graph: dict[str, dict[str, Import]], path: list[str]) -> str:
    hops = [f"{a} (line {graph[a][b].line})" for a, b in pairwise(path)]
    return " -> ".join([*hops, path[-1]])


def _layer(module: str) -> str:
    if module in FACADE or module.startswith("budgetclient.cli"):
        return "facade"
    for layer in ("providers", "testing"):
        if module == f"budgetclient.{layer}" or module.startswith(f"budgetclient.{layer}."):
            return layer
    return "core"


def _is(target: str, names: tuple[str, ...]) -> bool:
    return any(target == n or target.startswith(n + ".") for n in names)


def _violations(rule: str) -> list[str]:
    out: list[str] = []
    for imp in IMPORTS:
        layer = _layer(imp.source)
        where = f"{imp.source} (line {imp.line}) imports {imp.target}"
        if rule == "testing" and layer in ("core", "providers") and _layer(imp.target) == "testing":
            out.append(where)
        if rule == "sdk" and layer in ("core", "testing") and _is(imp.target, SDKS):
            out.append(where)
        if rule == "wire" and layer == "core" and _is(imp.target, WIRE):
            out.append(where)
        if rule == "providers" and layer in ("core", "testing") and _layer(imp.target) == "providers":
            out.append(where)
    return sorted(set(out))


def test_the_parser_sees_function_level_and_relative_imports() -> None:
    """The rules below are only as good as the graph: spot-check it against known imports."""
    found = {(i.source, i.target) for i in IMPORTS}
    assert ("budgetclient.clients", "budgetclient.providers.anthropic") in found  # in a function
    assert ("budgetclient.cli.demo", "budgetclient.testing") in found  # `from ..testing import`
    assert ("budgetclient", "budgetclient.tasks") in found  # `from .tasks import`
    assert len(MODULES) > 50


def test_the_cycle_finder_reports_a_cycle_path() -> None:
    imp = Import("a", "b", 1, False)
    graph = {"a": {"b": imp}, "b": {"c": Import("b", "c", 2, False)}, "c": {"a": Import("c", "a", 3, False)}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _describe(graph, ["a", "b", "c", "a"]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"
    assert _cycles({"a": {"b": imp}, "b": {}}) == []


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = [_describe(graph, path) for path in _cycles(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("rule", "meaning"),
    [
        ("testing", "library modules never import budgetclient.testing (it is a leaf)"),
        ("sdk", "only providers/ imports an SDK"),
        ("wire", "the core never imports httpx2 (only providers/ and testing/ touch the wire)"),
        ("providers", "the core and testing/ never import providers/"),
    ],
)
def test_layering(rule: str, meaning: str) -> None:
    violations = _violations(rule)
    assert violations == [], meaning + ":\n" + "\n".join(violations)


def test_importing_the_package_does_no_work() -> None:
    """``import budgetclient`` starts nothing (no hooks, no settings read, no environment parsed):
    alerts and OpenTelemetry start at the first configure() or metered call, as before."""
    script = textwrap.dedent(
        """
        import budgetclient as bc
        from budgetclient import config, metering, tasks
        from budgetclient.usage import Usage

        from budgetclient.metering import SUBSCRIBERS

        registries = (metering._call_hooks, metering._call_start_hooks, tasks._task_end_hooks,
                      tasks._task_start_hooks, tasks._task_closing_hooks)
        print("AT_IMPORT", config._settings is None, config._first_use_done)
        print("HOOKS_AT_IMPORT", sum(len(r.hooks) for r in registries))
        alerts = []
        bc.on_alert(alerts.append)
        prices = {"m": {"input": 1, "output": 1}}
        bc.configure(ledger="memory://startup", prices=prices, alert_cost_per_task=0.5)
        with bc.task("t"):
            ctx = metering.begin_call("anthropic", "m", "messages")
            metering.finish_call(ctx, Usage(input_tokens=1_000_000, output_tokens=0, requests=1))
        print("ALERTS", [a.kind for a in alerts])
        from budgetclient import signals, telemetry

        print("SUBSCRIBERS", [name for name, _ in SUBSCRIBERS])
        print("INSTALLED", signals._on_call in metering._call_hooks.hooks, telemetry._installed)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PACKAGE.parent,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "AT_IMPORT True False" in done.stdout
    assert "HOOKS_AT_IMPORT 0" in done.stdout
    assert "ALERTS ['cost_per_task']" in done.stdout
    # the record pipeline's built-in subscribers, listed in one place, all started on first use
    assert "SUBSCRIBERS ['alerts', 'otel']" in done.stdout
    assert "INSTALLED True True" in done.stdout


_REGISTRY_NAME = re.compile(r"_?\w*(hooks|listeners|callbacks)")


def test_only_hooks_keeps_registries() -> None:
    """A module-level registry of callbacks is a `hooks.Hooks` (removable, each hook guarded), not
    a list of its own: no module but ``hooks`` binds a ``*hooks`` / ``*listeners`` / ``*callbacks``
    name to anything else."""
    own = []
    for module, (path, _) in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            for target in targets:
                if not (isinstance(target, ast.Name) and _REGISTRY_NAME.fullmatch(target.id)):
                    continue
                call = value.func if isinstance(value, ast.Call) else None
                made_by_hooks = isinstance(call, ast.Name) and call.id == "Hooks"
                if module != "budgetclient.hooks" and not made_by_hooks:
                    own.append(f"{module} (line {node.lineno}): {target.id}")
    assert own == [], "registries outside budgetclient.hooks:\n" + "\n".join(own)


def test_one_name_per_concept() -> None:
    """No two modules define a top-level class of the same name (``LineageState``, ``CacheEntry``,
    ``PreparedRequest`` and ``Rates`` each meant two things once)."""
    where: dict[str, list[str]] = {}
    for module, (path, _) in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(module)
    assert {name: modules for name, modules in where.items() if len(modules) > 1} == {}


_PLAN_SNAKE = re.compile(r"(?:^|_)plan(?:s|ned|ning|ner)?(?:_|$)")
_PLAN_CAMEL = re.compile(r"Plan(?![a-z])")


def _bound_names(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every name the code binds: classes, functions, arguments, assigned names and attributes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno
        elif isinstance(node, ast.arg):
            yield node.arg, node.lineno
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield node.id, node.lineno
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            yield node.attr, node.lineno


def test_plan_means_the_budget_plan() -> None:
    """"plan" names one thing: the context-budget plan of ``bc.plan`` (PLAN.toml). Nothing outside
    that package binds a name for another kind of plan (a request prepared before sending is
    ``prepared``, an attempt in flight an ``attempt``); ``errors.PlanError`` is the plan's error."""
    found = []
    for module, (path, _) in MODULES.items():
        if module == "budgetclient.plan" or module.startswith("budgetclient.plan."):
            continue
        for name, line in _bound_names(ast.parse(path.read_text(encoding="utf-8"))):
            named = (_PLAN_SNAKE.search(name.lower()) and not name[0].isupper()) or _PLAN_CAMEL.search(name)
            if named and (module, name) != ("budgetclient.errors", "PlanError"):
                found.append(f"{module} (line {line}): {name}")
    assert found == [], "'plan' outside budgetclient.plan:\n" + "\n".join(found)


def _is_broad(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    broad = ("Exception", "BaseException")
    return any(k is None or (isinstance(k, ast.Name) and k.id in broad) for k in kinds)


def _reraises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(stmt, ast.Raise) and stmt.exc is None for stmt in handler.body)


def test_broad_excepts_go_through_guarded_or_say_why() -> None:
    """"Never break the user's call" is `_guard.guarded`, written once. Outside ``providers/`` and
    ``ledger/`` (SDK and database edges, reviewed with their owners), a handler catching every
    ``Exception`` either re-raises (clean-up on the way out) or carries a comment on its line
    saying why it must be a plain except."""
    found = []
    for module, (path, _) in MODULES.items():
        if any(module.startswith(f"budgetclient.{edge}.") for edge in ("providers", "ledger")):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not (isinstance(node, ast.ExceptHandler) and _is_broad(node)) or _reraises(node):
                continue
            if "#" not in lines[node.lineno - 1]:
                found.append(f"{module} (line {node.lineno}): {lines[node.lineno - 1].strip()}")
    assert found == [], "broad excepts without guarded or a reason:\n" + "\n".join(found)


def test_cache_rules_have_one_source() -> None:
    """Anthropic's documented cache limits live in `cachesim.anthropic`; placement uses that table."""
    from budgetclient import placement
    from budgetclient.cachesim import anthropic as rules

    assert placement.MIN_CACHEABLE_TOKENS is rules.MIN_CACHEABLE_TOKENS
    assert placement.LOOKBACK_BLOCKS == rules.LOOKBACK_BLOCKS
    assert placement.MAX_BREAKPOINTS == rules.MAX_BREAKPOINTS
    for model in ("claude-opus-4-6", "us.anthropic.claude-haiku-4-5-v1", "claude-opus-5-x", "not-claude"):
        assert placement.min_cacheable_tokens(model) == rules.min_cacheable_tokens(model)
