"""Expected costs computed in the tests from the fakes' own usage fields and published rates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

MTOK = Decimal(1_000_000)

# Published rates, USD per million tokens.
CLAUDE = "claude-sonnet-4-6"
CLAUDE_RATES = {
    "input": Decimal("3"),
    "output": Decimal("15"),
    "read": Decimal("0.30"),
    "write_5m": Decimal("3.75"),
    "write_1h": Decimal("6"),
}
GPT = "gpt-4o"
GPT_RATES = {"input": Decimal("2.50"), "read": Decimal("1.25"), "output": Decimal("10")}
GEMINI = "gemini-2.5-flash"
GEMINI_RATES = {"input": Decimal("0.30"), "read": Decimal("0.03"), "output": Decimal("2.50")}


def anthropic_cost(usage: dict[str, Any], rates: dict[str, Decimal] = CLAUDE_RATES) -> Decimal:
    """One Messages response (``input_tokens`` excludes the cache tokens)."""
    creation = usage.get("cache_creation") or {}
    return (
        usage["input_tokens"] * rates["input"]
        + usage.get("cache_read_input_tokens", 0) * rates["read"]
        + creation.get("ephemeral_5m_input_tokens", 0) * rates["write_5m"]
        + creation.get("ephemeral_1h_input_tokens", 0) * rates["write_1h"]
        + usage["output_tokens"] * rates["output"]
    ) / MTOK


def openai_cost(usage: dict[str, Any]) -> Decimal:
    """One Chat Completions or Responses usage object of gpt-4o (its input includes cached tokens)."""
    rates = GPT_RATES
    if "prompt_tokens" in usage:
        total, output = usage["prompt_tokens"], usage["completion_tokens"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    else:
        total, output = usage["input_tokens"], usage["output_tokens"]
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    return ((total - cached) * rates["input"] + cached * rates["read"] + output * rates["output"]) / MTOK


def gemini_cost(meta: dict[str, Any]) -> Decimal:
    """One generateContent ``usageMetadata``."""
    rates = GEMINI_RATES
    prompt = meta["promptTokenCount"] + meta.get("toolUsePromptTokenCount", 0)
    cached = meta.get("cachedContentTokenCount", 0)
    output = meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0)
    return ((prompt - cached) * rates["input"] + cached * rates["read"] + output * rates["output"]) / MTOK


def total(costs: Any) -> Decimal:
    return sum(costs, Decimal(0))
