"""Importing a database the seed's old app wrote (``session-journal import-legacy``).

``importer`` runs the import (``import_legacy``) and documents what becomes of every kind
of mess; ``source`` reads the old file, read-only; ``values`` turns its loose values into
what the writer accepts; ``plan`` plans the events that reproduce it, with ``ids`` their
idempotent ids; ``check`` projects the log written, verifies it and checks every message
against the old row; ``report`` is what the import tells.
"""
