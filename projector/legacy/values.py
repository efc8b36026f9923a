"""Turning the loose values of an old database into what the writer accepts.

Every function here is pure and says, besides the value, whether the old value was kept
as is; the caller records anything else as an import flag and keeps the original.

Timestamps (``normalise_ts``) accepted, all normalised to the log's one format
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC):

* ISO 8601 / RFC 3339 text: ``2024-05-01 10:00:00`` (SQLite's ``CURRENT_TIMESTAMP``),
  ``2024-05-01T10:00:00``, with ``.f`` to ``.fffffffff`` fractions (digits after the
  sixth are dropped), ``/`` as the date separator, an optional ``Z``/``UTC``/``+HH:MM``/
  ``+HHMM``/``+HH`` offset (converted to UTC), or a date alone (midnight). Text without an
  offset is taken as UTC, as SQLite writes it;
* RFC 2822 text (``Wed, 01 May 2024 10:00:00 GMT``);
* numbers (or numeric text): a SQLite Julian day number from 1,000,000 to 9,999,999,
  else POSIX time: seconds, milliseconds from 10^11, microseconds from 10^14.

Years outside 1000-9999 and anything else are unparseable: the caller keeps the raw value
in the message's metadata and uses a documented fallback time; the row is never dropped.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final

from journal import validation
from projector.legacy.source import BadText

# The writer's own id rules, so that the import can choose an id the writer will accept
# instead of failing on it.
SESSION_ID: Final = validation.SESSION_ID
MODEL_ID: Final = validation.MODEL_ID
# Token counts and durations above these are treated as corrupt: summing a few of them
# would overflow SQLite's 64-bit integers (or reach infinity) in the projection.
MAX_TOKENS: Final = 10**12
MAX_DURATION: Final = 1e9

_ISO = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def jsonable(value: Any) -> Any:
    """A SQLite value as JSON the writer's metadata check accepts, without loss.

    Text, integers, finite floats and NULL are themselves; the rest is tagged:
    ``{"$float": "nan"|"inf"|"-inf"}``, ``{"$blob_base64": …}``,
    ``{"$invalid_utf8_base64": …}`` (TEXT whose bytes are not UTF-8).
    """
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, BadText):
        return {"$invalid_utf8_base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, bytes):
        return {"$blob_base64": base64.b64encode(value).decode("ascii")}
    return {"$repr": repr(value)}


def from_jsonable(value: Any) -> Any:
    """Inverse of ``jsonable``."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, payload),) = value.items()
        if tag == "$float":
            return float(payload)
        if tag == "$blob_base64":
            return base64.b64decode(payload)
        if tag == "$invalid_utf8_base64":
            return BadText(base64.b64decode(payload))
    return value


def _build(
    y: int, mo: int, d: int, h: int, mi: int, s: int, us: int, tz: timezone
) -> datetime | None:
    if not 1000 <= y <= 9999:
        return None
    try:
        return datetime(y, mo, d, h, mi, s, us, tzinfo=tz)
    except ValueError:
        return None


def _offset(text: str | None) -> timezone:
    if not text or text in ("Z", "z", "UTC", "GMT"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) > 2 else 0)
    return timezone(sign * timedelta(minutes=minutes))


def _from_number(x: float) -> datetime | None:
    if not math.isfinite(x):
        return None
    try:
        if 1_000_000 <= x < 10_000_000:  # a Julian day number (SQLite julianday())
            moment = _EPOCH + timedelta(days=x - 2440587.5)
        elif abs(x) >= 1e14:
            moment = _EPOCH + timedelta(microseconds=x)
        elif abs(x) >= 1e11:
            moment = _EPOCH + timedelta(milliseconds=x)
        else:
            moment = _EPOCH + timedelta(seconds=x)
    except OverflowError:
        return None
    return moment if 1000 <= moment.year <= 9999 else None


