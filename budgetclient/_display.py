"""Ledger text made safe for where reports put it: spreadsheets, terminals, narrow columns.

Task names, alert messages and metadata come from the ledger, which anyone who can run code
against it can write to. A report must not turn them into spreadsheet formulas, terminal control
sequences or a table a megabyte wide. The renderers call these three functions; JSON keeps the
text exactly as stored (JSON escapes it), CSV keeps it whole but inert.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import TextIO

__all__ = ["DISPLAY_NAME_MAX", "CsvWriter", "csv_cell", "csv_writer", "display_name", "terminal_text"]

DISPLAY_NAME_MAX = 60
"""Characters of a name shown in a table before it is cut with an ellipsis."""

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""Characters a spreadsheet may read as the start of a formula (OWASP CSV injection), with their
full-width forms, which some spreadsheet programs fold to ASCII."""

_CONTROL = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: cursor moves, clear screen, colours
    r"|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC/DCS/SOS/PM/APC strings: OSC 52 clipboard writes
    r"|[ -/]*[0-~]?)"  # the other escapes
    r"|[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""Terminal escape sequences whole, then any single C0/C1 control, line/paragraph separator or
bidirectional override (which can make a line read as something else) that is left."""


def csv_cell(value: object) -> object:
    """``value`` for a CSV cell that a spreadsheet shows as text, never runs as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, tab, CR or LF gets a leading ``'`` (OWASP);
    the csv module then quotes it as needed. Numbers are returned as they are, so ``-0.5`` stays
    a number; only strings are escaped.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    """``csv.writer`` whose rows go through `csv_cell` first."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, cells: Iterable[object]) -> None:
        self._writer.writerow([csv_cell(cell) for cell in cells])


def csv_writer(out: TextIO) -> CsvWriter:
    """A CSV writer for report rows: ``\n`` line ends, every text cell made inert (`csv_cell`)."""
    return CsvWriter(out)


def terminal_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` without terminal escape sequences or control characters (each shown as ``?``).

    A task name holding ``ESC ] 52`` would write the reader's clipboard, ``ESC [ 2 J`` clear
    the screen. ``keep_newlines`` keeps ``\\n`` (multi-line output assembled by the caller).
    """
    if text.isprintable() or (keep_newlines and text.replace("\n", "").isprintable()):
        return text
    return _CONTROL.sub(lambda m: "\n" if keep_newlines and m.group() == "\n" else "?", text)


def display_name(name: str, limit: int = DISPLAY_NAME_MAX) -> str:
    """``name`` (or a message) for one line of a table: terminal-safe, no line breaks, at most
    ``limit`` characters (``…`` when cut)."""
    if len(name) > limit:
        name = name[: limit - 1] + "…"  # cut first: a 1 MB name is not scanned whole
    return terminal_text(name)
