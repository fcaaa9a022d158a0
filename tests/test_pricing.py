"""pricing.py: every expected number is computed here from hand-written published rates.

Rates are USD per million tokens as published by the providers (and checked against the
genai-prices snapshot): Anthropic pricing page, OpenAI pricing page, ai.google.dev pricing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from budgetclient import config, pricing
from budgetclient.errors import ConfigurationError, UnknownPriceWarning
from budgetclient.usage import CostBreakdown, Usage

D = Decimal
MILLION = D(1_000_000)


@pytest.fixture(autouse=True)
def _fresh_prices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No price file, no overrides, no cached rates or remembered warnings around each test."""
    monkeypatch.delenv("BUDGETCLIENT_PRICES", raising=False)
    config.reset_settings()
    pricing.reset_price_cache()
    yield
    config.reset_settings()
    pricing.reset_price_cache()


def unknown_price_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, UnknownPriceWarning)]


# Published standard rates: input, output, cache read, short-TTL write, long-TTL write.
# Anthropic: 5m write 1.25x input, 1h write 2x, read 0.1x. OpenAI (before GPT-5.6) and Gemini
# charge no write premium, so writes cost the input rate.
PUBLISHED = {
    "claude-sonnet-4-6": ("anthropic", D("3"), D("15"), D("0.30"), D("3.75"), D("6")),
    "claude-haiku-4-5": ("anthropic", D("1"), D("5"), D("0.10"), D("1.25"), D("2")),
    "gpt-4o": ("openai", D("2.50"), D("10"), D("1.25"), D("2.50"), D("2.50")),
    "gpt-5": ("openai", D("1.25"), D("10"), D("0.125"), D("1.25"), D("1.25")),
    "gemini-2.5-flash": ("google", D("0.30"), D("2.50"), D("0.03"), D("0.30"), D("0.30")),
    "gemini-2.5-pro": ("google", D("1.25"), D("10"), D("0.125"), D("1.25"), D("1.25")),
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_call_priced_from_published_rates(model: str) -> None:
    provider, rate_in, rate_out, rate_read, rate_write_5m, rate_write_1h = PUBLISHED[model]
    # 12,000 input tokens in all: 7,000 read from cache, 4,000 written (1,500 of them with the long
    # TTL), 1,000 uncached; 2,000 output of which 800 reasoning (already inside output).
    usage = Usage(
        input_tokens=12_000,
        cache_read_tokens=7_000,
        cache_write_tokens=4_000,
        cache_write_long_tokens=1_500,
        output_tokens=2_000,
        reasoning_tokens=800,
        requests=1,
    )
    cost = pricing.price_call(usage, model, provider)
    assert cost is not None
    assert cost.uncached_input == 1_000 * rate_in / MILLION
    assert cost.cache_read == 7_000 * rate_read / MILLION
    assert cost.cache_write == (2_500 * rate_write_5m + 1_500 * rate_write_1h) / MILLION
    assert cost.output == 2_000 * rate_out / MILLION
    assert cost.storage == 0
    expected_total = (
        1_000 * rate_in + 7_000 * rate_read + 2_500 * rate_write_5m + 1_500 * rate_write_1h + 2_000 * rate_out
    ) / MILLION
    assert cost.total == expected_total
    assert isinstance(cost.total, Decimal)


def test_sonnet_call_from_anthropic_usage_fields() -> None:
    # Anthropic reports input_tokens=350 without the cache parts: cache_read_input_tokens=40_000,
    # cache_creation.ephemeral_5m_input_tokens=3_000, ephemeral_1h_input_tokens=9_000.
    usage = Usage(
        input_tokens=350 + 40_000 + 3_000 + 9_000,
        cache_read_tokens=40_000,
        cache_write_tokens=3_000 + 9_000,
        cache_write_long_tokens=9_000,
        output_tokens=1_200,
        requests=1,
    )
    cost = pricing.price_call(usage, "claude-sonnet-4-6", "anthropic")
    assert cost is not None
    expected = (350 * D(3) + 40_000 * D("0.30") + 3_000 * D("3.75") + 9_000 * D(6) + 1_200 * D(15)) / MILLION
    assert cost.total == expected


def test_reasoning_tokens_are_not_billed_twice() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000)
    cost = pricing.price_call(usage, "gpt-5", "openai")
    assert cost is not None
    assert cost.output == 5_000 * D(10) / MILLION


