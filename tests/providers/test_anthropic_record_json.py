"""A body the SDK has read is parsed once (`_sse.read_json`) and recorded without a tap, exactly
as the tap records a body read later (``with_streaming_response``); the SDK gets the same document."""

from __future__ import annotations

import json
import random
import threading
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest

import budgetclient as bc
from budgetclient import pending
from budgetclient.formats.anthropic.prepare import _nearest_end
from budgetclient.providers._sse import read_json

from .test_anthropic import MESSAGES, MODEL, USAGE, json_wire, sync_client
from .wire import ChunkStream, Wire, anthropic_message, json_response

BODY = anthropic_message(USAGE)
HAIKU = "claude-haiku-4-5"


def _read(body: bytes, cls: type[httpx2.Response] = httpx2.Response) -> httpx2.Response:
    response = cls(200, headers={"content-type": "application/json"}, stream=ChunkStream([body]))
    response.read()
    return response


# -- read_json: one parse, handed to the response's next json() --------------------------------


def test_the_next_json_call_gets_the_parsed_document_then_parses_again() -> None:
    raw = json.dumps(BODY).encode()
    response = _read(raw)
    document = read_json(response)
    assert document == json.loads(raw)
    assert "json" in vars(response)
    assert response.json() is document  # handed over, not parsed again
    assert "json" not in vars(response)  # the class's own json() from then on
    again = response.json()
    assert again == document and again is not document


def test_json_with_arguments_parses_as_the_response_class_does() -> None:
    raw = b'{"usage": {"input_tokens": 1}, "price": 1.5}'
    response = _read(raw)
    read_json(response)
    assert response.json(parse_float=Decimal) == {"usage": {"input_tokens": 1}, "price": Decimal("1.5")}
    assert "json" not in vars(response)


@pytest.mark.parametrize("raw", [b"[1, 2]", b"  ", b"", b'  {"a": 1}  ', b'"text"'])
def test_only_an_object_is_handed_over(raw: bytes) -> None:
    response = _read(raw)
    document = read_json(response)
    assert document == (json.loads(raw) if raw.strip() else None)
    assert ("json" in vars(response)) is (type(document) is dict)


def test_invalid_json_raises_as_json_loads() -> None:
    response = _read(b'{"id": ')
    with pytest.raises(json.JSONDecodeError):
        read_json(response)
    assert "json" not in vars(response)


def test_a_response_class_with_its_own_json_is_left_alone() -> None:
    class Custom(httpx2.Response):
        def json(self, **kwargs: Any) -> Any:
            return {"custom": True}

    response = _read(b'{"a": 1}', Custom)
    assert read_json(response) == {"a": 1}
    assert "json" not in vars(response)
    assert response.json() == {"custom": True}


def test_an_unparsed_response_is_freed_at_once() -> None:
    import gc
    import weakref

    response = _read(b'{"a": 1}')
    read_json(response)
    ref = weakref.ref(response)
    enabled = gc.isenabled()
    gc.disable()  # freed by its reference count alone: no cycle through the handed-over json
    try:
        del response
        assert ref() is None
    finally:
        if enabled:
            gc.enable()


def test_the_sdk_parses_what_it_would_without_budgetclient() -> None:
    sdk = anthropic.Anthropic(
        api_key="k", base_url="http://anthropic.test", http_client=json_wire().client(), max_retries=0
    )
    expected = sdk.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    c = sync_client(json_wire())
    with bc.task("t"):
        raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        assert "json" in vars(raw.http_response)  # parsed once, for the record and for parse()
        message = raw.parse()
        assert "json" not in vars(raw.http_response)
        assert message.model_dump() == expected.model_dump()
        assert raw.http_response.json() == json.loads(raw.http_response.content)


# -- the same record as the tap makes ----------------------------------------------------------


