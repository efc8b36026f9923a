"""Opening the projection database: whose file it is, connection settings, the schema.

The schema is the ``schema/*.sql`` files at the top of the source tree. An installed wheel
carries them as ``projector/_schema`` (pyproject's force-include); a checkout or an
editable install reads them from the tree. ``PRAGMA user_version`` holds a version derived
from the SQL text itself and ``APPLY_VERSION``, so any change to either makes existing
databases stale and they are rebuilt from the log.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

from projector.errors import ForeignFile, SchemaNotFound

# Bump when apply.py changes what rows an event produces (the SQL is versioned by its text).
# 2: forgotten sessions purged; every database since was written with secure_delete on.
APPLY_VERSION: Final = 2
BUSY_TIMEOUT_MS: Final = 10_000


@cache
def schema_files() -> tuple[tuple[str, str], ...]:
    """The schema as ``(file name, SQL)`` pairs, in the order they run."""
    packaged = resources.files("projector").joinpath("_schema")
    if packaged.is_dir():
        found = {
            entry.name: entry.read_text(encoding="utf-8")
            for entry in packaged.iterdir()
            if entry.name.endswith(".sql")
        }
    else:
        tree = Path(__file__).resolve().parent.parent / "schema"
        found = (
            {p.name: p.read_text(encoding="utf-8") for p in tree.glob("*.sql")}
            if tree.is_dir()
            else {}
        )
    if not found:
        raise SchemaNotFound(
            "the projection's SQL (schema/*.sql) is missing: neither projector/_schema in "
            f"the installed package nor {Path(__file__).resolve().parent.parent / 'schema'} "
            "exists; reinstall session-journal"
        )
    return tuple(sorted(found.items()))


@cache
def schema_version() -> int:
    """A positive 31-bit number naming this schema text and apply version."""
    crc = zlib.crc32(f"apply-v{APPLY_VERSION}\n".encode())
    for name, sql in schema_files():
        crc = zlib.crc32(name.encode() + b"\0" + sql.encode(), crc)
    return (crc & 0x7FFFFFFF) or 1


PRIVATE_MODE: Final = 0o600


def create_private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (an existing file is kept as
    it is). SQLite gives a database's -wal and -shm files the database file's mode, so
    conversations stay private whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)


def readonly_uri(path: str | os.PathLike[str]) -> str:
    """A ``mode=ro`` SQLite URI for ``path``, whatever characters its name holds."""
    # '?' and '#' would end the path part of the URI, '%' starts an escape.
    quoted = os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=ro"


def connect(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection in WAL mode with foreign keys and secure_delete on, in autocommit mode.

    Transactions are explicit (``BEGIN IMMEDIATE`` … ``COMMIT``): the projector decides
    where a batch ends, never the sqlite3 module.
    """
    path = os.fspath(db_path)
    check_ours(path)
    create_private_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL never corrupts; a power cut may lose the last commits, which the
        # next replay re-applies from the log.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        secure_delete(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def secure_delete(conn: sqlite3.Connection) -> None:
    """Deleted rows overwritten with zeros, never left in free space or free pages: a
    forgotten session must leave no bytes in the file (projector/forgetting.py)."""
    conn.execute("PRAGMA secure_delete = ON")


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table, index, trigger and view in an empty database, in one transaction."""
    script = "\n".join(sql for _name, sql in schema_files())
    try:
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {schema_version()};\n"
            f"PRAGMA application_id = {APPLICATION_ID};\nCOMMIT;"
        )
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def is_empty(conn: sqlite3.Connection) -> bool:
    """True for a database with no schema at all (a new file)."""
    return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)


@dataclass(frozen=True)
class Checkpoint:
    """How far the projection has read the log (see 50_projector.sql)."""

    log_offset: int
    log_pos: int
    line_start: int
    line_hash: str


def read_checkpoint(conn: sqlite3.Connection) -> Checkpoint:
    row = conn.execute(
        "SELECT log_offset, log_pos, line_start, line_hash FROM projector_checkpoint WHERE id = 1"
    ).fetchone()
    return Checkpoint(int(row[0]), int(row[1]), int(row[2]), str(row[3]))


def write_checkpoint(conn: sqlite3.Connection, cp: Checkpoint) -> None:
    conn.execute(
        "UPDATE projector_checkpoint SET log_offset = ?, log_pos = ?, line_start = ?, "
        "line_hash = ? WHERE id = 1",
        (cp.log_offset, cp.log_pos, cp.line_start, cp.line_hash),
    )


# -- which files are the projection's -------------------------------------------------------
# The database is disposable: a rebuild replaces it, and a crashed build leaves a
# ``<db>.rebuild`` that the next one removes. Before either, and before any connection,
# the file must be provably the projection's: absent, empty, or a SQLite database with no
# tables yet (nothing to lose: a first catch-up may stop there); a SQLite database whose
# header carries the projection's application id (set by create_schema,
# readable even when the rest of the file is damaged); or, made before that id existed,
# one holding the projector's checkpoint. Anything else (the log itself, another
# program's database, any other file, a FIFO, a device) is refused with ForeignFile and
# left exactly as it is: paths swapped by mistake must never cost a byte of the log.

# PRAGMA application_id, bytes 68-71 of a SQLite file's header: "SJRN".
APPLICATION_ID: Final = 0x534A524E
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_APPLICATION_ID_AT: Final = slice(68, 72)
_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_paths(log_path: str | os.PathLike[str], db_path: str | os.PathLike[str]) -> None:
    """Refuse a database path that names the log, or a file that is not the projection's."""
    log, db = os.fspath(log_path), os.fspath(db_path)
    with contextlib.suppress(OSError):  # either may not exist yet
        if os.path.samefile(log, db):
            raise ForeignFile(
                db,
                "is the log itself: the database must be another file "
                "(--db, default sessions.db; --log, default sessions.jsonl)",
            )
    check_ours(db)


def check_ours(path: str | os.PathLike[str]) -> None:
    """Raise ForeignFile unless ``path`` is absent, empty, or a projection database."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        if os.path.islink(name):  # SQLite would create its target, whatever its mode
            raise ForeignFile(name, "is a symbolic link to a missing file") from None
        return
    for is_kind, kind in _KINDS:
        if is_kind(st.st_mode):
            raise ForeignFile(name, f"is {kind}, not a database file")
    if st.st_size == 0:
        return
    with open(name, "rb") as f:
        header = f.read(100)
    if not header.startswith(_SQLITE_MAGIC):
        raise ForeignFile(
            name,
            f"is not a SQLite database (it starts with {header[:16]!r}); "
            "is it the log? Check --log and --db",
        )
    application_id = int.from_bytes(header[_APPLICATION_ID_AT], "big")
    if application_id == APPLICATION_ID:
        return
    if application_id != 0 or not _empty_or_a_projection(name):
        raise ForeignFile(name, "is a SQLite database of another program, not a projection")


def _empty_or_a_projection(path: str) -> bool:
    """Whether the database at ``path`` has no schema at all (no table, view, index or
    trigger), or the projector's checkpoint table (a projection made before the id)."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error:
        return False
    try:
        listed = conn.execute("SELECT type, name FROM sqlite_master")
        objects = {(str(kind), str(name)) for kind, name in listed}
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return not objects or ("table", "projector_checkpoint") in objects
