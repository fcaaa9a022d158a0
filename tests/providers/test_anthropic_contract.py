"""Contracts with the installed anthropic SDK: every private or undocumented behaviour that
budgetclient's Anthropic provider relies on, each failing with the hook's name and the SDK version.

When one fails after an SDK upgrade, budgetclient still runs (each hook has a fallback that logs
one ``sdk.hook_unavailable`` warning), but the drop-in guarantee the hook serves is lost.
"""

from __future__ import annotations

import inspect
from typing import Any

import anthropic
import httpx2
import pytest
from structlog.testing import capture_logs

import budgetclient as bc
from budgetclient.providers import _hooks
from budgetclient.providers import anthropic as provider
from budgetclient.providers.anthropic import BudgetMiddleware

from .profiles import write_profile
from .wire import Wire, anthropic_message, anthropic_usage, json_response

VERSION = anthropic.__version__
MODEL = "claude-sonnet-4-6"
BASE_URL = "https://anthropic.test"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Hi there"}]
SDK_CLASSES = [anthropic.Anthropic, anthropic.AsyncAnthropic]


def broken(hook: str, detail: str) -> str:
    return f"anthropic {VERSION}: hook {hook!r} changed: {detail}"


def message_wire() -> Wire:
    return Wire(default=lambda r: json_response(anthropic_message(anthropic_usage(10, 5))))


def sdk_client(wire: Wire, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client(), **kwargs)


# -- clients: the credential chain runs for the SDK's own class only ---------------------------


@pytest.mark.parametrize("sdk_cls", SDK_CLASSES)
def test_class_can_be_swapped_between_ours_and_the_sdks(sdk_cls: type) -> None:
    """``__init__`` runs the SDK's constructor with the object's class set to the SDK's."""
    ours = {anthropic.Anthropic: bc.Anthropic, anthropic.AsyncAnthropic: bc.AsyncAnthropic}[sdk_cls]
    client = ours(api_key="k")
    try:
        client.__class__ = sdk_cls
        client.__class__ = ours
    except TypeError as exc:
        pytest.fail(broken(f"{ours.__name__}.__class__ = {sdk_cls.__name__}", str(exc)))
    assert type(client) is ours


@pytest.mark.parametrize(("sdk_cls", "ours"), [(anthropic.Anthropic, bc.Anthropic),
                                              (anthropic.AsyncAnthropic, bc.AsyncAnthropic)])
def test_sdk_copy_builds_the_class_of_self(sdk_cls: Any, ours: Any) -> None:
    """``copy`` runs on a view of our client of the SDK's class, so that it builds the SDK's class."""
    view = object.__new__(sdk_cls)
    view.__dict__.update(vars(ours(api_key="k")))
    for source in (sdk_cls(api_key="k"), view):
        copied = sdk_cls.copy(source, timeout=3)
        hook = f"{sdk_cls.__name__}.copy: self.__class__(...)"
        assert type(copied) is sdk_cls, broken(hook, repr(type(copied)))


def test_sdk_runs_the_credential_chain_for_its_own_class_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """What the class swap works around (``anthropic._client._is_base_client``): documents it, and
    says when an SDK release makes the swap unnecessary."""
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))

    class Plain(anthropic.Anthropic):
        pass

    write_profile(tmp_path, "default", "tok-profile", "wrk_1")
    assert anthropic.Anthropic(base_url="https://anthropic.test").credentials is not None
    if Plain(base_url="https://anthropic.test").credentials is not None:
        pytest.skip(f"anthropic {VERSION} runs its credential chain for subclasses: the class swap in "
                    "providers/anthropic.py (_init_client/_copy_client) is no longer needed")


def test_public_middleware_property_and_private_fallback() -> None:
    def passthrough(request: Any, call_next: Any) -> Any:
        return call_next(request)

    client = anthropic.Anthropic(api_key="k", middleware=[passthrough])
    assert client.middleware == (passthrough,), broken("Anthropic.middleware", repr(client.middleware))
    assert client._middleware == (passthrough,), broken("Anthropic._middleware", repr(client._middleware))
    assert provider._chain(client) == (passthrough,)


def test_middleware_nests_in_list_order_first_outermost() -> None:
    """BudgetMiddleware is placed last so it is innermost: it sees every HTTP attempt."""
    seen: list[str] = []

    def named(name: str) -> Any:
        def middleware(request: Any, call_next: Any) -> Any:
            seen.append(f"{name}>")
            response = call_next(request)
            seen.append(f"<{name}")
            return response

        return middleware

    sdk_client(message_wire(), middleware=[named("a"), named("b")]).messages.create(
        model=MODEL, max_tokens=10, messages=MESSAGES
    )
    assert seen == ["a>", "b>", "<b", "<a"], broken("middleware order (first = outermost)", repr(seen))


