"""The writer's input checks and documented limits (README "Limits").

Pure functions, run before the log is locked: each raises InvalidValue with a message a
person can act on, and nothing has been written when it does. The legacy importer uses
the same rules to choose values the writer will accept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from journal.errors import InvalidValue
from journal.events import ROLES, ToolCall, encode_json, format_ts, parse_ts
from journal.jsoncheck import MAX_JSON_DEPTH, text_problem, too_deep, value_problem

# Documented limits (README "Limits").
MAX_CONTENT_BYTES: Final = 4 * 1024 * 1024
MAX_TEXT_CHARS: Final = 10_000  # titles, metadata keys, model names
MAX_METADATA_VALUE_BYTES: Final = 64 * 1024
# A message's provider item (raw) and its tool calls are bounded like its content, so one
# message line stays under 12 MiB and a group under MAX_GROUP_BYTES.
MAX_RAW_BYTES: Final = 4 * 1024 * 1024
MAX_TOOL_CALLS_BYTES: Final = 4 * 1024 * 1024
MAX_GROUP_EVENTS: Final = 10_000
MAX_GROUP_BYTES: Final = 64 * 1024 * 1024
MAX_TIMEOUT_SECONDS: Final = 10 * 365 * 86400

# Session ids end up in file names of exports and in URLs: no slashes, no spaces.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
# Event ids: a UUID in canonical form (what str(uuid.UUID(x)) gives), any version.
EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Model ids such as "openai/gpt-4o" or "anthropic/claude-3.5-sonnet@2024-10-22".
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}")


def check_session_id(value: object) -> None:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise InvalidValue(
            f"malformed session id {value!r}: use 1-128 characters from "
            "A-Z a-z 0-9 . _ : @ -, starting with a letter or digit"
        )


def check_model_id(value: object) -> None:
    if not isinstance(value, str) or not MODEL_ID.fullmatch(value):
        raise InvalidValue(
            f"malformed model id {value!r}: use 1-200 characters from "
            "A-Z a-z 0-9 . _ : @ / + -, starting with a letter or digit"
        )


def check_event_id(value: object) -> None:
    if not isinstance(value, str) or not EVENT_ID.fullmatch(value):
        raise InvalidValue(
            f"malformed event id {value!r}: use a UUID in canonical "
            "lowercase form, e.g. str(uuid.uuid4())"
        )


def check_text(
    name: str, value: object, *, required: bool = False, limit: int = MAX_TEXT_CHARS
) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise InvalidValue(f"{name} must be a non-empty string, not {value!r}")
    if len(value) > limit:
        raise InvalidValue(f"{name} is {len(value)} characters long; the limit is {limit}")
    check_encodable(name, value)


def check_encodable(name: str, value: str) -> None:
    # isascii() is O(1) (CPython records it per string): ASCII text has no surrogates.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidValue(
                f"{name} holds a lone surrogate (\\u{ord(value[exc.start]):04x}) "
                f"at character {exc.start}; it is not valid UTF-8"
            ) from None
    if "\x00" in value:
        raise InvalidValue(f"{name} holds a NUL character at {value.index(chr(0))}")


def check_content(content: object, *, may_be_empty: bool = False) -> None:
    if not isinstance(content, str):
        raise InvalidValue(f"content must be a string, not {type(content).__name__}")
    if not content:
        if may_be_empty:
            return
        raise InvalidValue("content is empty (allowed only with tool calls or a raw item)")
    if len(content) > MAX_CONTENT_BYTES or (
        not content.isascii()  # else its length in UTF-8 is its length
        and len(content.encode("utf-8", "surrogatepass")) > MAX_CONTENT_BYTES
    ):
        raise InvalidValue(f"content is over the limit of {MAX_CONTENT_BYTES} bytes of UTF-8")
    check_encodable("content", content)


class MessageParts(msgspec.Struct, frozen=True):
    """The checked parts of a message beyond its text (None where absent)."""

    tool_calls: list[ToolCall] | None
    tool_call_id: str | None
    raw: str | None


def check_message(
    role: object,
    content: object,
    tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None,
    tool_call_id: str | None,
    raw: str | Mapping[str, Any] | Sequence[Any] | None,
) -> MessageParts:
    """Check a message as LLM APIs send it; returns its parts in the log's form.

    Tool calls belong to assistant messages and a ``tool_call_id`` to tool results; the
    text may be empty only beside tool calls or a raw item (they then hold the message).
    """
    if role not in ROLES:
        raise InvalidValue(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    calls = None if tool_calls is None else _check_tool_calls(role, tool_calls)
    if tool_call_id is not None:
        if role != "tool":
            raise InvalidValue(f"tool_call_id belongs to a tool message, not a {role} message")
        check_text("tool_call_id", tool_call_id, required=True, limit=MAX_TEXT_CHARS)
    raw_text = None if raw is None else check_raw(raw)
    check_content(content, may_be_empty=bool(calls) or raw_text is not None)
    return MessageParts(calls, tool_call_id, raw_text)


def _check_tool_calls(
    role: object, tool_calls: Sequence[ToolCall | Mapping[str, Any]]
) -> list[ToolCall]:
    if role != "assistant":
        raise InvalidValue(f"tool calls belong to an assistant message, not a {role} message")
    if isinstance(tool_calls, str | bytes) or not isinstance(tool_calls, Sequence):
        raise InvalidValue(f"tool_calls must be a list, not {type(tool_calls).__name__}")
    calls: list[ToolCall] = []
    for i, call in enumerate(tool_calls):
        if isinstance(call, Mapping):
            unknown = set(call) - {"id", "name", "arguments"}
            if unknown:
                raise InvalidValue(
                    f"tool_calls[{i}] has unknown keys: {', '.join(sorted(unknown))}"
                )
            call = ToolCall(
                id=call.get("id"),  # type: ignore[arg-type]  # checked just below
                name=call.get("name"),  # type: ignore[arg-type]
                arguments=call.get("arguments", ""),
            )
        elif not isinstance(call, ToolCall):
            raise InvalidValue(
                f"tool_calls[{i}] must be a mapping with id, name and arguments, "
                f"not {type(call).__name__}"
            )
        check_text(f"tool_calls[{i}].id", call.id, required=True)
        check_text(f"tool_calls[{i}].name", call.name, required=True)
        if not isinstance(call.arguments, str):
            raise InvalidValue(f"tool_calls[{i}].arguments must be a string (the JSON text)")
        check_encodable(f"tool_calls[{i}].arguments", call.arguments)
        calls.append(call)
    size = len(encode_json(calls))
    if size > MAX_TOOL_CALLS_BYTES:
        raise InvalidValue(
            f"tool_calls are {size} bytes of JSON; the limit is {MAX_TOOL_CALLS_BYTES}"
        )
    return calls


def check_raw(raw: str | Mapping[str, Any] | Sequence[Any]) -> str:
    """The raw provider item as JSON text: a string is kept verbatim, a value is encoded."""
    if isinstance(raw, str):
        check_encodable("raw", raw)
        text = raw.encode("utf-8")
        if len(text) <= MAX_RAW_BYTES:
            if too_deep(text):
                raise InvalidValue(f"raw is JSON nested deeper than {MAX_JSON_DEPTH} levels")
            try:
                msgspec.json.decode(text)
            except (msgspec.DecodeError, RecursionError):
                raise InvalidValue(f"raw is not JSON text: {text_problem(text)}") from None
    elif isinstance(raw, Mapping | Sequence) and not isinstance(raw, bytes | bytearray):
        problem = value_problem(raw)
        if problem is not None:
            raise InvalidValue(f"raw is not JSON-serialisable: {problem}")
        try:
            text = encode_json(raw)
        except (msgspec.MsgspecError, UnicodeEncodeError, TypeError) as exc:
            raise InvalidValue(
                "raw is not JSON-serialisable: it holds text that is not valid Unicode"
            ) from exc
        if too_deep(text):
            raise InvalidValue(f"raw is JSON nested deeper than {MAX_JSON_DEPTH} levels")
    else:
        raise InvalidValue(
            f"raw must be JSON text or a JSON object or array, not {type(raw).__name__}"
        )
    if len(text) > MAX_RAW_BYTES:
        raise InvalidValue(f"raw is {len(text)} bytes of JSON; the limit is {MAX_RAW_BYTES}")
    return text.decode("utf-8")


def check_count(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(f"{name} must be a whole number >= 0, not {value!r}")
    if value > 2**63 - 1:
        raise InvalidValue(f"{name} {value} does not fit in 64 bits")


def check_duration(value: object) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidValue(f"duration_seconds must be a finite number >= 0, not {value!r}")


def check_timeout(name: str, value: object) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (1 <= value <= MAX_TIMEOUT_SECONDS)
    ):
        raise InvalidValue(
            f"{name} must be None or a whole number of seconds from 1 to "
            f"{MAX_TIMEOUT_SECONDS}, not {value!r}"
        )


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidValue(f"metadata must be a JSON object, not {type(metadata).__name__}")
    problem = value_problem(metadata)
    if problem is not None:
        raise InvalidValue(f"metadata is not JSON-serialisable: {problem}")
    try:
        raw = encode_json(dict(metadata))
        value: dict[str, Any] = msgspec.json.decode(raw)
    except (msgspec.MsgspecError, UnicodeEncodeError) as exc:  # a lone surrogate, say
        raise InvalidValue(
            "metadata is not JSON-serialisable: it holds text that is not valid Unicode"
        ) from exc
    if len(raw) > MAX_METADATA_VALUE_BYTES:
        raise InvalidValue(
            f"metadata is {len(raw)} bytes of JSON; the limit is {MAX_METADATA_VALUE_BYTES}"
        )
    if value != dict(metadata):
        raise InvalidValue(
            "metadata does not survive a JSON round trip (NaN, infinity or non-string keys?)"
        )
    return value


# Every time the log records lies in these years, so that a deadline (a time plus a timeout
# of at most MAX_TIMEOUT_SECONDS) still lies in the calendar, which ends with year 9999.
EARLIEST: Final = datetime(1000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9990, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)


def check_at(at: datetime | str | None) -> str | None:
    """``at`` as the log's timestamp text (None stays None)."""
    if at is None:
        return None
    if isinstance(at, str):
        try:
            check_time("at", parse_ts(at))
        except ValueError as exc:
            raise InvalidValue(f"at: {exc}") from None
        return at
    return check_time("at", at)


def check_time(name: str, moment: object) -> str:
    """A time the log may record, as its timestamp text; InvalidValue otherwise."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidValue(f"{name} must be a timezone-aware datetime, not {moment!r}")
    if not EARLIEST <= moment <= LATEST:
        raise InvalidValue(
            f"{name} {moment.isoformat()} is outside the years 1000 to 9989 the log records "
            "(a deadline up to 10 years later must still lie in the calendar)"
        )
    return format_ts(moment)
