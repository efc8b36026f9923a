"""Recording LLM calls into the journal: what a router adapter hands over, and the rules.

An adapter (``journal.integrations.litellm``) turns each finished call into a ``Call``:
the session id, the request's messages as the client sent them (chat APIs resend the whole
history every time), the response message, and the call's figures. ``Recorder.record``
then appends, in one atomic group, only what the log lacks:

* the messages past the session's last seq (the suffix of the resent history), with
  ``expected_seq``, so two calls of one session never interleave, then the response;
* nothing at all if the call id was recorded before (a redelivered callback), or if the
  whole exchange is already in the log (a late callback of an earlier call, whose history
  a later call logged first). Every event id derives from the call id (uuid5), so a
  redelivery is also refused by the writer itself;
* if the resent history no longer starts with what was logged (the client edited or
  trimmed it: a sliding window, a regenerated answer), the policy decides. ``"skip"``
  (default) writes nothing and logs a warning; ``"new_session"`` starts a session
  ``<id>:fork-<8 hex>`` holding the call's whole transcript, marked with the metadata
  ``forked_from``, and later calls of that id continue whichever of its sessions their
  history extends. The log never gets a transcript the client did not send.

The response carries the call's figures: ``tokens_used`` is prompt plus completion tokens,
``duration_seconds`` the call's, and its metadata holds ``call_id``, ``model``,
``prompt_tokens``, ``completion_tokens``, ``cost_usd``, ``time_to_first_token_seconds``
and ``stream``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from journal.errors import (
    DurabilityError,
    InvalidValue,
    JournalClosed,
    SequenceConflict,
    UnknownSession,
)
from journal.events import MessageAppended, SessionCreated, SessionMetadataSet, encode_json
from journal.log import START, Cursor, Durability, LogReader
from journal.validation import MAX_RAW_BYTES, MODEL_ID, SESSION_ID
from journal.writer import Journal

log = logging.getLogger("journal.integrations")

MissingSession = Literal["skip", "per_call"]
HistoryChange = Literal["skip", "new_session"]
FORKED_FROM: Final = "forked_from"
# Metadata of a message whose provider item was over MAX_RAW_BYTES: the item's size.
RAW_OMITTED: Final = "raw_omitted_bytes"
# Event ids of a call: uuid5 of the call id in this namespace (fixed: ids must not change).
_NAMESPACE: Final = uuid.UUID("6f1c3a52-0d7e-4f5b-9a51-2b0c8e4d7a10")
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9._:@-]")
_NOT_MODEL_CHARS = re.compile(r"[^A-Za-z0-9._:@/+-]")

# What makes two messages the same turn: the log's fields, not the provider's item (a
# client resends an answer without the fields the provider added to it).
Key = tuple[str, str, tuple[tuple[str, str, str], ...], str | None]


@dataclass(frozen=True)
class Call:
    """One finished LLM call, as the adapter read it."""

    call_id: str
    session_id: str | None
    model: str
    messages: Sequence[Mapping[str, Any]]  # the request, as sent
    response: Mapping[str, Any]  # the answer's message item
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    duration_seconds: float | None = None
    time_to_first_token_seconds: float | None = None
    cost_usd: float | None = None
    stream: bool = False


def message_arguments(item: Mapping[str, Any]) -> dict[str, Any]:
    """``append_message`` arguments for an OpenAI-style message item (``raw`` is the item).

    A list of content parts becomes its text parts joined by newlines (images and other
    parts stay in ``raw``); ``content`` None (an answer that only calls tools) becomes "".
    """
    content = item.get("content")
    if isinstance(content, list):
        text = "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p
        )
    else:
        text = "" if content is None else str(content)
    encoded = encode_json(dict(item))
    raw: str | None = encoded.decode()
    metadata = None
    if len(encoded) > MAX_RAW_BYTES:
        # Kept, the item would be refused every time the client resends it: the message
        # goes in without it (its text and tool calls still there), marked with its size.
        metadata = {RAW_OMITTED: len(encoded)}
        raw = None
    calls = [
        {
            "id": str(c.get("id") or ""),
            "name": str((c.get("function") or {}).get("name") or ""),
            "arguments": str((c.get("function") or {}).get("arguments") or ""),
        }
        for c in item.get("tool_calls") or ()
        if isinstance(c, Mapping)
    ]
    if raw is None and not text and not calls:
        text = f"[a provider item of {len(encoded)} bytes, not kept]"
    return {
        "role": item.get("role"),
        "content": text,
        "tool_calls": calls or None,
        "tool_call_id": item.get("tool_call_id"),
        "raw": raw,
        "metadata": metadata,
    }


def _key(args: Mapping[str, Any]) -> Key:
    calls = tuple((c["id"], c["name"], c["arguments"]) for c in args["tool_calls"] or ())
    return (str(args["role"]), args["content"], calls, args["tool_call_id"])


def _event_key(e: MessageAppended) -> Key:
    calls = tuple((c.id, c.name, c.arguments) for c in e.tool_calls or ())
    return (e.role, e.content, calls, e.tool_call_id or None)


def event_id(call_id: str, part: str) -> str:
    """The deterministic id of one event of a call."""
    return str(uuid.uuid5(_NAMESPACE, f"{call_id}/{part}"))


def clean_id(value: str, pattern: re.Pattern[str], bad: re.Pattern[str], size: int) -> str:
    """``value`` as an id the log accepts; a changed one gets a hash so two never merge."""
    if pattern.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = bad.sub("-", value).strip("-._:@/+")[: size - 9] or "id"
    return f"{stem}_{digest}"


def session_id_for(value: str) -> str:
    return clean_id(value, SESSION_ID, _NOT_ID_CHARS, 128)


def model_id_for(value: str) -> str:
    return clean_id(value, MODEL_ID, _NOT_MODEL_CHARS, 200)


@dataclass
class _Known:
    """What this recorder knows of one session id: its sessions' logged messages, as read
    from the log up to ``cursor`` (the record at ``pos`` ends there)."""

    sessions: dict[str, list[Key]] = field(default_factory=dict)  # in order of creation
    cursor: Cursor = START
    pos: int = 0

    def stale(self, j: Journal) -> bool:
        """Whether another writer added messages to these sessions (the writer's seqs are
        current inside a batch)."""
        return any(_last_seq(j, s) != len(keys) for s, keys in self.sessions.items())

    def read_more(self, path: str, sid: str) -> None:
        """Read what the log added since ``cursor``: ``sid``'s session and its forks
        (made by any writer), with their messages."""
        reader = LogReader(path, self.cursor, self.pos)
        sessions = self.sessions
        for event, _ in reader:
            if isinstance(event, SessionCreated) and event.session_id == sid:
                sessions.setdefault(sid, [])
            elif (
                isinstance(event, SessionMetadataSet)
                and event.key == FORKED_FROM
                and event.value == sid
            ):
                sessions.setdefault(event.session_id, [])
            elif isinstance(event, MessageAppended) and event.session_id in sessions:
                logged = sessions[event.session_id]
                if event.seq > len(logged):  # not one this recorder wrote and noted
                    logged.append(_event_key(event))
        self.cursor, self.pos = Cursor(reader.end), reader.last_pos


class Recorder:
    """Appends finished calls to a log; thread-safe; opens the log on first use."""

    def __init__(
        self,
        log_path: str,
        *,
        durability: Durability = "batch",
        missing_session: MissingSession = "skip",
        history_change: HistoryChange = "skip",
    ) -> None:
        if missing_session not in ("skip", "per_call"):
            raise InvalidValue(
                f"missing_session must be 'skip' or 'per_call', not {missing_session!r}"
            )
        if history_change not in ("skip", "new_session"):
            raise InvalidValue(
                f"history_change must be 'skip' or 'new_session', not {history_change!r}"
            )
        self.log_path = log_path
        self.durability: Durability = durability
        self.missing_session = missing_session
        self.history_change = history_change
        self._lock = threading.Lock()
        self._journal: Journal | None = None
        self._known: dict[str, _Known] = {}

    def close(self) -> None:
        with self._lock:
            self._drop_journal()

    def _drop_journal(self) -> None:
        j, self._journal = self._journal, None
        if j is not None:
            try:
                j.close()
            except Exception:  # closing a broken journal: nothing more to save
                log.debug("closing the journal failed", exc_info=True)

    def record(self, call: Call) -> str:
        """Append what the log lacks of ``call``; returns what was done (for logs, tests)."""
        sid = call.session_id
        if not sid:
            if self.missing_session == "skip":
                return "skipped: no session id"
            sid = call.call_id
        sid = session_id_for(sid)
        with self._lock:
            if self._journal is None:
                self._journal = Journal.open(self.log_path, durability=self.durability)
            try:
                return self._record(self._journal, sid, call)
            except (DurabilityError, JournalClosed):
                # A failed fsync leaves the journal refusing appends: open it again next
                # time (the call's ids make a retry of what may have landed harmless).
                self._drop_journal()
                raise

    def _record(self, j: Journal, sid: str, call: Call) -> str:
        transcript = [message_arguments(m) for m in call.messages]
        transcript.append(message_arguments(call.response))
        keys = [_key(a) for a in transcript]
        done = event_id(call.call_id, "response")
        for attempt in range(3):
            if j.receipt(done) is not None:
                return "duplicate"
            # Most of any reading of the log is done here, before the lock is taken: inside
            # the batch only what was appended in between is left to read.
            known = self._sessions(j, sid)
            if known.sessions and _extended(known, keys) is None:
                known.read_more(self.log_path, sid)  # another writer's fork, maybe
            try:
                with j.batch():  # holds the lock: what it reads below is final
                    return self._append(j, sid, call, transcript, keys)
            except SequenceConflict:
                # Another writer appended to the session: read its messages again.
                self._known.pop(sid, None)
                if attempt == 2:
                    raise
            except BaseException:
                self._known.pop(sid, None)  # the group wrote nothing; the cache may have
                raise
        raise AssertionError("unreachable")

    def _append(
        self,
        j: Journal,
        sid: str,
        call: Call,
        transcript: list[dict[str, Any]],
        keys: list[Key],
    ) -> str:
        known = self._sessions(j, sid)
        target = _extended(known, keys)
        if target is None and known.sessions:
            # No session matches: another writer may have forked one meanwhile.
            known.read_more(self.log_path, sid)
            target = _extended(known, keys)
        if target == "":
            return "already logged"
        if target is None and known.sessions:
            if self.history_change == "skip":
                log.warning(
                    "call %s not recorded: its history no longer matches session %s "
                    "(edited or trimmed by the client)",
                    call.call_id,
                    sid,
                )
                return "skipped: history changed"
            target = f"{sid[:114]}:fork-{event_id(call.call_id, 'fork')[:8]}"
        start = 0
        if target is None or target not in known.sessions:
            target = target or sid
            self._create(j, target, sid, call)
            known.sessions[target] = []
        else:
            start = len(known.sessions[target])
        logged = known.sessions[target]
        for i in range(start, len(transcript)):
            last = i == len(transcript) - 1
            args = transcript[i]
            if last:
                args = _with_figures(args, call)
            j.append_message(
                target,
                **args,
                expected_seq=len(logged),
                event_id=event_id(call.call_id, "response" if last else f"m{i + 1}"),
            )
            logged.append(keys[i])
        return f"appended {len(transcript) - start} to {target}"

    def _create(self, j: Journal, target: str, sid: str, call: Call) -> None:
        j.create_session(
            model_id_for(call.model),
            session_id=target,
            event_id=event_id(call.call_id, "session"),
        )
        if target != sid:
            j.set_metadata(target, FORKED_FROM, sid, event_id=event_id(call.call_id, "forked"))

    def _sessions(self, j: Journal, sid: str) -> _Known:
        """The sessions of ``sid`` and their messages: cached, and read on from where the
        cache stopped when another writer changed them."""
        known = self._known.get(sid)
        if known is None:
            known = self._known[sid] = _Known()
            if _last_seq(j, sid) is None:  # a new session id: nothing to read
                known.cursor, known.pos = j.read_to, j.last_pos
                return known
            known.read_more(self.log_path, sid)
        elif known.stale(j):
            known.read_more(self.log_path, sid)
        return known


def _extended(known: _Known, keys: list[Key]) -> str | None:
    """The newest session whose messages the call's transcript extends ("" if the
    transcript is already all logged in one), or None."""
    for candidate in reversed(known.sessions):
        logged = known.sessions[candidate]
        if keys[: len(logged)] == logged[: len(keys)]:
            return "" if len(logged) >= len(keys) else candidate
    return None


def _last_seq(j: Journal, sid: str) -> int | None:
    try:
        return j.last_seq(sid)
    except UnknownSession:
        return None


def _with_figures(args: dict[str, Any], call: Call) -> dict[str, Any]:
    """The response's arguments with the call's tokens, duration and metadata."""
    tokens = None
    if call.prompt_tokens is not None or call.completion_tokens is not None:
        tokens = (call.prompt_tokens or 0) + (call.completion_tokens or 0)
    meta = {
        "call_id": call.call_id,
        "model": call.model,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cost_usd": call.cost_usd,
        "time_to_first_token_seconds": call.time_to_first_token_seconds,
        "stream": call.stream,
    }
    return {
        **args,
        "tokens_used": tokens,
        "duration_seconds": call.duration_seconds,
        "metadata": {
            **(args["metadata"] or {}),
            **{k: v for k, v in meta.items() if v is not None},
        },
    }
