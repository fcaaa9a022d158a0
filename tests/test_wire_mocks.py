"""The wire mocks the suite relies on intercept the installed httpx2 (both ends of our pins)."""

from __future__ import annotations

import anthropic
import httpcore2
import httpx
import httpx2
import respx

from tests.conftest import HTTPCORE2_TARGETS

URL = "http://anthropic.test/v1/messages"
MODEL = "claude-sonnet-4-6"


def test_the_respx_targets_are_httpcore2s_pools() -> None:
    for target in HTTPCORE2_TARGETS:
        pool = getattr(httpcore2, target.rpartition(".")[2], None)
        methods = [getattr(pool, name, None) for name in ("handle_request", "handle_async_request")]
        assert any(callable(m) for m in methods), (
            f"{target}: no pool with handle_request in httpcore2 {httpcore2.__version__} for respx to patch"
        )


async def test_respx_intercepts_httpx2_sync_and_async(respx_mock_sdk: respx.MockRouter) -> None:
    route = respx_mock_sdk.get("http://wire.test/ping").mock(return_value=httpx.Response(200, text="pong"))
    with httpx2.Client() as sync_http:
        assert sync_http.get("http://wire.test/ping").text == "pong"
    async with httpx2.AsyncClient() as async_http:
        assert (await async_http.get("http://wire.test/ping")).text == "pong"
    assert route.call_count == 2


def test_respx_intercepts_an_sdk_call(respx_mock_sdk: respx.MockRouter) -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }  # fmt: skip
    route = respx_mock_sdk.post(URL).mock(return_value=httpx.Response(200, json=message))
    sdk = anthropic.Anthropic(api_key="sk-ant-test", base_url="http://anthropic.test", max_retries=0)
    reply = sdk.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert (reply.usage.input_tokens, route.call_count) == (message["usage"]["input_tokens"], 1)  # type: ignore[index]
