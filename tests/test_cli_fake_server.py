"""``budgetclient fake-server`` for each provider over a real socket; the options the three fakes share."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import budgetclient as bc
from budgetclient.testing import FakeAnthropic, FakeClock, FakeGemini, FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
REPLY = "served from the fake server"


@contextmanager
def fake_server(provider: str, *args: str) -> Iterator[tuple[str, str]]:
    """Run the command; yields the base URL it announced and the line it says to paste."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "budgetclient", "fake-server", "--provider", provider, "--port", "0", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first, hint = process.stderr.readline(), process.stderr.readline()
        match = re.search(r"listening on (http://\S+)", first)
        assert match, first + hint
        yield match.group(1), hint.strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_anthropic_over_the_socket() -> None:
    with fake_server("anthropic", "--reply-text", REPLY, "--output-tokens", "7") as (url, hint):
        assert hint == f"export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=offline"
        client = bc.Anthropic(api_key="offline", base_url=url, max_retries=0)
        with bc.task("socket") as t:
            message = client.messages.create(model="claude-sonnet-4-6", max_tokens=50,
                                             messages=[{"role": "user", "content": "hello there"}])
    assert message.content[0].text == REPLY and message.usage.output_tokens == 7
    assert t.usage.output_tokens == 7 and t.usage.input_tokens == message.usage.input_tokens


def test_openai_over_the_socket() -> None:
    with fake_server("openai", "--reply-text", REPLY) as (url, hint):
        assert hint == f"export OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=offline"
        client = bc.OpenAI(api_key="offline", base_url=f"{url}/v1", max_retries=0)
        with bc.task("socket") as t:
            reply = client.chat.completions.create(model="gpt-5-mini",
                                                   messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == REPLY
    assert reply.usage is not None
    assert t.usage.input_tokens == reply.usage.prompt_tokens
    assert t.usage.output_tokens == reply.usage.completion_tokens


def test_gemini_over_the_socket() -> None:
    from google.genai import types

    with fake_server("gemini", "--reply-text", REPLY) as (url, hint):
        assert hint == f"export GOOGLE_GEMINI_BASE_URL={url} GEMINI_API_KEY=offline"
        client = bc.GenAIClient(api_key="offline", http_options=types.HttpOptions(base_url=url))
        with bc.task("socket") as t:
            response = client.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    assert response.text == REPLY
    assert response.usage_metadata is not None
    assert t.usage.input_tokens == response.usage_metadata.prompt_token_count


def test_a_taken_port_is_a_one_line_error() -> None:
    with fake_server("anthropic") as (url, _):
        port = url.rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "budgetclient", "fake-server", "--port", port],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"budgetclient fake-server: error: port {port} on 127.0.0.1 is already in use "
        "(another fake-server?); choose another with --port N, or --port 0 for any free port"
    )


@pytest.mark.parametrize("fake_type", [FakeAnthropic, FakeOpenAI, FakeGemini])
def test_the_three_fakes_share_option_names(fake_type: Any) -> None:
    clock = FakeClock()
    fake = fake_type(clock=clock, reply_text="same words", output_tokens=5)
    assert fake.clock is clock and fake.reply_text == "same words" and fake.output_tokens == 5
    shared = ("transport", "http_client", "async_http_client", "handler", "fail_next", "cut_next_stream")
    for method in shared:
        assert callable(getattr(fake, method)), method
    start = clock.now()
    fake.advance(30)
    assert clock.now() == start + 30
    assert fake.usages == []
    fake.cut_next_stream(after_events=1)  # the same keyword in all three
    fake.fail_next(503, count=1, message="try later")
    url, body = FAILING_REQUEST[fake_type]
    with fake.http_client() as http:
        answered = http.post(url, json=body)
    assert answered.status_code == 503 and "try later" in answered.text


FAILING_REQUEST: dict[Any, tuple[str, dict[str, Any]]] = {
    FakeAnthropic: ("https://api.anthropic.com/v1/messages",
                    {"model": "claude-sonnet-4-6", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "hi"}]}),
    FakeOpenAI: ("https://api.openai.com/v1/chat/completions",
                 {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}),
    FakeGemini: ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
                 {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
}
