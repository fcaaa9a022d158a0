"""Property tests (hypothesis): usage normalisation and drift explanation over arbitrary input.

Normalisers take whatever a provider (or a broken proxy) puts in ``usage``: they never raise, and
always return non-negative counts with the invariants every price computation relies on. Well-formed
usage is normalised to exactly the figures derived here from the provider's documented semantics.

Drift: ``prepare_request`` over arbitrary Messages bodies, one after another in one lineage, never
raises; any drift it reports names a segment that exists in the request, an offset within that
segment's bytes, and excerpts with no credential in them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetclient.blocks import BYTES_PER_TOKEN
from budgetclient.drift import explain_drift
from budgetclient.formats.anthropic.blocks import request_blocks
from budgetclient.formats.anthropic.prepare import prepare_request
from budgetclient.formats.openai.usage import usage_from_chat, usage_from_responses
from budgetclient.lineage import LineageState
from budgetclient.providers._google_meter import usage_from_gemini
from budgetclient.providers.anthropic import usage_from_anthropic
from budgetclient.usage import Usage
from tests._hypothesis import FAST

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers()),
)
count = st.integers(0, 10**9)


def _fields(names: list[str], nested: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with any subset of ``names`` (junk or counts) and nested detail objects, plus extras."""
    value = st.one_of(junk, count)
    flat = st.fixed_dictionaries({}, optional={n: value for n in names})
    details = st.fixed_dictionaries(
        {},
        optional={
            k: st.one_of(junk, st.fixed_dictionaries({}, optional={f: value for f in fs}))
            for k, fs in nested.items()
        },
    )
    return st.builds(
        lambda a, b, c: {**c, **a, **b}, flat, details, st.dictionaries(st.text(max_size=4), junk)
    )


def check_invariants(u: Usage) -> None:
    for name in (
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_long_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
    ):
        value = getattr(u, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (name, value)
    assert u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert u.cache_write_long_tokens <= u.cache_write_tokens
    assert u.reasoning_tokens <= u.output_tokens


# -- usage normalisation ------------------------------------------------------------

ANTHROPIC = _fields(
    [
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "service_tier",
    ],
    {
        "cache_creation": ["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"],
        "output_tokens_details": ["thinking_tokens"],
    },
)
CHAT = _fields(
    ["prompt_tokens", "completion_tokens", "total_tokens"],
    {
        "prompt_tokens_details": ["cached_tokens", "audio_tokens", "cache_write_tokens"],
        "completion_tokens_details": ["reasoning_tokens", "audio_tokens"],
    },
)
RESPONSES = _fields(
    ["input_tokens", "output_tokens", "total_tokens"],
    {
        "input_tokens_details": ["cached_tokens", "cache_write_tokens"],
        "output_tokens_details": ["reasoning_tokens"],
    },
)
GEMINI = _fields(
    [
        "promptTokenCount",
        "candidatesTokenCount",
        "cachedContentTokenCount",
        "toolUsePromptTokenCount",
        "thoughtsTokenCount",
        "totalTokenCount",
        "prompt_token_count",
        "candidates_token_count",
        "cached_content_token_count",
        "thoughts_token_count",
    ],
    {},
)


@FAST
@given(st.one_of(st.none(), ANTHROPIC))
def test_anthropic_usage_never_raises_and_keeps_invariants(usage: dict[str, Any] | None) -> None:
    check_invariants(usage_from_anthropic(usage))


@FAST
@given(st.one_of(st.none(), CHAT))
def test_chat_usage_never_raises_and_keeps_invariants(usage: dict[str, Any] | None) -> None:
    check_invariants(usage_from_chat(usage))


@FAST
@given(st.one_of(st.none(), RESPONSES))
def test_responses_usage_never_raises_and_keeps_invariants(usage: dict[str, Any] | None) -> None:
    check_invariants(usage_from_responses(usage))


@FAST
@given(st.one_of(st.none(), GEMINI))
def test_gemini_usage_never_raises_and_keeps_invariants(meta: dict[str, Any] | None) -> None:
    check_invariants(usage_from_gemini(meta))


@FAST
@given(count, count, count, count, count, st.integers(0, 10**9))
def test_anthropic_well_formed_usage_is_exact(
    fresh: int, read: int, write_5m: int, write_1h: int, output: int, thinking: int
) -> None:
    thinking = min(thinking, output)
    u = usage_from_anthropic(
        {
            "input_tokens": fresh,
            "output_tokens": output,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens_details": {"thinking_tokens": thinking},
        }
    )
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.cache_write_long_tokens) == (
        fresh + read + write_5m + write_1h,
        read,
        write_5m + write_1h,
        write_1h,
    )
    assert (u.output_tokens, u.reasoning_tokens, u.requests) == (output, thinking, 1)


