"""``budgetclient fake-server``: serve one offline fake provider API on a local port.

The fakes bill prompt caching like the real APIs (see `budgetclient.testing`), so code pointed at
the printed URL runs, and is metered, with no network and no key.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Any

from . import CommandError

__all__ = ["PROVIDERS", "connect_hint", "register", "run"]

PROVIDERS = ("anthropic", "openai", "gemini")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fake-server",
        help="serve a caching-faithful fake Anthropic, OpenAI or Gemini API locally (no network, no key)",
        description=(
            "Serve one of the fake backends from budgetclient.testing on a local port and print how to "
            "point the SDK at it (a base-URL environment variable; any API key works)."
        ),
    )
    parser.add_argument("--provider", choices=PROVIDERS, default="anthropic",
                        help="which API to serve (default: anthropic)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: 8765; 0 picks one)")
    parser.add_argument("--output-tokens", type=int, default=None, metavar="N",
                        help="output tokens per reply (default: the reply text's own count)")
    parser.add_argument("--reply-text", default=None, metavar="TEXT",
                        help="the model's answer to every request")
    parser.set_defaults(func=run)


def make_backend(provider: str, *, reply_text: str | None = None, output_tokens: int | None = None) -> Any:
    """A fresh fake for ``provider``, built from the options all three fakes name the same way."""
    from ..testing import FakeAnthropic, FakeGemini, FakeOpenAI

    options: dict[str, Any] = {}
    if reply_text is not None:
        options["reply_text"] = reply_text
    if output_tokens is not None:
        options["output_tokens"] = output_tokens
    if provider == "anthropic":
        return FakeAnthropic(**options)
    if provider == "openai":
        return FakeOpenAI(**options)
    return FakeGemini(**options)


def connect_hint(provider: str, base_url: str) -> str:
    """The environment variable that points ``provider``'s SDK at ``base_url``."""
    if provider == "openai":
        return f"export OPENAI_BASE_URL={base_url}/v1 OPENAI_API_KEY=offline"
    if provider == "gemini":
        return f"export GOOGLE_GEMINI_BASE_URL={base_url} GEMINI_API_KEY=offline"
    return f"export ANTHROPIC_BASE_URL={base_url} ANTHROPIC_API_KEY=offline"


def run(args: argparse.Namespace) -> int:
    from ..testing import run_forever

    backend = make_backend(args.provider, reply_text=args.reply_text, output_tokens=args.output_tokens)

    def ready(url: str) -> None:
        print(f"fake {args.provider} API listening on {url} (Ctrl-C to stop); in another shell:\n"
              f"  {connect_hint(args.provider, url)}", file=sys.stderr, flush=True)

    try:
        run_forever(backend, args.host, args.port, on_ready=ready)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {args.port} on {args.host} is already in use (another fake-server?); "
                "choose another with --port N, or --port 0 for any free port"
            ) from None
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0
