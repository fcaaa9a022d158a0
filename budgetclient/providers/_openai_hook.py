"""Where budgetclient rewrites an OpenAI request: before the SDK encodes its body.

Each attempt's ``httpx2.Request`` is built by the client's ``_build_request(options)`` from
``options.json_data``, a fresh per-attempt copy of what the caller passed (dicts copied, the
caller's strings kept). budgetclient plans the body there (`OpenAIMeter.plan_options`: usage in
streams, ``prompt_cache_key``, breakpoint, the drift check), so the SDK encodes the final body
once: no decode and re-encode of a large prompt, and the SDK's own encoding and request signing
(Bedrock, Vertex) see the body as sent. The plan rides on the built request to the metered HTTP
client (`_openai_http`), which meters the attempt; a request built without the hook is planned
there from its bytes instead.

``bc.OpenAI`` / ``bc.AsyncOpenAI`` override ``_build_request``. A client ``wrap()`` returns keeps
the SDK's class, so the hook is set on the instance (`install`), together with ``copy`` /
``with_options`` that hook their copies too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2

from ._openai_http import AsyncMeteredHttpClient, MeteredHttpClient
from ._openai_meter import attach_plan

__all__ = ["install", "planned_build"]

_METERED = (MeteredHttpClient, AsyncMeteredHttpClient)

Build = Callable[..., httpx2.Request]


def planned_build(client: Any, build: Build, options: Any, retries_taken: int) -> httpx2.Request:
    """``build(options)`` with the body planned first by the meter of ``client``'s HTTP client."""
    http_client = getattr(client, "_client", None)
    plan = None
    if isinstance(http_client, _METERED):
        plan = http_client.meter.plan_options(options, getattr(client, "_custom_headers", None))
    request = build(options, retries_taken=retries_taken)
    if plan is not None:
        attach_plan(request, plan)
    return request


class _HookedBuild:
    """The instance's ``_build_request``: plans, then calls its class's own."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, options: Any, *, retries_taken: int = 0) -> httpx2.Request:
        client = self.client
        build = type(client)._build_request.__get__(client)
        return planned_build(client, build, options, retries_taken)


class _HookedCopy:
    """The instance's ``copy`` / ``with_options``: its copies share the metered HTTP client, and
    are hooked as well."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, **kwargs: Any) -> Any:
        copy = type(self.client).copy(self.client, **kwargs)
        install(copy)
        return copy


def install(client: Any) -> None:
    """Plan ``client``'s requests before encoding, when its HTTP client is budgetclient's.

    Classes that plan by themselves (``bc.OpenAI``: ``_bc_plans``) are left alone.
    """
    cls = type(client)
    if getattr(cls, "_bc_plans", False) or not callable(getattr(cls, "_build_request", None)):
        return
    if not isinstance(getattr(client, "_client", None), _METERED):
        return
    attributes = vars(client)
    attributes["_build_request"] = _HookedBuild(client)
    attributes["copy"] = attributes["with_options"] = _HookedCopy(client)
