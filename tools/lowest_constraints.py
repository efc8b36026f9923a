"""Print pip constraints that pin each runtime dependency to its lowest declared version.

Read from pyproject.toml, so the lowest versions CI tests cannot drift from what the
package declares:

    python tools/lowest_constraints.py > lowest.txt
    pip install -c lowest.txt -e '.[test]'

Every runtime dependency must be declared with a lower bound (``name>=X``).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_LOWER_BOUND = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def lowest_pins(pyproject: Path) -> list[str]:
    """``name==version`` for each runtime dependency, at its declared lower bound."""
    declared = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for requirement in declared:
        match = _LOWER_BOUND.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: {requirement!r} declares no lower bound (name>=X)")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    sys.stdout.write("".join(f"{pin}\n" for pin in lowest_pins(root / "pyproject.toml")))


if __name__ == "__main__":
    main()
