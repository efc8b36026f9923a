"""A deterministic, seeded workload of AI-router sessions, for benchmarks and tests.

``operations(seed, events)`` yields the writer calls a host app would make: several
models, session lengths from 1 to 10,000 messages (long-tailed), message lengths from tens
to thousands of characters (long-tailed, some non-ASCII), token counts and durations, and
every event type: metadata, renames, pauses, withdrawn messages, timeouts (warnings, idle
and hard), archives, snapshots, restores and deletions. Every id (session and event) is
derived from the seed and every call carries its time, so ``write_log`` (durability
``none``, an injected clock) gives the same bytes for the same seed. Benchmarks replay the
same operations through other paths (a raw ``os.write`` loop, another event store) from
the ``Op`` list.

Sessions interleave (a pool of concurrently open sessions, as a router serves many users).
Timeout scenarios run one at a time on sessions with short timeouts; every other session
has timeouts of 30 days or more (or none), far beyond the simulated span, so that
``expire_due`` touches only the scenario's session and its effect is known in advance.

Run as a script to write a log: ``python tools/workload.py OUT.jsonl --events 100000``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from journal import Journal

START: Final = datetime(2026, 1, 1, tzinfo=UTC)
MAX_SESSION_LEN: Final = 10_000
MODELS: Final = (
    ("openai/gpt-4o", "GPT-4o", 8.0),
    ("anthropic/claude-3.5-sonnet", "Claude 3.5 Sonnet", 5.0),
    ("google/gemini-1.5-pro", "Gemini 1.5 Pro", 2.0),
    ("meta/llama-3.1-70b", "Llama 3.1 70B", 1.0),
    ("mistral/mistral-large", "Mistral Large", 0.5),
)
_PROSE: Final = (
    "the router sends each conversation to a model and keeps the answer so that "
    "a session can be searched resumed archived or restored later on demand while "
    "tokens durations and timeouts are tracked per session for billing and limits "
    "please summarise this paragraph translate it then explain the trade offs of "
    "append only logs with checksums versus updating rows in place under load"
)
_WORDS: Final = tuple(_PROSE.split())
_FOREIGN: Final = (
    "café",
    "naïve",
    "Größe",
    "résumé",
    "日本語のテキスト",
    "中文内容",
    "Привет мир",
    "Ελληνικά",
    "العربية",
    "🙂",
    "🚀 emoji",
    "ﬁne ligature",
)
_POOL_CHARS: Final = 1 << 20
_CLOCK_STEP_MEAN: Final = 0.5  # simulated seconds between calls
_LONG_IDLE: Final = 30 * 86400  # idle timeout of ordinary sessions
_LONG_HARD: Final = 365 * 86400


@dataclass(frozen=True, slots=True)
class Op:
    """One writer call: ``Journal.<name>(**kwargs)`` at simulated time ``t``.

    ``events`` is the number of log lines the call appends; ``ids`` holds the event ids
    for calls that take none (``expire_due``), in order.
    """

    name: str
    t: datetime
    kwargs: dict[str, Any]
    events: int
    ids: tuple[str, ...] = ()


@dataclass
class _Session:
    sid: str
    length: int
    timeouts: bool = False
    sent: int = 0
    paused: bool = False
    renamed: bool = False
    ending: str = "none"
    meta: list[tuple[str, str]] = field(default_factory=list)


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.t = START + timedelta(seconds=self.rng.randrange(86400))
        self.models: set[str] = set()
        self.pool = _text_pool(random.Random(seed ^ 0x5EED))

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def tick(self) -> datetime:
        step = self.rng.expovariate(1 / _CLOCK_STEP_MEAN)
        self.t += timedelta(microseconds=round(step * 1e6))
        return self.t

    def op(self, name: str, events: int, ids: tuple[str, ...] = (), **kwargs: Any) -> Op:
        return Op(name, self.tick(), kwargs, events, ids)

    def content(self) -> str:
        rng = self.rng
        n = int(min(12_000, max(12, rng.lognormvariate(math.log(160), 1.1))))
        if rng.random() < 0.002:
            n = rng.randrange(12_000, 40_000)  # the odd pasted document
        start = rng.randrange(_POOL_CHARS - n)
        return self.pool[start : start + n].strip() or "ok"

    def message(self, s: _Session) -> dict[str, Any]:
        rng = self.rng
        if s.sent == 0 and rng.random() < 0.1:
            role = "system"
        else:
            role = "user" if s.sent % 2 == 0 else "assistant"
        content = self.content()
        kw: dict[str, Any] = {"role": role, "content": content, "event_id": self.uid()}
        if role == "assistant":
            kw["tokens_used"] = max(1, len(content) // 4 + rng.randrange(-3, 20))
            kw["duration_seconds"] = round(rng.lognormvariate(math.log(2.0), 0.9), 3)
        elif rng.random() < 0.8:
            kw["tokens_used"] = max(1, len(content) // 4)
        return kw


def _text_pool(rng: random.Random) -> str:
    """About a megabyte of text, one non-ASCII word in every ~40 words."""
    words: list[str] = []
    size = 0
    while size < _POOL_CHARS + 1000:
        w = rng.choice(_FOREIGN) if rng.random() < 0.025 else rng.choice(_WORDS)
        if rng.random() < 0.01:
            w += ".\n\n"
        words.append(w)
        size += len(w) + 1
    return " ".join(words)


def session_lengths(
    rng: random.Random, messages: int, sessions: int | None, fixed_len: int | None
) -> list[int]:
    """Long-tailed lengths in 1..10,000 summing to about ``messages``.

    The first session holds min(10,000, messages / 4) messages so that a full-size run has
    one session at the top of the range; at least one session has a single message.
    """
    if fixed_len is not None:
        return [fixed_len] * max(1, messages // fixed_len)
    if sessions is None:
        sessions = max(12, messages // 50)
    # Pareto-like: most sessions are short, a few are very long. The scale is found by
    # bisection so that the clamped, rounded lengths add up to about ``messages``.
    raw = [rng.paretovariate(0.9) for _ in range(sessions - 2)]
    top = max(1, min(MAX_SESSION_LEN, messages // 4))  # one session at the top of the range

    def total(scale: float) -> int:
        return sum(min(MAX_SESSION_LEN, max(1, round(x * scale))) for x in raw)

    lo, hi = 0.0, float(messages)
    for _ in range(50):
        mid = (lo + hi) / 2
        if total(mid) + top + 1 < messages:
            lo = mid
        else:
            hi = mid
    body = [min(MAX_SESSION_LEN, max(1, round(x * hi))) for x in raw]
    return [top, *body, 1]  # and one session with a single message


def operations(
    seed: int,
    events: int,
    *,
    sessions: int | None = None,
    fixed_len: int | None = None,
    concurrency: int = 32,
) -> Iterator[Op]:
    """The writer calls of a workload of about ``events`` events, deterministically.

    ``sessions`` fixes the number of sessions (default: about one per 50 messages);
    ``fixed_len`` gives every session that many messages and no other events beyond
    creation and metadata (for per-length comparisons).
    """
    g = _Gen(seed)
    rng = g.rng
    plain = fixed_len is not None
    lengths = session_lengths(rng, int(events * (0.97 if not plain else 0.99)), sessions, fixed_len)
    weights = [w for _, _, w in MODELS]
    queue = [_Session(g.uid(), n) for n in lengths]
    endings = ("archive", "delete", "archive_restore", "delete_restore", "none")
    for i, s in enumerate(queue):
        if plain:
            continue
        s.timeouts = i in (1, 7) or (i > 7 and rng.random() < 0.01)
        s.ending = endings[i % 5] if i < 10 else rng.choices(endings, (10, 4, 2, 2, 82))[0]
    waiting = list(reversed(queue))
    open_: list[_Session] = []
    while waiting or open_:
        while waiting and len(open_) < concurrency:
            s = waiting.pop()
            if s.timeouts:
                yield from _timeout_scenario(g, s)
                continue
            yield from _start(g, s, weights, plain)
            open_.append(s)
        k = rng.randrange(len(open_))
        s = open_[k]
        if s.sent < s.length:
            yield from _step(g, s, plain)
        else:
            open_[k] = open_[-1]
            open_.pop()
            yield from _finish(g, s)


def _create(g: _Gen, s: _Session, weights: list[float], first: bool) -> Op:
    rng = g.rng
    model_id, model_name, _ = rng.choices(MODELS, weights)[0]
    events = 1
    if model_id not in g.models:
        g.models.add(model_id)
        events += 1
    kwargs: dict[str, Any] = {
        "model_id": model_id,
        "model_name": model_name,
        "title": None if rng.random() < 0.3 else g.content()[:60].strip() or None,
        "session_id": s.sid,
        "event_id": g.uid(),
    }
    if s.timeouts:
        kwargs["idle_timeout_seconds"] = 600
        kwargs["hard_timeout_seconds"] = 7200
    elif rng.random() < 0.2:
        kwargs["idle_timeout_seconds"] = kwargs["hard_timeout_seconds"] = None
    else:
        kwargs["idle_timeout_seconds"] = _LONG_IDLE
        kwargs["hard_timeout_seconds"] = _LONG_HARD
    if first and s.length > 0:
        msg = g.message(s)
        del msg["event_id"]  # derived from the session's event id
        kwargs["first_message"] = msg
        s.sent = 1
        events += 1
    return g.op("create_session", events, **kwargs)


def _start(g: _Gen, s: _Session, weights: list[float], plain: bool) -> Iterator[Op]:
    rng = g.rng
    yield _create(g, s, weights, first=not plain and rng.random() < 0.3)
    for key in rng.sample(("channel", "locale", "user_agent", "team"), rng.randrange(0, 3)):
        value = {"channel": "web", "locale": "fr-FR", "user_agent": "cli/1.2", "team": "ops"}[key]
        yield g.op("set_metadata", 1, session_id=s.sid, key=key, value=value, event_id=g.uid())


def _step(g: _Gen, s: _Session, plain: bool) -> Iterator[Op]:
    rng = g.rng
    if not plain:
        r = rng.random()
        if s.paused and r < 0.5:
            s.paused = False
            yield g.op("resume", 1, session_id=s.sid, event_id=g.uid())
            return
        if r < 0.003 and not s.paused:
            s.paused = True
            yield g.op("pause", 1, session_id=s.sid, event_id=g.uid())
            return
        if s.sent >= 4 and 0.003 <= r < 0.006:  # the last message withdrawn (an agent's rewind)
            s.sent -= 1
            yield g.op(
                "truncate",
                1,
                session_id=s.sid,
                keep_through_seq=s.sent,
                reason="rewind",
                event_id=g.uid(),
            )
            return
        if not s.renamed and s.sent >= 2 and r < 0.02:
            s.renamed = True
            title = g.content()[:50].strip() or "untitled"
            yield g.op("rename", 1, session_id=s.sid, title=title, event_id=g.uid())
            return
        if r < 0.005:
            yield g.op("set_metadata", 1, session_id=s.sid, key="tag", value=None, event_id=g.uid())
            return
        if s.sent and s.sent % 500 == 0 and r < 0.2:
            yield g.op("snapshot", 1, session_id=s.sid, reason="checkpoint", event_id=g.uid())
            return
    s.paused = False  # a message on a paused session makes it active
    yield g.op("append_message", 1, session_id=s.sid, **g.message(s))
    s.sent += 1


def _finish(g: _Gen, s: _Session) -> Iterator[Op]:
    if s.ending in ("archive", "archive_restore"):
        yield g.op("archive", 1, session_id=s.sid, event_id=g.uid())
    elif s.ending in ("delete", "delete_restore"):
        yield g.op("delete_session", 2, session_id=s.sid, event_id=g.uid())
    if s.ending.endswith("_restore"):
        yield g.op("restore", 1, session_id=s.sid, event_id=g.uid())
        yield g.op("append_message", 1, session_id=s.sid, **g.message(s))
        s.sent += 1


def _timeout_scenario(g: _Gen, s: _Session) -> Iterator[Op]:
    """Warning, idle timeout, revival, hard timeout, then archive, restore or delete.

    The session's timeouts are 600 s idle and 7200 s hard; ``expire_due`` is called with
    explicit ``now`` values around those deadlines. It ends archived or deleted, where
    later ``expire_due`` calls leave it alone.
    """
    yield from _start(g, s, [w for _, _, w in MODELS], plain=False)
    created = g.t  # at or after the creation: a conservative base for the hard deadline
    while s.sent < max(2, min(s.length, 20)):
        yield g.op("append_message", 1, session_id=s.sid, **g.message(s))
        s.sent += 1
    last = g.t
    # 2 events: a timeout_warning snapshot and the warning.
    yield g.op("expire_due", 2, (g.uid(), g.uid()), now=last + timedelta(seconds=450))
    yield g.op("expire_due", 1, (g.uid(),), now=last + timedelta(seconds=601))
    yield g.op("append_message", 1, session_id=s.sid, **g.message(s))  # revives it
    s.sent += 1
    yield g.op("expire_due", 1, (g.uid(),), now=created + timedelta(seconds=7201))
    if g.rng.random() < 0.5:
        yield g.op("restore", 1, session_id=s.sid, event_id=g.uid())
        yield g.op("snapshot", 1, session_id=s.sid, reason="checkpoint", event_id=g.uid())
        yield g.op("archive", 1, session_id=s.sid, event_id=g.uid())
    else:
        yield g.op("delete_session", 2, session_id=s.sid, event_id=g.uid())


class _IdFeed:
    """The writer's id source (``Journal(new_id=...)``): ids planned by the generator.

    ``expire_due`` takes no event ids, so the generator plans them and loads them here
    before the call; every other call passes its ids explicitly. Running dry means an
    unplanned id was needed, which would make the log differ between runs.
    """

    def __init__(self) -> None:
        self._ids: list[str] = []

    def load(self, ids: tuple[str, ...]) -> None:
        self._ids = list(reversed(ids))

    def __call__(self) -> str:
        if not self._ids:
            raise RuntimeError("the writer needed an id the workload did not plan")
        return self._ids.pop()


class _Clock:
    def __init__(self) -> None:
        self.now = START
        self.new_id = _IdFeed()  # pass as Journal(new_id=...) with this clock

    def __call__(self) -> datetime:
        return self.now


def apply(journal: Journal, op: Op, ids: _IdFeed | None = None) -> None:
    """Make one call on ``journal``; the caller sets the clock to ``op.t`` first."""
    if op.name == "expire_due" and ids is not None:
        ids.load(op.ids)
    getattr(journal, op.name)(**op.kwargs)


def replay(ops: Iterator[Op] | list[Op], journal: Journal, clock: _Clock) -> list[int]:
    """Drive ``journal`` through ``ops``; returns the log position after each call.

    Checks that each call appended exactly the events the generator planned.
    """
    ends: list[int] = []
    for op in ops:
        clock.now = op.t
        before = journal.last_pos
        apply(journal, op, clock.new_id)
        if journal.last_pos - before != op.events:
            raise AssertionError(
                f"{op.name} appended {journal.last_pos - before} events, planned {op.events}"
            )
        ends.append(journal.last_pos)
    return ends


def make_clock() -> _Clock:
    """A settable clock for ``Journal(clock=...)``; ``replay`` moves it to each op's time."""
    return _Clock()


def write_log(
    path: str,
    seed: int,
    events: int,
    *,
    sessions: int | None = None,
    fixed_len: int | None = None,
    concurrency: int = 32,
    durability: str = "none",
) -> list[int]:
    """Write the workload's log at ``path`` (new file); returns the position after each op."""
    clock = _Clock()
    ops = operations(seed, events, sessions=sessions, fixed_len=fixed_len, concurrency=concurrency)
    with Journal.open(path, durability, clock=clock, new_id=clock.new_id) as j:  # type: ignore[arg-type]
        return replay(ops, j, clock)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a deterministic workload log.")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--sessions", type=int, default=None)
    p.add_argument("--fixed-len", type=int, default=None)
    a = p.parse_args(argv)
    ends = write_log(a.out, a.seed, a.events, sessions=a.sessions, fixed_len=a.fixed_len)
    print(f"{a.out}: {len(ends)} calls, {ends[-1] if ends else 0} events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
