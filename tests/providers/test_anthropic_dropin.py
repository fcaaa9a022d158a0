"""bc.Anthropic / bc.AsyncAnthropic / bc.wrap behave as the raw SDK of the installed version.

Each test sends the same wire to the raw client and to ours and compares what arrives and what is
raised or returned: credentials from the SDK's chain, low-level ``cast_to=httpx2.Response`` calls,
copies, middleware order, and the constructor's signature.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import respx

import budgetclient as bc
from budgetclient.providers import anthropic as provider
from budgetclient.providers.anthropic import AnthropicArguments, AsyncAnthropicArguments, BudgetMiddleware

from .profiles import write_profile
from .wire import Wire, anthropic_message, anthropic_usage, json_response

MODEL = "claude-sonnet-4-6"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Hi there"}]
BASE_URL = "https://anthropic.test"  # https: the SDK's credential providers refuse plain http
RAW_AND_OURS = [(anthropic.Anthropic, bc.Anthropic)]
ASYNC_RAW_AND_OURS = [(anthropic.AsyncAnthropic, bc.AsyncAnthropic)]


def message_wire(usage: dict[str, Any] | None = None) -> Wire:
    return Wire(default=lambda r: json_response(anthropic_message(usage or anthropic_usage(10, 5))))


def create(client: Any) -> Any:
    return client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)


def sdk(wire: Wire, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client(), **kwargs)


def ours(wire: Wire, **kwargs: Any) -> bc.Anthropic:
    return bc.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client(), **kwargs)


AUTH_HEADERS = ("authorization", "x-api-key", "anthropic-workspace-id", "anthropic-beta")


def auth_of(request: httpx2.Request) -> dict[str, str | None]:
    return {name: request.headers.get(name) for name in AUTH_HEADERS}


# -- defect 1: the SDK's credential chain and credential inheritance ---------------------------


def sent_auth(make: Callable[..., Any], derive: Callable[[Any], Any] = lambda c: c) -> dict[str, str | None]:
    wire = message_wire()
    client = derive(make(base_url=BASE_URL, http_client=wire.client(), max_retries=0))
    create(client)
    (request,) = wire.requests
    return auth_of(request)


COPIES: list[Callable[[Any], Any]] = [
    lambda c: c,
    lambda c: c.with_options(timeout=5),
    lambda c: c.copy(max_retries=0),
    lambda c: c.with_options(timeout=5).copy(timeout=6),
    lambda c: c.with_options(middleware=[]),
]


@pytest.mark.parametrize("derive", COPIES)
def test_profile_on_disk_is_used_as_by_the_raw_client(
    derive: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    write_profile(tmp_path, "default", "tok-default-profile", "wrk_default")
    raw = sent_auth(anthropic.Anthropic, derive)
    ours = sent_auth(bc.Anthropic, derive)
    assert ours == raw
    assert raw["authorization"] == "Bearer tok-default-profile"
    assert raw["anthropic-workspace-id"] == "wrk_default"


def test_anthropic_profile_env_selects_the_profile_as_for_the_raw_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    write_profile(tmp_path, "default", "tok-default-profile", "wrk_default")
    write_profile(tmp_path, "work", "tok-work-profile", "wrk_work")
    monkeypatch.setenv("ANTHROPIC_PROFILE", "work")
    raw = sent_auth(anthropic.Anthropic, lambda c: c.with_options(timeout=5))
    assert sent_auth(bc.Anthropic, lambda c: c.with_options(timeout=5)) == raw
    assert raw["authorization"] == "Bearer tok-work-profile"


def test_no_credentials_fail_as_for_the_raw_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no profile under ~/.config/anthropic
    outcomes = []
    for make in (anthropic.Anthropic, bc.Anthropic):
        wire = message_wire()
        client = make(base_url=BASE_URL, http_client=wire.client(), max_retries=0)
        with pytest.raises(Exception) as caught:
            create(client)
        outcomes.append((type(caught.value), str(caught.value), len(wire.requests)))
    assert outcomes[1] == outcomes[0]


def test_workload_identity_env_is_used_as_by_the_raw_client(
    monkeypatch: pytest.MonkeyPatch, respx_mock_sdk: respx.MockRouter
) -> None:
    monkeypatch.setenv("ANTHROPIC_IDENTITY_TOKEN", "header.payload.signature")
    monkeypatch.setenv("ANTHROPIC_FEDERATION_RULE_ID", "fdrl_test")
    monkeypatch.setenv("ANTHROPIC_ORGANIZATION_ID", "org_test")
    import httpx  # respx (on httpcore2 here) wants httpx (v1) responses

    exchanges = respx_mock_sdk.post(f"{BASE_URL}/v1/oauth/token").mock(
        return_value=httpx.Response(
            200, json={"access_token": "tok-federated", "expires_in": 3600, "token_type": "Bearer"}
        )
    )
    messages = respx_mock_sdk.post(f"{BASE_URL}/v1/messages").mock(
        return_value=httpx.Response(200, json=anthropic_message(anthropic_usage(10, 5)))
    )
    seen = []
    for make in (anthropic.Anthropic, bc.Anthropic):
        client = make(base_url=BASE_URL, max_retries=0)
        create(client.with_options(timeout=5))
        seen.append(auth_of(messages.calls.last.request))
    assert seen[1] == seen[0]
    assert seen[0]["authorization"] == "Bearer tok-federated"
    assert exchanges.call_count == 2  # one exchange per client, raw and ours alike


class Rotating:
    """A ``credentials=`` provider (the SDK's ``AccessTokenProvider`` protocol)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0

    def __call__(self, *, force_refresh: bool = False) -> anthropic.AccessToken:
        self.calls += 1
        return anthropic.AccessToken(token=self.token, expires_at=int(time.time()) + 3600)


@pytest.mark.parametrize("derive", COPIES)
def test_credentials_provider_survives_copies(derive: Callable[[Any], Any]) -> None:
    raw = sent_auth(lambda **kw: anthropic.Anthropic(credentials=Rotating("tok-provided"), **kw), derive)
    ours = sent_auth(lambda **kw: bc.Anthropic(credentials=Rotating("tok-provided"), **kw), derive)
    assert ours == raw
    assert raw["authorization"] == "Bearer tok-provided"


def test_copies_share_the_token_cache_as_the_raw_clients_do() -> None:
    counts = []
    for make in (anthropic.Anthropic, bc.Anthropic):
        provider = Rotating("tok-provided")
        wire = message_wire()
        client = make(credentials=provider, base_url=BASE_URL, http_client=wire.client(), max_retries=0)
        create(client)
        create(client.with_options(timeout=5))
        create(client.copy(max_retries=0).with_options(timeout=4))
        counts.append(provider.calls)
    assert counts[1] == counts[0]


async def test_async_credentials_from_profile_and_provider(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    write_profile(tmp_path, "default", "tok-async-profile", "wrk_async")

    async def sent(make: Callable[..., Any]) -> list[dict[str, str | None]]:
        wire = message_wire()
        client = make(base_url=BASE_URL, http_client=wire.async_client(), max_retries=0)
        for derived in (client, client.with_options(timeout=5), client.copy(max_retries=0)):
            await derived.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        return [auth_of(r) for r in wire.requests]

    raw = await sent(anthropic.AsyncAnthropic)
    assert await sent(bc.AsyncAnthropic) == raw
    assert {a["authorization"] for a in raw} == {"Bearer tok-async-profile"}

    def provided(cls: Any) -> Callable[..., Any]:
        return lambda **kw: cls(credentials=Rotating("tok-async-provided"), **kw)

    raw = await sent(provided(anthropic.AsyncAnthropic))
    assert await sent(provided(bc.AsyncAnthropic)) == raw
    assert {a["authorization"] for a in raw} == {"Bearer tok-async-provided"}


def test_copies_keep_our_class_and_a_user_subclass_keeps_its_own() -> None:
    c = bc.Anthropic(api_key="k")
    assert type(c.with_options(timeout=5)) is bc.Anthropic
    assert type(c.with_middleware(lambda r, n: n(r))) is bc.Anthropic

    class Mine(bc.Anthropic):
        pass

    mine = Mine(api_key="k", cache="off")
    copied = mine.copy(timeout=3)
    assert type(copied) is Mine
    assert copied.budget_options == bc.ClientOptions(cache="off")


# -- defect 2: low-level calls with cast_to=httpx2.Response ------------------------------------


def error_response(status: int) -> httpx2.Response:
    return httpx2.Response(
        status,
        headers={"content-type": "application/json", "retry-after-ms": "1"},
        json={"type": "error", "error": {"type": "api_error", "message": f"status {status}"}},
    )


def low_level(client: Any, method: str) -> Any:
    if method == "get":
        return client.get("/v1/undocumented", cast_to=httpx2.Response)
    return client.post("/v1/undocumented", cast_to=httpx2.Response, body={"a": 1})


def outcome(result: Callable[[], Any], wire: Wire) -> tuple[Any, ...]:
    try:
        value = result()
    except anthropic.APIStatusError as exc:
        return ("raised", type(exc), exc.status_code, len(wire.requests))
    return ("returned", type(value), value.status_code, value.content, len(wire.requests))


@pytest.mark.parametrize("status", [200, 400, 404, 429, 500, 529])
@pytest.mark.parametrize("method", ["get", "post"])
def test_low_level_response_calls_raise_and_retry_as_a_raw_client(status: int, method: str) -> None:
    results = []
    for make in (anthropic.Anthropic, bc.Anthropic):
        wire = Wire(default=lambda r: error_response(status))
        client = make(api_key="k", base_url=BASE_URL, http_client=wire.client(), max_retries=2)
        results.append(outcome(lambda: low_level(client, method), wire))  # noqa: B023
    assert results[1] == results[0]


def test_low_level_response_calls_through_a_wrapped_client_and_with_middleware() -> None:
    """bc.wrap and a user's own middleware: still what a raw client without middleware does."""
    wire = Wire(default=lambda r: error_response(503))
    raw = anthropic.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client(), max_retries=1)
    expected = outcome(lambda: low_level(raw, "get"), wire)
    for derive in (
        lambda: bc.wrap(anthropic.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client())),
        lambda: bc.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client()).with_middleware(
            lambda r, call_next: call_next(r)
        ),
    ):
        wire.requests.clear()
        client = derive().with_options(max_retries=1)
        assert outcome(lambda: low_level(client, "get"), wire) == expected  # noqa: B023


