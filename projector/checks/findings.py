"""What verify found: each problem with where it is, summarised per kind when there are many."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

MAX_PER_KIND: Final = 100  # a badly damaged database is summarised, not listed in full


@dataclass(frozen=True)
class Problem:
    """One thing verify found wrong; ``session_id`` or ``line``/``offset`` say where."""

    kind: str
    message: str
    session_id: str | None = None
    line: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = []
        if self.session_id is not None:
            where.append(f"session {self.session_id!r}")
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        prefix = f"[{self.kind}] " + (", ".join(where) + ": " if where else "")
        return prefix + self.message


class Findings:
    """Problems as they are found, at most MAX_PER_KIND of each kind."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._per_kind: dict[str, int] = defaultdict(int)

    def add(self, kind: str, message: str, **where: Any) -> None:
        self._per_kind[kind] += 1
        n = self._per_kind[kind]
        if n <= MAX_PER_KIND:
            self.problems.append(Problem(kind, message, **where))
        elif n == MAX_PER_KIND + 1:
            self.problems.append(Problem(kind, f"more than {MAX_PER_KIND} problems of this kind"))

    def extend(self, other: Findings) -> None:
        """Append ``other``'s problems (of kinds this one has not counted) after these."""
        assert not self._per_kind.keys() & other._per_kind.keys()
        self.problems += other.problems
        self._per_kind.update(other._per_kind)
