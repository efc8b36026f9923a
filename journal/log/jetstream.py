"""A log kept in a NATS JetStream stream: the log's contract on replicated servers.

``Journal.open("nats://127.0.0.1:4222,127.0.0.1:4223/SESSIONS?replicas=3")`` writes to
the stream ``SESSIONS`` (created on first use: file storage, that many replicas, on the
one subject ``SESSIONS.log``). Each append is one stream message carrying the unit's
lines (a record, a whole atomic group, or the groups of one combined write), byte for
byte as a log file holds them, published with

* ``Nats-Expected-Last-Sequence``: the stream must still end where this writer read it
  to. That is the log-wide expected version that keeps ``pos`` gapless, checked by the
  server: no lock spans hosts. A writer that lost the race gets ``AppendConflict``,
  catches up and tries again (``Journal`` does that by itself);
* ``Nats-Msg-Id``: a hash of the message's bytes, so that a publish retried after a
  timeout (its outcome unknown) is stored once. Not the unit's first event id: two
  writers may start different units with the same event id (a caller retrying through
  another host), and the server would then drop the second as a duplicate of the first,
  acknowledging records it never stored.

An acknowledged append is as durable as the servers make it: with
``jetstream { sync_interval: always }`` it is on disk (on a quorum of the replicas),
otherwise in memory until the next sync (two minutes by default).

Cursors are message sequences shifted left by ``_SHIFT`` bits; a record inside a
group's message ends at the message before it plus its index, so every record has its
own cursor and a whole message ends at its own sequence. The nats client is asyncio: a
handle runs it on a private event-loop thread.

Forgetting a session: a stored message cannot be rewritten, so a message holding any of
the session's records is replaced. Its new form (the same lines, the session's records
as their ``redacted`` records, byte for byte what a log file's redaction writes) is
published to a second stream, ``<STREAM>_REDACTED``, on the subject
``<STREAM>.redacted.<seq>``; then the original is deleted from the log's stream with the
server's secure erase, which overwrites its bytes. A reader that finds a sequence
missing reads its replacement there; a sequence missing with no replacement was deleted
by something else, and the positions that no longer follow on say so. A plan published
before the forgettings are appended (``plan_redaction``) lets the next handle opened on
the stream finish a redaction its writer did not, if the forgettings were appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from msgspec import UNSET
from nats.js.api import DeliverPolicy, StorageType, StreamConfig

import journal.events as ev
from journal.errors import CorruptLog, InvalidValue, JournalClosed, LogError, LogWriteError
from journal.log.backend import (
    START,
    AppendConflict,
    AppendTooLarge,
    Cursor,
    LogBusy,
    Run,
    TornTail,
)

_SHIFT: Final = 20  # room for the records of one message (a group has at most 10,000)
_MEMBER: Final = (1 << _SHIFT) - 1  # a cursor's bits that count records inside a message
_BATCH: Final = 256  # messages asked for per direct get
_CONFLICT_CODES: Final = (10071, 10164)  # "wrong last sequence": R1 and R3 wording
_PLAN: Final = "plan"  # the replacements stream's subject for a redaction's plan
# A plan whose forgettings are not in the stream is dropped once this old: until then its
# writer may still be appending them (no lock spans the hosts).
_PLAN_PATIENCE_S: Final = 60.0
DEFAULT_STREAM: Final = "SESSIONS"
# How long a call waits for the servers before LogUnavailable: longer than an R3
# stream's leader election after a node is lost (5.5 to 7.4 s measured).
DEFAULT_WAIT_S: Final = 20.0
# One try of a call waits this long for an answer: a request sent while a stream has no
# leader is never answered, so it is sent again (every ``_RETRY_S``) until ``wait_s``.
_TRY_S: Final = 2.0
_RETRY_S: Final = 0.25
# What a call that may succeed when tried again raises: no answer in time, no server
# reachable, or no stream leader (an election).
_UNANSWERED: Final = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
E = TypeVar("E", bound=ev.Event)


class LogUnavailable(LogError):
    """The log's servers did not answer in time: nothing acknowledged was lost; retry with
    the same event id once they are back."""


@dataclass(frozen=True)
class Address:
    """What a ``nats://`` log URL names."""

    servers: tuple[str, ...]
    stream: str
    replicas: int

    @property
    def subject(self) -> str:
        return f"{self.stream}.log"

    @property
    def replacements(self) -> str:
        """The stream that holds the replacements of redacted messages."""
        return f"{self.stream}_REDACTED"

    def replacement(self, seq: int | str) -> str:
        """The subject of message ``seq``'s replacement (or of the redaction plan)."""
        return f"{self.stream}.redacted.{seq}"

    @property
    def url(self) -> str:
        hosts = ",".join(s.removeprefix("nats://") for s in self.servers)
        return f"nats://{hosts}/{self.stream}?replicas={self.replicas}"


