"""An OpenAI chat.completions or responses body read for the token estimate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..collect import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOL_OVERHEAD,
    _as_list,
    _Collected,
    _media,
)

__all__ = ["collect_openai"]


def _openai_part(out: _Collected, part: Any) -> None:
    if isinstance(part, str):
        out.text(part)
        return
    if not isinstance(part, Mapping):
        return
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text", "summary_text", "reasoning_text"):
        out.text(part.get("text"))
    elif kind == "refusal":
        out.text(part.get("refusal"))
    elif kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, Mapping) else None
        _media(out, "image/*", None, detail=detail)
    elif kind == "input_image":
        _media(out, "image/*", None, detail=part.get("detail"))
    elif kind == "input_audio":
        audio = part.get("input_audio") or part
        fmt = audio.get("format") if isinstance(audio, Mapping) else None
        _media(out, f"audio/{fmt or 'wav'}", audio.get("data") if isinstance(audio, Mapping) else None)
    elif kind in ("file", "input_file"):
        file = part.get("file") if kind == "file" else part
        file = file if isinstance(file, Mapping) else {}
        out.text(file.get("filename"))
        _media(out, "application/pdf", file.get("file_data"))
    else:
        out.unknown(part)


def _openai_content(out: _Collected, content: Any) -> None:
    for part in _as_list(content):
        _openai_part(out, part)


def _collect_openai_chat(body: Mapping[str, Any], out: _Collected) -> None:
    texts = out.texts
    for message in _as_list(body.get("messages")):
        if type(message) is dict and len(message) == 2:
            role, content = message.get("role"), message.get("content")
            if type(role) is str and type(content) is str:  # the common plain turn, inline
                out.fixed += MESSAGE_OVERHEAD["openai"]
                if role:
                    texts.append(role)
                if content:
                    texts.append(content)
                continue
        if not isinstance(message, Mapping):
            continue
        out.fixed += MESSAGE_OVERHEAD["openai"]
        out.text(message.get("role"))
        if message.get("name"):
            out.text(message["name"])
            out.fixed += 1
        _openai_content(out, message.get("content"))
        out.text(message.get("refusal"))
        calls = _as_list(message.get("tool_calls")) + _as_list(message.get("function_call"))
        for call in calls:
            function = call.get("function", call) if isinstance(call, Mapping) else {}
            out.text(function.get("name"))
            out.text(function.get("arguments"))
    for tool in _as_list(body.get("tools")) + _as_list(body.get("functions")):
        out.json(tool)
        out.fixed += TOOL_OVERHEAD["openai"]
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        out.json(response_format.get("json_schema"))


def _openai_item(out: _Collected, item: Any) -> None:
    if isinstance(item, str):
        out.text(item)
        return
    if not isinstance(item, Mapping):
        return
    kind = item.get("type")
    out.fixed += MESSAGE_OVERHEAD["openai"]
    if kind in (None, "message") or "role" in item:
        out.text(item.get("role"))
        _openai_content(out, item.get("content"))
    elif kind in ("function_call", "custom_tool_call"):
        out.text(item.get("name"))
        out.text(item.get("arguments") if kind == "function_call" else item.get("input"))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, Mapping):
            out.json(output)
        else:
            _openai_content(out, output)
    elif kind == "reasoning":
        # Only the summary is visible; the encrypted reasoning is unknown to an offline count.
        _openai_content(out, item.get("summary"))
        _openai_content(out, item.get("content"))
    elif kind == "item_reference":
        return
    else:
        out.unknown(item)


def _collect_openai_responses(body: Mapping[str, Any], out: _Collected) -> None:
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        out.text(instructions)
    else:
        for item in _as_list(instructions):
            _openai_item(out, item)
    for item in _as_list(body.get("input")):
        _openai_item(out, item)
    for tool in _as_list(body.get("tools")):
        out.json(tool)
        out.fixed += TOOL_OVERHEAD["openai"]
    text = body.get("text")
    text_format = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(text_format, Mapping) and text_format.get("type") == "json_schema":
        out.json(text_format)


def collect_openai(body: Mapping[str, Any]) -> _Collected:
    out = _Collected("openai")
    if "messages" in body:
        _collect_openai_chat(body, out)
    else:
        _collect_openai_responses(body, out)
    out.fixed += REPLY_PRIMING["openai"]
    return out
