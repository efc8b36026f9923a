"""Plain-text rendering for the CLI: aligned tables, transcripts, sizes. No colour codes
unless the caller asks (click strips them when output is not a terminal)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import click


def shorten(text: str | None, width: int) -> str:
    """One line, at most ``width`` characters, with an ellipsis when cut."""
    if text is None:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def display_width(text: str) -> int:
    """Terminal columns taken by ``text``: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(width - display_width(text), 0)
    return fill + text if right else text + fill


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], right: Sequence[int] = ()) -> str:
    """An aligned table; columns whose index is in ``right`` are right-aligned."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, display_width(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            _pad(v, w, i in right) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [click.style(line(list(headers)), bold=True)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def human_tokens(n: int | None) -> str:
    """12345 -> '12,345' (exact figures: ccusage users add them up)."""
    return "" if n is None else f"{n:,}"


def human_duration(seconds: float | None) -> str:
    """Seconds as '1.2s', '3m05s' or '2h03m'."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def short_time(ts: str | None) -> str:
    """'2026-11-26T10:15:33.139877Z' -> '2026-11-26 10:15'."""
    return "" if not ts else ts[:16].replace("T", " ")


def highlight(snippet: str) -> str:
    """Turn the ``**hit**`` markers of a search snippet into bold text."""
    parts = snippet.split("**")
    return "".join(click.style(p, bold=True) if i % 2 else p for i, p in enumerate(parts))