def test_dated_model_names_resolve_to_their_family() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    cost = pricing.price_call(usage, "gpt-4o-2024-08-06", "openai")
    assert cost is not None
    assert cost.total == D("2.50") + D(10)
    gemini = pricing.price_call(usage, "models/gemini-2.5-flash", "google")
    assert gemini is not None
    assert gemini.total == D("0.30") + D("2.50")


@pytest.mark.parametrize(
    ("model", "scale"),
    [
        ("us.anthropic.claude-sonnet-4-6-v1:0", Decimal("1.1")),
        ("eu.anthropic.claude-sonnet-4-6", Decimal("1.1")),
        ("arn:aws:bedrock:us-east-1:1234:inference-profile/us.anthropic.claude-sonnet-4-6", Decimal("1.1")),
        ("global.anthropic.claude-sonnet-4-6-v1:0", Decimal("1")),
    ],
)
def test_bedrock_ids_are_priced_from_aws_rates(model: str, scale: Decimal) -> None:
    # AWS's published Bedrock prices: global endpoints at Anthropic's rates, regional ones 10% above
    published = {
        "input": "3", "output": "15", "cache_read": "0.30", "cache_write": "3.75", "cache_write_long": "6",
    }  # fmt: skip
    for provider in ("anthropic", None):  # None: `budgetclient prices MODEL` without --provider
        rates = pricing.rates_for(model, provider)
        assert rates is not None and rates.provider == "aws"
        for bucket, price in published.items():
            assert getattr(rates, bucket).base == Decimal(price) * scale, bucket


def test_long_context_tier_applies_to_the_whole_request() -> None:
    # Gemini 2.5 Pro: prompts over 200k tokens pay 2.50 input / 0.25 cache read / 15 output per
    # million on every token, not just the tokens past 200k (the cliff model).
    usage = Usage(input_tokens=250_000, cache_read_tokens=50_000, output_tokens=3_000)
    cost = pricing.price_call(usage, "gemini-2.5-pro", "google")
    assert cost is not None
    assert cost.uncached_input == 200_000 * D("2.50") / MILLION
    assert cost.cache_read == 50_000 * D("0.25") / MILLION
    assert cost.output == 3_000 * D(15) / MILLION
    assert cost.total == D("0.5") + D("0.0125") + D("0.045")

    at_threshold = Usage(input_tokens=200_000, output_tokens=3_000)
    cost = pricing.price_call(at_threshold, "gemini-2.5-pro", "google")
    assert cost is not None
    assert cost.total == (200_000 * D("1.25") + 3_000 * D(10)) / MILLION


def test_calls_priced_separately_differ_from_their_summed_usage() -> None:
    first = Usage(input_tokens=150_000, output_tokens=1_000, requests=1)
    second = Usage(input_tokens=120_000, output_tokens=2_000, requests=1)
    costs = [pricing.price_call(u, "gemini-2.5-pro", "google") for u in (first, second)]
    assert all(c is not None for c in costs)
    separately = sum(c.total for c in costs if c is not None)
    # each request stays under 200k: base rates 1.25 / 10
    assert separately == (150_000 * D("1.25") + 1_000 * D(10) + 120_000 * D("1.25") + 2_000 * D(10)) / MILLION

    summed = pricing.price_call(first + second, "gemini-2.5-pro", "google")
    assert summed is not None
    # 270k input would wrongly cross the tier: 2.50 / 15 on everything
    assert summed.total == (270_000 * D("2.50") + 3_000 * D(15)) / MILLION
    assert summed.total != separately


def test_breakdowns_sum_as_decimal() -> None:
    usage = Usage(input_tokens=10_000, cache_read_tokens=5_000, output_tokens=700)
    costs = [pricing.price_call(usage, "claude-haiku-4-5", "anthropic") for _ in range(3)]
    total = sum(c for c in costs if c is not None)
    assert isinstance(total, CostBreakdown)
    assert total.total == 3 * (5_000 * D(1) + 5_000 * D("0.10") + 700 * D(5)) / MILLION


def test_batch_uses_the_batch_price_variant() -> None:
    # Anthropic Message Batches: half of every rate, cache multipliers included.
    usage = Usage(
        input_tokens=20_000,
        cache_read_tokens=10_000,
        cache_write_tokens=6_000,
        cache_write_long_tokens=2_000,
        output_tokens=1_000,
    )
    cost = pricing.price_call(usage, "claude-sonnet-4-6", "anthropic", batch=True)
    assert cost is not None
    expected = (
        4_000 * D("1.50") + 10_000 * D("0.15") + 4_000 * D("1.875") + 2_000 * D(3) + 1_000 * D("7.50")
    ) / MILLION
    assert cost.total == expected


