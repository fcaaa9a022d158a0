"""Offline token estimates: the shipped encodings, request-body counting and calibration.

Reference counts come from a tiktoken encoding the test builds itself with tiktoken's own loader
and tiktoken_ext's own constructor, never from budgetclient.tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

import budgetclient
from budgetclient import tokens
from budgetclient.errors import ConfigurationError
from budgetclient.estimate import estimate_request
from budgetclient.tokens import calibration, encodings

from ._approximated_counts import approximated_tokens

DATA = Path(budgetclient.__file__).parent / "data"
SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def _reference_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's loader (disk cache off) and tiktoken_ext's constructor, minus the download."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", "")
        ranks = tiktoken.load.load_tiktoken_bpe(str(DATA / f"{name}.tiktoken"), expected_hash=SHA256[name])
        mp.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: ranks)
        return tiktoken.Encoding(**getattr(openai_public, name)())


@pytest.fixture(scope="module")
def o200k() -> tiktoken.Encoding:
    return _reference_encoding("o200k_base")


@pytest.fixture(scope="module")
def cl100k() -> tiktoken.Encoding:
    return _reference_encoding("cl100k_base")


@pytest.fixture(autouse=True)
def _fresh_calibration() -> Iterator[None]:
    tokens.reset_calibration()
    yield
    tokens.reset_calibration()


_VOCABULARY = """
the budget cache token prompt model request response tool schema user assistant system engineer latency
price invoice refund order customer shipping warehouse delayed because of weather please check status
and summarise findings in three bullet points with numbers
"""
WORDS = tuple(_VOCABULARY.split())
SAMPLES = [
    "def handler(event: dict[str, int]) -> int:\n    return sum(v * 2 for v in event.values())\n",
    '{"order_id": 18342, "items": [{"sku": "A-17", "qty": 3}], "status": "delayed"}',
    "Ceci n'est pas une pipe; l'équipe a déjà payé 1 234,56 €.",
    "这是一个用于检查分词器行为的测试句子。",
    "I'll've said it's 2024-06-01T12:00:00Z — won't we?",
]


def _prose(rng: random.Random, words: int) -> str:
    parts = [rng.choice(WORDS) for _ in range(words)]
    for _ in range(words // 60):
        parts.insert(rng.randrange(len(parts)), rng.choice(SAMPLES))
    return " ".join(parts).capitalize() + "."


def _count(enc: tiktoken.Encoding, *texts: str) -> int:
    return sum(len(enc.encode_ordinary(t)) for t in texts)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- Encodings ----------------------------------------------------------------------------------


def test_known_token_ids() -> None:
    assert tokens.encoding_for("gpt-4o").encode("hello world") == [24912, 2375]
    assert tokens.encoding_for("gpt-4").encode("hello world") == [15339, 1917]
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("hello world", model="gpt-3.5-turbo") == 2


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.1-codex", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("claude-sonnet-4-5-20250929", "o200k_base"),
        ("gemini-2.5-flash", "o200k_base"),
        ("models/gemini-2.5-pro", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:org::abc", "cl100k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert tokens.encoding_for(model).name == encoding


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1", "claude-opus-4-1"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("ft:gpt-4o-mini-2024-07-18:org::abc", "gpt-4o-mini"),
        ("gpt-4.1", "gpt-4.1"),
    ],
)
def test_model_family(model: str, family: str) -> None:
    assert tokens.model_family(model) == family


def test_shipped_files_match_tiktoken_hashes_and_constructor(
    o200k: tiktoken.Encoding, cl100k: tiktoken.Encoding
) -> None:
    for name, reference in (("o200k_base", o200k), ("cl100k_base", cl100k)):
        path = DATA / f"{name}.tiktoken"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]
        assert tokens.load_encoding_file(path, SHA256[name]) == reference._mergeable_ranks
        ours = tokens.encoding_for("gpt-4" if name == "cl100k_base" else "gpt-4o")
        # pat_str and special tokens are copied as constants: they must still match tiktoken_ext.
        assert ours._pat_str == reference._pat_str
        assert ours._special_tokens == reference._special_tokens
        assert ours.n_vocab == reference.n_vocab
    assert o200k.n_vocab == 200019


def test_count_text_is_the_exact_encode_length(o200k: tiktoken.Encoding, cl100k: tiktoken.Encoding) -> None:
    rng = random.Random(7)
    texts = [*SAMPLES, _prose(rng, 400), "   \n\n\t  x", "", "<|endoftext|> and <|endofprompt|>"]
    for text in texts:
        assert tokens.count_text(text) == len(o200k.encode(text, disallowed_special=()))
        assert tokens.count_text(text, "gpt-4") == len(cl100k.encode(text, disallowed_special=()))


def test_corrupted_file_copy_is_refused_with_file_and_hash(tmp_path: Path) -> None:
    good = tmp_path / "o200k_base.tiktoken"
    good.write_bytes((DATA / "o200k_base.tiktoken").read_bytes())
    assert len(tokens.load_encoding_file(good, SHA256["o200k_base"])) == 199_998

    corrupted = tmp_path / "corrupted.tiktoken"
    data = bytearray(good.read_bytes())
    data[1000] ^= 0x01
    corrupted.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ConfigurationError) as info:
        tokens.load_encoding_file(corrupted, SHA256["o200k_base"])
    message = str(info.value)
    assert str(corrupted) in message
    assert SHA256["o200k_base"] in message
    assert actual in message
    assert "reinstall" in message

    with pytest.raises(ConfigurationError, match=r"missing\.tiktoken"):
        tokens.load_encoding_file(tmp_path / "missing.tiktoken", SHA256["o200k_base"])


def test_loading_touches_no_global_state(tmp_path: Path) -> None:
    """A fresh interpreter: no env var set, nothing written to tiktoken's cache, nothing registered."""
    script = """
import json, os, sys
before = dict(os.environ)
from budgetclient import tokens
import tiktoken.registry
counts = [tokens.count_text("hello world"), tokens.count_text("hello world", "gpt-4")]
print(json.dumps({"counts": counts, "env_same": dict(os.environ) == before,
                  "registered": sorted(tiktoken.registry.ENCODINGS)}))
"""
    root = str(Path(budgetclient.__file__).parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=root)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"counts": [2, 2], "env_same": True, "registered": []}
    assert list(tmp_path.iterdir()) == []  # tiktoken's default disk cache would be data-gym-cache/


