"""A click test runner that keeps stderr apart from stdout on every supported click.

click 8.1 mixes the two unless asked not to (``mix_stderr=False``); click 8.2 removed
that option and always keeps ``result.stderr`` apart, with ``result.output`` holding both.
Tests read ``result.stdout`` for data and ``result.stderr`` for errors, which means the
same on both.
"""

from __future__ import annotations

import inspect

from click.testing import CliRunner

_SEPARATE = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}


def cli_runner() -> CliRunner:
    return CliRunner(**_SEPARATE)