def test_gemini_batch_keeps_context_caching_at_the_standard_rate() -> None:
    # Gemini Batch API halves input and output; cached reads stay at 0.03 (2.5 Flash).
    usage = Usage(input_tokens=10_000, cache_read_tokens=8_000, output_tokens=1_000)
    cost = pricing.price_call(usage, "gemini-2.5-flash", "google", batch=True)
    assert cost is not None
    assert cost.uncached_input == 2_000 * D("0.15") / MILLION
    assert cost.cache_read == 8_000 * D("0.03") / MILLION
    assert cost.output == 1_000 * D("1.25") / MILLION


def test_batch_without_a_variant_halves_every_standard_rate() -> None:
    # genai-prices models OpenAI batch rates only from 2026-10-14; before that, 50% of standard.
    before_variant = datetime(2026, 9, 1, tzinfo=UTC)
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_000)
    cost = pricing.price_call(usage, "gpt-4o", "openai", batch=True, at=before_variant)
    assert cost is not None
    assert cost.total == (6_000 * D("1.25") + 4_000 * D("0.625") + 1_000 * D(5)) / MILLION

    config.configure(prices={"house-model": {"input": 4, "output": 12}})
    house = pricing.price_call(
        Usage(input_tokens=1_000_000, output_tokens=1_000_000), "house-model", batch=True
    )
    assert house is not None
    assert house.total == D(2) + D(6)


def test_configure_overrides_genai_prices_per_key() -> None:
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=1_000)
    before = pricing.price_call(usage, "gpt-4o", "openai")
    assert before is not None
    assert before.total == (6_000 * D("2.50") + 4_000 * D("1.25") + 1_000 * D(10)) / MILLION

    config.configure(prices={"gpt-4o": {"input": 2, "output": 8}})
    after = pricing.price_call(usage, "gpt-4o", "openai")
    assert after is not None
    # input and output from the override; the cache read rate still comes from genai-prices
    assert after.total == (6_000 * D(2) + 4_000 * D("1.25") + 1_000 * D(8)) / MILLION
    rates = pricing.rates_for("gpt-4o", "openai")
    assert rates is not None
    assert rates.source == "override"


def test_override_only_model_uses_documented_fallbacks() -> None:
    config.configure(prices={"acme-large": {"input": 2, "output": 6}})
    usage = Usage(
        input_tokens=10_000,
        cache_read_tokens=3_000,
        cache_write_tokens=2_000,
        cache_write_long_tokens=500,
        output_tokens=100,
    )
    cost = pricing.price_call(usage, "acme-large", "openai")
    assert cost is not None
    # cache read and both writes fall back to the input rate outside Anthropic
    assert cost.total == (5_000 * D(2) + 3_000 * D(2) + 2_000 * D(2) + 100 * D(6)) / MILLION


def write_prices(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_prices_file_overrides_genai_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prices = write_prices(
        tmp_path / "prices.toml",
        '[models."claude-haiku-4-5"]\ninput = 0.8\noutput = 4\n\n'
        '[models."my-model"]\ninput = 3\noutput = 15\ncache_read = 0.3\n',
    )
    monkeypatch.setenv("BUDGETCLIENT_PRICES", str(prices))
    config.reset_settings()

    usage = Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=1_000)
    haiku = pricing.price_call(usage, "claude-haiku-4-5", "anthropic")
    assert haiku is not None
    assert haiku.total == (8_000 * D("0.8") + 2_000 * D("0.10") + 1_000 * D(4)) / MILLION
    mine = pricing.price_call(usage, "my-model")
    assert mine is not None
    assert mine.total == (8_000 * D(3) + 2_000 * D("0.3") + 1_000 * D(15)) / MILLION
    rates = pricing.rates_for("my-model")
    assert rates is not None
    assert rates.source == "file"


def test_configure_beats_file_beats_genai_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prices = write_prices(tmp_path / "prices.toml", '[models."gpt-5"]\ninput = 1\noutput = 9\n')
    monkeypatch.setenv("BUDGETCLIENT_PRICES", str(prices))
    config.reset_settings()
    config.configure(prices={"gpt-5": {"input": "0.5"}})

    usage = Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=1_000)
    cost = pricing.price_call(usage, "gpt-5", "openai")
    assert cost is not None
    # input from configure, output from the file, cache read from genai-prices
    assert cost.total == (8_000 * D("0.5") + 2_000 * D("0.125") + 1_000 * D(9)) / MILLION


