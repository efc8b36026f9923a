"""Shared test settings. In CI (CI set in the environment) hypothesis draws the same
examples on every run, so a run's outcome depends on the code alone; elsewhere it
explores new examples each time."""

import gc
import os
import sqlite3
import traceback
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import settings

# The JetStream fixtures (nats_single, nats_cluster3) and the skip of the `nats` tests where
# nats-py or a nats-server binary is missing.
pytest_plugins = ["nats_servers"]

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


# -- every sqlite3 connection is closed ---------------------------------------------------
# Python 3.13 warns about a connection collected unclosed, and earlier versions stay
# silent. This check holds on every version: each connection made during a test (by the
# library or the test) must be closed by the time the test and its fixtures are done.


_NOT_CALLERS = ("conftest.py", "sqlite3/__init__.py")


class _TrackedConnection(sqlite3.Connection):
    """A connection that remembers where it was opened and whether it was closed."""

    opened: ClassVar[dict[int, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        caller = next(
            (
                f
                for f in reversed(traceback.extract_stack()[:-1])
                if not f.filename.endswith(("conftest.py", "__init__.py"))
            ),
            None,
        )
        where = f"{caller.filename}:{caller.lineno}" if caller else "?"
        _TrackedConnection.opened[id(self)] = where
        weakref.finalize(self, _TrackedConnection._collected, id(self))

    def close(self) -> None:
        _TrackedConnection.opened.pop(id(self), None)
        super().close()

    @staticmethod
    def _collected(key: int) -> None:
        where = _TrackedConnection.opened.pop(key, None)
        if where is not None:
            _unclosed.append(where)


_unclosed: list[str] = []
_connect = sqlite3.connect


def _tracked_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs.setdefault("factory", _TrackedConnection)
    return _connect(*args, **kwargs)


def _collect_and_check() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # reported below, on every version
        gc.collect()
    left = sorted(set(_unclosed))
    _unclosed.clear()
    assert not left, f"sqlite3 connections never closed, opened at: {left}"


# A full collection walks every object of the process (pytest's, hypothesis's, every
# imported module's): about a tenth of a second each, after each of a thousand tests. So
# what exists when a test module starts is set aside (gc.freeze), each test's collection
# walks only what was made since, and the module's end collects everything once more:
# a connection left unclosed in garbage made before the module is reported there.
@pytest.fixture(autouse=True, scope="module")
def every_connection_of_the_module_is_closed() -> Iterator[None]:
    _collect_and_check()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
    _collect_and_check()


@pytest.fixture(autouse=True)
def every_connection_is_closed(every_connection_of_the_module_is_closed: None) -> Iterator[None]:
    sqlite3.connect = _tracked_connect  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = _connect
    _collect_and_check()