def test_with_middleware_goes_through_copy() -> None:
    """A client ``wrap()`` returns hooks ``copy`` on the instance; ``with_middleware`` must use it."""
    client = bc.wrap(sdk_client(message_wire()))
    assert isinstance(vars(client)["copy"], provider._ArrangedCopy)

    def extra(request: Any, call_next: Any) -> Any:
        return call_next(request)

    derived = client.with_middleware(extra)
    assert isinstance(vars(derived).get("copy"), provider._ArrangedCopy), broken(
        "Anthropic.with_middleware -> self.copy(middleware=...)", "the instance's copy was bypassed"
    )
    assert derived.middleware[0] is extra and isinstance(derived.middleware[-1], BudgetMiddleware)


# -- requests: APIRequest as the middleware sees it --------------------------------------------


def captured_request(**create: Any) -> anthropic.APIRequest:
    requests: list[anthropic.APIRequest] = []

    def capture(request: anthropic.APIRequest, call_next: Any) -> Any:
        requests.append(request)
        return call_next(request)

    client = sdk_client(message_wire(), middleware=[capture], max_retries=0)
    client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, **create)
    return requests[0]


def test_api_request_fields_read_by_the_middleware() -> None:
    request = captured_request(extra_body={"metadata": {"user_id": "u"}})
    for name in ("method", "url", "json", "stream", "stream_cls", "cast_to", "retries_taken", "options"):
        assert hasattr(request, name), broken(f"APIRequest.{name}", "missing")
    assert request.retries_taken == 0 and request.method.lower() == "post"
    options = request.options
    for name in ("json_data", "extra_json", "params", "headers", "model_copy"):
        assert hasattr(options, name), broken(f"APIRequest.options.{name}", "missing")
    keywords = set(inspect.signature(anthropic.APIRequest).parameters)
    assert {"options", "cast_to", "stream", "stream_cls", "retries_taken"} <= keywords, broken(
        "APIRequest(options=, cast_to=, stream=, stream_cls=, retries_taken=)", repr(keywords)
    )


def test_with_body_replaces_the_body_without_the_fallback() -> None:
    request = captured_request()
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES, "system": "s"}
    with capture_logs() as logs:
        rebuilt = provider._with_body(request, body)
    assert not [e for e in logs if e["event"] == "sdk.hook_unavailable"], broken(
        "APIRequest.options.model_copy()/json_data/extra_json/params", repr(logs)
    )
    assert rebuilt.json == body and rebuilt.json is not request.json
    assert (rebuilt.method, rebuilt.url, rebuilt.cast_to, rebuilt.stream, rebuilt.retries_taken) == (
        request.method, request.url, request.cast_to, request.stream, request.retries_taken
    )


# -- responses: bare error responses (cast_to=httpx2.Response) ---------------------------------


@pytest.mark.parametrize("response_cls", [anthropic.APIResponse, anthropic.AsyncAPIResponse])
def test_api_response_constructor(response_cls: type) -> None:
    keywords = set(inspect.signature(response_cls).parameters)
    needed = {"raw", "cast_to", "client", "stream", "stream_cls", "options", "retries_taken"}
    assert needed <= keywords, broken(f"{response_cls.__name__}({', '.join(sorted(needed))})", repr(keywords))


def test_sdk_returns_bare_error_responses_through_middleware() -> None:
    """The SDK behaviour `_error_status_response` works around: with any middleware installed,
    ``cast_to=httpx2.Response`` error responses are returned, not raised, and not retried."""
    wire = Wire(default=lambda r: httpx2.Response(500, json={"type": "error"}))
    client = sdk_client(wire, middleware=[lambda request, call_next: call_next(request)], max_retries=2)
    try:
        response = client.get("/v1/undocumented", cast_to=httpx2.Response)
    except anthropic.APIStatusError:
        pytest.skip(f"anthropic {VERSION} raises error responses through middleware: "
                    "the workaround (_error_status_response) is now inert")
    assert response.status_code == 500 and len(wire.requests) == 1


