"""`estimate_body` counts only a conversation's new contents, and gives `estimate_request`'s figure.

Each sequence is estimated twice from an empty counting memo: once by ``estimate_request`` with an
`EstimateMemo` (the full count), once by `estimate_body`; the raw counts must be equal call by call,
including texts beyond the exact-count budget (sampled) and a system instruction that changes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from budgetclient.estimate import EstimateMemo, estimate_request
from budgetclient.formats.google import reader as google_reader
from budgetclient.providers import _google_estimate as google_estimate
from budgetclient.providers._google_estimate import ContentsTally, estimate_body
from budgetclient.tokens import counting

MODEL = "gemini-2.5-flash"
_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "def", "return", "{", "}"]


def _text(seed: int, chars: int) -> str:
    rng = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def _turn(i: int, chars: int) -> dict[str, Any]:
    role = "user" if i % 2 == 0 else "model"
    if i % 3 == 2:
        call = {"functionCall": {"name": f"tool_{i % 4}", "args": {"path": f"src/{i}.py", "n": i}}}
        return {"role": role, "parts": [{"text": _text(i, chars)}, call]}
    return {"role": role, "parts": [{"text": _text(i, chars)}]}


def _bodies() -> Iterator[dict[str, Any]]:
    """A conversation's bodies as `_google_body` decodes them: unchanged contents are the very
    objects of the previous body, in a new list; then an edit, a truncation, a new system."""
    system = {"parts": [{"text": _text(100, 3_000)}]}
    tools = [
        {"functionDeclarations": [{"name": f"tool_{i}", "parameters": {"type": "OBJECT"}} for i in range(4)]}
    ]
    contents: list[Any] = []
    sizes = [200, 1_500, 30, 9_000, 12_000, 700, 40_000, 2_000, 100, 5_000]
    for i, chars in enumerate(sizes):
        contents = [*contents, _turn(i, chars)]
        yield {"contents": contents, "systemInstruction": system, "tools": tools}
    contents = [*contents[:3], _turn(50, 800), *contents[4:]]  # an edit in the middle
    yield {"contents": contents, "systemInstruction": system, "tools": tools}
    contents = contents[5:]  # the oldest turns dropped
    yield {"contents": contents, "systemInstruction": system, "tools": tools}
    tools = [*tools, {"functionDeclarations": [{"name": "search", "description": _text(102, 2_000)}]}]
    contents = [*contents, _turn(59, 400)]
    yield {"contents": contents, "systemInstruction": system, "tools": tools}
    system = {"parts": [{"text": _text(101, 20_000)}]}  # a new, long system instruction
    contents = [*contents, _turn(60, 18_000)]
    yield {"contents": contents, "systemInstruction": system, "tools": tools}
    contents = [*contents, _turn(61, 300)]
    yield {"contents": contents, "system_instruction": system, "tools": tools, "generationConfig": {}}
    yield {"contents": contents[-1], "tools": tools}  # not a list


def _full_counts() -> list[int]:
    memo = EstimateMemo()
    return [estimate_request("google", body, MODEL, memo=memo).raw_tokens for body in _bodies()]


def _tally_counts() -> list[int]:
    tally = ContentsTally()
    return [estimate_body(body, MODEL, tally).raw_tokens for body in _bodies()]


def _remember(key: tuple[str, int, int], count: int, into: dict[Any, int] | None = None) -> None:
    """`counting._remember` into the patched memos (its default is bound to the original one)."""
    (counting._memo if into is None else into)[key] = count


def test_the_tally_gives_the_full_counts_call_by_call(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[list[int]] = []
    for run in (_full_counts, _tally_counts):
        sampled: dict[Any, int] = {}
        monkeypatch.setattr(counting, "_memo", {})
        monkeypatch.setattr(counting, "_sampled", sampled)
        monkeypatch.setattr(counting, "_remember", _remember)
        counts.append(run())
        assert sampled  # some texts were beyond the exact-count budget
    assert counts[0] == counts[1]


def test_only_new_contents_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[Any] = []
    real = google_reader._google_content
    monkeypatch.setattr(google_reader, "_google_content", lambda out, c: (walked.append(c), real(out, c))[1])
    tally = ContentsTally()
    bodies = list(_bodies())
    estimate_body(bodies[0], MODEL, tally)
    estimate_body(bodies[1], MODEL, tally)
    walked.clear()
    estimate_body(bodies[2], MODEL, tally)
    assert walked == [bodies[2]["contents"][2]]  # the system instruction and tools: counts kept
    counted: list[list[str]] = []
    real_count = google_estimate.count_each
    monkeypatch.setattr(
        google_estimate, "count_each", lambda enc, texts: (counted.append(texts), real_count(enc, texts))[1]
    )
    monkeypatch.setattr(counting, "memo_clears", counting.memo_clears + 1)  # a memo cleared: all again
    estimate_body(bodies[3], MODEL, tally)
    assert all(
        any(part["text"] in counted[0] for part in c["parts"] if "text" in part)
        for c in bodies[3]["contents"]
    )
    counted.clear()
    estimate_body(bodies[4], MODEL, tally)
    assert not any(
        part["text"] in counted[0] for c in bodies[4]["contents"][:4] for part in c["parts"] if "text" in part
    )


def test_the_contents_count_answers_for_that_list_only(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = ContentsTally()
    body = next(_bodies())
    estimate_body(body, MODEL, tally)
    name = counting.encoding_for(MODEL).name
    expected = estimate_request("google", {"contents": list(body["contents"])}, MODEL).raw_tokens
    assert tally.contents_raw(body["contents"], name) == expected
    assert tally.contents_raw(list(body["contents"]), name) is None  # an equal list, not this one
    monkeypatch.setattr(counting, "memo_clears", counting.memo_clears + 1)
    assert tally.contents_raw(body["contents"], name) is None


def _reference_usage(meta: dict[str, Any] | None) -> Any:
    """`usage_from_gemini` as it was written before its fast path (each count read by both names)."""
    from budgetclient.usage import Usage

    if not meta:
        return Usage(requests=1)

    def count(camel: str, snake: str) -> int:
        value = meta.get(camel, meta.get(snake))
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    prompt = count("promptTokenCount", "prompt_token_count")
    tool_use = count("toolUsePromptTokenCount", "tool_use_prompt_token_count")
    cached = count("cachedContentTokenCount", "cached_content_token_count")
    candidates = count("candidatesTokenCount", "candidates_token_count")
    thoughts = count("thoughtsTokenCount", "thoughts_token_count")
    return Usage(
        input_tokens=prompt + tool_use,
        cache_read_tokens=min(cached, prompt + tool_use),
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
        requests=1,
    )


@pytest.mark.parametrize(
    "meta",
    [
        None,
        {},
        {"promptTokenCount": 1000, "candidatesTokenCount": 20, "totalTokenCount": 1020},
        {
            "promptTokenCount": 900,
            "cachedContentTokenCount": 950,
            "thoughtsTokenCount": 7,
            "candidatesTokenCount": 3,
        },
        {"promptTokenCount": 50, "toolUsePromptTokenCount": 25, "cachedContentTokenCount": 60},
        {"prompt_token_count": 12, "candidates_token_count": 4, "thoughts_token_count": 2},
        {"promptTokenCount": None, "prompt_token_count": 12, "candidatesTokenCount": True},
        {
            "promptTokenCount": -5,
            "candidatesTokenCount": 0,
            "thoughtsTokenCount": 3.0,
            "cachedContentTokenCount": "9",
        },
        {"promptTokenCount": False, "prompt_token_count": 8, "candidates_token_count": -1},
    ],
)
def test_usage_fast_path_gives_the_full_reading(meta: dict[str, Any] | None) -> None:
    from budgetclient.providers._google_meter import usage_from_gemini

    assert usage_from_gemini(meta) == _reference_usage(meta)
