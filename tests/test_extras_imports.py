"""The optional extras stay optional: litellm, the Agents SDK and nats-py are each
imported by their one adapter module only, and datasette by none (the configuration
command reads its installed version)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_each_extra_is_imported_only_by_its_own_module() -> None:
    importers: dict[str, set[str]] = {
        "litellm": set(),
        "datasette": set(),
        "agents": set(),
        "nats": set(),
    }
    for package in ("journal", "projector"):
        for path in (ROOT / package).rglob("*.py"):
            for extra in importers.keys() & imported_roots(path):
                importers[extra].add(path.relative_to(ROOT).as_posix())
    assert importers == {
        "litellm": {"journal/integrations/litellm.py"},
        "datasette": set(),
        "agents": {"projector/integrations/agents.py"},
        "nats": {"journal/log/jetstream.py"},
    }