def parse_when(value: Any) -> datetime | None:
    """The moment an old timestamp names, or None if it is NULL or unparseable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _from_number(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:  # the common case, in C; the regex below takes what fromisoformat refuses
        moment = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment if 1000 <= moment.year <= 9999 else None
    if _NUMBER.fullmatch(text):
        return _from_number(float(text))
    m = _ISO.fullmatch(text)
    if m:
        y, mo, d, h, mi, s, frac, tz = m.groups()
        us = int((frac or "0")[:6].ljust(6, "0"))
        return _build(
            int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), us, _offset(tz)
        )
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment if 1000 <= moment.year <= 9999 else None


_LATEST_NAIVE: Final = validation.LATEST.replace(tzinfo=None)


def normalise_ts(value: Any) -> tuple[str | None, str | None]:
    """(the log's form or None, a flag: None, ``missing_timestamp``,
    ``unparseable_timestamp`` or ``timestamp_out_of_range``: outside the years the writer
    records)."""
    if value is None:
        return None, "missing_timestamp"
    if type(value) is str:  # the common case, ISO text without an offset, all in C
        try:
            naive = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if naive.tzinfo is None and naive.year >= 1000 and naive <= _LATEST_NAIVE:
                return _log_form(naive), None
    moment = parse_when(value)
    if moment is None:
        return None, "unparseable_timestamp"
    try:
        m = moment.astimezone(UTC)
    except OverflowError:
        return None, "unparseable_timestamp"
    if not validation.EARLIEST <= m <= validation.LATEST:
        return None, "timestamp_out_of_range"
    return _log_form(m.replace(tzinfo=None)), None


def _log_form(utc: datetime) -> str:
    """``format_ts`` of a naive UTC time of year 1000 or later (no time zone to convert)."""
    return utc.isoformat(timespec="microseconds") + "Z"


def as_count(value: Any) -> tuple[int | None, str | None]:
    """A token count: (value for the writer, flag or None). NULL stays NULL."""
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, None) if 0 <= value <= MAX_TOKENS else (None, "invalid_tokens")
    number: float | None = None
    if isinstance(value, float):
        number = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    if number is not None and math.isfinite(number) and number.is_integer() and number >= 0:
        return (
            (int(number), "tokens_converted") if number <= MAX_TOKENS else (None, "invalid_tokens")
        )
    return None, "invalid_tokens"


def as_duration(value: Any) -> tuple[float | int | None, str | None]:
    """A duration in seconds: (value for the writer, flag or None). NULL stays NULL.

    -0.0 becomes 0.0: SQLite keeps no sign on a zero, so the projection could not hold
    what the log said (and verify would find the two apart).
    """
    if value is None:
        return None, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (math.isfinite(value) and 0 <= value <= MAX_DURATION):
            return None, "invalid_duration"
        return value + 0, None  # -0.0 + 0 is 0.0; any other value stays as it is
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
        if math.isfinite(number) and 0 <= number <= MAX_DURATION:
            return number + 0.0, "duration_converted"
    return None, "invalid_duration"


def as_seq(value: Any) -> int | None:
    """An old sequence number as an integer, or None if it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
        return int(value)
    return None


def as_text(value: Any, limit: int) -> tuple[str | None, bool]:
    """Text the writer accepts as a title or name: (text or None, True if kept as is).

    NUL becomes U+2400 (the writer refuses NUL), bad UTF-8 is decoded with U+FFFD,
    numbers become their decimal text, a BLOB is dropped from this field; over ``limit``
    characters it is cut. The caller keeps the original whenever this returns False.
    """
    if value is None:
        return None, True
    if isinstance(value, BadText):
        text = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, bytes):
        return None, False
    elif isinstance(value, str):
        text = value
    else:
        text = repr(value) if isinstance(value, float) else str(value)
    out = text.replace("\x00", "\u2400")[:limit]
    return out or None, out == value


def timeout(value: Any, maximum: int) -> tuple[int | None, bool]:
    """A timeout in whole seconds 1..maximum (None = no timeout): (value, kept as is)."""
    if value is None:
        return None, True
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= maximum:
        return value, True
    return None, False
