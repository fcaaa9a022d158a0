"""Fail a test when the calls it makes break their own prompt cache.

::

    def test_agent_prefix_is_stable():
        bc.testing.assert_cache_stable(lambda: run_agent(client, "triage ticket 42"))

    async def test_async_agent():
        await bc.testing.assert_cache_stable(lambda: run_agent_async(aclient, "..."))

Every `PrefixDrift` a budgetclient client reports while ``fn`` runs (through
`budgetclient.drift.notify_drift`) is collected; if any was seen, ``AssertionError`` lists them
with the segment, byte offset, cause and excerpts. Clients must use ``drift="warn"`` (the default)
for drifts to be reported; with ``drift="raise"`` the call itself raises instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..drift import PrefixDrift, add_drift_listener

__all__ = ["assert_cache_stable", "collect_drifts"]


@contextmanager
def collect_drifts() -> Iterator[list[PrefixDrift]]:
    """Collect every drift reported while the block runs (from any thread) into the yielded list."""
    drifts: list[PrefixDrift] = []
    remove = add_drift_listener(drifts.append)
    try:
        yield drifts
    finally:
        remove()


def _check(drifts: list[PrefixDrift], allow: Callable[[PrefixDrift], bool] | None) -> None:
    found = [d for d in drifts if allow is None or not allow(d)]
    if not found:
        return
    lines = [f"the cacheable prompt prefix drifted in {len(found)} call(s):"]
    lines += [f"  - {d.describe()}" + (f" [provider: {d.provider_reason}]" if d.provider_reason else "")
              for d in found]
    lines.append("Keep tools, system and earlier messages byte-identical between calls "
                 "(no timestamps, ids or reordered keys in the prefix).")
    raise AssertionError("\n".join(lines))


def assert_cache_stable(
    fn: Callable[[], Any], *, allow: Callable[[PrefixDrift], bool] | None = None
) -> Any:
    """Run ``fn``; raise ``AssertionError`` if any call it made drifted. Returns ``fn``'s result.

    ``fn`` may be sync or async (returning an awaitable). Inside a running event loop an async
    ``fn`` gives back an awaitable to ``await``; outside one it is run to completion here.
    ``allow(drift)`` returning True ignores a drift the test expects.
    """
    with collect_drifts() as drifts:
        result = fn()
    if not inspect.isawaitable(result):
        _check(drifts, allow)
        return result
    return _finish_async(result, drifts, allow)


def _finish_async(
    pending: Awaitable[Any], earlier: list[PrefixDrift], allow: Callable[[PrefixDrift], bool] | None
) -> Any:
    async def run() -> Any:
        with collect_drifts() as drifts:
            value = await pending
        _check([*earlier, *drifts], allow)
        return value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    return run()
