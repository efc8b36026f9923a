"""Per-session tallies of verify's folds, in memory bounded however long the history.

A fold of the whole log (``logfold.LogTally``) or of the database's messages (verify's
``_fold_messages``) ends with one tally per session that ever lived: its message count, its
tokens and a content hash. Kept as objects, they would make memory grow with the years a
log covers. ``SpillMap`` keeps at most ``cap`` entries in a dict; past that, the older half
goes to a private temporary SQLite database (``sqlite3.connect("")``: a file SQLite
deletes itself, its pages cached up to SQLite's default 2 MiB) and comes back when asked
for. Iteration is in key order, the same from the dict (Python compares code points) and
from SQLite (it compares UTF-8 bytes, which order alike), so two folds can be compared as
two sorted streams.

That is why the content hash is a chain, ``state = sha256(state + message bytes)``, not a
running ``hashlib`` object: its state is 32 bytes that can be written down and picked up
again, so a session spilled and then touched again goes on from where it was.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Final, Generic, TypeVar

# Entries a SpillMap keeps in memory before the older half goes to disk: far more sessions
# than a router keeps open at once, so a live session is rarely read back.
CACHE_ENTRIES: Final = 4_096
# How many of a session's last messages a withdrawal can reach back to without a second
# reading of the log (agents withdraw the last one or two).
RECENT: Final = 8

_sha256 = hashlib.sha256


class SessionTally:
    """One session's messages as a fold found them: count, tokens, content hash state, and
    (``recent``, kept by the log's fold) those three after each of its last messages, so
    that withdrawing a few of them takes no second reading of the log."""

    __slots__ = ("count", "recent", "state", "tokens")

    def __init__(self, count: int = 0, tokens: int = 0, state: bytes = b"") -> None:
        self.count = count
        self.tokens = tokens
        self.state = state
        self.recent: list[tuple[int, int, bytes]] = []

    def add(self, tokens: int | None, data: bytes) -> None:
        """One more message: its tokens and its bytes (``message_digest_input``'s)."""
        self.count += 1
        self.tokens += tokens or 0
        h = _sha256(self.state)
        h.update(data)
        self.state = h.digest()

    def remember(self) -> None:
        """Note the tally as it is now among the recent ones (at most 2 * RECENT)."""
        recent = self.recent
        recent.append((self.count, self.tokens, self.state))
        if len(recent) > 2 * RECENT:
            del recent[:RECENT]

    def back_to(self, count: int) -> bool:
        """Become the tally as it was with ``count`` messages, if still remembered."""
        recent = self.recent
        while recent and recent[-1][0] > count:
            recent.pop()
        if not recent or recent[-1][0] != count:
            return False
        self.count, self.tokens, self.state = recent[-1]
        return True

    def copy(self) -> SessionTally:
        return SessionTally(self.count, self.tokens, self.state)

    def row(self) -> tuple[int, int, bytes]:
        return self.count, self.tokens, self.state

    @property
    def content_hash(self) -> str:
        return self.state.hex()


class SpillFile:
    """The private temporary database some SpillMaps share, made when first needed. One
    transaction, never committed: nothing of it needs to outlive the fold. Used by one
    thread at a time (a verify thread fills it, the caller reads it)."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("BEGIN")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


V = TypeVar("V")
Key = TypeVar("Key")


class SpillMap(Generic[Key, V]):
    """A map that keeps at most ``cap`` entries in memory, the rest in ``file``'s table
    ``name`` (key, then ``columns``). ``encode`` and ``decode`` turn a value into its
    columns and back. With ``first_wins``, ``put`` keeps an entry already there."""

    def __init__(
        self,
        file: SpillFile,
        name: str,
        columns: tuple[str, ...],
        encode: Callable[[V], tuple[Any, ...]],
        decode: Callable[[tuple[Any, ...]], V],
        *,
        cap: int | None = None,
        first_wins: bool = False,
    ) -> None:
        self.memory: dict[Key, V] = {}
        self.file = file
        self._name, self._columns = name, columns
        self._encode, self._decode = encode, decode
        self.cap = CACHE_ENTRIES if cap is None else cap
        self._first_wins = first_wins
        self._spilled = False
        self._select = f"SELECT {', '.join(columns)} FROM {name} WHERE k = ?"

    @property
    def spilled(self) -> bool:
        """Whether any entry ever went to disk."""
        return self._spilled

    def get(self, key: Key) -> V | None:
        value = self.memory.get(key)
        if value is None and self._spilled:
            row = self.file.conn().execute(self._select, (key,)).fetchone()
            if row is not None:
                value = self._decode(tuple(row))
                self.memory[key] = value  # touched again: back among the recent ones
                self._bound()
        return value

    def put(self, key: Key, value: V) -> None:
        if self._first_wins and key in self.memory:
            return
        self.memory[key] = value
        self._bound()

    def pop(self, key: Key) -> None:
        self.memory.pop(key, None)
        if self._spilled:
            self.file.conn().execute(f"DELETE FROM {self._name} WHERE k = ?", (key,))

    def __contains__(self, key: Key) -> bool:
        return self.get(key) is not None

    def _bound(self) -> None:
        if len(self.memory) > self.cap:
            self.spill(len(self.memory) // 2 or 1)

    def spill(self, n: int | None = None) -> None:
        """Write the ``n`` oldest entries in memory (all by default) to disk."""
        memory = self.memory
        keys = list(islice(memory, len(memory) if n is None else n))
        if not keys:
            return
        conn = self.file.conn()
        if not self._spilled:
            columns = ", ".join(self._columns)
            conn.execute(f"CREATE TABLE {self._name} (k PRIMARY KEY, {columns}) WITHOUT ROWID")
            self._spilled = True
        verb = "INSERT OR IGNORE" if self._first_wins else "INSERT OR REPLACE"
        marks = ", ".join("?" * (len(self._columns) + 1))
        conn.executemany(
            f"{verb} INTO {self._name} VALUES ({marks})",
            [(k, *self._encode(memory[k])) for k in keys],
        )
        for k in keys:
            del memory[k]

    def items(self) -> Iterator[tuple[Key, V]]:
        """Every entry, in key order (all of them spilled first if any were)."""
        if not self._spilled:
            yield from sorted(self.memory.items(), key=_first)
            return
        self.spill()
        columns = ", ".join(self._columns)
        decode = self._decode
        for row in self.file.conn().execute(f"SELECT k, {columns} FROM {self._name} ORDER BY k"):
            yield row[0], decode(tuple(row[1:]))

    def where(self, keep: Callable[[V], bool]) -> list[Key]:
        """The keys whose value ``keep`` accepts (a pass over every entry)."""
        return [k for k, v in self.items() if keep(v)]


def _first(item: tuple[Any, Any]) -> Any:
    return item[0]


def tally_map(file: SpillFile, name: str, cap: int | None = None) -> SpillMap[str, SessionTally]:
    """Session id -> SessionTally, spilling into ``file``."""
    return SpillMap(
        file,
        name,
        ("count", "tokens", "state"),
        SessionTally.row,
        lambda row: SessionTally(*row),
        cap=cap,
    )


A = TypeVar("A")
B = TypeVar("B")


def merged(
    left: Iterable[tuple[str, A]], right: Iterable[tuple[str, B]]
) -> Iterator[tuple[str, A | None, B | None]]:
    """Two streams of tallies in session order, side by side: ``(sid, left's, right's)``,
    None where one has no such session."""
    end = object()
    a, b = iter(left), iter(right)
    x: Any = next(a, end)
    y: Any = next(b, end)
    while x is not end or y is not end:
        if y is end or (x is not end and x[0] < y[0]):
            yield x[0], x[1], None
            x = next(a, end)
        elif x is end or y[0] < x[0]:
            yield y[0], None, y[1]
            y = next(b, end)
        else:
            yield x[0], x[1], y[1]
            x, y = next(a, end), next(b, end)
