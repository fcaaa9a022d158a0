"""Fast constructors for frozen slots dataclasses built on every call (records, blocks, requests)."""

from __future__ import annotations

from dataclasses import MISSING, field, fields, make_dataclass
from typing import Any, TypeVar, cast

__all__ = ["fast_constructor"]

_T = TypeVar("_T")


def fast_constructor(cls: type[_T]) -> type[_T]:
    """A keyword-only constructor for the frozen slots dataclass ``cls`` at a fifth of its own cost.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (about 0.3 µs
    a field, 7 µs for a `CallRecord`), and every call is metered through several records. This
    returns a function that fills a mutable twin with the same slots and then switches the
    instance's class to ``cls``, so the result is an ordinary frozen ``cls`` (equal, hashable,
    picklable); a function rather than the twin's own ``__init__``, which would cost a class call
    and a ``__post_init__`` call more. ``cls``'s ``__post_init__`` does not run: callers pass
    values that are already valid. Typed as ``cls`` itself, so every call is checked against
    ``cls``'s own signature.
    """
    specs = [
        (f.name, f.type, field(default=f.default, default_factory=f.default_factory))
        if f.default is not MISSING or f.default_factory is not MISSING
        else (f.name, f.type)
        for f in fields(cls)  # type: ignore[arg-type]
    ]
    twin = make_dataclass(f"_{cls.__name__}Builder", specs, slots=True, kw_only=True)
    probe: Any = object.__new__(twin)
    try:  # a Python whose layouts differ gets the ordinary (slower) constructor
        probe.__class__ = cls
    except TypeError:
        return cls
    return cast(type[_T], _filler(cls, twin))


def _filler(cls: type, twin: type) -> Any:
    """``def new(*, a, b=default, ...)``: a ``twin`` with each slot set, turned into a ``cls``."""
    scope: dict[str, Any] = {"_fc_new": object.__new__, "_fc_twin": twin, "_fc_cls": cls}
    scope["_fc_unset"] = object()
    params: list[str] = []
    lines = ["    _fc_obj = _fc_new(_fc_twin)"]
    for f in fields(cls):
        name = f.name
        if name.startswith("_fc_") or not name.isidentifier():
            raise ValueError(f"fast_constructor cannot build a field named {name!r}")
        if f.default is not MISSING:
            scope[f"_fc_default_{name}"] = f.default
            params.append(f"{name}=_fc_default_{name}")
            lines.append(f"    _fc_obj.{name} = {name}")
        elif f.default_factory is not MISSING:
            scope[f"_fc_factory_{name}"] = f.default_factory
            params.append(f"{name}=_fc_unset")
            lines.append(f"    _fc_obj.{name} = _fc_factory_{name}() if {name} is _fc_unset else {name}")
        else:
            params.append(name)
            lines.append(f"    _fc_obj.{name} = {name}")
    lines += ["    _fc_obj.__class__ = _fc_cls", "    return _fc_obj"]
    source = f"def new(*, {', '.join(params)}):\n" + "\n".join(lines) + "\n"
    exec(compile(source, f"<fast_constructor {cls.__qualname__}>", "exec"), scope)
    new = scope["new"]
    new.__qualname__ = new.__name__ = f"new_{cls.__name__}"
    return new
