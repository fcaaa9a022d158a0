"""A budget plan as parsed values: validation, file-backed components, and where a key sits in its file.

A plan is the dict ``tomllib`` gives for a plan file (``examples/plans/guide.toml`` documents every
key). Any token count may instead be given as a file whose text is counted: ``system_prompt_file``
for ``system_prompt``, ``tools_file`` (a JSON list of tool definitions) for ``tools`` and
``tool_tokens``, and so on; relative paths are resolved against the plan file's folder.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..allocation import ALLOCATION_KEYS
from ..errors import PlanError
from ..formats.collect import TOOL_OVERHEAD
from ..tokens import calibration_factor, count_text

__all__ = ["PlanKeyError", "PlanSpec", "line_of", "load_plan", "parse_plan"]

_TOP = {
    "name",
    "model",
    "models",
    "provider",
    "turns",
    "calls_per_turn",
    "output_tokens",
    "gap_seconds",
    "window",
    "fixed",
    "variable",
    "allocation",
}
_FIXED = ("system_prompt", "tools", "tool_tokens", "safety", "persistent_context")
_VARIABLE = (
    "history_per_turn",
    "history_final",
    "retrieved_chunks",
    "chunk_tokens",
    "tool_outputs",
    "tool_output_tokens",
    "user_message",
)
_TEXT_FILES = {
    "system_prompt",
    "safety",
    "persistent_context",
    "chunk_tokens",
    "tool_output_tokens",
    "user_message",
}


class PlanKeyError(PlanError):
    """A plan value is wrong; ``key`` is its path (``("fixed", "tools")``), so a loader can add its line."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        self.key = key
        self.detail = message
        super().__init__(f"{'.'.join(key)}: {message}")


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """A validated plan: every component as a token count."""

    name: str
    models: tuple[str, ...]
    provider: str | None
    turns: int
    calls_per_turn: int
    output_tokens: int
    gap_seconds: float
    system_prompt: int
    tools: int
    tool_tokens: int
    safety: int
    persistent_context: int
    history_per_turn: int | None
    history_final: int | None
    retrieved_chunks: int
    chunk_tokens: int
    tool_outputs: int
    tool_output_tokens: int
    user_message: int
    window: int
    allocation: Mapping[str, float] | None = field(default=None)

    @property
    def fixed_tokens(self) -> int:
        return self.system_prompt + self.tools * self.tool_tokens + self.safety + self.persistent_context

    def history_at(self, turn: int) -> int:
        """History tokens in the context at ``turn`` (1-based): none at turn 1, growing linearly."""
        if self.history_final is not None:
            return 0 if self.turns == 1 else round(self.history_final * (turn - 1) / (self.turns - 1))
        return (turn - 1) * (self.history_per_turn or 0)


