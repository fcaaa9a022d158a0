"""A Chat Completions wire for the OpenAI drop-in tests, independent of the HTTP package.

`chat_reply` answers a request body as the API does (a usage chunk only with
``stream_options.include_usage``); the tests wrap its bytes in ``httpx2`` or legacy ``httpx``
responses, read up front or streamed, and compare a raw SDK client with budgetclient's.
"""

from __future__ import annotations

import json
from typing import Any

USAGE = {
    "prompt_tokens": 1337,
    "completion_tokens": 42,
    "total_tokens": 1379,
    "prompt_tokens_details": {"cached_tokens": 1024},
    "completion_tokens_details": {"reasoning_tokens": 16},
}
WORDS = ["Bon", "jour", " à", " vous"]


def sse(document: Any) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def chat_reply(
    body: dict[str, Any], *, extra_on_usage_chunk: dict[str, Any] | None = None
) -> tuple[str, bytes]:
    """(content type, body bytes) the API would send for ``body``."""
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(WORDS)}
        document = {
            **envelope,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": USAGE,
        }
        return "application/json", json.dumps(document).encode()
    include_usage = (body.get("stream_options") or {}).get("include_usage") is True
    chunks = [
        {**envelope, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        | ({"usage": None} if include_usage else {})
        for word in WORDS
    ]
    if include_usage:
        chunks.append({**envelope, "choices": [], "usage": USAGE, **(extra_on_usage_chunk or {})})
    elif extra_on_usage_chunk:
        chunks.append({**envelope, "choices": [], **extra_on_usage_chunk})
    return "text/event-stream", b"".join(sse(c) for c in chunks) + b"data: [DONE]\n\n"


def expected_usage(requests: int = 1) -> dict[str, int]:
    """budgetclient's normalised usage for `USAGE` (OpenAI's prompt_tokens include cached ones)."""
    return {
        "input_tokens": USAGE["prompt_tokens"] * requests,
        "cache_read_tokens": USAGE["prompt_tokens_details"]["cached_tokens"] * requests,  # type: ignore[index]
        "output_tokens": USAGE["completion_tokens"] * requests,
        "reasoning_tokens": USAGE["completion_tokens_details"]["reasoning_tokens"] * requests,  # type: ignore[index]
        "requests": requests,
    }


def usage_fields(usage: Any) -> dict[str, int]:
    return {name: getattr(usage, name) for name in expected_usage()}