def test_first_use_from_eight_threads_loads_once(
    monkeypatch: pytest.MonkeyPatch, o200k: tiktoken.Encoding
) -> None:
    monkeypatch.setattr(encodings, "_encodings", {})
    loads: list[str] = []
    real_load = encodings._load_encoding

    def counting_load(name: str) -> tiktoken.Encoding:
        loads.append(name)
        return real_load(name)

    monkeypatch.setattr(encodings, "_load_encoding", counting_load)
    text = _prose(random.Random(3), 300)
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(tokens.count_text(text, "gpt-4o"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [len(o200k.encode_ordinary(text))] * 8
    assert loads == ["o200k_base"]


# --- Request bodies ----------------------------------------------------------------------------

WEATHER_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}


def _within_band(raw: int, direct: int, items: int, extra: int = 0) -> bool:
    """At least the text itself; at most ~10% more plus a few tokens per message or tool."""
    return direct <= raw <= direct * 1.10 + 12 * items + extra


def test_anthropic_messages_body(o200k: tiktoken.Encoding) -> None:
    rng = random.Random(11)
    system = _prose(rng, 120)
    question, answer, follow_up = _prose(rng, 200), _prose(rng, 150), _prose(rng, 80)
    tool = {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_TOOL_SCHEMA}
    tool_input = {"city": "Paris", "unit": "c"}
    result_text = _prose(rng, 60)
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "tools": [tool],
        "messages": [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": answer},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": tool_input},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "content": [{"type": "text", "text": result_text}],
                    },
                    {"type": "text", "text": follow_up},
                ],
            },
        ],
    }
    direct = _count(o200k, system, question, answer, follow_up, result_text, "get_weather") + _count(
        o200k, _compact(tool), _compact(tool_input)
    )
    estimate = estimate_request("anthropic", body)
    assert estimate.model == "claude-sonnet-4-5-20250929"
    assert estimate.factor == 1.0 and estimate.tokens == estimate.raw_tokens
    assert _within_band(estimate.raw_tokens, direct, items=4, extra=400)  # tool-use system prompt


