"""`budgetclient.cli._json.dumps_indented` gives exactly ``json.dumps(value, indent=2)``'s text."""

from __future__ import annotations

import json
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest

from budgetclient.cli._json import dumps_indented


class _Level(IntEnum):
    HIGH = 3


class _Name(str):
    pass


CASES: list[Any] = [
    None, True, False, 0, -7, 2**70, 0.1, 1e-7, 1e300, float("nan"), float("inf"), float("-inf"), "",
    "plain", "quote \" backslash \\ tab \t newline \n", "é ✓ \U0001f600 \x00 \x1f", [], {}, (),
    [[], {}, [[]], {"a": {}}], (1, "two", 3.0, None), {"k": [1, {"n": [True, False, None]}]},
    {"": "", "é": "✓", "a\nb": [1.5, -0.0]},
    [{"kind": "cache_hit_rate", "value": 0.49738231609092537, "details": {"calls": 9, "tokens": 44696}}],
    # not plain JSON types: the standard library's own text
    {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    [_Level.HIGH, _Name("sub"), {"level": _Level.HIGH}],
    {"nested": [{"deep": (_Name("x"),)}]},
]  # fmt: skip


@pytest.mark.parametrize("value", CASES)
def test_same_text_as_json_dumps(value: Any) -> None:
    assert dumps_indented(value) == json.dumps(value, indent=2)


def test_unencodable_raises_as_json_dumps_does() -> None:
    with pytest.raises(TypeError):
        json.dumps({"d": Decimal(1)}, indent=2)
    with pytest.raises(TypeError):
        dumps_indented({"d": Decimal(1)})
