"""Records made storable at the ledger's boundary: counts clamped, text made encodable, lengths bounded.

A record the database refuses used to be retried forever, and every record behind it queued up
unwritten. Most refusals are predictable: a count of 2^63 or more (a provider or proxy reporting
nonsense, task totals summing past it) overflows SQLite's and PostgreSQL's 64-bit integers; a lone
surrogate (an undecodable filename in metadata, ``os.fsdecode(b"\\xff")``) cannot be encoded as
UTF-8; a very long task name overflows a PostgreSQL index entry (2,704 bytes). So every record is
normalised here, and each change is logged as ``ledger.record_invalid`` (the field and the
problem, never the value). Every record is `screen`-ed before its first write (times and counts,
cheap); a record the database refuses is found by bisecting its batch and gets the whole of
`normalise` (text made encodable, lengths bounded, metadata cleaned) before one more attempt. A
record still refused is quarantined by the writer (see ``writer.py``). The writer thread writes
~150k records/s; normalising every record up front would halve that for records that are, but
for one in millions, fine as they are.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from .._log import log
from ..usage import Usage

__all__ = ["MAX_COUNT", "MAX_KEY_BYTES", "MAX_TEXT_BYTES", "Unstorable", "clean_text", "normalise", "screen"]

MAX_COUNT = 2**63 - 1
"""The largest count a 64-bit signed integer column holds; larger counts are clamped to it."""
MAX_KEY_BYTES = 1024
"""Longest id, name, model or other indexed or grouped text, in UTF-8 bytes."""
MAX_TEXT_BYTES = 16_384
"""Longest free text (an error message, an alert message)."""

_KEY_FIELDS = {
    "call": ("id", "provider", "model", "operation", "status", "task_id", "task_name", "conversation",
             "prefix_hash", "response_id", "service_tier"),
    "task": ("id", "name", "parent_id", "outcome"),
    "alert": ("id", "kind", "task_name", "task_id"),
}  # fmt: skip
_TIME_FIELDS = {"call": ("started_at",), "task": ("started_at", "ended_at"), "alert": ("created_at",)}
_TEXT_FIELDS = {"call": ("error",), "task": ("error",), "alert": ("message",)}
_INT_FIELDS = {"call": ("attempt", "request_bytes", "http_status"), "task": ("calls",), "alert": ()}
_USAGE_FIELDS = (
    "input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_long_tokens",
    "output_tokens", "reasoning_tokens", "requests",
)  # fmt: skip


def clean_text(text: str, max_bytes: int) -> str:
    """``text`` as storable UTF-8 of at most ``max_bytes`` bytes.

    Undecodable bytes that ``os.fsdecode`` smuggled in as surrogates (``\udcff``) come back as
    ``\xff`` text (what ``surrogateescape`` stood for), other lone surrogates as U+FFFD. Text over
    the limit is cut and ends in ``…#`` and 16 hex digits of its SHA-256, so two long names that
    differ only at their end stay distinct. (NUL is left to the backend: SQLite stores it.)
    """
    try:
        data = text.encode()
    except UnicodeEncodeError:
        text = "".join(map(_clean_char, text))
        data = text.encode()
    if len(data) <= max_bytes:
        return text
    suffix = "…#" + hashlib.sha256(data).hexdigest()[:16]
    keep = max_bytes - len(suffix.encode())
    return data[:keep].decode("utf-8", "ignore") + suffix


def _clean_char(ch: str) -> str:
    if "\udc80" <= ch <= "\udcff":
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return "\ufffd" if "\ud800" <= ch <= "\udfff" else ch


def _text_ok(text: str, max_bytes: int) -> bool:
    if text.isascii():
        return len(text) <= max_bytes
    try:
        return len(text.encode()) <= max_bytes
    except UnicodeEncodeError:
        return False


def _clean_value(value: Any, depth: int = 0) -> Any:
    """A JSON-like value with every string (keys included) made encodable, nested 20 deep at most."""
    if isinstance(value, str):
        return value if _text_ok(value, MAX_TEXT_BYTES) else clean_text(value, MAX_TEXT_BYTES)
    if isinstance(value, bytes):
        return clean_text(value.decode("utf-8", "surrogateescape"), MAX_TEXT_BYTES)
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_COUNT <= value <= MAX_COUNT:
        return str(value)  # JSON holds it, but a database's JSON functions may not
    if depth >= 20:
        return repr(value)[:200] if isinstance(value, dict | list | tuple) else value
    if isinstance(value, dict):
        return {_clean_value(str(k) if not isinstance(k, str) else k, depth + 1): _clean_value(v, depth + 1)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(v, depth + 1) for v in value]
    return value


def _metadata_needs_cleaning(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return not _text_ok(value, MAX_TEXT_BYTES)
    if isinstance(value, bytes):
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return not -MAX_COUNT <= value <= MAX_COUNT
    if isinstance(value, dict):
        return depth >= 20 or any(
            _metadata_needs_cleaning(k, depth + 1) or _metadata_needs_cleaning(v, depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, list | tuple | set | frozenset):
        return depth >= 20 or any(_metadata_needs_cleaning(v, depth + 1) for v in value)
    return False


def _clamp_usage(usage: Usage, problems: list[str]) -> Usage:
    values = [getattr(usage, name) for name in _USAGE_FIELDS]
    if max(values) <= MAX_COUNT:
        return usage
    for name, value in zip(_USAGE_FIELDS, values, strict=True):
        if value > MAX_COUNT:
            problems.append(f"usage.{name}: count >= 2^63, clamped")
    return Usage(**{name: min(value, MAX_COUNT) for name, value in zip(_USAGE_FIELDS, values, strict=True)})


class Unstorable(ValueError):
    """A record no normalisation can make storable (the writer quarantines it)."""


_USAGE_OF = attrgetter(*_USAGE_FIELDS)
_KEYS_OF = {kind: attrgetter(*names) for kind, names in _KEY_FIELDS.items()}
_LONG_INT = re.compile(r"\d{19}")
"""19 digits in a repr: an int that may not fit 64 bits (checked exactly by the slow path)."""


def _looks_storable(kind: str, record: Any) -> bool:
    """The fast path (most records): every count in range, key text ASCII and short, metadata plain."""
    for moment in _TIMES_OF[kind](record):
        if moment.__class__ is not datetime or moment.year in (1, 9999):
            return False
    usage = getattr(record, "usage", None)
    if usage is not None and max(_USAGE_OF(usage)) > MAX_COUNT:
        return False
    for text in _KEYS_OF[kind](record):
        if text is not None and not (len(text) <= MAX_KEY_BYTES and text.isascii()):
            return False
    for value in _INTS_OF[kind](record):
        if value is not None and not -MAX_COUNT <= value <= MAX_COUNT:
            return False
    for value in _FREE_TEXT_OF[kind](record):
        if value is not None and not (len(value) <= MAX_TEXT_BYTES and value.isascii()):
            return False
    nested = record.details if kind == "alert" else record.metadata
    if nested:
        text = repr(nested)  # escapes lone surrogates as \udxxx; plain ASCII text stays plain
        if not text.isascii() or "\\ud" in text or len(text) > MAX_TEXT_BYTES or _LONG_INT.search(text):
            return False
    return True


def _getter(names: tuple[str, ...]) -> Any:
    """``attrgetter`` that always returns a tuple (one name included)."""
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda record: (one(record),)
    return attrgetter(*names) if names else lambda record: ()


_TIMES_OF = {kind: _getter(names) for kind, names in _TIME_FIELDS.items()}
_INTS_OF = {kind: _getter(names) for kind, names in _INT_FIELDS.items()}
_FREE_TEXT_OF = {kind: _getter(names) for kind, names in _TEXT_FIELDS.items()}


def screen(kind: str, record: Any) -> Any:
    """The check every record gets before its first write, kept to what is cheap (~0.3 us): times
    inside the calendar and counts inside 64 bits. Anything else a database refuses is found by
    bisecting the refused batch, and the refused record gets the whole of `normalise` then."""
    for moment in _TIMES_OF[kind](record):
        if moment.__class__ is not datetime or moment.year in (1, 9999):
            return normalise(kind, record)
    usage = getattr(record, "usage", None)
    if usage is not None and max(_USAGE_OF(usage)) > MAX_COUNT:
        return normalise(kind, record)
    return record


def normalise(kind: str, record: Any) -> Any:
    """``record`` itself when it is storable as it is, else a copy that is (logged per field).

    Raises `Unstorable` for a time that is not a moment in UTC's calendar (``datetime.max`` in a
    zone west of UTC): stored, it would break every later read of the ledger.
    """
    if _looks_storable(kind, record):
        return record
    for name in _TIME_FIELDS[kind]:
        moment = getattr(record, name)
        if not isinstance(moment, datetime):
            raise Unstorable(f"{name} is not a datetime")
        if moment.tzinfo is not None:
            try:
                moment.astimezone(UTC)
            except OverflowError:
                raise Unstorable(f"{name} is outside the calendar in UTC") from None
    problems: list[str] = []
    changes: dict[str, Any] = {}
    usage = getattr(record, "usage", None)
    if usage is not None:
        clamped = _clamp_usage(usage, problems)
        if clamped is not usage:
            changes["usage"] = clamped
    for name in _INT_FIELDS[kind]:
        value = getattr(record, name)
        if value is not None and not -MAX_COUNT <= value <= MAX_COUNT:
            problems.append(f"{name}: outside 64-bit range, clamped")
            changes[name] = max(min(int(value), MAX_COUNT), -MAX_COUNT)
    for names, limit in ((_KEY_FIELDS[kind], MAX_KEY_BYTES), (_TEXT_FIELDS[kind], MAX_TEXT_BYTES)):
        for name in names:
            value = getattr(record, name)
            if isinstance(value, str) and not _text_ok(value, limit):
                problems.append(f"{name}: not storable UTF-8 or over {limit} bytes, cleaned")
                changes[name] = clean_text(value, limit)
    nested = "details" if kind == "alert" else "metadata"
    value = getattr(record, nested)
    if value and _metadata_needs_cleaning(value):
        problems.append(f"{nested}: text not storable as UTF-8, bytes, or 2^63+ ints, cleaned")
        changes[nested] = _clean_value(value)
    if not changes:
        return record
    try:
        log.warning(
            "ledger.record_invalid", kind=kind, id=str(changes.get("id", record.id))[:100],
            problems=problems, detail="stored with these fields normalised",
        )  # fmt: skip
    except Exception:
        pass
    return replace(record, **changes)

