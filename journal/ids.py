"""The event ids the writer makes: random ones for calls given none, and derived ones for
the auxiliary events a call adds, so that a retry or a re-import repeats them exactly."""

from __future__ import annotations

import os
import uuid
from typing import Final

_EVENT_ID_NAMESPACE: Final = uuid.UUID("7f1b2c3e-4d5a-5b6c-8d7e-9f0a1b2c3d4e")


def random_event_id() -> str:
    """A random (version 4) UUID as text; twice as fast as ``str(uuid.uuid4())``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_id(event_id: str | None, part: str) -> str | None:
    """A deterministic id for an auxiliary event, so retries and imports repeat it."""
    return None if event_id is None else str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{event_id}/{part}"))