def _records_of(body: bytes, *, streamed: bool) -> list[bc.CallRecord]:
    wire = Wire(default=lambda r: _raw_response(body))
    c = sync_client(wire)
    with bc.task("t") as t:
        if streamed:  # the body is read after the attempt: observed through the tap
            with c.messages.with_streaming_response.create(
                model=MODEL, max_tokens=100, messages=MESSAGES
            ) as response:
                response.read()
        else:
            try:
                c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
            except Exception:  # the SDK's own error for a body it cannot parse
                pass
        return list(t.records)


def _raw_response(body: bytes) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "application/json"}, stream=ChunkStream([body]))


def _comparable(record: bc.CallRecord) -> dict[str, Any]:
    return {
        "usage": record.usage,
        "cost": record.cost,
        "status": record.status,
        "error": record.error,
        "model": record.model,
        "response_id": record.response_id,
        "service_tier": record.service_tier,
        "http_status": record.http_status,
    }


BODIES = {
    "message": json.dumps(BODY).encode(),
    "other model": json.dumps(anthropic_message(USAGE, model="claude-haiku-4-5", msg_id="msg_9")).encode(),
    "no usage": json.dumps({**BODY, "usage": None}).encode(),
    "usage not an object": json.dumps({**anthropic_message(USAGE, model=HAIKU), "usage": 5}).encode(),
    "usage pairs": json.dumps({**BODY, "usage": [["input_tokens", 7], ["output_tokens", 3]]}).encode(),
    "id not a string": json.dumps({**BODY, "id": 12, "usage": {**USAGE, "service_tier": 3}}).encode(),
    "a list": b"[1, 2]",
    "blank": b"   ",
    "not json": b'{"id": "msg_01", "usage": {"input_tokens": 5',
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_read_body_is_recorded_as_the_tap_records_it(name: str) -> None:
    body = BODIES[name]
    (direct,) = _records_of(body, streamed=False)
    (tapped,) = _records_of(body, streamed=True)
    assert _comparable(direct) == _comparable(tapped)
    if name == "message":
        assert direct.status == "ok" and direct.response_id == "msg_01"
        assert direct.usage.input_tokens == USAGE["input_tokens"] + 1800 + 500
    if name == "usage not an object":
        assert direct.status == "incomplete" and direct.error == "TypeError"
        assert direct.model == HAIKU and direct.response_id == "msg_01"


def test_a_read_body_is_recorded_once_and_exact() -> None:
    c = sync_client(Wire(default=lambda r: json_response(BODY)))
    with bc.task("t") as t:
        c.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        assert t.calls == 1
        # Sonnet 4.6: 21 input, 34 output, 1800 read, 300 5m writes and 200 1h writes (USD per MTok)
        read, writes = 1800 * Decimal("0.30"), 300 * Decimal("3.75") + 200 * 6
        expected = (21 * Decimal(3) + 34 * 15 + read + writes) / 10**6
        assert t.cost == expected


# -- helpers of the record path ----------------------------------------------------------------


def test_nearest_end_is_min_by_distance_first_of_equals() -> None:
    rng = random.Random(19)
    for _ in range(2000):
        ends = tuple(sorted(rng.sample(range(1, 400), rng.randint(1, 12))))
        points = tuple(rng.sample(range(len(ends)), rng.randint(1, min(4, len(ends)))))
        scale = rng.choice([1.0, 0.5, 1.25, rng.uniform(0.25, 4.0)])
        cached = rng.randint(1, 500)
        expected = min(points, key=lambda i: abs(ends[i] * scale - cached))
        assert _nearest_end(points, ends, scale, cached) == expected


def test_deferred_jobs_from_many_threads_all_run_in_order_without_settle() -> None:
    ran: list[tuple[int, int]] = []
    done = threading.Event()
    threads, per_thread = 8, 200

    def produce(k: int) -> None:
        for i in range(per_thread):
            pending.defer(lambda k=k, i=i: ran.append((k, i)))

    workers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    pending.defer(done.set)
    assert done.wait(60)  # the worker woke for them: nobody settled
    assert sorted(ran) == [(k, i) for k in range(threads) for i in range(per_thread)]
    for k in range(threads):  # each thread's jobs in the order it deferred them
        assert [i for kk, i in ran if kk == k] == list(range(per_thread))
