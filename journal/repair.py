"""Repairs of the log file: moving a torn tail aside, and undoing a CR LF conversion.

Each leaves the log as it was unless it can finish: the bytes it keeps are written to a new
file beside the log and made durable (the file, then its directory) before the log changes.
Which bytes are a torn tail is decided by the reader (``journal.log``), never here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Final

from journal.errors import (
    CorruptLog,
    DurabilityError,
    LogError,
    LogWriteError,
    QuarantineFailed,
)
from journal.events import LineError, verify_checksum
from journal.log.appender import LogFile
from journal.log.files import FILE_MODE, check_regular_file, fsync_directory

_COPY_CHUNK: Final = 1 << 20


def _new_file(path: str) -> int:
    """Create ``path`` (0600, never an existing file or a symlink) for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask: conversations are private
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _discard(path: str) -> None:
    """Remove a copy that could not be finished (best effort: it was never relied on)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def quarantine_tail(log: LogFile, offset: int) -> str:
    """Move the log's bytes from ``offset`` on into ``<log>.torn-<offset>[.n]``; its path.

    The copy is durable before the log is cut, so a crash in between leaves both, never
    neither. When the copy cannot be made whole (disk full, say), what was made of it is
    removed, the log is left as it was and QuarantineFailed says why.
    """
    path = f"{log.path}.torn-{offset}"
    n = 1
    while os.path.lexists(path):
        path = f"{log.path}.torn-{offset}.{n}"
        n += 1
    try:
        fd = _new_file(path)
    except OSError as exc:
        raise QuarantineFailed(
            f"{log.path}: cannot create {path} to move the torn tail at byte offset {offset} "
            f"aside ({exc.strerror}); the log was left as it was",
            path=log.path,
        ) from exc
    try:
        try:
            at = offset - log.base
            while chunk := os.pread(log.fd, _COPY_CHUNK, at):
                _write_all(fd, chunk)
                at += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        _discard(path)
        raise QuarantineFailed(
            f"{log.path}: cannot copy the torn tail at byte offset {offset} to {path} "
            f"({exc.strerror}); the log was left as it was and the copy removed",
            path=log.path,
        ) from exc
    log.cut_back(offset)
    return path


def repair_line_endings(path: str) -> int:
    """Turn the log's CR LF line endings back into LF; returns how many lines changed.

    Every complete line must be a valid record once its CR is removed (its checksum holds),
    or nothing changes and CorruptLog names the first line that is not. The converted log is
    written beside the original, made durable and renamed over it, under the writers' lock;
    bytes after the last newline (a torn tail) are kept as they are, for the next writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise LogError(f"{path}: cannot open: {exc.strerror}", path=path) from exc
    tmp = f"{path}.crlf-repair"
    try:
        check_regular_file(path, os.fstat(fd))
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            out = _new_file(tmp)
        except FileExistsError:
            raise LogError(
                f"{path}: {tmp} exists (left by a repair that stopped?); remove it and retry",
                path=path,
            ) from None
        try:
            try:
                changed = _convert(path, fd, out)
                os.fsync(out)
            finally:
                os.close(out)
            if changed:
                os.rename(tmp, path)
        except BaseException:
            _discard(tmp)
            raise
        if not changed:
            _discard(tmp)
            return 0
    except OSError as exc:
        raise LogWriteError(
            f"{path}: repairing line endings failed ({exc.strerror}); the log was left as it was",
            path=path,
        ) from exc
    finally:
        os.close(fd)  # releases the lock
    try:
        fsync_directory(os.path.dirname(os.path.abspath(path)))  # the rename, made durable
    except OSError as exc:
        raise DurabilityError(
            f"{path}: the line endings were converted, but making the rename durable failed "
            f"({exc.strerror}); a power cut may bring the CR LF log back",
            path=path,
        ) from exc
    return changed


def _convert(path: str, src: int, out: int) -> int:
    """Copy the log from ``src`` to ``out`` without CRs before newlines (every line checked)."""
    changed = 0
    offset = 0
    with os.fdopen(os.dup(src), "rb") as f:
        for number, line in enumerate(f, 1):
            record = line
            if line.endswith(b"\r\n"):
                record = line[:-2] + b"\n"
            if record.endswith(b"\n"):
                try:
                    verify_checksum(record[:-1])
                except LineError as exc:
                    raise CorruptLog(
                        exc.reason,
                        path=path,
                        line=number,
                        offset=offset,
                        why="only a log whose every line is a valid record once its CR is "
                        "removed is converted; nothing was changed",
                    ) from None
                changed += record is not line
            _write_all(out, record)
            offset += len(line)
    return changed
