"""The command line, ``session-journal`` (``main``), thin over the library.

``group`` holds the group (errors, exit codes, the global options) and the commands that
keep the projection current; ``read`` and ``write`` hold the others. ``support`` and
``notes`` are what they share: options, JSON output, notes on stderr. ``render`` lays out
tables and transcripts, ``export`` a session as Markdown or JSON lines, ``ingest`` parses
``append``'s input, ``demo`` writes the demo sessions, ``datasette_config`` configures
Datasette for the projection.
"""

from projector.cli.group import main

__all__ = ["main"]
