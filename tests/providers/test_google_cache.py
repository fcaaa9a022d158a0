"""Managed Gemini context caches over a mocked wire: when they are made, used, refreshed, deleted, billed.

Expected money is computed here from what the fake server reported (usage fields, cache sizes,
cache lifetimes on its clock) and the published Gemini 2.5 Flash rates: $0.30 input, $0.03 cached
input, $2.50 output per million tokens, and $1.00 per million tokens per hour of cache storage.
"""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from typing import Any

import pytest
from google import genai
from google.genai import types as gtypes

import budgetclient as bc
from budgetclient.metering import add_call_hook
from budgetclient.providers import google as google_provider
from budgetclient.providers._google_rules import (
    CacheEconomics,
    auto_ttl,
    cache_pays,
    expected_future_reads,
)
from budgetclient.testing.fake_gemini import FakeGemini

from .test_google import API_KEY, CACHED, INPUT, MODEL, MTOK, cost_of, http_options, usage_of

STORAGE = Decimal("1.00")  # USD per million tokens per hour, Gemini 2.5 Flash
HOUR = Decimal(3600)
GAP_S = 36  # seconds between calls; a multiple of 36 s keeps hours exact (0.01 h)

# 160,000 bytes = 40,000 tokens under the fake's rule (one token per 4 bytes of text)
PREFIX_40K = (" ".join(f"clause-{i} applies to every ticket" for i in range(6000)))[:160_000]
PREFIX_40K_TOKENS = 160_000 // 4


def client(fake: FakeGemini, **options: Any) -> bc.GenAIClient:
    return bc.GenAIClient(api_key=API_KEY, http_options=http_options(fake), **options)


def storage_cost(fake: FakeGemini) -> Decimal:
    """Storage billed by the server: every entry's tokens for its life on the server's clock."""
    return sum(
        (
            tokens * Decimal(str(seconds)) / HOUR * STORAGE / MTOK
            for _, tokens, seconds in fake.cache_lifetimes()
        ),
        Decimal(0),
    )


def close_to(a: Decimal, b: Decimal) -> bool:
    """Equal to 1e-15 USD: a span ending mid-second is billed in thirds of a 3600th, each rounded
    at 28 digits, so spans add up to the whole life only to far below a cent."""
    return abs(a - b) < Decimal("1e-15")


def creation_cost(fake: FakeGemini) -> Decimal:
    return sum((c.tokens * INPUT / MTOK for c in fake.caches.values()), Decimal(0))


def server_cost(fake: FakeGemini) -> Decimal:
    """Everything the server billed: requests, cache creation, cache storage."""
    requests = sum((cost_of(g.usage_metadata) for g in fake.generations), Decimal(0))
    return requests + creation_cost(fake) + storage_cost(fake)


def run_conversation(fake: FakeGemini, turns: int, **options: Any) -> bc.Task:
    c = client(fake, **options)
    with bc.task("conversation") as t:
        chat = c.chats.create(model=MODEL, config=gtypes.GenerateContentConfig(system_instruction=PREFIX_40K))
        for i in range(turns):
            chat.send_message(f"Question {i}: what does the policy say?")
            fake.advance(GAP_S)
        c.close()
    return t


# -- the economics -------------------------------------------------------------------------------