def test_anthropic_media_are_fixed_estimates_not_base64_text() -> None:
    picture = base64.b64encode(random.Random(1).randbytes(150_000)).decode()
    text_only = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Describe it."}]}
    with_image = {
        "model": "claude-haiku-4-5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": picture},
                    },
                    {"type": "text", "text": "Describe it."},
                ],
            }
        ],
    }
    image_cost = (
        estimate_request("anthropic", with_image).tokens - estimate_request("anthropic", text_only).tokens
    )
    assert 100 <= image_cost <= 2_000  # base64 as text would be ~100k tokens

    def pdf(pages: int) -> str:
        objects = b"".join(
            b"%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n" % (i + 3) for i in range(pages)
        )
        raw = b"%PDF-1.4\n2 0 obj << /Type /Pages /Count " + str(pages).encode() + b" >> endobj\n" + objects
        return base64.b64encode(raw).decode()

    def with_pdf(pages: int) -> dict[str, Any]:
        source = {"type": "base64", "media_type": "application/pdf", "data": pdf(pages)}
        content = [{"type": "document", "source": source}, {"type": "text", "text": "Summarise."}]
        return {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": content}]}

    one, five = (
        estimate_request("anthropic", with_pdf(1)).tokens,
        estimate_request("anthropic", with_pdf(5)).tokens,
    )
    assert 4 * 1_000 <= five - one <= 4 * 4_000  # per page: text plus a page image


def test_tool_schema_and_input_keys_are_never_scrubbed(o200k: tiktoken.Encoding) -> None:
    """Only unknown blocks lose ids and payloads; a tool property may well be called "data" or "id"."""
    description = _prose(random.Random(5), 200)
    schema = {"type": "object", "properties": {"data": {"type": "string", "description": description}}}
    bare = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}
    with_tool = {**bare, "tools": [{"name": "store", "input_schema": schema}]}
    added = (
        estimate_request("anthropic", with_tool).raw_tokens - estimate_request("anthropic", bare).raw_tokens
    )
    assert added >= len(o200k.encode_ordinary(description))

    call = {"type": "tool_use", "id": "toolu_1", "name": "store", "input": {"data": description}}
    with_call = {**bare, "messages": [*bare["messages"], {"role": "assistant", "content": [call]}]}
    added = (
        estimate_request("anthropic", with_call).raw_tokens - estimate_request("anthropic", bare).raw_tokens
    )
    assert added >= len(o200k.encode_ordinary(description))


def test_openai_chat_completions_body(o200k: tiktoken.Encoding) -> None:
    rng = random.Random(12)
    system, question, follow_up, tool_output = (_prose(rng, n) for n in (100, 250, 90, 70))
    arguments = _compact({"city": "Oslo"})
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL_SCHEMA}}
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": [{"type": "text", "text": question}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": tool_output},
            {"role": "user", "content": follow_up},
        ],
        "tools": [tool],
    }
    direct = _count(o200k, system, question, follow_up, tool_output, "get_weather", arguments, _compact(tool))
    raw = estimate_request("openai", body).raw_tokens
    assert _within_band(raw, direct, items=6)

    low = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + "A" * 80_000, "detail": "low"},
                    }
                ],
            }
        ],
    }
    assert estimate_request("openai", low).tokens < 150


