"""``budgetclient fake-server``: serve the offline fake Anthropic API on a local port."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fake-server",
        help="serve a caching-faithful fake Anthropic Messages API locally (no network, no key)",
        description=(
            "Serve the fake Anthropic backend from budgetclient.testing. Point an SDK at it with "
            "ANTHROPIC_BASE_URL=<printed URL> and any api_key."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: 8765; 0 picks one)")
    parser.add_argument("--output-tokens", type=int, default=20, help="output tokens per reply (default: 20)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..testing import FakeAnthropic, run_forever

    backend = FakeAnthropic(output_tokens=args.output_tokens)

    def ready(url: str) -> None:
        print(f"fake Anthropic API listening on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    run_forever(backend, args.host, args.port, on_ready=ready)
    return 0