def test_twenty_call_conversation_costs_less_with_managed_caching() -> None:
    """Implicit caching gives no guarantee; here it misses every time (off in the fake)."""
    cached = FakeGemini(implicit_caching=False)
    with_cache = run_conversation(cached, 20)
    plain = FakeGemini(implicit_caching=False)
    without_cache = run_conversation(plain, 20, cache="off")

    # what the server billed, from its own usage fields, cache sizes and cache lifetimes
    expected_with, expected_without = server_cost(cached), server_cost(plain)
    assert with_cache.cost == expected_with
    assert without_cache.cost == expected_without
    assert expected_with < expected_without

    # one entry holding exactly the 40,000-token prefix, read by calls 3..20, gone at close: at
    # call 2 nothing is known of implicit caching, at call 3 the one repeat seen missed and
    # promises one later read (0.27 saved per MTok > 0.03 the creating call reads + storage for
    # 36 s + the 300 s TTL = 0.123)
    (entry,) = cached.caches.values()
    assert entry.tokens == PREFIX_40K_TOKENS
    reads = [g.usage_metadata.get("cachedContentTokenCount", 0) for g in cached.generations]
    assert reads == [0, 0] + [PREFIX_40K_TOKENS] * 18
    assert entry.deleted_at is not None and not cached.live_caches()
    assert plain.caches == {}

    # the saving by hand: 18 reads at the cached rate, minus creation, minus storage from the
    # 3rd call (t = 72 s) to close (t = 720 s)
    storage_hours = Decimal(20 * GAP_S - 2 * GAP_S) / HOUR
    saving = (
        18 * PREFIX_40K_TOKENS * (INPUT - CACHED)
        - PREFIX_40K_TOKENS * INPUT
        - PREFIX_40K_TOKENS * storage_hours * STORAGE
    ) / MTOK
    assert expected_without - expected_with == saving == Decimal("0.1752")

    # the task's breakdown puts storage in its own bucket, and usage stays exact
    assert with_cache.cost_breakdown.storage == storage_cost(cached) == Decimal("0.0072")
    assert with_cache.usage == sum(usage_of(g.usage_metadata) for g in cached.generations) + bc.Usage(
        input_tokens=PREFIX_40K_TOKENS
    )
    assert with_cache.usage.requests == 20
    operations = [r.operation for r in with_cache.records]
    assert operations.count("cache.create") == 1 and operations.count("cache.storage") == 1


async def test_async_conversation_uses_and_deletes_the_cache() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    async with bc.task("conversation") as t:
        chat = c.aio.chats.create(
            model=MODEL, config=gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
        )
        for i in range(6):
            await chat.send_message(f"Question {i}?")
            fake.advance(GAP_S)
        await c.aio.aclose()
    reads = [g.usage_metadata.get("cachedContentTokenCount", 0) for g in fake.generations]
    assert reads == [0, 0] + [PREFIX_40K_TOKENS] * 4
    assert not fake.live_caches()
    assert t.cost == server_cost(fake)


def test_working_implicit_caching_makes_no_explicit_entry() -> None:
    fake = FakeGemini()  # implicit caching hits from the second call on: an entry would only add storage
    t = run_conversation(fake, 8)
    assert fake.caches == {}
    assert t.cost == server_cost(fake)
    assert (
        t.usage.cache_read_tokens
        == sum(g.usage_metadata.get("cachedContentTokenCount", 0) for g in fake.generations)
        > 0
    )


def test_small_prefix_is_never_cached() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    for i in range(6):
        c.models.generate_content(
            model=MODEL, contents=f"q{i}", config=gtypes.GenerateContentConfig(system_instruction="Be brief.")
        )
    assert fake.caches == {}


def test_cache_off_never_rewrites() -> None:
    fake = FakeGemini(implicit_caching=False)
    run_conversation(fake, 5, cache="off")
    assert fake.caches == {}
    assert all("cachedContent" not in b for b in fake.bodies(":generateContent"))


