"""Exports of one session: Markdown for people, JSON lines for other tools.

JSON lines is the lossless one: each message's ``raw`` provider item comes back as the
very string the log holds. Markdown shows what a reader needs: tool calls as their name
and arguments, a tool result under the call id it answers.
"""

from __future__ import annotations

import msgspec

from projector.queries import Transcript


def to_markdown(t: Transcript) -> str:
    """A readable document: title, facts, metadata, then each message under a heading."""
    s = t.session
    lines = [f"# {s.title or 'Untitled session'}", ""]
    lines.append(f"- Session: `{s.session_id}`")
    lines.append(f"- Model: {s.model_name or s.model_id}")
    lines.append(f"- Status: {s.status}")
    lines.append(f"- Started: {s.created_at}")
    lines.append(f"- Messages: {s.message_count}, tokens: {s.total_tokens}")
    for key, value in t.metadata.items():
        lines.append(f"- {key}: {value}")
    for m in t.messages:
        answers = f", answering `{m.tool_call_id}`" if m.tool_call_id else ""
        lines += ["", f"## {m.seq}. {m.role} ({m.timestamp}{answers})"]
        if m.content:
            lines += ["", m.content]
        for call in m.tool_calls or ():
            lines += ["", f"Tool call `{call.id}`: **{call.name}**", "", "```json"]
            lines += [call.arguments or "{}", "```"]
    return "\n".join(lines) + "\n"


def to_jsonl(t: Transcript) -> str:
    """The session as its first line, then one message per line."""
    head = msgspec.json.encode({"session": t.session, "metadata": t.metadata}).decode()
    body = [msgspec.json.encode(m).decode() for m in t.messages]
    return "\n".join([head, *body]) + "\n"
