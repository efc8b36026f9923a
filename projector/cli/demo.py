"""``session-journal demo``: a realistic set of sessions, written through the writer API.

Several models, short and long conversations, metadata, non-ASCII text, and one session in
each interesting state: paused, archived, idle after a timeout, expired, deleted (its
``pre_delete`` snapshot stays), warned of a coming timeout. Times are set in the recent past
with ``at`` so the timeouts fall due when ``expire_due`` runs as of now.

Running it twice writes nothing the second time: the sessions have fixed ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from journal import Journal, UnknownSession

DEMO_MARKER = "demo-paris-trip"

_PARIS = [
    ("user", "I have four days in Paris in May. What should I not miss?"),
    (
        "assistant",
        "Day 1: the Louvre early, then a walk along the Seine to Île de la Cité. "
        "Day 2: Montmartre and the Sacré-Cœur at sunset. Day 3: Musée d'Orsay and the Marais. "
        "Day 4: a day trip to Versailles. Book the Louvre and Versailles online.",
    ),
    ("user", "Where can I get good croissants near the Marais?"),
    (
        "assistant",
        "Try Du Pain et des Idées (Canal Saint-Martin) or Maison Pichard. "
        "Go before 9:00, they sell out.",
    ),
    ("user", "Merci ! And a museum pass, is it worth it?"),
    (
        "assistant",
        "For four days with the Louvre, Orsay and Versailles, the 4-day Paris Museum "
        "Pass pays for itself and skips most ticket queues.",
    ),
]
_SQL_TOPICS = [
    "Why is my query on messages(session_id) slow?",
    "Would a covering index help for the session list?",
    "What does EXPLAIN QUERY PLAN say about the ORDER BY?",
    "Should I use WAL mode for a web app?",
    "How do I keep a message counter right without COUNT(*) on every insert?",
    "Is FTS5 with the porter tokenizer good for chat search?",
    "How big can a SQLite database get before it hurts?",
    "What does PRAGMA synchronous=NORMAL risk in WAL mode?",
    "Can two processes write at once?",
    "How do I vacuum without blocking readers?",
]


@dataclass
class DemoResult:
    """What the demo did, for the CLI to print."""

    written: bool
    sessions: list[str] = field(default_factory=list)
    events: int = 0


def _timeline(start: datetime, step: timedelta) -> Iterator[datetime]:
    moment = start
    while True:
        yield moment
        moment += step


def write_demo(log_path: str, now: datetime | None = None) -> DemoResult:
    """Write the demo sessions into ``log_path`` unless they are already there."""
    now = now or datetime.now(UTC)
    with Journal.open(log_path) as j:
        try:
            j.status(DEMO_MARKER)
            return DemoResult(written=False)
        except UnknownSession:
            pass
        first_pos = j.last_pos
        result = DemoResult(written=True)

        def conversation(
            sid: str,
            turns: list[tuple[str, str]],
            start: datetime,
            step: timedelta,
            model_seconds: float = 2.5,
        ) -> None:
            times = _timeline(start, step)
            for role, content in turns:
                tokens = max(1, len(content) // 4)
                j.append_message(
                    sid,
                    role,
                    content,
                    tokens_used=tokens,
                    duration_seconds=model_seconds if role == "assistant" else None,
                    at=next(times),
                )

        def session(
            sid: str,
            model_id: str,
            model_name: str,
            title: str,
            start: datetime,
            idle_timeout_seconds: int = 3600,
            hard_timeout_seconds: int = 86400,
        ) -> str:
            j.create_session(
                model_id,
                model_name,
                title,
                session_id=sid,
                at=start,
                idle_timeout_seconds=idle_timeout_seconds,
                hard_timeout_seconds=hard_timeout_seconds,
            )
            result.sessions.append(sid)
            return sid

        minute = timedelta(minutes=1)
        # 1. Active, with metadata and a checkpoint snapshot; created 20 minutes ago.
        with j.batch():
            sid = session(DEMO_MARKER, "gpt-4o", "GPT-4o", "Four days in Paris", now - 20 * minute)
            conversation(sid, _PARIS, now - 19 * minute, 2 * minute)
            j.set_metadata(sid, "channel", "web", at=now - 19 * minute)
            j.set_metadata(sid, "locale", "fr-FR", at=now - 19 * minute)
        j.snapshot(sid, note="before the itinerary changes")

        # 2. A long technical conversation (60 messages).
        sid = session(
            "demo-sqlite-tuning",
            "anthropic/claude-3.5-sonnet",
            "Claude 3.5 Sonnet",
            "Tuning SQLite for a chat app",
            now - 90 * minute,
        )
        turns: list[tuple[str, str]] = []
        for i in range(30):
            question = _SQL_TOPICS[i % len(_SQL_TOPICS)]
            turns.append(("user", question))
            turns.append(
                (
                    "assistant",
                    f"Short answer to “{question}”: measure first. "
                    "Use EXPLAIN QUERY PLAN, keep one index per real query, and let "
                    "triggers do +1/-1 arithmetic instead of recounting rows. " * 3,
                )
            )
        conversation(sid, turns, now - 89 * minute, minute, model_seconds=4.0)
        j.set_metadata(sid, "channel", "api")

        # 3. Short and paused.
        sid = session(
            "demo-haiku",
            "meta/llama-3.1-70b",
            "Llama 3.1 70B",
            "東京の春 — a haiku",
            now - 40 * minute,
        )
        conversation(
            sid,
            [
                ("user", "Write a haiku about spring in Tokyo."),
                ("assistant", "桜の下\nネオンが揺れる\n春の夜"),
            ],
            now - 39 * minute,
            minute,
        )
        j.pause(sid)

        # 4. Archived (the projection keeps a pre_archive snapshot).
        sid = session(
            "demo-release-notes",
            "gpt-4o-mini",
            "GPT-4o mini",
            "Release notes v2.3",
            now - 5 * 60 * minute,
        )
        conversation(
            sid,
            [
                ("system", "You write terse, friendly release notes."),
                ("user", "Summarise: faster search, fixed export of long chats."),
                (
                    "assistant",
                    "v2.3 — Search is faster. Exporting very long chats "
                    "no longer cuts them short. Grüße from the team!",
                ),
            ],
            now - 299 * minute,
            minute,
        )
        j.archive(sid)

        # 5. Idle: its 30-minute idle timeout passed three hours ago.
        sid = session(
            "demo-idle-chat",
            "gpt-4o",
            "GPT-4o",
            "Quick question about invoices",
            now - 4 * 60 * minute,
            idle_timeout_seconds=1800,
        )
        conversation(
            sid,
            [
                ("user", "Can you read a PDF invoice?"),
                ("assistant", "Yes: paste its text or upload it and I will pull out the totals."),
            ],
            now - 239 * minute,
            minute,
        )

        # 6. Expired: created two days ago with a one-day hard timeout.
        sid = session(
            "demo-old-support",
            "anthropic/claude-3.5-sonnet",
            "Claude 3.5 Sonnet",
            "Router keeps timing out",
            now - timedelta(days=2),
            idle_timeout_seconds=7 * 86400,
            hard_timeout_seconds=86400,
        )
        conversation(
            sid,
            [
                ("user", "My router drops the connection every evening."),
                (
                    "assistant",
                    "Check the DHCP lease time and the firmware; a "
                    "nightly reboot schedule is a common culprit.",
                ),
            ],
            now - timedelta(days=2) + minute,
            minute,
        )

        # 7. Warned: idle for 57 of its 60 minutes.
        sid = session(
            "demo-almost-idle",
            "gpt-4o-mini",
            "GPT-4o mini",
            "Gift ideas",
            now - 70 * minute,
            idle_timeout_seconds=3600,
        )
        conversation(
            sid,
            [
                ("user", "Gift ideas for a friend who loves hiking?"),
                (
                    "assistant",
                    "A merino buff, a headlamp, or a good trail map of their favourite range.",
                ),
            ],
            now - 58 * minute,
            minute,
        )

        # 8. Deleted; restore() would bring it back from its pre_delete snapshot.
        sid = session(
            "demo-deleted-draft", "gpt-4o", "GPT-4o", "Draft to throw away", now - 30 * minute
        )
        conversation(
            sid,
            [("user", "Draft a resignation letter."), ("assistant", "Dear team, …")],
            now - 29 * minute,
            minute,
        )
        j.delete_session(sid)

        j.expire_due(now)
        result.events = j.last_pos - first_pos
    return result
