"""``python -m projector``: the same as the ``session-journal`` command."""

from projector.cli import main

main(prog_name="session-journal")
