"""A Gemini generateContent body (REST camelCase or SDK snake_case) read for the token estimate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..collect import (
    MESSAGE_OVERHEAD,
    TOOL_OVERHEAD,
    EstimateMemo,
    _as_list,
    _Collected,
    _media,
)

__all__ = ["collect_google"]


def _get(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    """REST bodies are camelCase; accept the SDK's snake_case too."""
    value = mapping.get(camel)
    return mapping.get(snake) if value is None else value


def _google_part(out: _Collected, part: Any) -> None:
    if isinstance(part, str):
        out.text(part)
        return
    if not isinstance(part, Mapping):
        return
    if isinstance(part.get("text"), str):
        out.text(part["text"])
    elif isinstance(inline := _get(part, "inlineData", "inline_data"), Mapping):
        _media(out, _get(inline, "mimeType", "mime_type"), inline.get("data"))
    elif isinstance(file := _get(part, "fileData", "file_data"), Mapping):
        _media(out, _get(file, "mimeType", "mime_type"), None)
    elif isinstance(call := _get(part, "functionCall", "function_call"), Mapping):
        out.text(call.get("name"))
        out.json(call.get("args"))
    elif isinstance(response := _get(part, "functionResponse", "function_response"), Mapping):
        out.text(response.get("name"))
        out.json(response.get("response"))
        for inner in _as_list(response.get("parts")):
            _google_part(out, inner)
    elif isinstance(code := _get(part, "executableCode", "executable_code"), Mapping):
        out.text(code.get("code"))
    elif isinstance(result := _get(part, "codeExecutionResult", "code_execution_result"), Mapping):
        out.text(result.get("output"))
    else:
        out.unknown(part)


def _google_content(out: _Collected, content: Any) -> None:
    out.fixed += MESSAGE_OVERHEAD["google"]
    if isinstance(content, Mapping):
        for part in _as_list(content.get("parts")):
            _google_part(out, part)
    else:
        _google_part(out, content)


def _google_declaration(out: _Collected, declaration: Any) -> None:
    out.json(declaration)
    out.fixed += TOOL_OVERHEAD["google"]


def collect_google(body: Mapping[str, Any], memo: EstimateMemo | None = None) -> _Collected:
    out = _Collected("google", memo=memo, seen={} if memo is not None else None)
    system = _get(body, "systemInstruction", "system_instruction")
    if system is not None:
        out.element(system, _google_content)
    for content in _as_list(body.get("contents")):
        out.element(content, _google_content)
    for tool in _as_list(body.get("tools")):
        declarations = (
            _get(tool, "functionDeclarations", "function_declarations") if isinstance(tool, Mapping) else None
        )
        for declaration in _as_list(declarations) or [tool]:
            out.element(declaration, _google_declaration)
    config = _get(body, "generationConfig", "generation_config")
    if isinstance(config, Mapping):
        out.json(_get(config, "responseSchema", "response_schema"))
        out.json(_get(config, "responseJsonSchema", "response_json_schema"))
    return out