def test_cache_pays_when_the_later_reads_repay_the_creating_call_and_storage() -> None:
    flash = CacheEconomics(
        input=Decimal("0.30"), cache_read=Decimal("0.03"), storage_per_hour=Decimal("1.00")
    )

    def totals(reads: int, hit: float, hours: Decimal) -> tuple[Decimal, Decimal]:
        """Per prefix token: the creating call and ``reads`` later ones, without and with an entry."""
        h = Decimal(str(hit))
        plain = (1 + reads) * ((1 - h) * flash.input + h * flash.cache_read)
        cached = flash.input + (1 + reads) * flash.cache_read + hours * flash.storage_per_hour
        return plain, cached

    for reads, hit, hours in [(0, 0.0, Decimal("0.1")), (1, 0.0, Decimal("0.1")), (1, 0.0, Decimal(1)),
                              (2, 0.0, Decimal(1)), (50, 1.0, Decimal("0.1")), (3, 0.5, Decimal("0.1")),
                              (1, 0.5, Decimal("0.1"))]:
        plain, cached = totals(reads, hit, hours)
        pays = cache_pays(future_reads=reads, implicit_hit_share=hit, expected_hours=hours, economics=flash)
        assert pays == (cached < plain), (reads, hit, hours)
    # one later read repays a short-lived entry (0.27 saved > 0.03 read + 0.10 storage)
    assert cache_pays(future_reads=1, implicit_hit_share=0.0, expected_hours=Decimal("0.1"), economics=flash)
    # reads expected after the current call: as many as the repeats seen (none on the 2nd or 1st call)
    assert [expected_future_reads(seen) for seen in range(5)] == [0, 0, 1, 2, 3]
    # or what is left of a run as long as earlier runs were
    assert [expected_future_reads(0, run_calls=k, calls_per_run=3) for k in range(4)] == [2, 1, 0, 0]
    assert (
        auto_ttl("5m", 9999),
        auto_ttl("1h", 0),
        auto_ttl("auto", 30),
        auto_ttl("auto", 900),
        auto_ttl("auto", 10_000),
    ) == (300, 3600, 300, 1800, 3600)


# -- the wire ------------------------------------------------------------------------------------


