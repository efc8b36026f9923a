"""Sealed segments: a file log rotates into immutable files, and reads as one run of bytes.

When the log file at ``<log>`` reaches a size limit, the writer that made it so seals it:
the file gets a second name, ``<log>.segments/NNNNNN.jsonl``, and the manifest
``<log>.segments/manifest.json`` lists it with where it starts in the whole log (a byte
offset), its size, the positions it holds and the SHA-256 of its bytes; then a new,
empty ``<log>`` takes its place. The active file stays plain JSONL; a log that never
rotated is one file, as it always was.

Cursors stay byte offsets, into the concatenation of the sealed segments and the active
file, so nothing above ``LogView`` knows about segments. A record's ``pos`` is still its
line number in that concatenation.

Rotation (``rotate``), under the writers' lock, with ``<log>`` fsynced:

1. create ``<log>.next``, empty;
2. link ``<log>`` as the new segment's file;
3. write the manifest that lists it (a new file renamed over the old): the commit;
4. rename ``<log>.next`` over ``<log>``.

A crash leaves the active file with two names (steps 2 to 4). ``settle`` finishes a
committed rotation (step 4) or undoes one that was not (removes the link). Readers follow
the same rule without changing anything: an active file that is already the last sealed
segment is read as empty.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import os
from collections.abc import Generator
from typing import Final, Protocol

import msgspec

from journal.errors import CorruptLog, LogError
from journal.log.files import FILE_MODE, fsync_directory

DEFAULT_SEGMENT_BYTES: Final = 256 << 20
MANIFEST_FORMAT: Final = 1
_CHUNK: Final = 1 << 20


class Segment(msgspec.Struct, frozen=True):
    """One sealed segment, as the manifest lists it."""

    name: str  # the file's name in the segments directory
    start: int  # the byte offset of its first byte in the whole log
    size: int
    first_pos: int
    last_pos: int
    sha256: str

    @property
    def end(self) -> int:
        return self.start + self.size


class Manifest(msgspec.Struct, frozen=True):
    """The sealed segments of a log, oldest first."""

    format: int = MANIFEST_FORMAT
    segments: tuple[Segment, ...] = ()

    @property
    def end(self) -> int:
        """Where the active file starts in the whole log."""
        return self.segments[-1].end if self.segments else 0

    @property
    def last_pos(self) -> int:
        return self.segments[-1].last_pos if self.segments else 0


class ReadAt(Protocol):
    """Anything bytes of the whole log can be read from by offset (``LogView``)."""

    def pread(self, size: int, offset: int) -> bytes: ...


def segments_dir(log_path: str) -> str:
    return f"{log_path}.segments"


def manifest_path(log_path: str) -> str:
    return os.path.join(segments_dir(log_path), "manifest.json")


def next_path(log_path: str) -> str:
    """Where rotation prepares the next active file."""
    return f"{log_path}.next"


def segment_path(log_path: str, segment: Segment) -> str:
    return os.path.join(segments_dir(log_path), segment.name)


def load_manifest(log_path: str) -> Manifest:
    """The log's manifest (empty if it never rotated); LogError if it cannot be trusted."""
    path = manifest_path(log_path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise LogError(f"{path}: cannot read the manifest: {exc.strerror}", path=path) from exc
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise LogError(f"{path}: the manifest is damaged: {exc}", path=path) from None
    if manifest.format != MANIFEST_FORMAT:
        raise LogError(
            f"{path}: manifest format {manifest.format}, this version reads "
            f"{MANIFEST_FORMAT} (written by a newer session-journal?)",
            path=path,
        )
    start, pos = 0, 0
    for segment in manifest.segments:
        if segment.start != start or segment.first_pos != pos + 1 or segment.size <= 0:
            raise LogError(
                f"{path}: segment {segment.name} does not follow the one before it "
                f"(starts at byte {segment.start} and pos {segment.first_pos}, "
                f"expected {start} and {pos + 1})",
                path=path,
            )
        start, pos = segment.end, segment.last_pos
    return manifest


def write_manifest(log_path: str, manifest: Manifest) -> None:
    """Replace the manifest atomically and durably."""
    path = manifest_path(log_path)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, msgspec.json.encode(manifest) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(segments_dir(log_path))


def file_sha256(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _same_file(path: str, st: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except FileNotFoundError:
        return False
    return (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev)


def sealed_index(log_path: str, manifest: Manifest, st: os.stat_result) -> int | None:
    """Which sealed segment the file ``st`` is (newest first: that is where a handle left
    behind by a rotation finds its file), or None."""
    for k in range(len(manifest.segments) - 1, -1, -1):
        if _same_file(segment_path(log_path, manifest.segments[k]), st):
            return k
    return None


# -- reading ------------------------------------------------------------------------------


class LogView:
    """The whole log as one run of bytes: the sealed segments, then the active file.

    ``active_fd`` is a writer's descriptor of the active file (kept open by it), with
    ``manifest`` as it knew it; a reader leaves both out and the view opens the file
    itself, then reads the manifest: in that order, so that a rotation between the two is
    seen (the file opened is then a sealed segment, and the active part is empty).
    ``writable`` opens sealed segments for overwriting too (redaction only).
    """

    def __init__(
        self,
        log_path: str,
        *,
        active_fd: int | None = None,
        manifest: Manifest | None = None,
        writable: bool = False,
    ) -> None:
        self.path = log_path
        self.writable = writable
        self._owns_active = active_fd is None
        self._fds: dict[int, int] = {}  # segment index -> open descriptor
        self._touched: set[int] = set()
        if active_fd is None:
            flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                active_fd = os.open(log_path, flags)
            except FileNotFoundError:
                active_fd = None
        self.active_fd = active_fd
        try:
            self.manifest = manifest if manifest is not None else load_manifest(log_path)
            if (
                self._owns_active
                and active_fd is not None
                and self.manifest.segments
                and sealed_index(log_path, self.manifest, os.fstat(active_fd)) is not None
            ):
                os.close(active_fd)  # a rotation in progress: its file is sealed already
                self.active_fd = None
        except BaseException:
            self.close()
            raise
        self.base = self.manifest.end
        self._starts = [s.start for s in self.manifest.segments]

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._owns_active and self.active_fd is not None:
            os.close(self.active_fd)
            self.active_fd = None

    def size(self) -> int:
        """The whole log's size now (the active file may grow while the view is open)."""
        if self.active_fd is None:
            return self.base
        return self.base + os.fstat(self.active_fd).st_size

    def where(self, offset: int) -> tuple[str, int]:
        """The file that holds byte ``offset`` of the log, and the offset in it."""
        if offset >= self.base:
            return self.path, offset - self.base
        segment = self.manifest.segments[bisect.bisect_right(self._starts, offset) - 1]
        return segment_path(self.path, segment), offset - segment.start

    def _segment_fd(self, k: int) -> int:
        fd = self._fds.get(k)
        if fd is None:
            segment = self.manifest.segments[k]
            path = segment_path(self.path, segment)
            flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                fd = os.open(path, flags)
            except OSError as exc:
                raise LogError(
                    f"{path}: sealed segment {segment.name} of {self.path} cannot be opened: "
                    f"{exc.strerror}",
                    path=self.path,
                ) from exc
            size = os.fstat(fd).st_size
            if size != segment.size:
                os.close(fd)
                raise CorruptLog(
                    f"sealed segment {segment.name} is {size} bytes, its manifest says "
                    f"{segment.size}: it was changed after it was sealed",
                    path=self.path,
                    line=segment.first_pos,
                    offset=segment.start,
                    why="a sealed segment never changes size",
                )
            self._fds[k] = fd
        return fd

    def _piece(self, offset: int) -> tuple[int | None, int, int, int]:
        """(descriptor, offset in it, bytes left in it or -1 for the active file, index)."""
        if offset >= self.base:
            return self.active_fd, offset - self.base, -1, -1
        k = bisect.bisect_right(self._starts, offset) - 1
        segment = self.manifest.segments[k]
        return self._segment_fd(k), offset - segment.start, segment.end - offset, k

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the log's end)."""
        parts: list[bytes] = []
        while size > 0:
            fd, local, left, _ = self._piece(offset)
            if fd is None:
                break
            chunk = os.pread(fd, size if left < 0 else min(size, left), local)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
            if left < 0 and size > 0:
                break  # the active file's end
        return b"".join(parts)

    def lines(self, offset: int) -> Generator[bytes]:
        """The lines from ``offset`` (a line's start) to the end, the last maybe without
        its newline; a sealed segment's last line ends in its last byte."""
        while True:
            fd, local, left, _ = self._piece(offset)
            if fd is None:
                return
            with os.fdopen(os.dup(fd), "rb", buffering=_CHUNK) as f:
                f.seek(local)
                for line in f:
                    if left >= 0 and len(line) > left:
                        line = line[:left]
                    offset += len(line)
                    yield line
                    if left >= 0:
                        left -= len(line)
                        if left <= 0:
                            break
            if left != 0 or offset >= self.size():
                return

    def pwrite(self, data: bytes, offset: int) -> None:
        """Overwrite bytes in place, within one file (``writable`` views only)."""
        fd, local, _, k = self._piece(offset)
        assert fd is not None and self.writable
        os.pwrite(fd, data, local)
        if k >= 0:
            self._touched.add(k)

    def fsync(self) -> None:
        """Make what ``pwrite`` changed durable, and seal the segments it changed again."""
        if self.active_fd is not None:
            os.fsync(self.active_fd)
        if not self._touched:
            return
        segments = list(self.manifest.segments)
        for k in sorted(self._touched):
            fd = self._fds[k]
            os.fsync(fd)
            segments[k] = msgspec.structs.replace(
                segments[k], sha256=file_sha256(fd, segments[k].size)
            )
        self.manifest = Manifest(segments=tuple(segments))
        write_manifest(self.path, self.manifest)
        self._touched.clear()


def log_size(log_path: str) -> int:
    """The whole log's size in bytes (0 if there is none)."""
    with LogView(log_path) as view:
        return view.size()


def broken_seals(log_path: str) -> list[tuple[Segment, str]]:
    """Each sealed segment whose file no longer matches its seal, and how."""
    broken = []
    for segment in load_manifest(log_path).segments:
        path = segment_path(log_path, segment)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            broken.append((segment, f"cannot be opened: {exc.strerror}"))
            continue
        try:
            size = os.fstat(fd).st_size
            if size != segment.size:
                broken.append((segment, f"is {size} bytes, sealed at {segment.size}"))
            elif file_sha256(fd, size) != segment.sha256:
                broken.append((segment, "its bytes changed after it was sealed (SHA-256)"))
        finally:
            os.close(fd)
    return broken


# -- rotating -----------------------------------------------------------------------------


def rotate(log_path: str, fd: int, manifest: Manifest, last_pos: int) -> tuple[int, Manifest]:
    """Seal the active file (open as ``fd``, under the writers' lock, whole records only,
    its last ``last_pos``); returns the new active file's descriptor, locked by the
    caller's flock rules (see ``LogFile``), and the new manifest."""
    os.fsync(fd)  # a sealed segment is durable whatever the writer's durability
    size = os.fstat(fd).st_size
    directory = segments_dir(log_path)
    if not os.path.isdir(directory):
        os.mkdir(directory, 0o700)
        fsync_directory(os.path.dirname(os.path.abspath(log_path)))
    segment = Segment(
        name=f"{len(manifest.segments) + 1:06d}.jsonl",
        start=manifest.end,
        size=size,
        first_pos=manifest.last_pos + 1,
        last_pos=last_pos,
        sha256=file_sha256(fd, size),
    )
    nxt = next_path(log_path)
    if os.path.lexists(nxt):
        os.unlink(nxt)  # left by a rotation that stopped before its commit
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    new_fd = os.open(nxt, flags, FILE_MODE)
    try:
        os.fchmod(new_fd, FILE_MODE)
        fcntl.flock(new_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody knows the file yet
        os.link(log_path, os.path.join(directory, segment.name))
        fsync_directory(directory)
        sealed = Manifest(segments=(*manifest.segments, segment))
        write_manifest(log_path, sealed)  # the commit
        os.rename(nxt, log_path)
        fsync_directory(os.path.dirname(os.path.abspath(log_path)))
    except BaseException:
        os.close(new_fd)  # and its lock: whoever settles the rotation needs it
        raise
    return new_fd, sealed


def settle(log_path: str) -> None:
    """Finish or undo a rotation a crash interrupted (under the lock of the file at
    ``log_path``): see the module docstring."""
    try:
        active = os.stat(log_path)
    except FileNotFoundError:
        return
    manifest = load_manifest(log_path)
    nxt = next_path(log_path)
    if manifest.segments and _same_file(segment_path(log_path, manifest.segments[-1]), active):
        if not os.path.lexists(nxt):
            os.close(os.open(nxt, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
        os.rename(nxt, log_path)
        fsync_directory(os.path.dirname(os.path.abspath(log_path)))
        return
    listed = {s.name for s in manifest.segments}
    directory = segments_dir(log_path)
    removed = False
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        path = os.path.join(directory, name)
        if name not in listed and name.endswith(".jsonl") and _same_file(path, active):
            os.unlink(path)  # linked by a rotation that stopped before its commit
            removed = True
    if removed:
        fsync_directory(directory)
    if os.path.lexists(nxt):
        os.unlink(nxt)
