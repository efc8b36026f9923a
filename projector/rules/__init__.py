"""The projection's rules: what each event of the log does to the database's rows.

``session_rows`` states, once, what an event does to its session's row (a new session's
row, the columns each event sets, deadlines, statuses, the warning); ``message_rows``
builds a message's row and reads a snapshot's context; ``apply`` carries one event out
in SQL, with those values, for the per-event path (the bulk path, ``projector.sync.bulk``,
follows the same rules in Python).
"""