async def test_async_low_level_response_calls_raise_and_retry_as_a_raw_client() -> None:
    results = []
    for make in (anthropic.AsyncAnthropic, bc.AsyncAnthropic):
        for status in (200, 404, 500):
            wire = Wire(default=lambda r: error_response(status))  # noqa: B023
            client = make(api_key="k", base_url=BASE_URL, http_client=wire.async_client(), max_retries=2)
            try:
                value = await client.get("/v1/undocumented", cast_to=httpx2.Response)
                results.append(("returned", value.status_code, len(wire.requests)))
            except anthropic.APIStatusError as exc:
                results.append(("raised", type(exc), exc.status_code, len(wire.requests)))
    assert results[3:] == results[:3]


def test_low_level_messages_post_is_metered() -> None:
    usage = anthropic_usage(40, 7)
    wire = message_wire(usage)
    client = ours(wire, max_retries=0, cache="off")
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    with bc.task("low-level") as t:
        response = client.post("/v1/messages", cast_to=httpx2.Response, body=body)
    assert response.json()["usage"]["output_tokens"] == usage["output_tokens"]
    assert t.calls == 1
    assert t.usage.output_tokens == usage["output_tokens"]
    assert t.usage.input_tokens == usage["input_tokens"]


# -- defect 3: copies keep budgetclient's options and state ------------------------------------


