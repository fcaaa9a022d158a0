"""hooks.Hooks: the one registry every module's hooks live in."""

from __future__ import annotations

from structlog.testing import capture_logs

from budgetclient.hooks import Hooks, run_each


def test_hooks_run_in_the_order_added_and_a_remover_removes_once() -> None:
    seen: list[str] = []
    hooks: Hooks[None, str] = Hooks("test.hook_failed")
    remove_a = hooks.add(lambda v: seen.append(f"a{v}"))
    hooks.add(lambda v: seen.append(f"b{v}"))
    hooks.run("1")
    remove_a()
    remove_a()  # removing twice is harmless
    hooks.run("2")
    assert seen == ["a1", "b1", "b2"]


def test_a_raising_hook_is_logged_and_the_next_still_runs() -> None:
    seen: list[int] = []

    def broken(value: int) -> None:
        raise RuntimeError("hook bug")

    hooks: Hooks[None, int] = Hooks("test.hook_failed")
    hooks.add(broken)
    hooks.add(seen.append)
    with capture_logs() as logs:
        hooks.run(7)
    assert seen == [7]
    (event,) = logs
    assert event["event"] == "test.hook_failed" and event["error"] == "RuntimeError"
    assert event["hook"] == repr(broken)


def test_collect_keeps_what_start_hooks_return() -> None:
    ends: list[str] = []
    hooks: Hooks[str] = Hooks("test.hook_failed")
    hooks.add(lambda: "span-1")
    hooks.add(lambda: None)  # a start hook with nothing to end
    hooks.add(lambda: str(1 / 0))  # raises: logged, skipped
    hooks.add(lambda: "span-2")
    with capture_logs() as logs:
        assert hooks.collect() == ("span-1", "span-2")
    assert [e["error"] for e in logs] == ["ZeroDivisionError"]
    run_each("test.hook_failed", (ends.append, lambda _: 1 / 0, ends.append), "done")
    assert ends == ["done", "done"]


def test_a_registry_snapshot_is_unchanged_by_a_hook_added_while_running() -> None:
    seen: list[str] = []
    hooks: Hooks[None, str] = Hooks("test.hook_failed")

    def adds_another(value: str) -> None:
        seen.append("first")
        hooks.add(lambda v: seen.append("late"))

    hooks.add(adds_another)
    hooks.run("x")
    assert seen == ["first"]  # the late hook runs from the next event on
    assert len(hooks.hooks) == 2
