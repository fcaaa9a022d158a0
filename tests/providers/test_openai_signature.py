"""``bc.OpenAI`` / ``bc.AsyncOpenAI`` show the installed SDK's constructor to ``inspect``, ``help()``,
IDEs and type checkers, plus budgetclient's keyword-only options."""

from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import openai
import pytest

import budgetclient as bc
from budgetclient.providers.openai import AsyncOpenAIParams, OpenAIParams

OURS = {"cache": "auto", "cache_ttl": "auto", "drift": "warn"}
PAIRS = [(bc.OpenAI, openai.OpenAI, OpenAIParams), (bc.AsyncOpenAI, openai.AsyncOpenAI, AsyncOpenAIParams)]


def _sdk_parameters(sdk_cls: type[Any]) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(sdk_cls.__init__).parameters.items() if n != "self"}


@pytest.mark.parametrize(("ours", "sdk", "_params"), PAIRS)
def test_runtime_signature_is_the_installed_sdks_plus_our_options(ours: Any, sdk: Any, _params: Any) -> None:
    sdk_parameters = _sdk_parameters(sdk)
    signature = inspect.signature(ours)
    expected = [(p.name, p.kind, p.default, p.annotation) for p in sdk_parameters.values()]
    got = [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]
    assert got[: len(expected)] == expected, f"openai {openai.__version__}"
    assert {p.name: p.default for p in signature.parameters.values() if p.name in OURS} == OURS
    assert all(signature.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in OURS)
    assert next(iter(inspect.signature(ours.__init__).parameters)) == "self"
    shown = pydoc.render_doc(ours, renderer=pydoc.plaintext)  # what help() prints
    assert "api_key:" in shown and "cache_ttl:" in shown


@pytest.mark.parametrize(("ours", "sdk", "_params"), PAIRS)
def test_copy_takes_every_constructor_parameter_and_our_options(ours: Any, sdk: Any, _params: Any) -> None:
    """The SDK's own ``test_copy_signature``, plus: ``copy(cache=...)`` gives the copy those options."""
    copy = inspect.signature(ours.copy)
    not_copied = {"transport", "proxies", "_strict_response_validation"}  # as the SDK's test excludes
    missing = [name for name in inspect.signature(ours.__init__).parameters if name not in copy.parameters]
    assert set(missing) <= {"self", *not_copied}, f"openai {openai.__version__}: copy() lacks {missing}"
    client = ours(api_key="sk-test", drift="off")
    copied = client.with_options(cache="off", timeout=5)
    assert copied.budget_options == bc.ClientOptions(cache="off", drift="off")
    assert client.budget_options == bc.ClientOptions(drift="off")
    assert copied._client.inner is client._client.inner  # one HTTP client, as SDK copies share it
    with pytest.raises(bc.ConfigurationError):
        client.copy(cache_ttl="2h")
    # None, the default copy() shows for our options, keeps the client's (as the SDK's own None does)
    kept = copied.copy(cache=None, cache_ttl=None, drift=None)
    assert kept.budget_options == bc.ClientOptions(cache="off", drift="off")


@pytest.mark.parametrize(("ours", "sdk", "_params"), PAIRS)
def test_type_hints_resolve_to_the_sdks(ours: Any, sdk: Any, _params: Any) -> None:
    for method in ("__init__", "copy", "with_options"):
        hints = typing.get_type_hints(getattr(ours, method))
        sdk_hints = typing.get_type_hints(getattr(sdk, method))
        assert {k: v for k, v in hints.items() if k not in OURS} == sdk_hints, f"openai {openai.__version__}"
        assert set(OURS) <= set(hints)


def _members(annotation: Any) -> list[str]:
    """The members of an annotation's union, as written (both modules use postponed annotations)."""
    text = getattr(annotation, "__forward_arg__", annotation)
    return sorted(part.strip() for part in str(text).split(" | "))


@pytest.mark.parametrize(("ours", "sdk", "params"), PAIRS)
def test_every_sdk_parameter_is_declared_for_type_checkers(ours: Any, sdk: Any, params: Any) -> None:
    declared: dict[str, Any] = {}
    for base in reversed(params.__mro__):  # a TypedDict keeps its own and inherited keys' annotations
        declared.update(getattr(base, "__annotations__", {}))
    sdk_parameters = _sdk_parameters(sdk)
    missing = sorted(set(sdk_parameters) - set(declared))
    assert not missing, (
        f"openai {openai.__version__}: {sdk.__name__}.__init__ takes {missing}, not declared in "
        f"budgetclient.providers.openai.{params.__name__}"
    )
    stale = sorted(set(declared) - set(sdk_parameters))
    assert not stale, f"openai {openai.__version__}: {params.__name__} declares {stale}, no longer the SDK's"
    differing = {
        name: (_members(declared[name]), _members(p.annotation))
        for name, p in sdk_parameters.items()
        if _members(declared[name]) != _members(p.annotation)
    }
    assert not differing, f"openai {openai.__version__}: declared types differ from the SDK's: {differing}"


def test_unknown_arguments_fail_as_the_sdks_do() -> None:
    with pytest.raises(TypeError) as raw:
        openai.OpenAI(api_kye="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError) as ours:
        bc.OpenAI(api_kye="x")  # type: ignore[call-arg]
    assert str(ours.value).split("() ", 1)[1] == str(raw.value).split("() ", 1)[1]


def test_mypy_rejects_a_misspelled_argument(tmp_path: Path) -> None:
    """Run mypy on a snippet. Only budgetclient's two modules are analysed (imports skipped, so
    it takes a second or two): enough to check the declared names and our options' types; the
    SDK's own types are compared textually above."""
    pytest.importorskip("mypy")
    package = Path(bc.__file__).parent
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from budgetclient.providers.openai import AsyncOpenAI, OpenAI\n"
        "OpenAI(api_key='x', max_retries=1, cache='off', _strict_response_validation=True)\n"
        "AsyncOpenAI(base_url='http://localhost', drift='raise')\n"
        "OpenAI(api_kye='x')\n"
        "AsyncOpenAI(drift='loud')\n"
    )
    command = [
        sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=skip", "--ignore-missing-imports",
        "--config-file", str(snippet), "--cache-dir", str(tmp_path / "cache"),
        str(package / "providers" / "openai.py"), str(package / "options.py"), str(snippet),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, cwd=package.parent).stdout
    errors = [line for line in output.splitlines() if line.startswith(str(snippet)) and ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["4", "5"], output
    assert '"api_kye"' in errors[0] and '"drift"' in errors[1]
