"""Proving the projection matches the log.

``verify`` checks the database against itself and against the log; ``verify_log`` reads
the log for it (its defects, and what the projection must hold); ``logfold`` is that
fold of the log, with no SQL, also used by a rebuild to check the file it built;
``findings`` holds the problems found; ``canonical`` is a fingerprint of the whole
projection, for determinism tests and crash harnesses.
"""
