"""A small tool-using support agent on ``bc.OpenAI``, run offline against the fake OpenAI backend.

    python -m pip install -e '.[openai]'   # from a checkout; or: pip install 'budgetclient[openai]'
    python examples/openai_agent.py

The agent code is ordinary openai SDK code: only the client comes from budgetclient. Each ticket
runs in a ``bc.task``; budgetclient adds a stable ``prompt_cache_key``, marks the end of the long
system prompt with a ``prompt_cache_breakpoint`` (gpt-5.6 and later), meters every hop of the
loop (the streamed final answer included) and prints what each ticket cost.
No network and no API key: the fake backend answers with OpenAI's caching rules.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import budgetclient as bc
from budgetclient.testing.fake_openai import FakeOpenAI, FakeReply

MODEL = "gpt-5.6-terra"
POLICY = (
    "You are the support agent of Acme Outdoor. Be polite and brief. Look an order up before "
    "answering anything about it. Refunds are allowed within 30 days of delivery for unused items; "
    "never promise a refund the policy does not allow, and always quote the order id. "
) * 30
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Status and delivery date of an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund an order that the policy allows to be refunded.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
]
ORDERS = {
    "A-1001": {"status": "delivered", "days_since_delivery": 12},
    "A-2002": {"status": "delivered", "days_since_delivery": 45},
}


def run_tool(name: str, arguments: Mapping[str, Any]) -> str:
    order = ORDERS.get(str(arguments.get("order_id")), {})
    if name == "lookup_order":
        return json.dumps({"order_id": arguments.get("order_id"), **order})
    refundable = order.get("days_since_delivery", 99) <= 30
    return json.dumps({"order_id": arguments.get("order_id"), "refunded": refundable})


def fake_model(body: Mapping[str, Any]) -> FakeReply:
    """What the fake model does: look the order up, refund if allowed, then answer."""
    messages = body["messages"]
    order_id = next(
        word.strip("?.,")
        for m in messages
        if m["role"] == "user"
        for word in m["content"].split()
        if word.startswith("A-")
    )
    results = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
    if not results:
        return FakeReply(tool_calls=(("lookup_order", {"order_id": order_id}),))
    if len(results) == 1 and results[0].get("days_since_delivery", 99) <= 30:
        return FakeReply(tool_calls=(("issue_refund", {"order_id": order_id}),))
    if results[-1].get("refunded"):
        return FakeReply(text=f"Order {order_id} is refunded; you will see the money within 5 days.")
    return FakeReply(text=f"Order {order_id} was delivered more than 30 days ago, so it cannot be refunded.")


def handle_ticket(client: bc.OpenAI, question: str) -> str:
    """A plain OpenAI tool loop; the last answer is streamed like a chat UI would."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": POLICY},
        {"role": "user", "content": question},
    ]
    for _ in range(5):
        completion = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        message = completion.choices[0].message
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            if call.type == "function":
                result = run_tool(call.function.name, json.loads(call.function.arguments))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    stream = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


def main() -> None:
    # budgetclient logs every call (``llm.call``) and task (``task.end``); keep this demo's output short
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if "BUDGETCLIENT_LEDGER" not in os.environ:
        bc.configure(ledger="memory://openai-agent-example")  # keep example runs out of your real ledger
    fake = FakeOpenAI(responder=fake_model)
    client = bc.OpenAI(api_key="sk-offline-example", http_client=fake.http_client())
    for question in ("Can I get a refund for order A-1001?", "Please refund order A-2002."):
        with bc.task("support-ticket", metadata={"question": question}) as ticket:
            answer = handle_ticket(client, question)
        usage = ticket.usage
        print(f"Q: {question}\nA: {answer}")
        print(
            f"   {ticket.calls} calls, {usage.input_tokens} input tokens "
            f"({usage.cache_read_tokens} read from cache, {usage.cache_write_tokens} written), "
            f"{usage.output_tokens} output tokens, cache hit rate {ticket.cache_hit_rate:.0%}, "
            f"cost ${ticket.cost:.6f}\n"
        )
    bc.flush()


if __name__ == "__main__":
    main()
