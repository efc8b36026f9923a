"""verify's check that no event id is used twice, in memory bounded however long the log.

Every id of the log is taken as a fingerprint (Python's 64-bit string hash) and two ids
with one fingerprint are only suspects: a second reading of the log compares the ids
themselves (``verify_log._repeated_ids``), so a collision is never reported and every
real repeat is. A set of every fingerprint would grow with the log (about 70 bytes an
event), so the fingerprints are dealt into PARTS parts by their low bits, held as 8-byte
integers, and written to a temporary file whenever SPILL_IDS of them are held. At the
end each part is read back and checked alone: memory holds one part's set at a time, a
PARTS-th of the log's ids.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import IO, Final

# An event id's fingerprint: Python's string hash (64 bits).
fingerprint: Callable[[str], int] = hash

PARTS: Final = 256
_PART_OF: Final = PARTS - 1  # a fingerprint's part: its low bits
# Fingerprints held in memory before they go to the file (8 bytes each).
SPILL_IDS: Final = 1 << 18


class IdCheck:
    """Event ids checked for uniqueness by their fingerprints. ``add_all`` every id, then
    ``any_suspects`` and ``suspected`` (after which no more ids may be added)."""

    def __init__(self, spill_ids: int | None = None) -> None:
        self.spill_ids = SPILL_IDS if spill_ids is None else spill_ids
        self._parts = [array("q") for _ in range(PARTS)]
        self._held = 0
        self._file: IO[bytes] | None = None
        # Per spill: where each of its parts starts in the file (in fingerprints), and one
        # more, where the spill ends.
        self._spills: list[array[int]] = []
        self._end = 0
        self._suspects: set[int] | None = None

    def add_all(self, event_ids: Iterable[str]) -> None:
        """Take the ids, but the empty ones: a redacted record keeps none."""
        assert self._suspects is None, "ids added after the check"
        parts = self._parts
        marks = list(map(fingerprint, filter(None, event_ids)))
        for mark in marks:
            parts[mark & _PART_OF].append(mark)
        self._held += len(marks)
        if self._held >= self.spill_ids:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _check
        starts = array("q", accumulate(map(len, self._parts), initial=self._end))
        self._spills.append(starts)
        for part in self._parts:
            part.tofile(self._file)
        self._end = starts[-1]
        self._parts = [array("q") for _ in range(PARTS)]
        self._held = 0

    def _check(self) -> set[int]:
        """The fingerprints seen more than once, each part checked alone."""
        suspects: set[int] = set()
        file = self._file
        if file is not None:
            file.flush()
        for i in range(PARTS):
            marks = array("q")
            for starts in self._spills:
                assert file is not None
                file.seek(8 * starts[i])
                marks.fromfile(file, starts[i + 1] - starts[i])
            marks.extend(self._parts[i])
            self._parts[i] = array("q")
            if len(set(marks)) != len(marks):  # rare: find which
                seen: set[int] = set()
                for mark in marks:
                    if mark in seen:
                        suspects.add(mark)
                    seen.add(mark)
        if file is not None:
            file.close()
            self._file = None
        return suspects

    @property
    def any_suspects(self) -> bool:
        if self._suspects is None:
            self._suspects = self._check()
        return bool(self._suspects)

    def suspected(self, event_id: str) -> bool:
        """True if ``event_id``'s fingerprint was seen more than once."""
        return self.any_suspects and fingerprint(event_id) in (self._suspects or ())
