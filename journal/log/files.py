"""Opening the log file safely: never through a symlink or a second name, created private.

Also the directory fsync that makes a creation, rename or removal durable.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, Final

from journal.errors import (
    InvalidValue,
    LogError,
    UnsafeLogPath,
)

FILE_MODE: Final = 0o600


def fsync_directory(path: str) -> None:
    """Make a file's creation, rename or removal in ``path`` durable."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def new_file(path: str, refusal: str) -> Iterator[tuple[BinaryIO, str]]:
    """Write a file that must not exist yet, durably: the body writes (and may read back)
    ``<path>.part``, which is fsynced and renamed to ``path`` once the body has returned,
    and removed if it raises. ``refusal`` says why an existing ``path`` is refused."""
    if os.path.lexists(path):
        raise InvalidValue(f"{path}: already exists; {refusal}")
    part = f"{path}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            yield out, part
        os.fsync(fd)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(part)
        raise
    finally:
        os.close(fd)
    os.rename(part, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def check_regular_file(path: str, st: os.stat_result) -> None:
    """Refuse anything but a plain file with a single name (symlink checked by the caller)."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLogPath(f"{path}: not a regular file", path=path)
    if st.st_nlink > 1 and not (st.st_nlink == 2 and _being_sealed(path, st)):
        raise UnsafeLogPath(
            f"{path}: has {st.st_nlink} hard links; a log must have exactly one name", path=path
        )


def _being_sealed(path: str, st: os.stat_result) -> bool:
    """Whether the file's other name is in its segments directory: a rotation a crash
    interrupted (``journal.log.segments``), which the next writer settles."""
    directory = f"{path}.segments"
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        try:
            other = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        if (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev):
            return True
    return False


def open_log_for_append(path: str) -> tuple[int, os.stat_result]:
    """Open (creating 0600 if needed) the log for appending; returns (fd, its fstat).

    Refuses symlinks (``O_NOFOLLOW``), hard links and non-regular files.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    created = False
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    except FileExistsError:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeLogPath(
                    f"{path}: is a symlink; refusing to follow it", path=path
                ) from exc
            if exc.errno == errno.EISDIR:
                raise UnsafeLogPath(f"{path}: not a regular file (a directory)", path=path) from exc
            raise LogError(f"{path}: cannot open: {exc.strerror}", path=path) from exc
    except OSError as exc:
        raise LogError(f"{path}: cannot create: {exc.strerror}", path=path) from exc
    try:
        opened = os.fstat(fd)
        check_regular_file(path, opened)
        if created:
            os.fchmod(fd, FILE_MODE)  # whatever the umask: conversations are private
            fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        os.close(fd)
        raise
    return fd, opened
