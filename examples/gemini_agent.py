"""A Gemini support agent on budgetclient, fully offline, and what its shift cost.

The agent answers tickets with automatic function calling (each ticket is two model requests)
under a long, stable policy prompt. budgetclient meters every request into the running task and,
because implicit caching is not hitting here, moves the policy and tools into a managed
``cachedContents`` entry once reuse pays for its storage, then deletes it when the client closes.

The model is ``budgetclient.testing.FakeGemini``: the real google-genai SDK talks to it through an
httpx2 transport, so no network and no API key are needed. Run::

    python -m pip install -e '.[google]'   # from a checkout; or: pip install 'budgetclient[google]'
    python examples/gemini_agent.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog
from google.genai import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing.fake_gemini import FakeGemini

MODEL = "gemini-2.5-flash"
POLICY = "You are the support agent of Acme Parcels. " + " ".join(
    f"Rule {i}: refunds for parcel class {i % 7} follow section {i % 13} of the handbook."
    for i in range(1500)
)
TICKETS = [f"Ticket {n}: where is my parcel ACME-{1000 + n}?" for n in range(8)]


def lookup_parcel(parcel_id: str) -> dict[str, str]:
    """Where a parcel is now."""
    return {"parcel_id": parcel_id, "status": "out for delivery"}


def run_shift(fake: FakeGemini, cache: str) -> bc.Task:
    client = bc.GenAIClient(
        api_key="offline-demo-key",
        http_options=types.HttpOptions(
            client_args={"transport": fake.transport()}, async_client_args={"transport": fake.transport()}
        ),
        cache=cache,
    )
    config = types.GenerateContentConfig(system_instruction=POLICY, tools=[lookup_parcel])
    with bc.task("support-shift", metadata={"cache": cache}) as shift, client:
        for ticket in TICKETS:
            chat = client.chats.create(model=MODEL, config=config)  # one conversation per ticket
            chat.send_message(ticket)
            fake.advance(45)  # a ticket every 45 seconds, on the fake server's clock
    return shift


def report(shift: bc.Task) -> None:
    print(f"\n== {shift.name} (cache={shift.metadata['cache']}) ==")
    for record in shift.records:
        u = record.usage
        print(
            f"  {record.operation:<17} in={u.input_tokens:>6} cached={u.cache_read_tokens:>6} "
            f"out={u.output_tokens:>3}  ${record.cost}"
        )
    b = shift.cost_breakdown
    print(f"  requests: {shift.usage.requests}   cache hit rate: {shift.cache_hit_rate:.0%}")
    print(
        f"  cost: ${shift.cost}  (uncached input ${b.uncached_input}, cache reads ${b.cache_read}, "
        f"output ${b.output}, cache storage ${b.storage})"
    )


def main() -> None:
    # budgetclient logs every call (``llm.call``) with structlog; keep this demo's output to the report
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bc.configure(ledger="memory://gemini-agent-example")
    managed = run_shift(FakeGemini(implicit_caching=False), cache="auto")
    plain = run_shift(FakeGemini(implicit_caching=False), cache="off")
    report(managed)
    report(plain)
    if managed.cost is not None and plain.cost is not None:
        print(f"\nmanaged caching saved ${plain.cost - managed.cost} on this shift")


if __name__ == "__main__":
    main()