def test_rewritten_request_carries_only_what_the_cache_does_not_hold() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    tools = [
        gtypes.Tool(
            function_declarations=[
                gtypes.FunctionDeclaration(
                    name="lookup", description="Look a ticket up", parameters_json_schema={"type": "object"}
                )
            ]
        )
    ]
    cfg = gtypes.GenerateContentConfig(
        system_instruction=PREFIX_40K,
        tools=tools,
        temperature=0.2,
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    for i in range(4):
        c.models.generate_content(model=MODEL, contents=f"Q{i}", config=cfg)
    create = json.loads(next(r for r in fake.requests if r.url.path.endswith("/cachedContents")).content)
    assert create["model"] == f"models/{MODEL}"
    assert set(create) >= {"systemInstruction", "tools", "ttl"} and "contents" not in create
    last = fake.bodies(":generateContent")[-1]
    assert last["cachedContent"] == next(iter(fake.caches))
    assert not {"systemInstruction", "tools", "toolConfig"} & set(last)
    assert last["generationConfig"]["temperature"] == 0.2
    assert last["contents"] == [{"parts": [{"text": "Q3"}], "role": "user"}]
    c.close()


def ask_about(c: bc.GenAIClient, cfg: gtypes.GenerateContentConfig, document: str, i: int) -> None:
    """One call opening with ``document`` as its own user content, then question ``i``."""
    c.models.generate_content(
        model=MODEL,
        config=cfg,
        contents=[
            gtypes.UserContent(parts=[gtypes.Part(text=document)]),
            gtypes.UserContent(parts=[gtypes.Part(text=f"Question {i}?")]),
        ],
    )


def test_large_repeated_opening_is_held_in_the_entry() -> None:
    """A document sent as its own leading user content, repeated call after call, joins the entry
    (content granularity: turns are never split or merged)."""
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    document = " ".join(f"section {i} of the contract" for i in range(2000))
    cfg = gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
    for i in range(4):
        ask_about(c, cfg, document, i)
    (entry,) = fake.caches.values()
    assert entry.tokens == PREFIX_40K_TOKENS + -(-len(document.encode()) // 4)
    last = fake.bodies(":generateContent")[-1]
    assert last["contents"] == [{"parts": [{"text": "Question 3?"}], "role": "user"}]
    assert fake.generations[-1].usage_metadata["cachedContentTokenCount"] == entry.tokens
    c.close()


# -- lifecycle -------------------------------------------------------------------------------------


def make_entry(fake: FakeGemini, c: bc.GenAIClient, calls: int = 4, gap: int = GAP_S) -> None:
    cfg = gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
    for i in range(calls):
        c.models.generate_content(model=MODEL, contents=f"q{i}", config=cfg)
        fake.advance(gap)


def test_entry_is_deleted_when_the_with_block_ends() -> None:
    fake = FakeGemini(implicit_caching=False)
    with client(fake) as c:
        make_entry(fake, c)
        assert len(fake.live_caches()) == 1
    assert not fake.live_caches()


def test_entry_is_deleted_at_interpreter_exit() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    with bc.task("t") as t:
        make_entry(fake, c)
        google_provider._close_all_at_exit()
    assert not fake.live_caches()
    assert t.cost == server_cost(fake)


def test_ttl_is_refreshed_while_in_use() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake, cache_ttl="5m")
    make_entry(fake, c, calls=4, gap=120)
    (entry,) = fake.caches.values()
    created_expiry = entry.expire_time
    make_entry(fake, c, calls=3, gap=120)
    assert any(r.method == "PATCH" for r in fake.requests)
    assert entry.expire_time > created_expiry and entry.alive(fake.now())
    reads = [g.usage_metadata.get("cachedContentTokenCount", 0) for g in fake.generations]
    assert reads[3:] == [PREFIX_40K_TOKENS] * 4
    c.close()


def test_vanished_entry_falls_back_without_failing_the_call() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    with bc.task("t") as t:
        make_entry(fake, c)
        (entry,) = fake.caches.values()
        entry.deleted_at = fake.now()  # gone on the server (deleted elsewhere)
        response = c.models.generate_content(
            model=MODEL, contents="after", config=gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
        )
    assert response.text == fake.reply_text
    assert fake.generations[-1].cached_content is None
    generate = [r for r in t.records if r.operation == "generate_content"]
    assert len(generate) == 5 and all(r.status == "ok" for r in generate)
    assert t.cost == server_cost(fake)


def test_changed_prefix_replaces_the_entry_and_reports_drift() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    with bc.task("t") as t:
        make_entry(fake, c, calls=5)
        (old,) = fake.caches.values()
        edited = PREFIX_40K.replace("clause-0 ", "clause-zero ", 1)
        with pytest.warns(bc.PrefixDriftWarning) as caught:
            c.models.generate_content(
                model=MODEL,
                contents="new rules",
                config=gtypes.GenerateContentConfig(system_instruction=edited),
            )
        fake.advance(GAP_S)
        c.close()
    drift = caught[0].message.drift  # type: ignore[union-attr]
    assert drift.segment == "systemInstruction.parts[0].text" and drift.offset == len("clause-")
    assert drift.tokens_at_risk == PREFIX_40K_TOKENS
    assert drift.est_extra_cost == PREFIX_40K_TOKENS * (INPUT - CACHED) / MTOK
    assert old.deleted_at is not None
    new = next(cache for cache in fake.caches.values() if cache is not old)
    assert fake.generations[-1].cached_content == new.name  # replaced at once
    assert t.cost == server_cost(fake)


def test_entries_are_shared_by_conversations_with_the_same_prefix() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    cfg = gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
    storage: list[bc.CallRecord] = []
    remove = add_call_hook(lambda r: storage.append(r) if r.operation == "cache.storage" else None)
    try:
        with bc.task("first") as first:
            make_entry(fake, c)
        with bc.task("second"):
            c.models.generate_content(model=MODEL, contents="another ticket", config=cfg)
            fake.advance(GAP_S)
            c.close()
    finally:
        remove()
    assert len(fake.caches) == 1
    assert fake.generations[-1].cached_content is not None
    # storage is charged span by span: to the task using the entry up to its end, between tasks to
    # nobody, then to the next task using it; together exactly what the server billed
    assert close_to(sum((r.cost for r in storage if r.cost is not None), Decimal(0)), storage_cost(fake))
    assert [r.task_name for r in storage] == ["first", None, "second"]
    assert first.cost_breakdown.storage == storage[0].cost


def test_callers_own_caches_are_metered() -> None:
    fake = FakeGemini()
    c = client(fake)
    with bc.task("t") as t:
        cache = c.caches.create(
            model=MODEL, config=gtypes.CreateCachedContentConfig(system_instruction=PREFIX_40K, ttl="3600s")
        )
        assert cache.name is not None
        response = c.models.generate_content(
            model=MODEL, contents="hi", config=gtypes.GenerateContentConfig(cached_content=cache.name)
        )
        fake.advance(360)
        c.caches.delete(name=cache.name)
    assert response.usage_metadata is not None
    assert response.usage_metadata.cached_content_token_count == PREFIX_40K_TOKENS
    create, call, storage = t.records
    assert create.operation == "cache.create" and create.usage == bc.Usage(input_tokens=PREFIX_40K_TOKENS)
    assert create.cost == PREFIX_40K_TOKENS * INPUT / MTOK
    assert call.usage == usage_of(fake.generations[0].usage_metadata)
    assert storage.operation == "cache.storage"
    assert storage.cost == PREFIX_40K_TOKENS * Decimal("0.1") * STORAGE / MTOK  # 360 s = 0.1 h
    assert t.cost == server_cost(fake)


def test_wrapped_client_deletes_only_its_own_entries() -> None:
    fake = FakeGemini(implicit_caching=False)
    original = genai.Client(api_key=API_KEY, http_options=http_options(fake))
    wrapped = bc.wrap(original)
    make_entry(fake, wrapped)
    assert len(fake.live_caches()) == 1
    wrapped.close()
    assert not fake.live_caches()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        original.models.generate_content(model=MODEL, contents="still fine")


def test_one_hour_ttl_needs_more_expected_reads_to_pay() -> None:
    """Each entry may idle for its whole TTL: with 1h at $1.00/MTok/h on Flash, creation waits
    until four later reads are expected, at the 6th call (3 x 0.27 < 0.03 + 1.0 x (3 x 36 s + 1 h);
    4 x 0.27 = 1.08 > 0.03 + 1.0 x (4 x 36 s + 1 h) = 1.07)."""
    fake = FakeGemini(implicit_caching=False)
    c = client(fake, cache_ttl="1h")
    make_entry(fake, c, calls=9)
    create = json.loads(next(r for r in fake.requests if r.url.path.endswith("/cachedContents")).content)
    assert create["ttl"] == "3600s"
    reads = [g.usage_metadata.get("cachedContentTokenCount", 0) for g in fake.generations]
    assert reads == [0] * 5 + [PREFIX_40K_TOKENS] * 4
    c.close()


def test_vertex_express_paths_are_metered_and_cached() -> None:
    fake = FakeGemini(implicit_caching=False)
    c = bc.GenAIClient(vertexai=True, api_key=API_KEY, http_options=http_options(fake))
    with bc.task("t") as t:
        make_entry(fake, c, calls=5)
        c.close()
    assert all("/v1beta1/" in str(r.url) for r in fake.requests)
    assert [g.usage_metadata.get("cachedContentTokenCount", 0) for g in fake.generations] == [0, 0] + [
        PREFIX_40K_TOKENS
    ] * 3
    assert t.cost == server_cost(fake)


# -- decisions that always pay (issue 23) ----------------------------------------------------------


def raw_sdk_cost(fake: FakeGemini) -> Decimal:
    return sum((cost_of(g.usage_metadata) for g in fake.generations), Decimal(0))


@pytest.mark.parametrize("calls", [1, 2, 3])
def test_a_short_first_session_risks_at_most_the_creating_calls_read(calls: int) -> None:
    """No entry before a repeat has shown that implicit caching misses (the 3rd call): one- and
    two-call sessions cost what the raw SDK does. A session that ends right after the creating
    call (3 calls, no history) pays what that call read from the entry and the entry's storage
    more: the price of creating at the first call that can know (the run history removes it)."""
    managed = FakeGemini(implicit_caching=False)
    with_cache = run_conversation(managed, calls)
    plain = FakeGemini(implicit_caching=False)
    raw = genai.Client(api_key=API_KEY, http_options=http_options(plain))
    chat = raw.chats.create(model=MODEL, config=gtypes.GenerateContentConfig(system_instruction=PREFIX_40K))
    for i in range(calls):
        chat.send_message(f"Question {i}: what does the policy say?")
        plain.advance(GAP_S)
    assert with_cache.cost == server_cost(managed)
    if calls < 3:
        assert managed.caches == {}
        assert with_cache.cost == raw_sdk_cost(plain)
        return
    (entry,) = managed.caches.values()
    assert entry.deleted_at is not None
    hours = Decimal(str(entry.deleted_at - entry.create_time)) / HOUR
    extra = PREFIX_40K_TOKENS * (CACHED + hours * STORAGE) / MTOK
    assert with_cache.cost == raw_sdk_cost(plain) + extra


# "0 1 2 3 ..." is one fake token per 4 bytes but about one estimated token per byte: our own
# estimate of this prefix is 4x the server's count
DIGITS_40K = " ".join(str(i % 10) for i in range(80_000))
DIGITS_40K_TOKENS = -(-len(DIGITS_40K.encode()) // 4)


def test_implicit_hits_are_judged_on_the_servers_counts() -> None:
    """Implicit caching hits the whole prefix on every repeat; an estimate 4x the server's count
    must not make those hits look partial and trigger an entry that cannot pay."""
    fake = FakeGemini()
    c = client(fake)
    with bc.task("t") as t:
        chat = c.chats.create(model=MODEL, config=gtypes.GenerateContentConfig(system_instruction=DIGITS_40K))
        for i in range(20):
            chat.send_message(f"Question {i}?")
            fake.advance(30)
        c.close()
    assert fake.caches == {}
    reads = [g.usage_metadata.get("cachedContentTokenCount", 0) for g in fake.generations]
    assert reads[0] == 0 and all(r >= DIGITS_40K_TOKENS for r in reads[1:])
    assert t.cost == raw_sdk_cost(fake)


def test_a_task_ending_before_its_entry_is_deleted_includes_the_storage_so_far() -> None:
    """The storage an entry accrued while a task used it is in that task's cost when it ends; the
    rest (to deletion) is billed after, to no task, and the two add up to the server's bill."""
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    records: list[bc.CallRecord] = []
    remove = add_call_hook(records.append)
    try:
        with bc.task("short") as t:
            make_entry(fake, c, calls=6)
            last_call_at = fake.now() - GAP_S  # the server time of the last response
        fake.advance(600)
        c.close()
    finally:
        remove()
    (entry,) = fake.caches.values()
    rate = entry.tokens * STORAGE / MTOK / HOUR  # USD per second
    storage_to_last_call = rate * Decimal(str(last_call_at - entry.create_time))
    in_task = t.cost_breakdown.storage
    # billed up to the task's end on the server's clock: the last response's time plus the
    # (real, sub-second) time the task took to end after it
    assert storage_to_last_call <= in_task <= storage_to_last_call + rate
    requests = sum((cost_of(g.usage_metadata) for g in fake.generations), Decimal(0))
    assert t.cost == requests + creation_cost(fake) + in_task
    after = [r for r in records if r.operation == "cache.storage" and r.task_id is None]
    assert len(after) == 1
    assert close_to(in_task + after[0].cost, storage_cost(fake))


def test_a_second_conversation_shares_the_prefix_instead_of_copying_it() -> None:
    """Two conversations, each opening with its own large document: the second does not put a
    second copy of the 40,000-token prefix in an entry of its own with its document; it creates
    one prefix-only entry that any later conversation reads too."""
    fake = FakeGemini(implicit_caching=False)
    c = client(fake)
    cfg = gtypes.GenerateContentConfig(system_instruction=PREFIX_40K)
    documents = [" ".join(f"section {i} of contract {n}" for i in range(2000)) for n in ("A", "B", "C")]
    for document in documents:
        with bc.conversation(document[-12:]):
            for i in range(5):
                ask_about(c, cfg, document, i)
                fake.advance(GAP_S)
    tokens = sorted(cache.tokens for cache in fake.caches.values())
    first_document = -(-len(documents[0].encode()) // 4)
    # conversation A's entry holds its document; B and C share one prefix-only entry
    assert tokens == [PREFIX_40K_TOKENS, PREFIX_40K_TOKENS + first_document]
    c.close()
