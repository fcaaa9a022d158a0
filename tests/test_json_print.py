"""`blocks.json_print`: the tools' print compares equal exactly when the SDKs would send the same
bytes (their encoders are ``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
allow_nan=False)`` plus conversions of other types), and anything orjson would write differently
from them is pickled instead."""

from __future__ import annotations

import datetime
import json
import pickle
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from budgetclient.blocks import json_print

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _sent(value: Any) -> bytes:
    """What the SDKs' encoders send for ``value``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@given(_values, _values)
def test_two_values_print_the_same_exactly_when_they_are_sent_the_same(a: Any, b: Any) -> None:
    assert (json_print(a) == json_print(b)) == (_sent(a) == _sent(b))


@given(_values)
def test_a_value_without_floats_prints_as_its_compact_json(value: Any) -> None:
    if "." not in _sent(value).decode() and "e" not in _sent(value).decode():
        assert json_print(value) == _sent(value)
    assert json_print(value) == json_print(json.loads(_sent(value)))  # an equal value, new objects


def test_types_key_order_and_text_are_told_apart() -> None:
    assert len({json_print(v) for v in (1, 1.0, True, "1", [1], None)}) == 6
    assert json_print({"a": 1, "b": 2}) != json_print({"b": 2, "a": 1})
    assert json_print([{"name": "tool", "description": "déjà vu"}]) == _sent(
        [{"name": "tool", "description": "déjà vu"}]
    )


class _Str(str):
    pass


class _Dict(dict[str, Any]):
    pass


@dataclass
class _Schema:
    type: str


def test_what_orjson_would_write_differently_is_pickled_instead() -> None:
    odd: list[Any] = [
        [_Str("tool")],  # a subclass: an SDK encoder may call its own methods
        [_Dict(a=1)],
        [datetime.date(2026, 12, 7)],  # written by the SDK as isoformat, by orjson with a time zone rule
        [_Schema("object")],
        [{1: "a"}],  # a non-string key: the SDK's encoder writes "1"
        [2**70],  # past orjson's 64-bit integers
    ]
    for value in odd:
        printed = json_print(value)
        assert printed == pickle.dumps(value, 5), value
        assert printed is not None and printed.startswith(b"\x80")