def passthrough(request: Any, call_next: Any) -> Any:
    return call_next(request)


@pytest.mark.parametrize(
    "derive",
    [
        lambda c: c.with_options(middleware=[passthrough]),
        lambda c: c.copy(middleware=[passthrough]),
        lambda c: c.copy(middleware=None),
        lambda c: c.with_middleware(passthrough),
        lambda c: c.with_options(middleware=[*c.middleware, passthrough]),
    ],
)
def test_copy_with_middleware_keeps_options_and_conversation_state(derive: Callable[[Any], Any]) -> None:
    big = "You are a careful assistant. " * 400  # long enough to be cacheable
    body = {"model": MODEL, "max_tokens": 10, "system": big, "messages": MESSAGES}
    wire = message_wire()
    raw = anthropic.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client(), max_retries=0)
    raw.messages.create(**body)
    client = bc.Anthropic(
        api_key="k", base_url=BASE_URL, http_client=wire.client(), max_retries=0, cache="off", drift="off"
    )
    copied = derive(client)
    copied.messages.create(**body)
    sent_raw, sent_ours = wire.bodies()
    assert sent_ours == sent_raw  # cache="off": no markers, no diagnostics, as the raw client sends
    assert copied.budget_options == client.budget_options
    # the very same middleware, innermost: options and conversation state
    assert provider._chain(copied)[-1] is provider._chain(client)[-1]
    assert sum(isinstance(m, BudgetMiddleware) for m in provider._chain(copied)) == 1


def test_an_explicit_budget_middleware_replaces_the_clients() -> None:
    client = bc.Anthropic(api_key="k", cache="off")
    mine = BudgetMiddleware(bc.ClientOptions(drift="off"))
    for copied in (client.with_options(middleware=[mine, passthrough]), client.with_middleware(mine)):
        assert copied.budget_options == bc.ClientOptions(drift="off")
        assert provider._chain(copied)[-1] is mine
        assert sum(isinstance(m, BudgetMiddleware) for m in provider._chain(copied)) == 1


