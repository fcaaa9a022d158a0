"""Text output shared by the commands: money (`_money.usd`), tables that fit a terminal, wrapped lines.

Text output fits ``WIDTH`` columns unless a command is asked for ``--wide``: the first column
(names) gives way, shortened in the middle so the distinguishing end of a name stays visible.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from .._display import ellipsize
from .._money import usd

__all__ = ["WIDTH", "ellipsize", "table", "usd", "wrap"]

WIDTH = 100


def table(rows: Sequence[Sequence[str]], *, width: int | None = WIDTH, left: int = 1) -> list[str]:
    """Lines of a table whose first row is the header; the first ``left`` columns are left-aligned.

    With ``width``, the first column is shortened (`ellipsize`, never below 12 characters) so each
    line fits; ``None`` keeps every cell whole.
    """
    columns = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(columns)]
    if width is not None:
        rest = sum(widths[1:]) + 2 * (columns - 1)
        widths[0] = max(min(widths[0], width - rest), min(widths[0], 12))
    lines = []
    for index, row in enumerate(rows):
        cells = [ellipsize(row[0], widths[0]), *row[1:]]
        parts = [
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def wrap(text: str, *, indent: str = "", width: int | None = WIDTH) -> list[str]:
    """``text`` wrapped to ``width`` (continuation lines indented two more spaces); whole when None."""
    if width is None:
        return [indent + text]
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False) or [indent]
