"""The OpenAI call path's shortcuts give exactly what the general path they stand for gives."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from budgetclient.estimate import estimate_request
from budgetclient.formats.openai.prefix import classify
from budgetclient.providers import _openai_meter
from budgetclient.providers._openai_estimate import ChatEstimates

_Listed = list[tuple[str, str | bytes]]
_HEADER_LISTS: list[_Listed] = [
    [],
    [("x-stainless-retry-count", "0")],
    [("X-Stainless-Retry-Count", "3")],
    [("x-stainless-retry-count", " 2 ")],
    [("x-stainless-retry-count", "-1")],
    [("x-stainless-retry-count", "abc")],
    [("x-stainless-retry-count", "")],
    [("x-stainless-retry-count", "1"), ("X-STAINLESS-RETRY-COUNT", "2")],  # sent twice: joined
    [("x-stainless-retry-count", "\u0661")],  # an Arabic-Indic digit, as UTF-8: int() reads it
    [("x-stainless-retry-count", "é".encode("latin-1"))],
    [("content-type", "text/event-stream; charset=utf-8"), ("content-length", "12")],
    [("Content-Type", "application/json"), ("content-type", "text/plain")],
]


def _raw(listed: _Listed) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode() if isinstance(v, str) else v) for k, v in listed]


@pytest.mark.parametrize("listed", _HEADER_LISTS)
@pytest.mark.parametrize("encoding", [None, "utf-8", "iso-8859-1", "utf-16"])
def test_header_reads_what_get_reads(listed: _Listed, encoding: str | None) -> None:
    raw = _raw(listed)
    for name in ("x-stainless-retry-count", "content-type", "missing"):
        headers = httpx2.Headers(raw, encoding=encoding)
        try:
            want: Any = headers.get(name, "dflt")
        except UnicodeDecodeError:  # neither way reads it: the caller's fault handling decides
            continue
        headers = httpx2.Headers(raw, encoding=encoding)
        assert _openai_meter._header(headers, name.encode(), name, "dflt") == want


@pytest.mark.parametrize("listed", _HEADER_LISTS)
def test_retries_taken_reads_what_the_header_says(listed: _Listed) -> None:
    raw = _raw(listed)
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", headers=raw)
    try:
        want = max(int(httpx2.Headers(raw).get("x-stainless-retry-count", "0")), 0)
    except ValueError:
        want = 0
    assert _openai_meter._retries_taken(request) == want


def test_other_headers_types_are_read_by_their_get() -> None:
    class Plain(dict[str, str]):
        pass

    headers = Plain({"x-stainless-retry-count": "4"})
    assert _openai_meter._header(headers, b"x-stainless-retry-count", "x-stainless-retry-count", "0") == "4"


@pytest.mark.parametrize(
    "url",
    [
        "/chat/completions",
        "/chat/completions/",
        "/chat/completions?api-version=2024-10-21",
        "/responses",
        "/responses/compact",
        "/responses/resp_1/cancel",
        "/completions",
        "/embeddings",
        "/models",
        "/files",
        "https://example.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=1",
    ],
)
def test_operations_are_classified_once_per_url_as_classify_does(url: str) -> None:
    want = classify("POST", url.split("?", 1)[0])
    assert _openai_meter._operation_of(url) == want
    assert _openai_meter._OPERATIONS[url] == want  # kept: the next request reads it


@pytest.mark.parametrize(
    ("model", "requested"),
    [("gpt-4o-2024-08-06", "gpt-4o"), ("gpt-4o", "gpt-4o"), ("not-a-gpt", "gpt-4o"), ("gpt-4.1", "gpt-4o")],
)
def test_same_family_is_the_families_compared(model: str, requested: str) -> None:
    want = _openai_meter._family(model) == _openai_meter._family(requested)
    assert _openai_meter._same_family(model, requested) is want
    assert _openai_meter._same_family(model, requested) is want  # from its memo


def _chat(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [dict(m) for m in messages]}  # fresh dicts, as the SDK's


def test_the_estimate_reads_plain_turns_inline_as_the_full_read_does() -> None:
    # plain turns (two string fields, in either order, empty ones too) read without the collector,
    # and turns that are not plain read by it, several new ones per call
    estimates = ChatEstimates()
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse. " * 20}]
    added: list[list[dict[str, Any]]] = [
        [{"role": "user", "content": "a question " * 9}],
        [{"content": "reversed keys " * 5, "role": "assistant"}, {"role": "user", "content": ""}],
        [{"role": "", "content": "no role"}, {"role": "user", "content": "named", "name": "bob"}],
        [
            {"role": "assistant", "content": None},
            {"role": "user", "content": [{"type": "text", "text": "x"}]},
        ],
        [{"role": "user", "content": "short"}, {"role": "assistant", "content": "reply " * 30}],
    ]
    for turns in added:
        messages += turns
        got = estimates.estimate("conversation", _chat(messages), "gpt-4o")
        want = estimate_request("openai", _chat(messages), "gpt-4o")
        assert (got.raw_tokens, got.tokens) == (want.raw_tokens, want.tokens), turns


class _Options:
    """Request options of an SDK whose options class may lack fields."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


