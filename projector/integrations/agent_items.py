"""One Agents SDK item as one message of the log, and back (``projector.integrations.agents``).

``item_arguments`` gives ``append_message``'s arguments for an item: the item itself, as
JSON in ``raw`` (what ``message_json`` gives back, so items come back equal), and its
role, text and tool call fields rendered for reading and search.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from msgspec import UNSET

from journal.errors import InvalidValue
from journal.events import ROLES, MessageAppended
from journal.integrations.capture import message_arguments


def item_arguments(item: Mapping[str, Any]) -> dict[str, Any]:
    """``append_message`` arguments for one SDK item: ``raw`` is the item's JSON; the
    role, text and tool call fields render it for reading and search."""
    if not isinstance(item, Mapping):
        raise InvalidValue(
            f"a session item must be a JSON object (a mapping), not {type(item).__name__}"
        )
    raw = item_json(item)
    kind, role = item.get("type"), item.get("role")
    if kind in (None, "message") and role in ROLES:
        return _message_item(item, role, raw)
    if kind == "function_call":
        call = {
            "id": _clean(_text(item.get("call_id"))),
            "name": _clean(_text(item.get("name"))),
            "arguments": _clean(_text(item.get("arguments"))),
        }
        calls = [call] if call["id"] and call["name"] else None
        return {"role": "assistant", "content": "", "tool_calls": calls, "raw": raw}
    if kind == "function_call_output":
        return {
            "role": "tool",
            "content": _clean(_readable(item.get("output"))),
            "tool_call_id": _clean(_text(item.get("call_id"))) or None,
            "raw": raw,
        }
    # reasoning, and every other type: whatever text the item has
    parts = (_readable(item.get(key)) for key in ("summary", "content", "output"))
    return {"role": "assistant", "content": _clean("\n".join(p for p in parts if p)), "raw": raw}


def _message_item(item: Mapping[str, Any], role: str, raw: str) -> dict[str, Any]:
    """A message item, read as the LiteLLM capture reads one (its text parts joined)."""
    args = message_arguments(item)
    calls = args["tool_calls"] if role == "assistant" else None
    if calls and not all(c["id"] and c["name"] for c in calls):
        calls = None  # an item the log cannot file as a tool call: raw keeps it
    call_id = args.get("tool_call_id") if role == "tool" else None
    return {
        "role": role,
        "content": _clean(args["content"]),
        "tool_calls": calls or None,
        "tool_call_id": (_clean(call_id) or None) if isinstance(call_id, str) else None,
        "raw": raw,
    }


def item_json(item: Mapping[str, Any]) -> str:
    """The item as JSON text that ``json.loads`` turns back into an equal item, as the
    SDK's ``SQLiteSession`` stores it (non-ASCII text kept as is, for reading)."""
    try:
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:  # not JSON: an object, NaN, a cycle
        raise InvalidValue(f"a session item must be JSON: {exc}") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # the log keeps valid Unicode only
            raise InvalidValue(
                f"a session item holds a lone surrogate (\\u{ord(text[exc.start]):04x}), "
                "which is not valid Unicode"
            ) from None
    return text


def message_json(event: MessageAppended) -> str:
    """A message's item: its ``raw``, or, for a message another writer appended without
    one, the plain item its fields make (a tool result as a ``function_call_output``)."""
    if event.raw is not UNSET:
        return event.raw
    if event.role == "tool":
        item: dict[str, Any] = {
            "type": "function_call_output",
            "call_id": event.tool_call_id or "",
            "output": event.content,
        }
    else:
        item = {"role": event.role, "content": event.content}
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False)


def _readable(value: object) -> str:
    """The text of a content value: a string, or the text parts of a list of parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(
            p["text"] for p in value if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def _clean(text: str) -> str:
    """Text the log's text fields accept (raw keeps the item exact): NUL replaced."""
    return text.replace("\x00", "\ufffd")
