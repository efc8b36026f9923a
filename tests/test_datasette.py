"""``datasette-config`` through Datasette itself (its in-process client): on the demo
database every endpoint the configuration names answers, search finds a demo message,
facets and canned queries work, and the bookkeeping tables are hidden."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from cli_runner import cli_runner

from projector.cli import main
from projector.cli.datasette_config import HIDDEN_TABLES, installed_flavour

pytest.importorskip("datasette", reason="the datasette extra is not installed")
from datasette.app import Datasette

pytestmark = pytest.mark.filterwarnings("ignore:::datasette.*")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("demo")
    args = ["--log", str(root / "sessions.jsonl"), "--db", str(root / "sessions.db")]
    assert cli_runner().invoke(main, [*args, "demo"]).exit_code == 0
    result = cli_runner().invoke(main, [*args, "datasette-config"])
    assert result.exit_code == 0, result.output
    return root / "sessions.db", json.loads(result.output)


@pytest.fixture
def get(demo: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """GET a path from a Datasette serving the demo with the configuration (JSON)."""
    db, config = demo
    # Datasette probes SQLite's features with :memory: connections it keeps for good;
    # they are left out of the suite's check that every connection gets closed (its
    # connections to the database are closed below).
    monkeypatch.setattr(sqlite3, "connect", conftest._connect)
    if installed_flavour() == "0.65":
        ds = Datasette([str(db)], metadata=config)
    else:
        ds = Datasette([str(db)], config=config)

    def fetch(path: str) -> Any:
        async def go() -> Any:
            response = await ds.client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            return response.json()

        return asyncio.run(go())

    try:
        yield fetch
    finally:
        for database in ds.databases.values():
            database.close()


def test_the_configuration_names_the_installed_format(demo: tuple[Path, dict[str, Any]]) -> None:
    _, config = demo
    assert set(config["databases"]) == {"sessions"}
    assert ("title" in config) == (installed_flavour() == "0.65")


def test_search_on_messages_finds_a_demo_word(get: Any) -> None:
    rows = get("/sessions/messages.json?_search=croissants&_shape=array")
    assert [r["role"] for r in rows] == ["user"]
    assert "croissants" in rows[0]["content"]


def test_tables_facets_and_canned_queries_answer(get: Any) -> None:
    sessions = get("/sessions/sessions.json?_shape=objects&_extra=facet_results")
    facets = sessions["facet_results"]
    facets = facets.get("results", facets)  # 1.0 nests them under "results"
    assert set(facets) >= {"status", "model_id"}
    sid = sessions["rows"][0]["session_id"]
    transcript = get(f"/sessions/transcript.json?session_id={sid}&_shape=array")
    seqs = [r["sequence_number"] for r in transcript]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs
    days = get("/sessions/usage_by_day.json?_shape=array")
    assert days and all(r["messages"] > 0 for r in days)
    get("/sessions/models.json")
    get("/sessions/messages.json")


def test_bookkeeping_tables_are_hidden(get: Any) -> None:
    tables = {t["name"]: t["hidden"] for t in get("/sessions.json")["tables"]}
    assert {name for name in HIDDEN_TABLES if name in tables} == set(HIDDEN_TABLES)
    assert all(tables[name] for name in HIDDEN_TABLES)
    assert not tables["sessions"] and not tables["messages"]


def test_without_datasette_the_format_must_be_named(
    demo: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(demo[0])
    from importlib import metadata

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    result = cli_runner().invoke(main, ["--db", db, "datasette-config"])
    assert result.exit_code == 2
    assert "Datasette is not installed here" in result.output
    for flavour in ("0.65", "1.0"):
        result = cli_runner().invoke(main, ["--db", db, "datasette-config", "--for", flavour])
        assert result.exit_code == 0
        assert "fts_table" in result.output