@FAST
@given(count, count, count, count)
def test_chat_well_formed_usage_is_exact(prompt: int, cached: int, completion: int, reasoning: int) -> None:
    cached, reasoning = min(cached, prompt), min(reasoning, completion)
    u = usage_from_chat(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (prompt, cached, 0)
    assert (u.output_tokens, u.reasoning_tokens) == (completion, reasoning)


@FAST
@given(count, count, count, count)
def test_responses_well_formed_usage_is_exact(inp: int, cached: int, out: int, reasoning: int) -> None:
    cached, reasoning = min(cached, inp), min(reasoning, out)
    u = usage_from_responses(
        {
            "input_tokens": inp,
            "output_tokens": out,
            "total_tokens": inp + out,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) == (
        inp,
        cached,
        out,
        reasoning,
    )


@FAST
@given(count, count, count, count, count)
def test_gemini_well_formed_usage_is_exact(
    prompt: int, cached: int, tool: int, cand: int, thoughts: int
) -> None:
    cached = min(cached, prompt)
    u = usage_from_gemini(
        {
            "promptTokenCount": prompt,
            "cachedContentTokenCount": cached,
            "toolUsePromptTokenCount": tool,
            "candidatesTokenCount": cand,
            "thoughtsTokenCount": thoughts,
        }
    )
    # promptTokenCount includes the cached part; thoughts are billed as output
    assert (u.input_tokens, u.cache_read_tokens) == (prompt + tool, cached)
    assert (u.output_tokens, u.reasoning_tokens) == (cand + thoughts, thoughts)


# -- drift over arbitrary requests ---------------------------------------------------------------------------

SECRET = "sk-ant-api03-PROPSECRET0123456789"
words = st.sampled_from(
    ["alpha", "beta", "gamma", "2026-11-29T07:00:00Z", "é", "🚀", SECRET, "\n", '"', "\\"]
)
texts = st.lists(words, max_size=30).map(" ".join)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), texts)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "type", "text"]), inner, max_size=3),
    ),
    max_leaves=8,
)
cache_control = st.one_of(
    st.none(), st.just({"type": "ephemeral"}), st.just({"type": "ephemeral", "ttl": "1h"}), json_value
)


def _with_marker(block: dict[str, Any], marker: Any) -> dict[str, Any]:
    return block if marker is None else {**block, "cache_control": marker}


text_block = st.builds(lambda t, m: _with_marker({"type": "text", "text": t}, m), texts, cache_control)
other_block = st.one_of(
    st.builds(
        lambda i, n: {"type": "tool_use", "id": f"tu_{i}", "name": n, "input": {"q": i}},
        st.integers(0, 3),
        st.sampled_from(["search", "read"]),
    ),
    st.builds(
        lambda i, c: {"type": "tool_result", "tool_use_id": f"tu_{i}", "content": c}, st.integers(0, 3), texts
    ),
    st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "sig"}, texts),
    st.just({"type": "text", "text": ""}),
    json_value,
)
content = st.one_of(texts, st.lists(st.one_of(text_block, other_block), max_size=4), json_value)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": content}), json_value
)
tool = st.one_of(
    st.builds(
        lambda n, d, m: _with_marker({"name": n, "description": d, "input_schema": {"type": "object"}}, m),
        st.sampled_from(["search", "read", "write"]),
        texts,
        cache_control,
    ),
    json_value,
)
body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "", "unknown-model"]),
        "max_tokens": st.integers(1, 100),
    },
    optional={
        "system": st.one_of(texts, st.lists(text_block, max_size=3), json_value),
        "tools": st.one_of(st.lists(tool, max_size=4), json_value),
        "messages": st.one_of(st.lists(message, max_size=6), json_value),
        "tool_choice": st.one_of(st.just({"type": "auto"}), json_value),
        "thinking": st.one_of(st.just({"type": "enabled", "budget_tokens": 1024}), json_value),
        "cache_control": st.one_of(st.just({"type": "ephemeral"}), json_value),
    },
)


