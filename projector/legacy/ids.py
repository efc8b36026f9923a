"""The ids of imported events: uuid5 of each old row's identity, so an import run again
finds its own events and appends nothing twice.

The name hashed is the identity as JSON (never the old file's name or path): the same
old rows give the same ids on any machine.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

from journal.events import encode_json

NAMESPACE: Final = uuid.UUID("5b0c6f4e-2a41-5d7e-9c3b-6a1f0e8d2c47")
_NAMESPACE_BYTES: Final = NAMESPACE.bytes


def uuid5_hex(identity: list[Any] | tuple[Any, ...]) -> str:
    """``uuid.uuid5(NAMESPACE, <identity as JSON>).hex``, computed directly.

    The same bits as ``uuid.uuid5`` (SHA-1 of the namespace and the name, version 5, RFC
    4122 variant) without building a ``UUID`` object: an import computes one per event.
    """
    return _uuid5_hex(hashlib.sha1(_NAMESPACE_BYTES + encode_json(identity)))


def _uuid5_hex(sha1: Any) -> str:
    digest = bytearray(sha1.digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # variant RFC 4122
    return digest.hex()


def _canonical(x: str) -> str:
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def event_id(*identity: Any) -> str:
    """A uuid5 over the row's identity in the old file (never the file's name or path)."""
    return _canonical(uuid5_hex(identity))


class IdPrefix:
    """``event_id(*prefix, *rest)`` for many ``rest`` under one ``prefix`` (a session's
    identity): the hash of the namespace and the prefix's JSON is taken once."""

    def __init__(self, *prefix: Any) -> None:
        head = encode_json([*prefix, None])  # '[<prefix>,null]' (or '[null]')
        self._sha1 = hashlib.sha1(_NAMESPACE_BYTES + head[: -len(b"null]")])

    def __call__(self, *rest: Any) -> str:
        sha1 = self._sha1.copy()
        sha1.update(encode_json(rest)[1:])  # '<rest>]', after the prefix's '[...,'
        return _canonical(_uuid5_hex(sha1))
