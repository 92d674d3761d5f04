"""Moving a file's bytes from one descriptor to another: with ``copy_file_range`` where
the kernel allows it (no copy through user space), else ``sendfile``, else large
``pread``/``pwrite`` buffers (hashed on the way when asked); a sparse file by its data alone,
its holes seeked over (:mod:`spaceport.engine.sparse`). The file-level protocol around it
(temporaries, stability, commits) is :class:`spaceport.engine.transfer.Copier`'s."""

from __future__ import annotations

import errno
import functools
import os
import threading
from typing import Callable

from ..errors import Interrupted
from .sparse import data_ranges, nonzero_runs

# Bytes per copy_file_range/sendfile call (the kernel moves them, no buffer of ours): on
# one local disk 64 MiB calls copy a 1 GiB file 20-40 % faster than 8 MiB calls.
CHUNK = 64 << 20
BUFFER = 4 << 20  # bytes per pread/pwrite when the kernel cannot copy: one buffer per worker
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF,
                    errno.ENOTSUP}


class ByteMover:
    """One copier's way of moving bytes; it learns, once, what the filesystems refuse
    (``copy_file_range`` across them, ``sendfile`` onto a FUSE file) and stops asking.
    ``advance(n)`` is told every byte passed (copied, or a hole skipped); ``stop`` ends a
    copy between two chunks (Interrupted)."""

    def __init__(self, stop: threading.Event, advance: Callable[[int], None]):
        self.stop, self.advance = stop, advance
        self._use_cfr = True
        self._use_sendfile = True

    def copy(self, sfd: int, dfd: int, size: int, moved: list[int], *,
                   sparse: bool = False, hasher=None) -> int:
        """Copy the ``size`` bytes the source had when opened, or less if it ends sooner;
        returns the offset reached (holes included). ``hasher``: fed every byte copied
        (through our buffer: the kernel's copy never shows us the bytes).

        Not reading on to the end of file saves a call per file: a source that grows
        meanwhile shows in the stat taken after the copy. A size of 0 is not believed (an
        empty file costs one call, a file whose size is not known is read to its end).
        ``sparse``: only the data is copied, the holes are left holes.
        """
        if sparse and size:
            return self.sparse(sfd, dfd, size, moved)
        return self.span(sfd, dfd, 0, size, moved, [0], hasher=hasher)

    def span(self, sfd: int, dfd: int, offset: int, end: int, moved: list[int],
                   position: list[int], exact: bool = False, hasher=None) -> int:
        """Bytes ``offset`` to ``end`` (to the end of file if ``end`` is 0) copied at the
        same offsets; returns the offset reached. ``exact``: never past ``end`` (a data
        range: a hole follows); else each call may read on (see copy)."""
        while not end or offset < end:
            if self.stop.is_set():
                raise Interrupted("stopped in the middle of a file")
            n = self.chunk(sfd, dfd, offset, position,
                            min(CHUNK, end - offset) if exact else CHUNK) if hasher is None \
                else self.buffered(sfd, dfd, offset, min(BUFFER, end - offset) if exact
                                    else BUFFER, hasher)
            if n == 0:
                if self._use_cfr and hasher is None:
                    # Some filesystems answer 0 to copy_file_range before the end of file:
                    # check with a plain read before believing it.
                    if os.pread(sfd, 1, offset):
                        self._use_cfr = False
                        continue
                break
            offset += n
            moved[0] += n
            self.advance(n)
        return offset

    def sparse(self, sfd: int, dfd: int, size: int, moved: list[int]) -> int:
        """A file that may hold holes: its data ranges where the source's filesystem tells
        them, else every block that is not all zeros; the holes are never written, and
        the destination is given its size last."""
        ranges = data_ranges(sfd, size)
        if ranges is None:
            reached, written = self.nonzero(sfd, dfd, size, moved)
        else:
            reached = written = 0
            for start, stop in ranges:
                self.skip(start - reached, moved)  # the hole before it
                reached = written = self.span(sfd, dfd, start, stop, moved, [-1],
                                                    exact=True)
                if reached < stop:  # it shrank meanwhile: the stat after the copy says so
                    return reached
            self.skip(size - reached, moved)
            reached = size
        if written < reached:
            os.ftruncate(dfd, reached)  # the hole at the end
        return reached

    def nonzero(self, sfd: int, dfd: int, size: int,
                      moved: list[int]) -> tuple[int, int]:
        """Read it all, write only the blocks that are not all zeros; (offset reached,
        where the data written ends)."""
        offset = written = 0
        while offset < size:
            if self.stop.is_set():
                raise Interrupted("stopped in the middle of a file")
            data = os.pread(sfd, min(BUFFER, size - offset), offset)
            if not data:
                break
            for start, stop in nonzero_runs(data, _zeros()):
                view = memoryview(data)[start:stop]
                done = 0
                while done < len(view):
                    done += os.pwrite(dfd, view[done:], offset + start + done)
                written = offset + stop
            offset += len(data)
            self.skip(len(data), moved)
        return offset, written

    def skip(self, n: int, moved: list[int]) -> None:
        """Bytes passed over (a hole, zeros): progress as if copied."""
        if n > 0:
            moved[0] += n
            self.advance(n)

    def chunk(self, sfd: int, dfd: int, offset: int, position: list[int],
               limit: int = CHUNK) -> int:
        if self._use_cfr:
            try:
                return os.copy_file_range(sfd, dfd, limit, offset, offset)
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                self._use_cfr = False
        if self._use_sendfile:
            try:
                if position[0] != offset:  # sendfile writes at dfd's own offset
                    position[0] = os.lseek(dfd, offset, os.SEEK_SET)
                n = os.sendfile(dfd, sfd, offset, limit)
                position[0] += n
                return n
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                self._use_sendfile = False
        return self.buffered(sfd, dfd, offset, limit)

    @staticmethod
    def buffered(sfd: int, dfd: int, offset: int, limit: int = BUFFER, hasher=None) -> int:
        """One buffer read and written at ``offset`` (hashed on the way, if asked)."""
        data = os.pread(sfd, min(BUFFER, limit), offset)
        if hasher is not None:
            hasher.update(data)
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(dfd, view[written:], offset + written)
        return len(data)


@functools.cache
def _zeros() -> bytes:
    """A buffer of zeros to compare read chunks with (allocated at the first sparse copy)."""
    return bytes(BUFFER)
