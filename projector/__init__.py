"""session-journal's read side: the SQLite projection of the log, its checks, and the CLI."""