def _int(
    plan: Mapping[str, Any], key: str, path: tuple[str, ...], default: int | None = 0, minimum: int = 0
) -> int | None:
    if key not in plan:
        return default
    value = plan[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanKeyError(
            (*path, key),
            f"expected an integer >= {minimum}, got {value!r}; e.g. {key} = "
            f"{max(minimum, 1) * 200 if 'token' in key or key in _TEXT_FILES else max(minimum, 1)}",
        )
    return value


def _read(base_dir: Path | None, key: tuple[str, ...], name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise PlanKeyError(key, f"expected a file path string, got {name!r}")
    path = Path(name)
    if not path.is_absolute():
        if base_dir is None:
            raise PlanKeyError(key, f"relative path {name!r} needs a plan file location; pass base_dir=")
        path = base_dir / path
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanKeyError(
            key, f"cannot read {str(path)!r}: {exc}; fix the path (relative to the plan file)"
        ) from None


def _count(text: str, model: str, provider: str) -> int:
    return round(count_text(text, model) * calibration_factor(provider, model))


def _section(plan: Mapping[str, Any], name: str, allowed: set[str]) -> Mapping[str, Any]:
    section = plan.get(name, {})
    if not isinstance(section, Mapping):
        raise PlanKeyError((name,), f"expected a table [{name}], got {section!r}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise PlanKeyError((name, unknown[0]), f"unknown key; [{name}] takes {', '.join(sorted(allowed))}")
    return section


def _provider_of(model: str, provider: str | None) -> str:
    if provider:
        return provider
    lowered = model.lower()
    if lowered.startswith("claude"):
        return "anthropic"
    return "google" if lowered.startswith("gemini") else "openai"


def parse_plan(plan: Mapping[str, Any], base_dir: str | Path | None = None) -> PlanSpec:
    """Validate a parsed plan and count any ``*_file`` components; `PlanKeyError` names the bad key."""
    if not isinstance(plan, Mapping):
        raise PlanError(f"a plan is a mapping (the parsed TOML file), got {type(plan).__name__}")
    unknown = sorted(set(plan) - _TOP)
    if unknown:
        raise PlanKeyError((unknown[0],), f"unknown key; a plan takes {', '.join(sorted(_TOP))}")
    base = Path(base_dir) if base_dir is not None else None
    models_value = plan.get("models", plan.get("model"))
    key = ("models",) if "models" in plan else ("model",)
    if isinstance(models_value, str):
        models_value = [models_value]
    if (
        not isinstance(models_value, list)
        or not models_value
        or not all(isinstance(m, str) and m for m in models_value)
    ):
        raise PlanKeyError(
            key,
            f'expected a model id or a list of them, got {models_value!r}; e.g. model = "claude-sonnet-4-6"',
        )
    models = tuple(models_value)
    provider = plan.get("provider")
    if provider is not None and provider not in ("anthropic", "openai", "google"):
        raise PlanKeyError(("provider",), f"expected anthropic, openai or google, got {provider!r}")
    count_model = models[0]
    count_provider = _provider_of(count_model, provider)

    fixed = _section(plan, "fixed", {*_FIXED, *(f"{k}_file" for k in _FIXED if k != "tool_tokens")})
    variable = _section(plan, "variable", {*_VARIABLE, *(f"{k}_file" for k in _TEXT_FILES & set(_VARIABLE))})
    values: dict[str, int] = {}
    for section_name, section, keys in (("fixed", fixed, _FIXED), ("variable", variable, _VARIABLE)):
        for name in keys:
            file_key = f"{name}_file"
            if file_key in section:
                if name in section:
                    raise PlanKeyError(
                        (section_name, file_key), f"give either {name} or {file_key}, not both"
                    )
                text = _read(base, (section_name, file_key), section[file_key])
                if name == "tools":
                    values["tools"], values["tool_tokens"] = _tools_from_json(
                        text, (section_name, file_key), count_model, count_provider
                    )
                else:
                    values[name] = _count(text, count_model, count_provider)
            elif name not in values:
                values[name] = _int(section, name, (section_name,)) or 0
    if "tools_file" in fixed and "tool_tokens" in fixed:
        raise PlanKeyError(("fixed", "tool_tokens"), "tools_file gives the tool sizes; drop tool_tokens")
    if "history_per_turn" in variable and "history_final" in variable:
        raise PlanKeyError(("variable", "history_final"), "give history_per_turn or history_final, not both")

    turns = _int(plan, "turns", (), default=None, minimum=1)
    if turns is None:
        raise PlanKeyError(("turns",), "missing; how many turns a session has, e.g. turns = 15")
    gap = plan.get("gap_seconds", 30)
    if isinstance(gap, bool) or not isinstance(gap, int | float) or gap < 0:
        raise PlanKeyError(("gap_seconds",), f"expected seconds >= 0 between turns, got {gap!r}")
    name_value = plan.get("name", "plan")
    allocation = _allocation(plan)
    window = _int(plan, "window", (), default=None, minimum=1)
    alloc_window = _int(plan.get("allocation", {}), "window", ("allocation",), default=None, minimum=1)
    return PlanSpec(
        name=str(name_value),
        models=models,
        provider=provider,
        turns=turns,
        calls_per_turn=_int(plan, "calls_per_turn", (), default=1, minimum=1) or 1,
        output_tokens=_int(plan, "output_tokens", ()) or 0,
        gap_seconds=float(gap),
        system_prompt=values["system_prompt"],
        tools=values["tools"],
        tool_tokens=values["tool_tokens"],
        safety=values["safety"],
        persistent_context=values["persistent_context"],
        history_per_turn=values["history_per_turn"] if "history_per_turn" in variable else None,
        history_final=values["history_final"] if "history_final" in variable else None,
        retrieved_chunks=values["retrieved_chunks"],
        chunk_tokens=values["chunk_tokens"],
        tool_outputs=values["tool_outputs"],
        tool_output_tokens=values["tool_output_tokens"],
        user_message=values["user_message"],
        window=alloc_window or window or 32_000,
        allocation=allocation,
    )


def _tools_from_json(text: str, key: tuple[str, ...], model: str, provider: str) -> tuple[int, int]:
    """(count, average tokens) of a JSON list of tool definitions, each counted as compact JSON."""
    try:
        tools = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanKeyError(key, f"not valid JSON ({exc}); expected a list of tool definitions") from None
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        raise PlanKeyError(key, "expected a JSON list of tool definitions (objects)")
    if not tools:
        return 0, 0
    overhead = TOOL_OVERHEAD.get(provider, 8)
    total = sum(
        _count(json.dumps(t, ensure_ascii=False, separators=(",", ":")), model, provider) + overhead
        for t in tools
    )
    return len(tools), round(total / len(tools))


def _allocation(plan: Mapping[str, Any]) -> Mapping[str, float] | None:
    section = _section(plan, "allocation", {*ALLOCATION_KEYS, "window"})
    shares: dict[str, float] = {}
    for name in ALLOCATION_KEYS:
        if name in section:
            value = section[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
                raise PlanKeyError(("allocation", name), f"expected a percentage 0-100, got {value!r}")
            shares[name] = float(value)
    if not shares:
        return None
    if sum(shares.values()) > 100.0001:
        first = next(iter(shares))
        raise PlanKeyError(
            ("allocation", first), f"allocation percentages add up to {sum(shares.values()):g}, over 100"
        )
    return shares


# --- files and line numbers -------------------------------------------------------------------

_TABLE = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
_TOML_LINE = re.compile(r"at line (\d+)(?:, column (\d+))?")


def line_of(text: str, key: tuple[str, ...]) -> int | None:
    """The 1-based line of ``key`` (``("fixed", "tools")``) in TOML ``text``; its table's line if missing."""
    *tables, last = key if key else ("",)
    wanted = ".".join(tables) or None
    table: str | None = None
    table_line: int | None = None
    pattern = re.compile(rf'^\s*(?:{re.escape(last)}|"{re.escape(last)}")\s*=')
    for number, line in enumerate(text.splitlines(), 1):
        if match := _TABLE.match(line):
            table = match.group(1).strip('"')
            if table == wanted or (wanted is None and table == last):
                table_line = number
            continue
        if table == wanted and pattern.match(line):
            return number
    return table_line


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a plan file; a syntax error becomes a `PlanError` starting ``PATH:LINE:``."""
    where = Path(path)
    try:
        with open(where, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise PlanError(f"{where}: plan file not found; check the path") from None
    except OSError as exc:
        raise PlanError(f"{where}: cannot read plan file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PlanError(f"{where}: plan file is not UTF-8 ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = f"{match.group(1)}:" if match else ""
        raise PlanError(f"{where}:{line} invalid TOML: {exc}") from None