def test_openai_responses_body(o200k: tiktoken.Encoding) -> None:
    rng = random.Random(13)
    instructions, question, output = _prose(rng, 120), _prose(rng, 220), _prose(rng, 60)
    arguments = _compact({"query": "late orders"})
    tool = {"type": "function", "name": "search_orders", "parameters": WEATHER_TOOL_SCHEMA}
    body = {
        "model": "gpt-5",
        "instructions": instructions,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": question}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA" * 2000},
            {"type": "function_call", "call_id": "c1", "name": "search_orders", "arguments": arguments},
            {"type": "function_call_output", "call_id": "c1", "output": output},
        ],
        "tools": [tool],
    }
    direct = _count(o200k, instructions, question, output, "search_orders", arguments, _compact(tool))
    assert _within_band(estimate_request("openai", body).raw_tokens, direct, items=5)

    plain = {"model": "gpt-4.1", "input": question}
    assert _within_band(estimate_request("openai", plain).raw_tokens, _count(o200k, question), items=2)


def test_google_generate_content_body(o200k: tiktoken.Encoding) -> None:
    rng = random.Random(14)
    system, question, answer = _prose(rng, 110), _prose(rng, 260), _prose(rng, 40)
    declaration = {"name": "lookup", "description": "Find a record", "parameters": WEATHER_TOOL_SCHEMA}
    args, response = {"city": "Rome"}, {"temperature": 21, "summary": _prose(rng, 30)}
    body = {
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [
            {"role": "user", "parts": [{"text": question}]},
            {
                "role": "model",
                "parts": [{"text": answer}, {"functionCall": {"name": "lookup", "args": args}}],
            },
            {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": response}}]},
        ],
        "tools": [{"functionDeclarations": [declaration]}],
        "generationConfig": {"temperature": 0.2},
    }
    texts = (system, question, answer, "lookup", "lookup")
    texts += (_compact(args), _compact(response), _compact(declaration))
    direct = sum(map(approximated_tokens, texts))  # Gemini's tokenizer is not public: short texts by rule
    estimate = estimate_request("google", body, model="gemini-2.5-flash")
    assert estimate.model == "gemini-2.5-flash"
    assert _within_band(estimate.raw_tokens, direct, items=5)

    snake = {"system_instruction": {"parts": [{"text": system}]}, "contents": body["contents"]}
    assert estimate_request("gemini", snake, model="gemini-2.5-flash").provider == "google"


def test_explicit_model_wins_over_body_model() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": SAMPLES[3] * 20}]}
    assert estimate_request("openai", body).model == "gpt-4o"
    assert estimate_request("openai", body, model="gpt-4").model == "gpt-4"
    assert estimate_request("openai", body, model="gpt-4").tokens != estimate_request("openai", body).tokens


def test_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'mistral'.*anthropic, openai, google"):
        estimate_request("mistral", {"messages": []})


def test_huge_request_uses_the_fast_path_within_four_percent(o200k: tiktoken.Encoding) -> None:
    rng = random.Random(21)
    chunks = []
    while sum(map(len, chunks)) < 720_000:
        chunks.append(_prose(rng, rng.randint(50, 2_000)))
        chunks.append("\n".join(rng.choice(SAMPLES[:2]) for _ in range(rng.randint(5, 60))))
    contents = ["\n".join(chunks[i::8]) for i in range(8)]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": c} for c in contents]}
    exact = _count(o200k, *contents)
    assert exact > 150_000
    raw = estimate_request("openai", body).raw_tokens
    assert abs(raw - exact) <= 0.04 * exact  # documented: sampled above EXACT_MAX_CHARS


def test_repeated_texts_are_memoised_not_re_encoded(
    o200k: tiktoken.Encoding, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(31)
    history = [{"role": "user", "content": _prose(rng, 300)} for _ in range(6)]
    body = {"model": "gpt-4o", "messages": history}
    first = estimate_request("openai", body).raw_tokens

    encoded: list[str] = []
    enc = tokens.encoding_for("gpt-4o")
    real_encode = enc.encode_ordinary

    def spy(text: str) -> list[int]:
        encoded.append(text)
        return real_encode(text)

    monkeypatch.setattr(enc, "encode_ordinary", spy)
    new_turn = _prose(rng, 200)
    longer = {"model": "gpt-4o", "messages": [*history, {"role": "user", "content": new_turn}]}
    second = estimate_request("openai", longer).raw_tokens
    assert estimate_request("openai", body).raw_tokens == first
    assert all(m["content"] not in encoded for m in history)
    assert new_turn in encoded
    assert second - first >= len(o200k.encode_ordinary(new_turn))


# --- Calibration -------------------------------------------------------------------------------


def _conversation(rng: random.Random, model: str) -> tuple[dict[str, Any], list[str]]:
    texts = [_prose(rng, rng.randint(80, 900)) for _ in range(rng.randint(1, 7))]
    messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]
    return {"model": model, "max_tokens": 512, "messages": messages}, texts


def _simulated_provider(
    o200k: tiktoken.Encoding, scale: float, per_message: int
) -> Callable[[list[str]], int]:
    """A 'provider tokenizer' that differs from o200k systematically."""

    def reported(texts: list[str]) -> int:
        return round(scale * _count(o200k, *texts) + per_message * len(texts))

    return reported


@pytest.mark.parametrize(
    ("provider", "model", "scale", "per_message"),
    [("anthropic", "claude-sonnet-4-5-20250929", 1.17, 3), ("google", "gemini-2.5-pro", 0.91, 5)],
)
def test_twenty_reported_calls_bring_estimates_within_three_percent(
    o200k: tiktoken.Encoding, provider: str, model: str, scale: float, per_message: int
) -> None:
    rng = random.Random(sum(map(ord, provider)))
    reported = _simulated_provider(o200k, scale, per_message)

    def body_for(conv: dict[str, Any]) -> Mapping[str, Any]:
        if provider == "google":
            return {
                "contents": [{"role": "user", "parts": [{"text": m["content"]}]} for m in conv["messages"]]
            }
        return conv

    held_out = [_conversation(rng, model) for _ in range(10)]
    before = [
        abs(estimate_request(provider, body_for(b), model=model).tokens - reported(t)) / reported(t)
        for b, t in held_out
    ]
    assert max(before) > 0.05  # the simulated tokenizer really differs

    for _ in range(20):
        body, texts = _conversation(rng, model)
        estimate = estimate_request(provider, body_for(body), model=model)
        tokens.calibrate(provider, model, estimate.raw_tokens, reported(texts))

    for body, texts in held_out:
        estimate = estimate_request(provider, body_for(body), model=model).tokens
        assert abs(estimate - reported(texts)) <= 0.03 * reported(texts)
    # The learnt factor belongs to the model family, not to one dated snapshot or other providers.
    assert tokens.calibration_factor(provider, tokens.model_family(model)) == tokens.calibration_factor(
        provider, model
    )
    assert tokens.calibration_factor("openai", model) == 1.0


def test_calibration_is_a_ratio_of_recent_sums() -> None:
    assert tokens.calibration_factor("anthropic", "claude-haiku-4-5") == 1.0
    tokens.calibrate("anthropic", "claude-haiku-4-5", 100, 120)
    tokens.calibrate("anthropic", "claude-haiku-4-5-20251001", 300, 330)
    assert tokens.calibration_factor("anthropic", "claude-haiku-4-5") == pytest.approx(450 / 400)

    tokens.calibrate("anthropic", "claude-haiku-4-5", 100, 1_000)  # implausible: body was not the prompt
    tokens.calibrate("anthropic", "claude-haiku-4-5", 0, 50)
    tokens.calibrate("anthropic", "claude-haiku-4-5", 50, 0)
    assert tokens.calibration_factor("anthropic", "claude-haiku-4-5") == pytest.approx(450 / 400)

    for _ in range(calibration.CALIBRATION_WINDOW):
        tokens.calibrate("anthropic", "claude-haiku-4-5", 200, 300)
    assert tokens.calibration_factor("anthropic", "claude-haiku-4-5") == pytest.approx(1.5)

    tokens.reset_calibration()
    assert tokens.calibration_factor("anthropic", "claude-haiku-4-5") == 1.0


def test_calibration_is_thread_safe() -> None:
    def worker() -> None:
        for _ in range(500):
            tokens.calibrate("openai", "gpt-4o", 100, 110)
            tokens.calibration_factor("openai", "gpt-4o")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tokens.calibration_factor("openai", "gpt-4o") == pytest.approx(1.1)