def test_override_prefix_matching() -> None:
    config.configure(
        prices={
            "claude-x": {"input": 2, "output": 10},
            "claude-x-2026": {"input": 4, "output": 20},
            "claude-x-20260101": {"input": 8, "output": 40},
        }
    )
    one_million = Usage(input_tokens=1_000_000)
    exact = pricing.price_call(one_million, "claude-x-20260101", "anthropic")
    longest = pricing.price_call(one_million, "claude-x-20260315", "anthropic")
    shorter = pricing.price_call(one_million, "claude-x-lite", "anthropic")
    assert exact is not None and longest is not None and shorter is not None
    assert (exact.total, longest.total, shorter.total) == (D(8), D(4), D(2))


def test_anthropic_long_write_falls_back_to_twice_input() -> None:
    config.configure(prices={"claude-x": {"input": 2, "output": 10}})
    usage = Usage(input_tokens=10_000, cache_write_tokens=10_000, cache_write_long_tokens=4_000)
    cost = pricing.price_call(usage, "claude-x-20260101", "anthropic")
    assert cost is not None
    # 5m writes at the input rate (no cache_write given), 1h writes at 2x input
    assert cost.cache_write == (6_000 * D(2) + 4_000 * D(4)) / MILLION


def test_settings_change_invalidates_cached_rates() -> None:
    one_million = Usage(input_tokens=1_000_000)
    first = pricing.price_call(one_million, "gpt-4o", "openai")
    config.configure(prices={"gpt-4o": {"input": 1}})
    second = pricing.price_call(one_million, "gpt-4o", "openai")
    config.configure(prices={})
    third = pricing.price_call(one_million, "gpt-4o", "openai")
    assert first is not None and second is not None and third is not None
    assert (first.total, second.total, third.total) == (D("2.50"), D(1), D("2.50"))


def test_resolved_rates_are_cached() -> None:
    first = pricing.rates_for("claude-haiku-4-5", "anthropic")
    assert first is not None
    assert pricing.rates_for("claude-haiku-4-5", "anthropic") is first


