"""Keeping the database in step with the log: reading it, catching up, rebuilding.

``reading`` reads the log as units (single events and whole atomic groups); ``catchup``
applies them from the checkpoint on, in batches that commit rows and checkpoint together;
``rebuild`` builds a new file from the whole log and swaps it in; ``replay`` chooses
between the two. ``bulk`` (with ``bulk_snapshots``) folds the log in Python and writes
the rows in bulk, the fast path of ``bulk_load`` (rebuild) and ``bulk_catchup`` (a long
catch-up). ``watch_loop`` is the live projector's worker, run by ``projector.watch``.
"""