def test_a_changed_response_wrapper_falls_back_to_the_sdks_behaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    class Changed:
        def __init__(self, **kwargs: Any) -> None:
            raise TypeError("unexpected keyword argument 'raw'")

    monkeypatch.setattr(anthropic, "APIResponse", Changed)
    monkeypatch.setattr(_hooks, "_warned", set())
    wire = Wire(default=lambda r: httpx2.Response(500, json={"type": "error"}))
    # the caller's middleware keeps the chain (and budgetclient's middleware in it) running
    passthrough = [lambda request, call_next: call_next(request)]
    client = bc.wrap(sdk_client(wire, max_retries=0, middleware=passthrough))
    with capture_logs() as logs:
        first = client.get("/v1/undocumented", cast_to=httpx2.Response)
        second = client.get("/v1/undocumented", cast_to=httpx2.Response)
    assert (first.status_code, second.status_code) == (500, 500)  # never breaks the call
    warnings = [e for e in logs if e["event"] == "sdk.hook_unavailable"]
    assert len(warnings) == 1 and warnings[0]["sdk_version"] == VERSION


def test_raw_responses_carry_http_response() -> None:
    client = sdk_client(message_wire(), max_retries=0)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert isinstance(raw.http_response, httpx2.Response), broken("APIResponse.http_response", repr(raw))


# -- the attempt hook: _attempt_request on the instance, no middleware chain -----------------------


@pytest.mark.parametrize("sdk_cls", SDK_CLASSES)
def test_attempt_request_signature(sdk_cls: type) -> None:
    """`_install_attempt_hook` wraps ``_attempt_request(options, *, stream, retries_taken, call)``,
    which returns ``(httpx2.Response, options)``, and reads ``options.url/method/json_data``."""
    send = getattr(sdk_cls, "_attempt_request", None)
    assert callable(send), broken(f"{sdk_cls.__name__}._attempt_request", repr(send))
    parameters = inspect.signature(send).parameters
    assert list(parameters)[:2] == ["self", "options"], broken("_attempt_request(options)", repr(parameters))
    for name in ("stream", "retries_taken", "call"):
        kind = parameters[name].kind
        assert kind is inspect.Parameter.KEYWORD_ONLY, broken(f"_attempt_request({name}=)", repr(kind))
    fields = set(anthropic._models.FinalRequestOptions.model_fields)
    assert {"url", "method", "json_data"} <= fields, broken("FinalRequestOptions.url/method/json_data", "")


@pytest.mark.parametrize("sdk_cls", SDK_CLASSES)
def test_middleware_chain_is_an_instance_attribute(sdk_cls: type) -> None:
    """``_middleware_chain`` is built per client at construction; None means no middleware."""
    client = sdk_cls(api_key="k")
    assert "_middleware_chain" in vars(client) and client._middleware_chain is None, broken(
        f"{sdk_cls.__name__}._middleware_chain", repr(vars(client).get("_middleware_chain"))
    )


def test_the_attempt_hook_meters_each_call_once_without_the_chain() -> None:
    wire = message_wire()
    for client in (
        bc.Anthropic(api_key="k", base_url=BASE_URL, http_client=wire.client(), max_retries=0),
        bc.wrap(sdk_client(wire, max_retries=0)),
    ):
        hooked = "_attempt_request" in vars(client) or type(client) in (bc.Anthropic, bc.AsyncAnthropic)
        assert hooked and client._middleware_chain is None
        assert isinstance(client._middleware[-1], BudgetMiddleware)  # copies keep it
        with bc.task("t") as t:
            client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        assert t.calls == 1 and t.usage.input_tokens == 10 and t.usage.output_tokens == 5


def test_without_the_attempt_hook_the_middleware_meters(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SDK whose ``_attempt_request`` is not a plain method: one warning, the chain meters."""

    class Changed(anthropic.Anthropic):
        @property
        def _attempt_request(self) -> Any:  # type: ignore[override]
            return anthropic.Anthropic._attempt_request.__get__(self)

    monkeypatch.setattr(_hooks, "_warned", set())
    with capture_logs() as logs, bc.task("t") as t:
        client = bc.wrap(Changed(api_key="k", base_url=BASE_URL, http_client=message_wire().client()))
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert client._middleware_chain is not None
    assert t.calls == 2 and t.usage.input_tokens == 20
    assert len([e for e in logs if e["event"] == "sdk.hook_unavailable"]) == 1


@pytest.mark.parametrize("cls", [bc.Anthropic, bc.AsyncAnthropic])
def test_our_clients_hold_the_sdk_clients_state(cls: type) -> None:
    """The attempt hook is a method of our classes, not an attribute of each client: a copy's
    ``vars()`` equals the original's but for what the SDK itself builds per client (its copy tests)."""
    client = cls(api_key="k", base_url=BASE_URL)
    copied = client.copy()
    assert "_attempt_request" not in vars(client) and "_attempt_request" in vars(cls)
    built = {"_otel", "_middleware_chain", "_custom_auth", "messages", "beta"}
    assert {k: v for k, v in vars(copied).items() if k not in built} == {
        k: v for k, v in vars(client).items() if k not in built
    }
