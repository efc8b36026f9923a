"""A node's copy of a log kept in a JetStream stream: what its projection reads.

Every node that projects a stream (``session-journal --log nats://… --db node.db watch``,
``replay``, ``rebuild``, ``verify``) keeps a log file beside its database holding the
stream's records byte for byte, in order: ``<db>.stream.jsonl``. The projector then works
on that file exactly as on any log, with its own checkpoint, its exactly-once catch-up,
its bulk paths and its segments; the copy is plain JSON lines, readable with ``jq`` and
usable as a backup of the stream.

The copy only grows by whole messages, each checked as a writer checks it (checksums,
gapless ``pos``, whole groups), fsynced before anything is said about it. Beside it,
``<copy>.anchor`` says how far it goes: the stream (its name and creation time), the
sequence of the last message copied and where that message lies in the copy. The anchor
is written after the copy is fsynced, so it is never ahead of it; one left behind by a
crash only means that the messages the copy already holds past it are compared with the
stream instead of appended again. When a copy is opened, the message at its anchor is
compared with the stream's: a copy of another stream (or of a stream deleted and created
again under the same name) is refused, never mixed in.

A session forgotten on the stream is forgotten in the copy too: each forgetting the copy
takes in has the records it lists redacted in place (the file log's own redaction, which
gives the very bytes the stream's replaced message holds). A message the stream redacted
after the copy took it matches the copy's until then: same lines, or their redaction.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Final

import msgspec

import journal.events as ev
from journal.errors import LogError
from journal.log.backend import START, Cursor
from journal.log.file_backend import FileLog
from journal.log.files import FILE_MODE
from journal.log.jetstream import JetStreamLog, LogUnavailable
from journal.log.segments import LogView

COPY_SUFFIX: Final = ".stream.jsonl"
_STOP_CHECK_S: Final = 0.05  # how soon ``follow`` sees its stop between messages


def copy_path(db_path: str) -> str:
    """Where the node whose database is ``db_path`` keeps its copy of the stream."""
    return f"{db_path}{COPY_SUFFIX}"


class Anchor(msgspec.Struct, frozen=True):
    """How far a copy goes: message ``seq`` of the stream is its bytes ``[start, end)``,
    its last record has ``pos``."""

    stream: str
    created: str
    seq: int = 0
    start: int = 0
    end: int = 0
    pos: int = 0


class CopyMismatch(LogError):
    """The node's copy does not hold what the stream holds: it is another stream's, or it
    was changed; nothing was copied."""


def _same_or_redacted(held: bytes, stored: bytes) -> bool:
    """Whether the copy's bytes ``held`` are the stream's message ``stored``: the same
    lines, or lines the stream has redacted since (not yet in the copy)."""
    if held == stored:
        return True
    mine, theirs = held.splitlines(keepends=True), stored.splitlines(keepends=True)
    if len(mine) != len(theirs):
        return False
    try:
        return all(a == b or ev.redaction_line(a) == b for a, b in zip(mine, theirs, strict=True))
    except ev.LineError:
        return False


def _forgotten(payload: bytes) -> list[tuple[int, int]]:
    """The positions the forgettings in a message list."""
    if b'"session_forgotten"' not in payload:
        return []
    ranges: list[tuple[int, int]] = []
    for line in payload.splitlines():
        event = ev.decode_checked(line, ev.state_decoder)
        if isinstance(event, ev.SessionForgotten):
            ranges += [(lo, hi) for lo, hi in event.positions]
    return ranges


class StreamCopy:
    """Keeps the log file ``path`` a copy of the stream at ``url``; close it after use."""

    def __init__(self, url: str, path: str, wait_s: float | None = None) -> None:
        self.path = path
        self.anchor_path = f"{path}.anchor"
        self.stream = JetStreamLog(url) if wait_s is None else JetStreamLog(url, wait_s)
        self._checked_anchor = False
        try:
            self.file = FileLog(path, "always")
        except BaseException:
            self.stream.close()
            raise

    def close(self) -> None:
        self.file.close()
        self.stream.close()

    def __enter__(self) -> StreamCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the anchor ----------------------------------------------------------------------
    def _new_anchor(self) -> Anchor:
        return Anchor(self.stream.address.stream, self.stream.created)

    def _load_anchor(self) -> Anchor:
        try:
            with open(self.anchor_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return self._new_anchor()
        try:
            return msgspec.json.decode(data, type=Anchor)
        except msgspec.DecodeError:
            # Derived and written by rename: damage means someone changed it. Starting from
            # the copy's first byte compares everything with the stream instead.
            return self._new_anchor()

    def _save_anchor(self, anchor: Anchor) -> None:
        tmp = f"{self.anchor_path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, msgspec.json.encode(anchor))
        finally:
            os.close(fd)
        os.replace(tmp, self.anchor_path)

    def _check_anchor(self, anchor: Anchor, view: LogView) -> None:
        """The copy's bytes at the anchor are the stream's message there, of this stream."""
        here = self._new_anchor()
        if (anchor.stream, anchor.created) != (here.stream, here.created):
            raise self._mismatch(
                f"it was copied from stream {anchor.stream} created {anchor.created}, and "
                f"{here.stream} now was created {here.created}"
            )
        if not anchor.seq:
            return
        held = view.pread(anchor.end - anchor.start, anchor.start)
        stored = self.stream.payload_at(anchor.seq)
        if stored is None:
            raise self._mismatch(
                f"the stream no longer holds the message {anchor.seq} it copied "
                "(deleted by something else, or the stream was replaced)"
            )
        if not _same_or_redacted(held, stored):
            raise self._mismatch(
                f"its bytes {anchor.start}-{anchor.end} differ from the stream's message "
                f"{anchor.seq}"
            )

    def _mismatch(self, why: str) -> CopyMismatch:
        return CopyMismatch(
            f"{self.path}: this copy of {self.stream.name} cannot be trusted: {why}; remove "
            f"it, its {os.path.basename(self.anchor_path)} and the database projected from "
            "it, and project the stream again",
            path=self.path,
        )

    # -- copying -------------------------------------------------------------------------
    def sync(self, *, check_all: bool = False) -> int:
        """Append what the stream holds past the copy; returns how many records. With
        ``check_all``, every message the copy holds is compared with the stream first
        (``verify``); otherwise only the one at the anchor, the first time."""
        with self.file.exclusive():
            anchor = self._load_anchor()
            end = int(self.file.end(START))
            with self.file.view() as view:
                if check_all or not self._checked_anchor:
                    self._check_anchor(anchor, view)
                    self._checked_anchor = True
                if check_all:
                    anchor = self._new_anchor()
                held = self._held(anchor, end)
                return self._copy_after(anchor, held, view)

    def _held(self, anchor: Anchor, end: int) -> int:
        """Where the copy's whole records end, a torn tail past the anchor (a copy cut
        short by a crash) moved aside."""
        if end < anchor.end:
            raise self._mismatch(f"it is {end} bytes long, shorter than its anchor says")
        reading = self.file.read_state(Cursor(anchor.end), anchor.pos)
        for _ in reading:
            pass
        if reading.torn is not None:
            self.file.repair(reading.torn)
        return reading.end

    def _copy_after(self, anchor: Anchor, held: int, view: LogView) -> int:
        """Compare the messages after the anchor that the copy already holds, append the
        rest, and move the anchor after each batch."""
        at, copied = anchor.end, 0
        for batch in self.stream.messages(anchor.seq, anchor.pos):
            fresh: list[bytes] = []  # appended after ``held``, where the copy ends
            forgotten: list[tuple[int, int]] = []
            for seq, payload, pos in batch:
                start = at
                if at < held:
                    if not _same_or_redacted(view.pread(len(payload), at), payload):
                        raise self._mismatch(
                            f"its bytes from {at} differ from the stream's message {seq}"
                        )
                else:
                    fresh.append(payload)
                    copied += payload.count(b"\n")
                forgotten += _forgotten(payload)
                at += len(payload)
                anchor = Anchor(anchor.stream, anchor.created, seq, start, at, pos)
            if fresh:
                token, end = self.file.append(fresh, Cursor(held))
                self.file.wait_durable(token)
                held = int(end)
            if forgotten:  # again after a crash: records redacted already stay as they are
                self.file.redact(forgotten)
            self._save_anchor(anchor)
        if at < held:
            raise self._mismatch(f"it holds {held - at} bytes past the stream's last message")
        return copied

    def follow(
        self,
        stop: threading.Event,
        poll_s: float,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """Copy what the stream gets until ``stop`` is set: at once when a message is
        published on the log's subject (a doorbell; the copy still reads the stream in
        order), and every ``poll_s`` seconds whatever happens (a bell missed while the
        servers were away). Servers that do not answer are waited for, as long as it
        takes (``say`` hears when they go and come back); a copy that does not match the
        stream, or damage in the stream, ends it."""
        bell = threading.Event()
        unsubscribe: Callable[[], None] | None = None
        away = False
        try:
            while not stop.is_set():
                bell.clear()
                try:
                    if unsubscribe is None:  # the bell needs the servers: polls until then
                        unsubscribe = self.stream.on_publish(bell.set)
                    self.sync()
                except LogUnavailable as exc:
                    if not away and say is not None:
                        say(f"{exc}; still trying")
                    away = True
                else:
                    if away and say is not None:
                        say(f"{self.stream.name}: the servers answer again")
                    away = False
                deadline = time.monotonic() + poll_s
                while not (bell.wait(_STOP_CHECK_S) or stop.is_set()):
                    if time.monotonic() >= deadline:
                        break
        finally:
            if unsubscribe is not None:
                unsubscribe()
