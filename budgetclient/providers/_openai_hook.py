"""Where budgetclient rewrites an OpenAI request: before the SDK encodes its body.

Each attempt's request is built by the client's ``_build_request(options, *, retries_taken)``
from ``options.json_data``, a fresh per-attempt copy of what the caller passed (dicts copied, the
caller's strings kept). budgetclient prepares the body there (`OpenAIMeter.prepare_options`: usage in
streams, ``prompt_cache_key``, breakpoint, the drift check), so the SDK encodes the final body
once: no decode and re-encode of a large prompt, and the SDK's own encoding and request signing
(``_prepare_request``: Bedrock SigV4, any signing subclass) see the body as sent. The prepared body rides
on the built request to the metered HTTP client (`_openai_http`), which meters the attempt. A
request that arrives there without a prepared body (a raw ``content=`` body, or a client whose hook could
not be used) is metered exactly as it is: its bytes may already be signed, so they are never
rewritten.

``bc.OpenAI`` / ``bc.AsyncOpenAI`` override ``_build_request``. A client ``wrap()`` returns keeps
the SDK's class, so the hook is set on the instance (`install`), together with ``copy`` /
``with_options`` that hook their copies too.

``_build_request`` is private: `build_hook_problem` checks that it still takes what budgetclient
passes and reads. When it does not (a future SDK, or a subclass that changed it), requests are
metered only, with one logged warning, and every call goes through untouched.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
import openai

from ._hooks import hook_unavailable
from ._openai_http import is_metered, share_meter
from ._openai_meter import attach_prepared_body

__all__ = ["build_hook_problem", "install", "prepared_build", "warn_hook_unavailable"]

Build = Callable[..., httpx2.Request]

_OPTION_FIELDS = ("method", "url", "json_data", "extra_json", "content", "files", "headers")
"""What `OpenAIMeter.prepare_options` reads from the SDK's ``FinalRequestOptions``."""
_OPTION_FIELD_SET = frozenset(_OPTION_FIELDS)


def warn_hook_unavailable(hook: str, problem: str) -> None:
    """One logged warning per hook and problem, for the whole process."""
    hook_unavailable(
        "openai",
        openai.__version__,
        hook,
        problem=problem,
        fallback="requests are metered as sent, without cache placement or drift checks",
    )


def build_hook_problem(build: Any) -> str | None:
    """Why ``build`` (a ``_build_request``) cannot take budgetclient's hook, or None when it can.

    The hook is called as the SDK calls it, ``build(options, retries_taken=n)``, and passes the
    arguments on untouched; it needs the first positional parameter to be the request options,
    ``retries_taken`` to be accepted, and nothing else to be required.
    """
    try:
        return _cached_problem(build)
    except TypeError:  # an unhashable callable: checked every time
        return _problem(build)


@functools.cache
def _cached_problem(build: Any) -> str | None:
    return _problem(build)


def _problem(build: Any) -> str | None:
    if not callable(build):
        return "missing"
    try:
        parameters = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):
        return "signature unreadable"
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]  # read from the class: unbound
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or parameters[0].kind not in positional or parameters[0].name != "options":
        return f"signature changed: {inspect.signature(build)}"
    names = {p.name for p in parameters}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    required = [
        p.name
        for p in parameters[1:]
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if ("retries_taken" not in names and not takes_any) or required:
        return f"signature changed: {inspect.signature(build)}"
    return None


def _options_problem(options: Any) -> str | None:
    missing = [name for name in _OPTION_FIELDS if not hasattr(options, name)]
    return f"request options lack {', '.join(missing)}" if missing else None


def prepared_build(
    client: Any, build: Build, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> httpx2.Request:
    """``build(*args, **kwargs)``, the body prepared first by the meter of ``client``'s HTTP client.

    ``args`` / ``kwargs`` are what the SDK passed, handed on unchanged.
    """
    return _prepared(client, getattr(build, "__func__", build), build, args, kwargs)


def _prepared(
    client: Any, function: Any, build: Build, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> httpx2.Request:
    """`prepared_build`, given ``function``: ``build`` unbound (what `build_hook_problem` checks)."""
    http_client = getattr(client, "_client", None)
    decided = None
    if is_metered(http_client):
        try:  # `build_hook_problem`, inline
            problem = _cached_problem(function)
        except TypeError:  # an unhashable callable: checked every time
            problem = _problem(function)
        options = args[0] if args else kwargs.get("options")
        if problem is None:
            # the SDK's options (a pydantic model) keep their fields in their ``__dict__``: all of
            # them there is all of them present, one set comparison instead of a ``hasattr`` each
            fields = getattr(options, "__dict__", None)
            if type(fields) is not dict or not fields.keys() >= _OPTION_FIELD_SET:
                problem = _options_problem(options)
        if problem is None:
            decided = http_client.meter.prepare_options(options, getattr(client, "_custom_headers", None))
        else:
            warn_hook_unavailable("_build_request", problem)
    request = build(*args, **kwargs)
    if decided is not None:
        try:
            attach_prepared_body(request, decided)
        except Exception:  # a request type without attributes: metered as sent
            warn_hook_unavailable("_build_request", f"its {type(request).__qualname__} takes no attributes")
    return request


class _HookedBuild:
    """The instance's ``_build_request``: prepares the body, then calls its class's own."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        client = self.client
        function = type(client)._build_request
        return _prepared(client, function, function.__get__(client), args, kwargs)


class _HookedCopy:
    """The instance's ``copy`` / ``with_options``: its copies share the meter (an ``http_client``
    given to the copy is metered by it too), and are hooked as well."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, **kwargs: Any) -> Any:
        kwargs = share_meter(getattr(self.client, "_client", None), kwargs)
        copy = type(self.client).copy(self.client, **kwargs)
        install(copy)
        return copy


def install(client: Any) -> None:
    """Prepare ``client``'s requests before encoding, when its HTTP client is budgetclient's.

    Classes that prepare by themselves (``bc.OpenAI``: ``_bc_prepares``) are left alone. A class whose
    ``_build_request`` cannot take the hook keeps its own: its requests are metered only.
    """
    cls = type(client)
    if getattr(cls, "_bc_prepares", False) or not is_metered(getattr(client, "_client", None)):
        return
    problem = build_hook_problem(getattr(cls, "_build_request", None))
    if problem is not None:
        warn_hook_unavailable("_build_request", problem)
        return
    attributes = vars(client)
    attributes["_build_request"] = _HookedBuild(client)
    attributes["copy"] = attributes["with_options"] = _HookedCopy(client)