def test_middleware_lists_the_callers_as_the_raw_client_does() -> None:
    wire = message_wire()
    for derive in (
        lambda c: c,
        lambda c: c.with_middleware(passthrough),
        lambda c: c.with_options(middleware=[*c.middleware, passthrough]),
        lambda c: c.copy(middleware=[]),
        lambda c: c.with_options(timeout=3),
    ):
        raw = derive(anthropic.Anthropic(api_key="k", middleware=[passthrough]))
        mine = derive(bc.Anthropic(api_key="k", middleware=[passthrough], http_client=wire.client()))
        assert mine.middleware == raw.middleware
        assert isinstance(provider._chain(mine)[-1], BudgetMiddleware)  # metered all the same


def test_with_options_takes_budget_options_and_keeps_the_conversation() -> None:
    client = bc.Anthropic(api_key="k", drift="off")
    relaxed = client.with_options(cache="off", timeout=4)
    assert relaxed.budget_options == bc.ClientOptions(cache="off", drift="off")
    assert client.budget_options == bc.ClientOptions(drift="off")
    before, after = provider._chain(client)[-1], provider._chain(relaxed)[-1]
    assert after is not before and after.lineages is before.lineages and after.client_key == before.client_key
    assert relaxed.with_options(max_retries=0).budget_options == relaxed.budget_options
    assert relaxed.with_options(cache=None, drift=None).budget_options == relaxed.budget_options
    with pytest.raises(bc.ConfigurationError):
        client.with_options(cache="sometimes")
    wrapped = bc.wrap(anthropic.Anthropic(api_key="k")).with_options(cache_ttl="1h")
    assert provider._budget_middleware(wrapped).options == bc.ClientOptions(cache_ttl="1h")


# -- defect 4: every HTTP attempt is metered, whatever the middleware order --------------------


class Twice(anthropic.Middleware):
    """Sends each call twice (a hedging/fallback middleware): returns the second response."""

    def handle(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        call_next(request)
        return call_next(request)

    async def handle_async(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        await call_next(request)
        return await call_next(request)


USAGES = [anthropic_usage(11, 3), anthropic_usage(29, 17)]


def two_answers() -> Wire:
    return Wire(responders=[lambda r, u=u: json_response(anthropic_message(u)) for u in USAGES])  # type: ignore[misc]


def expected_records() -> list[tuple[int, int]]:
    return [(u["input_tokens"], u["output_tokens"]) for u in USAGES]


SYNC_CLIENTS: list[Callable[[Wire], Any]] = [
    lambda w: ours(w, middleware=[Twice()]),
    lambda w: ours(w).with_middleware(Twice()),
    lambda w: ours(w).with_options(middleware=[Twice()]),
    lambda w: bc.wrap(sdk(w)).with_middleware(Twice()),
    lambda w: bc.wrap(sdk(w)).with_options(timeout=5).with_middleware(Twice()),
    lambda w: bc.wrap(sdk(w, middleware=[Twice()])),
    lambda w: bc.wrap(sdk(w)).copy(middleware=[Twice()]),
]


@pytest.mark.parametrize("make", SYNC_CLIENTS)
def test_a_middleware_sending_twice_is_metered_per_attempt(make: Callable[[Wire], Any]) -> None:
    wire = two_answers()
    client = make(wire)
    assert isinstance(provider._chain(client)[-1], BudgetMiddleware)
    with bc.task("hedged") as t:
        message = client.with_options(max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=MESSAGES
        )
    assert message.usage.output_tokens == USAGES[-1]["output_tokens"]
    assert len(wire.requests) == 2
    assert [(r.usage.input_tokens, r.usage.output_tokens) for r in t.records] == expected_records()


ASYNC_CLIENTS: list[Callable[[Wire], Any]] = [
    lambda w: bc.AsyncAnthropic(api_key="k", base_url=BASE_URL, http_client=w.async_client()).with_middleware(
        Twice()
    ),
    lambda w: bc.wrap(
        anthropic.AsyncAnthropic(api_key="k", base_url=BASE_URL, http_client=w.async_client())
    ).with_middleware(Twice()),
]


@pytest.mark.parametrize("make", ASYNC_CLIENTS)
async def test_async_middleware_sending_twice_is_metered_per_attempt(make: Callable[[Wire], Any]) -> None:
    wire = two_answers()
    with bc.task("hedged") as t:
        await make(wire).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert [(r.usage.input_tokens, r.usage.output_tokens) for r in t.records] == expected_records()


def test_wrap_leaves_the_original_client_and_its_copies_alone() -> None:
    original = anthropic.Anthropic(api_key="k")
    bc.wrap(original)
    assert "copy" not in vars(original)
    assert original.with_middleware(passthrough).middleware == (passthrough,)


# -- defect 7: the constructors' signatures ----------------------------------------------------


def sdk_parameters(cls: type) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls).parameters.items()}