_FIELDS = {
    "method": "post",
    "url": "/chat/completions",
    "json_data": {"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]},
    "extra_json": None,
    "content": None,
    "files": None,
    "headers": None,
}


@pytest.mark.parametrize("missing", [None, *_FIELDS])
def test_options_are_prepared_only_when_every_field_read_is_there(missing: str | None) -> None:
    # the one set comparison on the options' ``__dict__`` decides as a ``hasattr`` of each field
    import openai
    from structlog.testing import capture_logs

    import budgetclient as bc
    from budgetclient.providers import _hooks
    from budgetclient.providers._openai_hook import prepared_build
    from budgetclient.providers._openai_meter import prepared_body_of

    _hooks._warned.clear()
    client = bc.wrap(openai.OpenAI(api_key="sk-test", http_client=httpx2.Client()))
    options = _Options(**{k: v for k, v in _FIELDS.items() if k != missing})
    built = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")

    def build(options: Any, *, retries_taken: int = 0) -> httpx2.Request:
        return built

    with capture_logs() as logs:
        request = prepared_build(client, build, (options,), {"retries_taken": 0})
    warned = [entry for entry in logs if entry["event"] == "sdk.hook_unavailable"]
    assert request is built
    assert (prepared_body_of(request) is None) is (missing is not None)
    assert bool(warned) is (missing is not None)
    if missing is not None:
        assert missing in warned[0]["problem"]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"prompt_cache_key": ""},
        {"prompt_cache_key": "mine"},
        {"response_format": {"type": "json_object"}},
        {"response_format": None, "prompt_cache_key": None},
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}},
        {"text": {"verbosity": "low"}},
    ],
)
@pytest.mark.parametrize("operation", ["chat.completions", "responses", "completions"])
def test_request_shape_of_a_plain_request_is_what_request_shape_gives(
    extra: dict[str, Any], operation: str
) -> None:
    from budgetclient.drift import request_shape
    from budgetclient.formats.openai.prefix import CHAT, RESPONSES, request_shape_of

    body = {"model": "gpt-4o", **extra}
    if operation == CHAT:
        output_format = body.get("response_format")
    elif operation == RESPONSES:
        text = body.get("text")
        output_format = text.get("format") if isinstance(text, dict) else None
    else:
        assert request_shape_of(body, operation) == ""
        return
    caller_key = body.get("prompt_cache_key") or None
    want = request_shape((("format", output_format), ("prompt_cache_key", caller_key)))
    assert request_shape_of(body, operation) == want


@pytest.mark.parametrize(
    "opening",
    [
        [{"role": "user", "content": "plain"}, {"role": "assistant", "content": "reply"}],
        [{"content": "keys reversed", "role": "user"}],
        [{"role": "user", "content": [{"type": "text", "text": "x", "prompt_cache_breakpoint": {}}]}],
        [{"role": "user", "content": "named", "name": "bob"}, {"role": "user", "content": None}],
        [{"role": "user", "content": 1}, {"role": 2, "content": "x"}],
    ],
)
def test_the_head_digests_plain_openings_as_the_general_path_does(opening: list[dict[str, Any]]) -> None:
    from budgetclient.formats.openai import prefix

    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "sys"}, *opening]}
    head = prefix.conversation_head(body, prefix.CHAT)
    want = tuple(prefix._opening_digest(prefix._message_without_markers(m)) for m in opening[:2])
    assert head.opening == want


class _Unprintable:
    def __reduce__(self) -> Any:
        raise TypeError("not picklable")


_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("chat.completions", {"messages": [{"role": "system", "content": "s"}, {"role": "user"}]}),
        ("chat.completions", {"tools": _TOOLS, "messages": [{"content": "s", "role": "developer"}]}),
        ("chat.completions", {"functions": [{"name": "f"}], "messages": [{"role": "system", "content": []}]}),
        ("chat.completions", {"tools": (1, 2), "messages": [{"role": "system", "content": _Unprintable()}]}),
        ("chat.completions", {"tools": [_Unprintable()], "messages": []}),
        ("responses", {"instructions": "be brief", "input": [{"role": "system", "content": "s"}]}),
        ("responses", {"instructions": [{"role": "developer", "content": "x"}], "input": "hi"}),
        ("responses", {"instructions": _Unprintable(), "input": "hi"}),
    ],
)
def test_request_prints_size_and_source_are_the_general_ones(operation: str, body: dict[str, Any]) -> None:
    from budgetclient.formats.openai import prefix

    prints = prefix.request_prints(body, operation)
    parts = (prints.tools, prints.functions, prints.instructions_print, *prints.messages)
    printable = not any(part is None for part in (prints.tools, prints.functions, *prints.messages)) and not (
        prints.instructions is not None and prints.instructions_print is None
    )
    assert (prints.source is not None) is printable
    assert prints.size == (sum(prefix._print_size(part) for part in parts) if printable else 0)
