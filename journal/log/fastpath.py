"""The reader's fast path: chunks of whole lines checked and decoded by loops that run in C.

A chunk that fails any check is read again line by line by the reader, which names the
defect; so this module only has to say "all good" or "not sure".
"""

from __future__ import annotations

import binascii
import operator
import struct
import zlib
from datetime import datetime
from itertools import repeat
from typing import Final, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from journal.events import (
    CRC_PREFIX,
    CRC_SUFFIX_LEN,
    Event,
)

_FAST_CHUNK: Final = 1 << 20
_body = operator.itemgetter(slice(None, -CRC_SUFFIX_LEN))
_crc_open = operator.itemgetter(slice(-CRC_SUFFIX_LEN, -10))
_crc_digits = operator.itemgetter(slice(-10, -2))
_crc_close = operator.itemgetter(slice(-2, None))
_get_pos = operator.attrgetter("pos")
_get_ts = operator.attrgetter("ts")
_get_at = operator.attrgetter("at")
_get_grp = operator.attrgetter("grp")
_crc32 = zlib.crc32
_CLOSE_CRC: Final = b"}"
E = TypeVar("E", bound=Event)


def _whole_groups(grps: list[tuple[int, int] | UnsetType]) -> int | None:
    """How many of these records form whole units (a group still open at the end is left
    out); None if the groups are out of order (the caller reads line by line)."""
    open_at = -1  # index of the open group's first member
    size = 0
    for k, grp in enumerate(grps):
        if grp is UNSET:
            if open_at >= 0:
                return None
            continue
        index, total = grp
        if open_at < 0:
            if index != 1 or total < 2:
                return None
            open_at, size = k, total
        elif total != size or index != k - open_at + 1:
            return None
        if index == size:
            open_at = -1
    return open_at if open_at >= 0 else len(grps)


def _fast_run(
    data: bytes, cut: int, pos: int, decoder: msgspec.json.Decoder[E]
) -> tuple[list[E], list[bytes], int] | None:
    """Check and decode ``data[:cut]`` (whole lines) in one go: (events, lines, bytes used).

    None when anything is amiss (the caller reads those lines again one by one, which
    names the defect). A group still open at the end is left out (``used < cut``).
    """
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: part of a line, or nothing
    n = len(lines)
    if min(map(len, lines)) <= CRC_SUFFIX_LEN:
        return None
    if not (
        all(map(operator.eq, map(_crc_open, lines), repeat(CRC_PREFIX)))
        and all(map(operator.eq, map(_crc_close, lines), repeat(b'"}')))
    ):
        return None
    try:
        # All checksums at once: 8 hex digits per line make 4 big-endian bytes each.
        expected = struct.unpack(f">{n}I", binascii.unhexlify(b"".join(map(_crc_digits, lines))))
    except (binascii.Error, struct.error):
        return None
    actual = map(_crc32, repeat(_CLOSE_CRC), map(_crc32, map(_body, lines)))
    if not all(map(operator.eq, actual, expected)):
        return None
    try:
        events: list[E] = decoder.decode_lines(memoryview(data)[:cut])
        list(map(datetime.fromisoformat, map(_get_ts, events)))
        ats = set(map(_get_at, events))
        ats.discard(UNSET)
        list(map(datetime.fromisoformat, ats))
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if len(events) != n or list(map(_get_pos, events)) != list(range(pos + 1, pos + n + 1)):
        return None
    grps = list(map(_get_grp, events))
    keep = n if grps.count(UNSET) == n else _whole_groups(grps)
    if keep is None:
        return None
    if keep < n:
        used = sum(map(len, lines[:keep])) + keep
        return events[:keep], lines[:keep], used
    return events, lines, cut