@pytest.mark.parametrize(("raw", "wrapped"), RAW_AND_OURS + ASYNC_RAW_AND_OURS)
def test_runtime_signature_is_the_installed_sdks_plus_ours(raw: type, wrapped: type) -> None:
    expected = sdk_parameters(raw)
    shown = sdk_parameters(wrapped)
    assert {n: shown[n] for n in expected} == expected
    assert set(shown) - set(expected) == {"cache", "cache_ttl", "drift"}
    assert all(shown[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("cache", "cache_ttl", "drift"))
    for method in ("copy", "with_options"):
        sdk_copy = inspect.signature(getattr(raw(api_key="k"), method)).parameters
        for client in (wrapped(api_key="k"), bc.wrap(raw(api_key="k"))):
            copy_shown = inspect.signature(getattr(client, method)).parameters
            assert {n: copy_shown[n] for n in sdk_copy} == dict(sdk_copy)
            assert {"cache", "cache_ttl", "drift"} <= set(copy_shown)  # a copy takes what __init__ does


@pytest.mark.parametrize(
    ("raw", "declared"),
    [(anthropic.Anthropic, AnthropicArguments), (anthropic.AsyncAnthropic, AsyncAnthropicArguments)],
)
def test_static_declaration_lists_every_sdk_parameter(raw: type, declared: type) -> None:
    """What type checkers see (``**kwargs: Unpack[...]``): every keyword of the installed SDK's."""
    names = set(declared.__annotations__)
    missing = [n for n in sdk_parameters(raw) if n not in names]
    assert not missing, (
        f"anthropic {anthropic.__version__} {raw.__name__}.__init__ has parameter(s) {missing} that "
        f"budgetclient's {declared.__name__} does not declare: add them with their types"
    )
    assert names - set(sdk_parameters(raw)) == {"cache", "cache_ttl", "drift"}


# -- the TTL clock is read at call time --------------------------------------------------------


def ttls_in(body: Any) -> set[str]:
    """The TTLs of the ``cache_control`` markers anywhere in a request body."""
    if isinstance(body, dict):
        marker = body.get("cache_control")
        found = {marker.get("ttl", "5m")} if isinstance(marker, dict) else set()
        return found.union(*(ttls_in(v) for v in body.values()))
    if isinstance(body, list):
        return set().union(*(ttls_in(v) for v in body))
    return set()


def conversation_ttls(advance: Callable[[float], None], gap: float) -> list[set[str]]:
    """The marker TTLs of six turns of one conversation, ``gap`` seconds of moved time apart."""
    wire = message_wire(anthropic_usage(10, 5, read=5000))
    client = ours(wire, max_retries=0)
    system = "You are a careful assistant. " * 800
    messages: list[dict[str, Any]] = []
    for turn in range(6):
        messages = [*messages, {"role": "user", "content": f"question {turn} " * 50}]
        client.messages.create(model=MODEL, max_tokens=10, system=system, messages=messages)
        messages = [*messages, {"role": "assistant", "content": f"answer {turn} " * 50}]
        advance(gap)
    return [ttls_in(body) for body in wire.bodies()]


def test_moved_time_steers_the_1h_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from budgetclient.placement import LONG_GAP_S

    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += seconds

    close_together = conversation_ttls(advance, 1.0)
    assert all(ttls == {"5m"} for ttls in close_together)
    far_apart = conversation_ttls(advance, 2 * LONG_GAP_S)  # each gap outlives a 5m entry
    assert far_apart[0] == {"5m"}  # no gap seen yet
    assert "1h" in set().union(*far_apart[1:])


def test_time_machine_steers_the_1h_switch() -> None:
    time_machine = pytest.importorskip("time_machine")
    from budgetclient.placement import LONG_GAP_S

    with time_machine.travel(1_800_000_000, tick=False) as traveller:
        far_apart = conversation_ttls(lambda s: traveller.shift(s), 2 * LONG_GAP_S)
    assert "1h" in set().union(*far_apart[1:])