def parse_url(url: str) -> Address:
    """``nats://host:port[,host:port...][/STREAM][?replicas=N]``; InvalidValue otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "nats" or not parts.netloc:
        raise InvalidValue(f"{url!r}: a JetStream log is named nats://host:port[,...]/STREAM")
    stream = parts.path.strip("/") or DEFAULT_STREAM
    if not stream.isascii() or any(c in stream for c in " .*>/\\\t") or len(stream) > 64:
        raise InvalidValue(f"{url!r}: {stream!r} is not a JetStream stream name")
    query = urllib.parse.parse_qs(parts.query)
    unknown = set(query) - {"replicas"}
    if unknown:
        raise InvalidValue(f"{url!r}: unknown setting {', '.join(sorted(unknown))}")
    try:
        replicas = int(query.get("replicas", ["1"])[-1])
    except ValueError:
        replicas = 0
    if replicas not in (1, 3, 5):
        raise InvalidValue(f"{url!r}: replicas must be 1, 3 or 5")
    servers = tuple(f"nats://{host}" for host in parts.netloc.split(",") if host)
    return Address(servers, stream, replicas)


class _Loop:
    """A private asyncio loop on its own thread, for a synchronous caller."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="journal-nats")
        self.thread.daemon = True
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class JetStreamLog:
    """A writer's handle on a log in a JetStream stream: see the module docstring."""

    lock_spans_writers = False

    def __init__(self, url: str, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.address = parse_url(url)
        self.name = self.address.url
        self.wait_s = wait_s
        # No lock spans the hosts (``lock_spans_writers``): an append is conditional on the
        # end its writer read, so the writer need not look before each one.
        self.lock_epoch = 1
        self.last_token = 0
        # The highest sequence this handle erased (replaced): a read that ends before it
        # looks for replacements past the messages the servers gave (none are given for
        # a deleted last message, and only a direct redaction deletes one: a forgetting
        # always follows the records it replaces).
        self._erased = 0
        self._lock = threading.RLock()
        self._closed = False
        self._loop = _Loop()
        self._nc: Any = None
        try:
            self._nc = self._call(
                lambda: nats.connect(
                    servers=list(self.address.servers),
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                ),
                "connect",
            )
            self._js = self._nc.jetstream(timeout=_TRY_S)
            self._created = self._call(self._ensure_stream, "create the stream")
            self._finish_redaction()
        except BaseException:
            self._shut()
            raise

    # -- talking to the servers ------------------------------------------------------------
    def _call(self, make: Callable[[], Coroutine[Any, Any, Any]], what: str) -> Any:
        """Run ``make()`` on the loop, trying again while no server or stream leader answers
        (an election after a node's loss takes seconds), for ``wait_s`` in all. Every call
        is safe to repeat: reads, and appends that carry their Msg-Id and expected sequence.
        """
        deadline = time.monotonic() + self.wait_s
        while True:
            left = deadline - time.monotonic()
            try:
                return self._loop.run(make(), max(min(_TRY_S, left), 0.001))
            except _UNANSWERED as exc:
                if time.monotonic() + _RETRY_S >= deadline:
                    raise LogUnavailable(
                        f"{self.name}: the servers did not answer within {self.wait_s:g} s "
                        f"({what}); nothing acknowledged is lost: retry with the same "
                        "event id",
                        path=self.name,
                    ) from exc
            time.sleep(_RETRY_S)

    async def _ensure_stream(self) -> object:
        """The stream's creation time, creating it if missing; LogError for a stream set
        up otherwise than a log needs."""
        a = self.address
        try:
            info = await self._js.stream_info(a.stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=a.stream,
                subjects=[a.subject],
                storage=StorageType.FILE,
                num_replicas=a.replicas,
                allow_direct=True,
            )
            try:
                info = await self._js.add_stream(config)
            except nats.js.errors.APIError:  # another host created it meanwhile
                info = await self._js.stream_info(a.stream)
        config = info.config
        wrong = [
            f"{name} is {have!r}, not {want!r}"
            for name, have, want in (
                ("subjects", config.subjects, [a.subject]),
                ("storage", config.storage, StorageType.FILE),
                ("num_replicas", config.num_replicas, a.replicas),
                ("allow_direct", config.allow_direct, True),
                ("max_msgs", config.max_msgs or -1, -1),
                ("max_bytes", config.max_bytes or -1, -1),
                ("max_age", config.max_age or 0, 0),
            )
            if have != want
        ]
        if wrong:
            raise LogError(
                f"{self.name}: stream {a.stream} is not set up as a log: {'; '.join(wrong)}",
                path=self.name,
            )
        return info.created

    async def _info(self) -> Any:
        return await self._js.stream_info(self.address.stream)

    # -- the contract --------------------------------------------------------------------
    @contextmanager
    def exclusive(self, wait: bool = True) -> Iterator[None]:
        """This handle's threads, one at a time; other handles and hosts are kept out of
        the way by the expected sequence on every append, not by a lock."""
        if not self._lock.acquire(blocking=wait):
            raise LogBusy(self.name)
        try:
            self.check_open()
            yield
        finally:
            self._lock.release()

    def read(self, after: Cursor = START, pos: int = 0) -> JetStreamReading[ev.AnyEvent]:
        return JetStreamReading(self, after, pos, ev.event_decoder)

    def read_state(self, after: Cursor = START, pos: int = 0) -> JetStreamReading[ev.StateEvent]:
        return JetStreamReading(self, after, pos, ev.state_decoder)

    def end(self, known: Cursor) -> Cursor:
        self.check_open()
        info = self._call(self._info, "look where the log ends")
        if info.created != self._created:
            raise LogError(
                f"{self.name}: the stream was deleted and created again while open; "
                "close the journal and open it again",
                path=self.name,
            )
        seen = known >> _SHIFT
        state = info.state
        if state.last_seq < seen or (
            seen and state.first_seq > seen and self.payload_at(seen) is None
        ):
            raise LogError(
                f"{self.name}: messages up to sequence {seen}, read by this writer, are gone "
                "(purged?): records were removed by something other than this library",
                path=self.name,
            )
        return Cursor(state.last_seq << _SHIFT)

    def start_of_last(self, count: int, after: Cursor, end: Cursor) -> Cursor:
        """Counted back from ``end``, a batch of messages at a time (a message's records
        are its lines)."""
        first, hi = (after >> _SHIFT) + 1, end >> _SHIFT
        while hi >= first and count > 0:
            lo = max(first, hi - _BATCH + 1)
            for seq, payload in reversed(self._read_batch(lo, hi)[0]):
                lines = payload.count(b"\n")
                before = after & _MEMBER if seq == first else 0  # records at or before after
                if lines - before >= count:
                    return Cursor(((seq - 1) << _SHIFT) + lines - count)
                count -= lines - before
            hi = lo - 1
        return after

    def last_line(self, end: Cursor) -> tuple[Cursor, bytes]:
        """A record's cursor is its message's and its index (see the docstring)."""
        member = end & _MEMBER
        seq = (end >> _SHIFT) + (1 if member else 0)
        payload = self.payload_at(seq) if seq else None
        lines = payload.splitlines(keepends=True) if payload else []
        if not lines or member >= len(lines):
            return end, b""
        index = member - 1 if member else len(lines) - 1
        return Cursor(((seq - 1) << _SHIFT) + index), lines[index]

    def append(self, lines: Sequence[bytes], after: Cursor) -> tuple[int, Cursor]:
        self.check_open()
        seq = after >> _SHIFT
        payload = b"".join(lines)
        msg_id = hashlib.sha256(payload).hexdigest()
        headers = {"Nats-Expected-Last-Sequence": str(seq), "Nats-Msg-Id": msg_id}
        if len(payload) > self._nc.max_payload:
            raise AppendTooLarge(
                f"{self.name}: {len(payload)} bytes to append, more than the servers' "
                f"max_payload ({self._nc.max_payload} bytes) takes in one message; nothing "
                "was written (raise max_payload in the servers' configuration)",
                path=self.name,
            )
        try:
            ack = self._call(
                lambda: self._js.publish(self.address.subject, payload, headers=headers),
                "append",
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in _CONFLICT_CODES:
                if self._stored_at(seq + 1) == msg_id:
                    ack = _Stored(seq + 1)  # an earlier try of this very append landed
                else:
                    raise AppendConflict(
                        f"{self.name}: the stream no longer ends at sequence {seq}, where "
                        "this writer read it to; nothing was written",
                        path=self.name,
                    ) from None
            else:
                raise LogWriteError(
                    f"{self.name}: the server refused the append ({exc.description}, "
                    f"error {exc.err_code}); nothing was appended",
                    path=self.name,
                ) from None
        if getattr(ack, "duplicate", False) and ack.seq != seq + 1:
            # Stored before, elsewhere: the writer reads it and its window answers the retry.
            raise AppendConflict(
                f"{self.name}: this very message was stored before, at sequence {ack.seq}",
                path=self.name,
            )
        self.last_token += 1
        return self.last_token, Cursor(ack.seq << _SHIFT)

    def _stored_at(self, seq: int) -> str | None:
        """The Msg-Id of the message at ``seq``, if there is one."""
        msg = self._get(seq)
        return None if msg is None else (msg.headers or {}).get("Nats-Msg-Id")

    def payload_at(self, seq: int) -> bytes | None:
        """The records of the message at ``seq``, or of its replacement (None: neither)."""
        msg = self._get(seq)
        if msg is not None:
            return bytes(msg.data)
        found = self._replacement(seq)
        return None if found is None else found[1]

    def _get(self, seq: int) -> Any:
        async def get() -> Any:
            try:
                return await self._js.get_msg(self.address.stream, seq, direct=True)
            except nats.js.errors.NotFoundError:
                return None

        return self._call(get, "read a message")

    def on_publish(self, ring: Callable[[], None]) -> Callable[[], None]:
        """Call ``ring`` (on the client's thread) whenever the stream stores a message,
        from any host; returns what stops it. A doorbell only: a reader still reads the
        stream in order, and a bell missed (while the servers were away, say) is made
        up by the reader's own polls. The bell is an ordered consumer of new messages
        that delivers their headers only, so a message's bytes do not travel twice."""

        async def rang(_msg: Any) -> None:
            ring()

        sub = self._call(
            lambda: self._js.subscribe(
                self.address.subject,
                cb=rang,
                stream=self.address.stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                headers_only=True,
            ),
            "subscribe to the log",
        )

        def stop() -> None:
            with contextlib.suppress(Exception):  # closing: the connection may be gone
                self._loop.run(sub.unsubscribe(), _TRY_S)

        return stop

    @property
    def created(self) -> str:
        """When the stream was created: a stream deleted and made again under the same
        name is another log."""
        return str(self._created)

    def messages(self, after_seq: int, pos: int) -> Iterator[list[tuple[int, bytes, int]]]:
        """The messages after sequence ``after_seq``, in batches, as (sequence, payload,
        ``pos`` of its last record); each checked as ``read`` checks it, the first
        continuing from ``pos``. For a reader that keeps the records' bytes."""
        reading = JetStreamReading(self, Cursor(after_seq << _SHIFT), pos, ev.state_decoder)
        for batch in self._messages(after_seq + 1):
            checked = []
            for seq, payload in batch:
                reading.last_pos = reading._unit(seq, payload)[-1].pos
                checked.append((seq, payload, reading.last_pos))
            yield checked

    def wait_durable(self, token: int) -> None:
        """Nothing to wait for: an append returns once the stream acknowledged it."""

    def sync(self) -> None:
        """Nothing to sync: the servers' ``sync_interval`` decides (see the docstring)."""

    def repair(self, torn: TornTail) -> str:
        raise LogError(f"{self.name}: a stream has no torn tail to repair", path=self.name)

    # -- forgetting (see the module docstring) ------------------------------------------
    def find_sessions(
        self,
        session_ids: Collection[str],
        after: Cursor = START,
        pos: int = 0,
        first_pos: int = 0,
    ) -> dict[str, list[int]]:
        """Every record read from the message that holds ``first_pos`` (or from ``after``):
        a stream has no byte search, but the message is found without reading up to it."""
        if first_pos > pos + 1 and not after & _MEMBER:
            after, pos = self._seek(first_pos, after, pos)
        found: dict[str, list[int]] = {sid: [] for sid in session_ids}
        for run in self.read_state(after, pos).runs():
            for event in run.events:
                positions = found.get(getattr(event, "session_id", None) or "")
                if positions is not None:
                    positions.append(event.pos)
        return found

    def _seek(self, target: int, after: Cursor, pos: int) -> tuple[Cursor, int]:
        """Where to read from (a cursor and the ``pos`` that ends there) for the record at
        position ``target`` to come first or soon after, following ``after``: before the
        last message whose first record is at or before ``target``, found by a binary
        search over the sequences, one message read per step. A step that meets a
        sequence deleted (with no replacement) is given the next message there is."""
        seq, seq_pos = (after >> _SHIFT) + 1, pos  # the message to read first, and pos
        last = self._call(self._info, "look where the log ends").state.last_seq
        while seq < last:
            mid = (seq + last + 1) // 2
            got, _ = self._read_batch(mid, mid)
            first = ev.decode_line(got[0][1].split(b"\n", 1)[0]).pos if got else target + 1
            if first <= target:
                seq, seq_pos = got[0][0], first - 1
            else:
                last = mid - 1
        return Cursor((seq - 1) << _SHIFT), seq_pos

    def plan_redaction(self, positions: Sequence[tuple[int, int]], records: int) -> None:
        a = self.address
        self._call(self._ensure_replacements, "create the replacements stream")
        after = self._call(self._info, "look where the log ends").state.last_seq
        plan = json.dumps(
            {"positions": positions, "records": records, "after": after, "at": time.time()}
        )
        self._call(
            lambda: self._js.publish(a.replacement(_PLAN), plan.encode(), stream=a.replacements),
            "plan a redaction",
        )

    def redact(self, positions: Sequence[tuple[int, int]]) -> int:
        """Replace each message that holds a record at ``positions`` (read from the one
        that holds the first, as ``find_sessions`` reads), then drop the plan."""

        def hit(pos: int) -> bool:
            return any(lo <= pos <= hi for lo, hi in positions)

        self._call(self._ensure_replacements, "create the replacements stream")
        changed = 0
        first_pos = min((lo for lo, _ in positions), default=0)
        after, _ = self._seek(first_pos, START, 0) if first_pos > 1 else (START, 0)
        for batch in self._messages((after >> _SHIFT) + 1):
            for seq, payload in batch:
                lines = payload.splitlines(keepends=True)
                first = ev.decode_checked(lines[0][:-1], ev.state_decoder).pos
                new = [
                    ev.redaction_line(line) if hit(first + k) else line
                    for k, line in enumerate(lines)
                ]
                if new != lines:
                    self._replace(seq, b"".join(new))
                    changed += sum(old != line for old, line in zip(lines, new, strict=True))
        plan = self._replacement(_PLAN)
        if plan is not None:
            self._delete(self.address.replacements, plan[0])
        return changed

    def _replace(self, seq: int, payload: bytes) -> None:
        """Publish ``payload`` as message ``seq``'s replacement, then securely erase the
        replacement it had and the message itself (a step a crash cut short is done
        again by the next redaction: each is safe to repeat)."""
        a = self.address
        before = self._replacement(seq)
        self._call(
            lambda: self._js.publish(a.replacement(seq), payload, stream=a.replacements),
            "replace a message",
        )
        if before is not None:
            self._delete(a.replacements, before[0])
        self._delete(a.stream, seq)
        self._erased = max(self._erased, seq)

    def _delete(self, stream: str, seq: int) -> None:
        """Delete message ``seq`` with the server's secure erase (its bytes overwritten)."""

        async def delete() -> None:
            try:
                await self._js.delete_msg(stream, seq)
            except nats.js.errors.APIError:
                # A message erased before (a message two forgettings touch, or a step done
                # again after a crash) fails to be erased again: only one still there did.
                if await self._stored(stream, seq):
                    raise

        self._call(delete, "erase a message")

    async def _stored(self, stream: str, seq: int) -> bool:
        """Whether ``stream`` still holds message ``seq``."""
        try:
            await self._js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return False
        return True

    def _replacement(self, seq: int | str) -> tuple[int, bytes] | None:
        """(its sequence, its payload) of the newest message on the replacement subject
        of ``seq`` (None: there is none, or no replacements stream). Not a direct get:
        that would go unanswered while no replacements stream exists."""
        a = self.address

        async def get() -> tuple[int, bytes] | None:
            try:
                msg = await self._js.get_msg(a.replacements, subject=a.replacement(seq))
            except nats.js.errors.NotFoundError:
                return None
            return int(msg.seq), bytes(msg.data)

        result: tuple[int, bytes] | None = self._call(get, "read a replacement")
        return result

    async def _ensure_replacements(self) -> None:
        a = self.address
        try:
            await self._js.stream_info(a.replacements)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=a.replacements,
                subjects=[a.replacement(">")],
                storage=StorageType.FILE,
                num_replicas=a.replicas,
            )
            with contextlib.suppress(nats.js.errors.APIError):  # another host made it
                await self._js.add_stream(config)

    def _finish_redaction(self) -> None:
        """Carry out a redaction planned by a writer that stopped before it was done, if
        its forgettings were appended; drop a plan whose forgettings never were."""
        plan = self._replacement(_PLAN)
        if plan is None:
            return
        planned = json.loads(plan[1])
        positions = [(lo, hi) for lo, hi in planned["positions"]]
        appended = 0
        for batch in self._messages(planned["after"] + 1):
            for _seq, payload in batch:
                for line in payload.splitlines():
                    event = ev.decode_checked(line, ev.state_decoder)
                    if isinstance(event, ev.SessionForgotten) and all(
                        _within(r, positions) for r in event.positions
                    ):
                        appended += 1
        if appended >= planned["records"]:
            self.redact([(lo, hi) for lo, hi in positions])
        elif time.time() - planned["at"] > _PLAN_PATIENCE_S:
            self._delete(self.address.replacements, plan[0])

    def scrub_torn(self, session_id: str) -> list[str]:
        return []  # nothing is ever torn, so nothing was set aside

    def check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"{self.name}: the journal is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._shut()

    def _shut(self) -> None:
        """Close the connection, if there is one, then stop the loop."""
        if self._nc is not None:
            with contextlib.suppress(Exception):  # closing: it goes whatever it says
                self._loop.run(self._nc.close(), self.wait_s)
        self._loop.stop()

    # -- reading -------------------------------------------------------------------------
    def _messages(self, first: int) -> Iterator[list[tuple[int, bytes]]]:
        """(sequence, payload) of the messages from ``first`` to the stream's end, in
        batches (deleted ones are gaps): one request per batch, none to ask where the
        stream ends (a writer that lost a race reads what it missed at once)."""
        while True:
            batch, pending = self._read_batch(first, None)
            if batch:
                yield batch
                first = batch[-1][0] + 1
            if not pending and self._erased >= first:
                # The stream's last messages may be replaced ones: a read is given none.
                last = self._call(self._info, "look where the log ends").state.last_seq
                tail = self._with_replacements(first, last, []) if last >= first else []
                if tail:
                    yield tail
                return
            if not batch or not pending:
                return

    def _read_batch(self, first: int, last: int | None) -> tuple[list[tuple[int, bytes]], int]:
        """The messages from ``first`` (up to ``last``), at most ``_BATCH``, and how many
        more the stream holds after them."""
        got: list[tuple[int, bytes]]
        got, pending = self._call(
            functools.partial(self._direct_batch, first, last), "read the log"
        )
        return self._with_replacements(first, last, got), pending

    def _with_replacements(
        self, first: int, last: int | None, got: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        """``got`` with each message missing from ``first`` to its end (or ``last``) read
        from its replacement; none is asked for where nothing is missing."""
        stop = last if last is not None else (got[-1][0] if got else first - 1)
        if len(got) == stop - first + 1:
            return got
        filled = dict(got)
        for seq in range(first, stop + 1):
            if seq not in filled:
                found = self._replacement(seq)
                if found is not None:
                    filled[seq] = found[1]
        return sorted(filled.items())

    async def _direct_batch(
        self, first: int, last: int | None
    ) -> tuple[list[tuple[int, bytes]], int]:
        nc = self._nc
        inbox = nc.new_inbox()
        got: list[tuple[int, bytes]] = []
        pending = [0]
        done = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            headers = msg.headers or {}
            if headers.get("Status"):  # 204: end of the batch; 404: nothing there
                pending[0] = int(headers.get("Nats-Num-Pending", 0))
                done.set()
                return
            got.append((int(headers["Nats-Sequence"]), msg.data))

        sub = await nc.subscribe(inbox, cb=on_msg)
        try:
            request: dict[str, int] = {"seq": first, "batch": _BATCH}
            if last is not None:
                request.update(batch=min(_BATCH, last - first + 1), up_to_seq=last)
            await nc.publish(
                f"$JS.API.DIRECT.GET.{self.address.stream}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            await done.wait()
        finally:
            await sub.unsubscribe()
        return got, pending[0]


def _within(r: Sequence[int], ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether the range ``r`` lies inside one of ``ranges``."""
    return any(lo <= r[0] and r[1] <= hi for lo, hi in ranges)


def _constant(ends: list[Cursor]) -> Callable[[], list[Cursor]]:
    return lambda: ends


class _Stored:
    """The ack of an append found stored by an earlier try."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.duplicate = False


class JetStreamReading(Generic[E]):
    """One pass over the stream from a cursor: see ``journal.log.backend.Reading``."""

    def __init__(
        self, log: JetStreamLog, after: Cursor, pos: int, decoder: msgspec.json.Decoder[E]
    ) -> None:
        self._log = log
        self._decoder = decoder
        self.end: int = after
        self.last_pos = pos
        self.torn: TornTail | None = None  # a message is stored whole or not at all

    def __iter__(self) -> Iterator[tuple[E, int]]:
        for run in self.runs():
            yield from zip(run.events, run.ends(), strict=True)

    def runs(self) -> Iterator[Run[E]]:
        # A cursor inside a message (after one of its records) resumes after that record.
        skip = self.end & _MEMBER
        for batch in self._log._messages((self.end >> _SHIFT) + 1):
            events: list[E] = []
            ends: list[Cursor] = []
            start = Cursor(self.end)
            for seq, payload in batch:
                self.last_pos -= skip  # the message's first record is checked from here
                unit = self._unit(seq, payload)
                base = (seq - 1) << _SHIFT
                events.extend(unit[skip:])
                ends.extend(Cursor(base + k) for k in range(skip + 1, len(unit)))
                ends.append(Cursor(seq << _SHIFT))
                self.end, self.last_pos, skip = seq << _SHIFT, unit[-1].pos, 0
            if events:
                yield Run(events, start, Cursor(self.end), _constant(ends))

    def _unit(self, seq: int, payload: bytes) -> list[E]:
        """The records of one message: a record, or whole groups."""
        at = Cursor((seq - 1) << _SHIFT)
        if not payload.endswith(b"\n"):
            raise self._corrupt("the message does not end with a whole record", at)
        events: list[E] = []
        open_group = 0  # members still expected of the group being read
        for line in payload[:-1].split(b"\n"):
            expected = self.last_pos + len(events) + 1
            try:
                event = ev.decode_checked(line, self._decoder)
            except ev.LineError as exc:
                raise self._corrupt(exc.reason, at, expected) from None
            if event.pos != expected:
                raise self._corrupt(f"position {event.pos} where {expected} was expected", at)
            if event.grp is UNSET:
                if open_group:
                    raise self._corrupt("a group is cut short inside its message", at, expected)
            else:
                index, size = event.grp
                if (open_group and index != size - open_group + 1) or (
                    not open_group and (index != 1 or size < 2)
                ):
                    raise self._corrupt(f"group member {index} of {size} out of order", at)
                open_group = size - index
            events.append(event)
        if open_group:
            raise self._corrupt("a group is cut short inside its message", at)
        return events

    def _corrupt(self, reason: str, at: Cursor, line: int | None = None) -> CorruptLog:
        return CorruptLog(
            f"{reason} (stream sequence {(at >> _SHIFT) + 1})",
            path=self._log.name,
            line=line if line is not None else self.last_pos + 1,
            offset=at,
            why="a message is stored whole, so it was changed after it was written",
        )
