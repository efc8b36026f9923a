"""Which records a forgetting erases: every record of the session, found by reading the log.

``Journal.forget`` appends a ``session_forgotten`` record that lists them (positions only,
nothing personal), then has the log backend overwrite each with its redaction.
"""

from __future__ import annotations

from journal.log import LogSource

Ranges = tuple[tuple[int, int], ...]


def as_ranges(positions: list[int]) -> Ranges:
    """Ascending positions as inclusive ``(first, last)`` ranges of consecutive ones."""
    ranges: list[tuple[int, int]] = []
    for pos in positions:
        if ranges and ranges[-1][1] == pos - 1:
            ranges[-1] = (ranges[-1][0], pos)
        else:
            ranges.append((pos, pos))
    return tuple(ranges)


def session_positions(log: LogSource, session_id: str) -> Ranges:
    """The positions of every record of the session (its creation first), as ranges.

    Records of an earlier session of the same id that was forgotten are redacted, so only
    the present session's are found.
    """
    found = [
        event.pos
        for event, _ in log.read_state()
        if getattr(event, "session_id", None) == session_id
    ]
    return as_ranges(found)
