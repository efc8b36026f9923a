"""The projection section of ``tools/bench.py`` (placeholder until the projector lands)."""

from __future__ import annotations

from benchlib import Context, Section


def run(ctx: Context, section: Section) -> None:
    section.status = "skipped"
    section.message = "projector not available yet (no projector.rebuild / projector.replay)"
