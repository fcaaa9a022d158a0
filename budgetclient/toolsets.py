"""Tool subsets per task type: send only the tools a task needs (the guide's third optimisation).

Exposed as ``bc.tools``. Every tool definition sent costs input tokens on every call; a router
declares which tools each task type uses and reports what leaving the rest out saves. Subsets
keep the tools' original order, so each task type's tool prefix is byte-stable and caches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .formats.collect import TOOL_OVERHEAD
from .tokens import calibration_factor, count_text

__all__ = ["ToolRouter", "ToolSavings", "tool_name", "tool_tokens"]


def tool_name(tool: Mapping[str, Any]) -> str:
    """The name of an Anthropic, OpenAI chat (``function.name``) or OpenAI Responses tool."""
    function = tool.get("function")
    if isinstance(function, Mapping) and isinstance(function.get("name"), str):
        return str(function["name"])
    name = tool.get("name")
    if isinstance(name, str):
        return name
    raise ConfigurationError(f"tool definition has no name: {json.dumps(tool, default=str)[:120]}")


def tool_tokens(
    tool: Mapping[str, Any], *, provider: str = "anthropic", model: str = "claude-sonnet-4-6"
) -> int:
    """Estimated input tokens of one definition: its compact JSON plus per-tool framing, calibrated."""
    clean = {k: v for k, v in tool.items() if k != "cache_control"}
    raw = count_text(json.dumps(clean, ensure_ascii=False, separators=(",", ":")), model)
    return int((raw + TOOL_OVERHEAD.get(provider, 8)) * calibration_factor(provider, model) + 0.5)


@dataclass(frozen=True, slots=True)
class ToolSavings:
    """What a task type's subset leaves out."""

    task_type: str
    tools_total: int
    tools_kept: int
    tokens_total: int
    """Tokens of all tool definitions."""
    tokens_kept: int
    tokens_saved: int
    """Per call."""

    @property
    def fraction_saved(self) -> float:
        return self.tokens_saved / self.tokens_total if self.tokens_total else 0.0


class ToolRouter:
    """Map task types to tool subsets; ``tools_for(task_type)`` is what to send.

    ``subsets`` maps a task type to tool names; a name that is not a tool is a `ConfigurationError`
    at construction, not a silent miss at call time. Unknown task types get ``default``: all tools
    (``"all"``) or none (``"none"``).
    """

    def __init__(
        self,
        tools: Sequence[Mapping[str, Any]],
        subsets: Mapping[str, Sequence[str]],
        *,
        default: str = "all",
        provider: str = "anthropic",
        model: str = "claude-sonnet-4-6",
    ) -> None:
        if default not in ("all", "none"):
            raise ConfigurationError(f"ToolRouter default must be 'all' or 'none', got {default!r}")
        self.tools = list(tools)
        self._names = [tool_name(t) for t in self.tools]
        duplicates = sorted({n for n in self._names if self._names.count(n) > 1})
        if duplicates:
            raise ConfigurationError(f"duplicate tool names {duplicates}; each tool needs a unique name")
        known = set(self._names)
        for task_type, names in subsets.items():
            missing = sorted(set(names) - known)
            if missing:
                raise ConfigurationError(
                    f"task type {task_type!r} names unknown tool(s) {missing}; known tools: {sorted(known)}"
                )
        self.subsets = {task_type: frozenset(names) for task_type, names in subsets.items()}
        self.default = default
        self._tokens = [tool_tokens(t, provider=provider, model=model) for t in self.tools]

    def tools_for(self, task_type: str) -> list[Mapping[str, Any]]:
        """The task type's tools, in the original order (so the prefix caches per task type)."""
        wanted = self.subsets.get(task_type)
        if wanted is None:
            return list(self.tools) if self.default == "all" else []
        return [t for t, name in zip(self.tools, self._names, strict=True) if name in wanted]

    def savings(self, task_type: str) -> ToolSavings:
        kept = {tool_name(t) for t in self.tools_for(task_type)}
        kept_tokens = sum(n for n, name in zip(self._tokens, self._names, strict=True) if name in kept)
        total = sum(self._tokens)
        return ToolSavings(task_type, len(self.tools), len(kept), total, kept_tokens, total - kept_tokens)

    def report(self) -> list[ToolSavings]:
        """Savings for every declared task type."""
        return [self.savings(task_type) for task_type in self.subsets]
