"""A body the caller gave as bytes, or that a client signed, reaches the wire byte for byte.

The wire verifies each request's signature over the bytes it received, as AWS or any HMAC-signing
gateway does. Raw SDK clients and budgetclient's must both get through, the caller's ``content=``
bytes must arrive unchanged, and every call must still be metered from its response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Generator
from typing import Any

import httpx2
import openai
import pytest

import budgetclient as bc

from .openai_wire import chat_reply, expected_usage, usage_fields

SECRET = b"shared-secret"
RAW_BODY = b'{"model": "gpt-4o",\n "messages": [{"role": "user", "content": "sign me"}]}'


def _mac(body: bytes) -> str:
    return hmac.new(SECRET, body, hashlib.sha256).hexdigest()


class HmacAuth(httpx2.Auth):
    """Signs the body bytes into a header, as a signing gateway expects."""

    requires_request_body = True

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["x-body-signature"] = _mac(request.content)
        yield request


class SigningOpenAI(openai.OpenAI):
    """Signs each built request in the SDK's ``_prepare_request``, as its Bedrock SigV4 provider does."""

    def _prepare_request(self, request: httpx2.Request) -> None:
        request.headers["x-body-signature"] = _mac(request.content)


class VerifyingWire:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        if not hmac.compare_digest(request.headers.get("x-body-signature", ""), _mac(body)):
            return httpx2.Response(403, json={"error": {"message": "signature mismatch", "type": "auth"}})
        self.bodies.append(body)
        content_type, data = chat_reply(json.loads(body))
        return httpx2.Response(200, headers={"content-type": content_type}, content=data)

    def client(self, **kwargs: Any) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self), **kwargs)


def _post_raw(client: Any) -> Any:
    return client.post("/chat/completions", content=RAW_BODY, cast_to=httpx2.Response)


@pytest.mark.parametrize(("signer", "kind"), [("auth", "bc"), ("auth", "wrap"), ("prepare_request", "wrap")])
def test_caller_bytes_arrive_identical_signed_and_metered(signer: str, kind: str) -> None:
    def build(wire: VerifyingWire, sdk_cls: type[Any] = openai.OpenAI) -> Any:
        if signer == "auth":
            return sdk_cls(api_key="sk-test", http_client=wire.client(auth=HmacAuth()), max_retries=0)
        return SigningOpenAI(api_key="sk-test", http_client=wire.client(), max_retries=0)

    raw_wire, our_wire = VerifyingWire(), VerifyingWire()
    raw_response = _post_raw(build(raw_wire))
    ours = bc.wrap(build(our_wire)) if kind == "wrap" else build(our_wire, bc.OpenAI)
    with bc.task("signed") as t:
        response = _post_raw(ours)
    assert raw_response.status_code == response.status_code == 200
    assert raw_wire.bodies == our_wire.bodies == [RAW_BODY]
    assert response.json() == raw_response.json()
    assert usage_fields(t.usage) == expected_usage()


def test_a_signing_client_gets_its_planned_body_signed_after_planning() -> None:
    wire = VerifyingWire()
    client = bc.wrap(SigningOpenAI(api_key="sk-test", http_client=wire.client(), max_retries=0))
    with bc.task("planned") as t:
        result = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert result.choices[0].message.content
    assert json.loads(wire.bodies[0])["prompt_cache_key"]  # planned, then signed: the wire accepted it
    assert usage_fields(t.usage) == expected_usage()


def test_bedrock_sigv4_bodies_match_their_signed_payload_hash() -> None:
    pytest.importorskip("botocore")
    from openai.providers import bedrock

    received: list[tuple[bytes, str]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        received.append((body, request.headers["x-amz-content-sha256"]))
        content_type, data = chat_reply(json.loads(body))
        return httpx2.Response(200, headers={"content-type": content_type}, content=data)

    def client() -> openai.OpenAI:
        provider = bedrock(region="us-east-1", access_key_id="AKIDEXAMPLE", secret_access_key="example")
        http_client = httpx2.Client(transport=httpx2.MockTransport(handler))
        return openai.OpenAI(provider=provider, http_client=http_client)

    _post_raw(client())
    with bc.task("bedrock") as t:
        wrapped = bc.wrap(client())
        _post_raw(wrapped)
        wrapped.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert [body for body, _ in received[:2]] == [RAW_BODY, RAW_BODY]
    assert all(signed == hashlib.sha256(body).hexdigest() for body, signed in received)
    assert usage_fields(t.usage) == expected_usage(requests=2)