def _segments(b: dict[str, Any]) -> dict[str, bytes]:
    """Every block path (and parameter name) the body has, with its serialised bytes."""
    try:
        blocks = request_blocks(b)
    except Exception:
        return {}
    out = {block.path: block.raw for block in blocks.blocks}
    for name, _, raw in getattr(blocks, "params", ()):
        out[name] = raw
    return out


def _segment_exists(segment: str, known: dict[str, bytes]) -> bytes | None:
    """The bytes of the block a drift segment names (a block path, or a field inside one)."""
    best = None
    for path, raw in known.items():
        inside = segment == path or segment.startswith((path + ".", path + "["))
        if inside and (best is None or len(path) > len(best[0])):
            best = (path, raw)
    return None if best is None else best[1]


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(body, min_size=1, max_size=4), st.sampled_from(["warn", "off"]))
def test_prepare_request_never_raises_and_drift_points_inside_the_request(
    bodies: list[dict[str, Any]], drift_mode: str
) -> None:
    state = LineageState(key="prop")
    previous: dict[str, bytes] = {}
    for i, b in enumerate(bodies):
        prepared = prepare_request(
            b,
            cache="auto",
            cache_ttl="auto",
            drift=drift_mode,
            state=state,
            now=1000.0 + 10 * i,  # type: ignore[arg-type]
        )
        assert isinstance(prepared.body, dict)
        current = _segments(b)
        d = prepared.drift
        if d is not None:
            raw = _segment_exists(d.segment, current) or _segment_exists(d.segment, previous)
            known = d.segment in current or d.segment in previous or raw is not None
            assert known, (d.segment, sorted(current), sorted(previous))
            limit = max((len(r) for r in (*current.values(), *previous.values())), default=0)
            assert 0 <= d.offset <= limit
            assert d.tokens_at_risk >= 0
            for text in (d.before, d.after, d.describe()):
                assert "PROPSECRET" not in text
        previous = current


block_text = st.lists(st.sampled_from(["a", "b", "c", SECRET, " ", "é"]), min_size=0, max_size=40).map(
    "".join
)


@FAST
@given(st.lists(block_text, max_size=6), st.lists(block_text, max_size=6), st.integers(-3, 10))
def test_explain_drift_over_arbitrary_block_lists(old: list[str], new: list[str], region_end: int) -> None:
    def blocks(texts_: list[str]) -> list[Any]:
        body = {"model": "claude-sonnet-4-6", "system": [{"type": "text", "text": t} for t in texts_]}
        return list(request_blocks(body).blocks)

    previous, current = blocks(old), blocks(new)
    d = explain_drift(previous, current, region_end=region_end)
    end = len(previous) if region_end is None else max(0, min(region_end, len(previous)))
    if d is None:  # the region is repeated, or the request stops short of it (nothing sent differs)
        repeated = min(end, len(current))
        assert [b.digest for b in previous[:repeated]] == [b.digest for b in current[:repeated]]
        return
    paths = {b.path: b.raw for b in (*previous, *current)}
    raw = _segment_exists(d.segment, paths)
    assert raw is not None, d.segment
    assert 0 <= d.offset <= max(len(r) for r in paths.values())
    assert "PROPSECRET" not in d.before + d.after
    assert d.tokens_at_risk <= sum(b.tokens for b in previous[:end]) + sum(
        len(b.raw) // BYTES_PER_TOKEN + 1 for b in previous[:end]
    )