def test_unknown_model_prices_none_and_warns_once() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=100)
    with warnings.catch_warnings(record=True) as caught, capture_logs() as logs:
        warnings.simplefilter("always")
        first = pricing.price_call(usage, "no-such-model-7b", "openai")
        second = pricing.price_call(usage, "no-such-model-7b", "openai")
    assert first is None and second is None
    found = unknown_price_warnings(caught)
    assert len(found) == 1
    assert "no-such-model-7b" in str(found[0].message)
    events = [e for e in logs if e["event"] == "price.unknown"]
    assert [e["model"] for e in events] == ["no-such-model-7b"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pricing.price_call(usage, "another-unknown", None) is None
    assert len(unknown_price_warnings(caught)) == 1


def test_estimate_input_cost() -> None:
    # every token at the uncached input rate, tier by the request's input
    assert pricing.estimate_input_cost(100_000, "gemini-2.5-pro", "google") == 100_000 * D("1.25") / MILLION
    assert pricing.estimate_input_cost(300_000, "gemini-2.5-pro", "google") == 300_000 * D("2.50") / MILLION
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pricing.estimate_input_cost(1_000, "no-such-model-7b") is None
    assert unknown_price_warnings(caught) == []


def test_genai_prices_failure_means_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    import genai_prices.data_snapshot

    def broken() -> None:
        raise RuntimeError("snapshot corrupted")

    monkeypatch.setattr(genai_prices.data_snapshot, "get_snapshot", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pricing.price_call(Usage(input_tokens=10), "gpt-4o", "openai") is None
    assert len(unknown_price_warnings(caught)) == 1


def test_load_prices_file_reports_malformed_files(tmp_path: Path) -> None:
    broken = write_prices(tmp_path / "broken.toml", '[models."my-model"\ninput = 3\n')
    with pytest.raises(ConfigurationError, match="not valid TOML") as excinfo:
        pricing.load_prices_file(broken)
    assert str(broken) in str(excinfo.value)

    bad_key = write_prices(tmp_path / "bad_key.toml", '[models."my-model"]\ninputs = 3\n')
    with pytest.raises(ConfigurationError, match="inputs") as excinfo:
        pricing.load_prices_file(bad_key)
    assert str(bad_key) in str(excinfo.value)

    negative = write_prices(tmp_path / "negative.toml", '[models."my-model"]\ninput = -1\n')
    with pytest.raises(ConfigurationError, match="non-negative"):
        pricing.load_prices_file(negative)

    top_level = write_prices(tmp_path / "top.toml", '["my-model"]\ninput = 3\n')
    with pytest.raises(ConfigurationError, match=r"\[models\."):
        pricing.load_prices_file(top_level)

    with pytest.raises(ConfigurationError, match="not found"):
        pricing.load_prices_file(tmp_path / "missing.toml")

    good = write_prices(
        tmp_path / "good.toml", '[models."my-model"]\ninput = 3\noutput = 15\ncache_storage = 1\n'
    )
    assert pricing.load_prices_file(good) == {
        "my-model": {"input": D(3), "output": D(15), "cache_storage": D(1)}
    }


def test_malformed_file_falls_back_to_genai_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = write_prices(tmp_path / "broken.toml", '[models."gpt-4o"]\ninput = "lots"\n')
    monkeypatch.setenv("BUDGETCLIENT_PRICES", str(broken))
    config.reset_settings()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    with capture_logs() as logs:
        cost = pricing.price_call(usage, "gpt-4o", "openai")
        pricing.price_call(usage, "gpt-5", "openai")
    assert cost is not None
    assert cost.total == D("2.50") + D(10)
    errors = [e for e in logs if e["event"] == "price.file_invalid"]
    assert len(errors) == 1
    assert errors[0]["log_level"] == "error"
    assert str(broken) in errors[0]["error"]


def test_storage_cost() -> None:
    # Gemini 2.5 Pro explicit cache: 4.50 per million token-hours
    assert pricing.storage_cost(100_000, D(2), "gemini-2.5-pro") == 100_000 * D(2) * D("4.50") / MILLION
    assert (
        pricing.storage_cost(50_000, D("0.5"), "gemini-2.5-flash") == 50_000 * D("0.5") * D("1.00") / MILLION
    )
    # Gemini 3 Flash: introductory 0.50 through 2026-12-31, then 1.00
    december = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    january = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
    flash3 = "gemini-3-flash-preview"
    assert pricing.storage_cost(1_000_000, D(1), flash3, at=december) == D("0.50")
    assert pricing.storage_cost(1_000_000, D(1), flash3, at=january) == D("1.00")

    config.configure(prices={"gemini-2.5-pro": {"cache_storage": "3.00"}})
    assert pricing.storage_cost(1_000_000, D(2), "gemini-2.5-pro") == D(6)
    rates = pricing.rates_for("gemini-2.5-pro", "google")
    assert rates is not None
    assert rates.cache_storage == D(3)


def test_storage_cost_unknown_is_none() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pricing.storage_cost(1_000, D(1), "gpt-4o", "openai") is None
        assert pricing.storage_cost(1_000, D(1), "gpt-4o", "openai") is None
    assert len(unknown_price_warnings(caught)) == 1


def test_rate_tiers_are_cliffs() -> None:
    rate = pricing.Rate(D(1), ((200_000, D(2)), (500_000, D(3))))
    assert [rate.at(n) for n in (0, 200_000, 200_001, 500_000, 500_001)] == [D(1), D(1), D(2), D(2), D(3)]


def test_price_usage_is_pure() -> None:
    flat = pricing.Rate(D(1))
    rates = pricing.Rates(
        model="m",
        provider=None,
        input=flat,
        output=pricing.Rate(D(4)),
        cache_read=pricing.Rate(D("0.1")),
        cache_write=pricing.Rate(D("1.25")),
        cache_write_long=pricing.Rate(D(2)),
        cache_storage=None,
        source="override",
    )
    usage = Usage(
        input_tokens=1_000,
        cache_read_tokens=400,
        cache_write_tokens=300,
        cache_write_long_tokens=100,
        output_tokens=50,
    )
    cost = pricing.price_usage(usage, rates)
    assert cost.as_dict() == {
        "uncached_input": 300 * D(1) / MILLION,
        "cache_read": 400 * D("0.1") / MILLION,
        "cache_write": (200 * D("1.25") + 100 * D(2)) / MILLION,
        "output": 50 * D(4) / MILLION,
        "storage": D(0),
    }


def test_prices_follow_the_request_date() -> None:
    # Sonnet 4.6 had a >200k long-context tier (6 input / 22.50 output) until 2026-03-13, flat after.
    usage = Usage(input_tokens=250_000, output_tokens=2_000)
    january = pricing.price_call(
        usage, "claude-sonnet-4-6", "anthropic", at=datetime(2026, 1, 15, tzinfo=UTC)
    )
    november = pricing.price_call(
        usage, "claude-sonnet-4-6", "anthropic", at=datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert january is not None and november is not None
    assert january.total == (250_000 * D(6) + 2_000 * D("22.50")) / MILLION
    assert november.total == (250_000 * D(3) + 2_000 * D(15)) / MILLION
