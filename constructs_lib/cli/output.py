"""What the command line prints: colours on a terminal only, a progress line, tables that fit.

* Colours only when the stream is a terminal, ``NO_COLOR`` is unset or empty (no-color.org),
  ``TERM`` is not ``dumb``, and ``--no-color`` was not given.
* The progress line goes to stderr, only when stderr is a terminal, and is erased before any
  other output.
* Tables are cut to the terminal's width (``COLUMNS`` when set): the widest column is shortened
  with an ellipsis. Lists of user names are summarised (first names and "+N more").
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

ELLIPSIS = "…"
SHOWN_NAMES = 3
"""User names shown in a summary line without ``--full``."""


def wants_colour(stream: TextIO, *, disabled: bool = False) -> bool:
    """True when ``stream`` is a terminal that should get colours."""
    if disabled or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """ANSI styles, or nothing."""

    _CODES: Mapping[str, str] = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(self._CODES[name] for name in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


class Progress:
    """One line on stderr that says what is being read, when stderr is a terminal."""

    def __init__(self, stream: TextIO, *, enabled: bool | None = None, clock: Callable[[], float] = time.monotonic):
        isatty = getattr(stream, "isatty", None)
        self._stream = stream
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self._clock = clock
        self._shown = False
        self._last = 0.0

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if self._shown and now - self._last < 0.1:
            return
        self._last = now
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self._stream.write("\r\x1b[K" + fit(message + " …", width))
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line (before printing anything else)."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def terminal_width() -> int:
    """The width to fit: ``COLUMNS``, the terminal's, or 120 when not a terminal."""
    return max(40, shutil.get_terminal_size((120, 24)).columns)


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ELLIPSIS


def fit_middle(text: str, width: int) -> str:
    """``text`` cut in the middle (keeps both ends of a construct path)."""
    if len(text) <= width:
        return text
    if width < 5:
        return fit(text, width)
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def names(users: Sequence[str], *, full: bool, limit: int = SHOWN_NAMES) -> str:
    """``a, b, c +N more`` (all with ``full``)."""
    ordered = sorted(users)
    if full or len(ordered) <= limit:
        return ", ".join(ordered)
    return ", ".join(ordered[:limit]) + f" +{len(ordered) - limit} more"


def wrapped(text: str, width: int, *, indent: str) -> list[str]:
    """``text`` (a list of names) wrapped to ``width`` under ``indent``; nothing for ""."""
    if not text:
        return []
    return textwrap.wrap(
        text, width, initial_indent=indent, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def count(number: int, singular: str, plural: str | None = None) -> str:
    """``1 user``, ``2 users``."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    style: Style,
    shrink: Sequence[int] = (),
    indent: str = "",
) -> list[str]:
    """Rows as aligned columns within ``width``: the ``shrink`` columns give way first, in that order.

    A column is cut in the middle (both ends of a path stay) down to :data:`MIN_COLUMN`
    characters, its header included; a line that still does not fit is cut at the end.
    """
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    total = len(indent) + sum(widths) + 2 * (len(widths) - 1)
    order = [*shrink, *(index for index in range(len(widths)) if index not in shrink)]
    for index in order:
        if total <= width:
            break
        cut = min(widths[index] - MIN_COLUMN, total - width)
        if cut > 0:
            widths[index] -= cut
            total -= cut

    def line(cells: Sequence[str], styles: Sequence[str] = ()) -> str:
        parts = [fit_middle(cell, w).ljust(w) for cell, w in zip(cells, widths, strict=True)]
        text = fit((indent + "  ".join(parts)).rstrip(), width)
        return style(text, *styles) if styles else text

    return [line(headers, ("bold",)), *(line(row) for row in rows)]


MIN_COLUMN = 6
"""The narrowest a column of :func:`table` gets."""


def to_json(document: Any) -> str:
    """Stable, indented JSON."""
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def to_csv(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """RFC 4180 CSV with a header row (formula-looking cells are quoted, not altered)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()


class Printer:
    """Writes to stdout, erasing the progress line first."""

    def __init__(self, out: TextIO | None = None, *, progress: Progress, style: Style) -> None:
        self._out = out or sys.stdout
        self.progress = progress
        self.style = style

    def line(self, text: str = "") -> None:
        self.progress.clear()
        self._out.write(text + "\n")

    def para(self, text: str, *styles: str) -> None:
        """Prose, wrapped to the terminal's width."""
        hanging = " " * (len(text) - len(text.lstrip()) + 2)
        lines = textwrap.wrap(text, terminal_width(), subsequent_indent=hanging, break_on_hyphens=False)
        for line in lines or [""]:
            self.line(self.style(line, *styles))

    def raw(self, text: str) -> None:
        self.progress.clear()
        self._out.write(text)
