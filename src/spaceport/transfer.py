"""Copying files between stores: a bounded pool of workers, each file atomic.

Each file is copied into a temporary beside its destination, its mode and mtime are set
through the open descriptor, and one rename puts it in place: a crash never leaves half a
file under a real name, and the primary sees the fewest metadata calls per file. Data moves
with ``copy_file_range`` where the kernel allows it (no copy through user space), else
``sendfile``, else large ``pread``/``pwrite`` buffers.

A file that fails is retried with backoff if the error is transient; one that keeps failing
is reported by name while the other workers go on. A storage that is gone (ENOTCONN) stops
everything at once: there is no point in trying a thousand more files.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable

from .errors import Interrupted
from .progress import Tracker
from .retry import RetryPolicy, is_unavailable, retry_call
from .store.base import Store

log = logging.getLogger(__name__)

CHUNK = 8 << 20  # bytes per copy call: large enough to amortise a round trip
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF,
                    errno.ENOTSUP}
UNSTABLE_RETRIES = 3  # re-copies of a file that changes while being copied


@dataclass(slots=True)
class CopyJob:
    path: str
    size: int  # expected size, for progress only
    tmp: str  # temporary name, recorded in the index before the copy starts
    src: str | None = None  # source path when it differs (restoring from the trash)


@dataclass(slots=True)
class CopyDone:
    job: CopyJob
    src_st: os.stat_result | None = None  # the source as it was copied
    dst_st: os.stat_result | None = None  # the destination as written
    error: BaseException | None = None
    unstable: bool = False  # the source kept changing during the copy


class Copier:
    """Copies single files from ``src`` to ``dst``; safe to call from many threads."""

    def __init__(self, src: Store, dst: Store, *, tracker: Tracker, task: str,
                 retry: RetryPolicy, stop: threading.Event,
                 check: Callable[[], None] = lambda: None):
        self.src, self.dst = src, dst
        self.tracker, self.task = tracker, task
        self.retry = retry
        self.stop = stop
        self.check = check  # fencing: raises if the lock was lost
        self._use_cfr = True
        self._use_sendfile = True

    def copy(self, job: CopyJob) -> CopyDone:
        """Copy one file, retrying transient errors; never raises (errors are returned)."""
        try:
            if self.stop.is_set():
                raise Interrupted("stopped before copying " + job.path)
            self.check()
            return retry_call(self.retry, self._copy_stable, job, what=f"copy {job.path}")
        except BaseException as exc:  # noqa: BLE001 - reported per file by the caller
            if is_unavailable(exc):
                self.stop.set()
            return CopyDone(job, error=exc)

    def _copy_stable(self, job: CopyJob) -> CopyDone:
        for attempt in range(UNSTABLE_RETRIES + 1):
            done = self._copy_once(job)
            if not done.unstable or attempt == UNSTABLE_RETRIES:
                self.tracker.advance(self.task, files=1)
                return done
            self.tracker.advance(self.task, nbytes=-done.src_st.st_size)
            log.info("%s changed while being copied; copying again", job.path)
        raise AssertionError("unreachable")

    def _copy_once(self, job: CopyJob) -> CopyDone:
        moved = [0]  # bytes this attempt reported to the tracker, taken back on failure
        sfd = self.src.open_read(job.src or job.path)
        try:
            before = os.fstat(sfd)
            fd, tmp = self.dst.create_temp(job.path, job.tmp)
            try:
                copied = self._copy_data(sfd, fd, before.st_size, moved)
                after = os.fstat(sfd)
                self.check()  # last fencing point before the file becomes visible
            except BaseException:
                self.dst.discard_temp(fd, tmp)
                self.tracker.advance(self.task, nbytes=-moved[0])
                raise
            unstable = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
                or copied != after.st_size
            try:
                dst_st = self.dst.commit_temp(fd, tmp, job.path, mode=before.st_mode,
                                              mtime_ns=before.st_mtime_ns)
            except BaseException:
                self.tracker.advance(self.task, nbytes=-moved[0])
                raise
        finally:
            os.close(sfd)
        return CopyDone(job, before, dst_st, unstable=unstable)

    def _copy_data(self, sfd: int, dfd: int, size_hint: int, moved: list[int]) -> int:
        offset = 0
        while True:
            if self.stop.is_set():
                raise Interrupted("stopped in the middle of a file")
            n = self._chunk(sfd, dfd, offset)
            if n == 0:
                if offset < size_hint and self._use_cfr:
                    # Some filesystems answer 0 to copy_file_range before the end of file:
                    # check with a plain read before believing it.
                    if os.pread(sfd, 1, offset):
                        self._use_cfr = False
                        continue
                return offset
            offset += n
            moved[0] += n
            self.tracker.advance(self.task, nbytes=n)

    def _chunk(self, sfd: int, dfd: int, offset: int) -> int:
        if self._use_cfr:
            try:
                return os.copy_file_range(sfd, dfd, CHUNK, offset, offset)
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                self._use_cfr = False
        if self._use_sendfile:
            try:
                os.lseek(dfd, offset, os.SEEK_SET)  # sendfile writes at dfd's position
                return os.sendfile(dfd, sfd, offset, CHUNK)
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                self._use_sendfile = False
        data = os.pread(sfd, CHUNK, offset)
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(dfd, view[written:], offset + written)
        return len(data)


def run_copies(copier: Copier, jobs: Iterable[CopyJob], workers: int,
               on_done: Callable[[CopyDone], None]) -> None:
    """Run copies on a bounded pool; ``on_done`` is called in this thread for each result.

    On KeyboardInterrupt the running copies are stopped (their temporaries removed), the
    results that did land are still handed to ``on_done``, then the interrupt propagates.
    """
    jobs_iter = iter(jobs)
    window = max(1, workers) * 4  # bounded: 10^6 files never become 10^6 futures
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="copy") as pool:
        pending: set[Future] = set()

        def refill() -> None:
            while len(pending) < window and not copier.stop.is_set():
                job = next(jobs_iter, None)
                if job is None:
                    return
                pending.add(pool.submit(copier.copy, job))

        try:
            refill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    on_done(future.result())
                refill()
        except BaseException:
            copier.stop.set()
            for future in pending:
                if not future.cancel():
                    on_done(future.result())
            raise
