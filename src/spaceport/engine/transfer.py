"""Copying files between stores, each file atomic, on a bounded pool of workers
(:mod:`.pool`); the bytes themselves are moved by :mod:`.bytecopy`.

Each file is copied into a temporary beside its destination, its mode and mtime are set
through the open descriptor, and one rename puts it in place: a crash never leaves half a
file under a real name, and the primary sees the fewest metadata calls per file.

A file that changes while it is copied is copied again; one that keeps changing is never
committed (the destination keeps its previous version) and is reported as
:class:`KeptChangingError`. A change is seen in the file's size, mtime or ctime; a file
changed within the last tick of the clock that stamps those times is first left to settle,
since a second write within the same tick would not show in them (git's "racy" files).

A file that fails is retried with backoff if the error is transient; one that keeps failing
is reported by name while the other workers go on. A storage that is gone (ENOTCONN) stops
everything at once: there is no point in trying a thousand more files.

On a FUSE mount the cost is round trips, and the kernel holds a folder's lock through the
round trips of a create or a rename in it: jobs are ordered so that the workers write into
different folders (:func:`spread_over_folders`). Per file on the destination: create the
temporary (with its final mode), write, set the mtime through the descriptor, fsync if
asked, one rename; the stat returned comes from the descriptor (the kernel has it cached).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, TypeVar

from ..errors import Interrupted
from ..store.base import Store, is_retryable, parent_of
from ..store.retry import RetryPolicy, is_unavailable, retry_call
from .bytecopy import ByteMover
from .digest import digest_of, new_hash, wants_digest
from .pool import run_pool
from .progress import Tracker
from .snapshot import (
    SnapshotError,
    Snapshotter,
    fd_is_database,
    folded_mtime_ns,
    is_racy,
)
from .sparse import maybe_sparse

if TYPE_CHECKING:
    from ..safety.fence import Fence

log = logging.getLogger(__name__)

BIG_FILE = 64 << 20  # copied first: a big file started last would end the run alone
UNSTABLE_RETRIES = 3  # re-copies of a file that changes while being copied
UNSTABLE_PAUSE = 0.2  # seconds before the first re-copy, doubling: a writer may be ending
# A file whose ctime is this close to now may be written again within the same tick of the
# filesystem's clock without its times changing: the copy waits until it is older.
RACY_NS = max(10_000_000, 2 * int(time.clock_getres(getattr(time, "CLOCK_REALTIME_COARSE", 5))
                                  * 1e9))
T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class CopyJob:
    path: str
    size: int  # expected size: for progress, and big files are started first
    tmp: str  # temporary name, recorded in the index before the copy starts
    src: str | None = None  # source path when it differs (restoring from the trash)


class KeptChangingError(OSError):
    """The source changed during every copy: nothing was committed (no torn file lands)."""

    def __init__(self, path: str, attempts: int):
        super().__init__(errno.EBUSY, f"it kept changing while it was copied ({attempts} "
                         "times); its previous version is kept, none torn", path)


def racy(st: os.stat_result, now_ns: int | None = None) -> bool:
    """Changed so recently that a write in the same clock tick would not show in its times.
    (A ctime far in the future, after the clock was set back, is not: any write now gives
    the file another one.)"""
    now_ns = now_ns if now_ns is not None else time.time_ns()
    return abs(st.st_ctime_ns - now_ns) < RACY_NS


@dataclass(slots=True)
class CopyDone:
    job: CopyJob
    src_st: os.stat_result | None = None  # the source as it was copied
    dst_st: os.stat_result | None = None  # the destination as written
    error: BaseException | None = None
    unstable: bool = False  # the source changed during this copy: it was not committed
    vanished: bool = False  # the source was gone when its turn came (not an error)
    snapshot: bool = False  # a database, copied as a snapshot (spaceport.engine.snapshot)
    sig_mtime_ns: int | None = None  # a database's mtime with its -wal's folded in
    racy: bool = False  # a database changed so recently that its mtime may change no more
    unsettled: bool = False  # a database without an early snapshot, not copied (see save)
    digest: bytes | None = None  # of the bytes copied, for a big plain file (spaceport.engine.digest)
    dst_ctime_ns: int | None = None  # with a digest: the destination's ctime once in place


class SourceVanished(Exception):
    """The file to copy was removed after the scan: for a save, a deletion, not an error."""


class Copier:
    """Copies single files from ``src`` to ``dst``; safe to call from many threads."""

    def __init__(self, src: Store, dst: Store, *, tracker: Tracker, task: str,
                 retry: RetryPolicy, stop: threading.Event,
                 check: Callable[[], None] = lambda: None, stable_source: bool = False,
                 fence: Fence | None = None, snapshots: Snapshotter | None = None,
                 early_only: bool = False, digests: bool = False):
        self.src, self.dst = src, dst
        # Given, big plain files are hashed as they are copied (a save: spaceport.engine.digest).
        self.digests = digests
        # Given, databases of the source are copied as snapshots (a save of a live project);
        # with early_only, only those snapshotted early (others are reported unsettled).
        self.snapshots = snapshots
        self.early_only = early_only
        # A source nobody writes while we copy (the primary, under our lock) is not stat'ed
        # again after the copy: on FUSE that costs a round trip per file, as reading marks
        # the cached atime stale. A change of size is still caught by the byte count.
        self.stable_source = stable_source
        self.tracker, self.task = tracker, task
        self.retry = retry
        self.stop = stop
        self.check = check  # raises if the lock was lost (cheap, between chunks)
        self.fence = fence  # gates each rename into place on the destination
        self.bytes = ByteMover(stop, lambda n: tracker.advance(task, nbytes=n))

    def copy(self, job: CopyJob) -> CopyDone:
        """Copy one file, retrying transient errors; never raises (errors are returned)."""
        try:
            if self.stop.is_set():
                raise Interrupted("stopped before copying " + job.path)
            self.check()
            try:
                # The first attempt is a plain call: setting up a retry loop for each of
                # 10^5 small files costs more CPU than copying them.
                return self._copy_stable(job)
            except OSError as exc:
                if not is_retryable(exc) or self.retry.attempts <= 1:
                    raise
                log.warning("copy %s failed (%s), retrying in %.1fs (attempt 2 of %d)",
                            job.path, exc, self.retry.initial_delay, self.retry.attempts)
                if self.stop.wait(self.retry.initial_delay):
                    raise
            rest = replace(self.retry, attempts=self.retry.attempts - 1)
            return retry_call(rest, self._copy_stable, job, what=f"copy {job.path}")
        except SourceVanished:
            self.tracker.advance(self.task, files=1)
            return CopyDone(job, vanished=True)
        except BaseException as exc:  # noqa: BLE001 - reported per file by the caller
            if is_unavailable(exc):
                self.stop.set()
            return CopyDone(job, error=exc)

    def _copy_stable(self, job: CopyJob) -> CopyDone:
        pause = UNSTABLE_PAUSE
        for attempt in range(UNSTABLE_RETRIES + 1):
            done = self._copy_once(job)
            if not done.unstable:
                self.tracker.advance(self.task, files=1)
                return done
            if attempt == UNSTABLE_RETRIES:
                raise KeptChangingError(job.path, UNSTABLE_RETRIES + 1)
            log.info("%s changed while being copied; copying again", job.path)
            if self.stop.wait(pause):
                raise Interrupted("stopped before copying " + job.path)
            pause *= 2
        raise AssertionError("unreachable")

    def _settled_stat(self, sfd: int) -> os.stat_result:
        """The source's stat, once it is old enough for any later write to show in it."""
        before = os.fstat(sfd)
        if self.stable_source or not racy(before):
            return before
        time.sleep(max(0, before.st_ctime_ns + RACY_NS - time.time_ns()) / 1e9)
        return os.fstat(sfd)

    def _copy_once(self, job: CopyJob) -> CopyDone:
        try:
            sfd = self.src.open_read(job.src or job.path)
        except FileNotFoundError:
            raise SourceVanished(job.path) from None
        try:
            early = self.snapshots.early(job.src or job.path) if self.snapshots else None
            if early is not None:  # taken before the save's final scan
                return self._copy_snapshot(job, *early)
            before = os.fstat(sfd)
            if self.snapshots is not None and fd_is_database(sfd, before.st_size):
                if self.early_only and (job.src or job.path) not in self.snapshots.unreadable:
                    self.tracker.advance(self.task, files=1)
                    return CopyDone(job, before, unsettled=True)
                return self._copy_database(job, sfd, before)
            before = self._settled_stat(sfd)
            if racy(before):  # written again while it settled
                return CopyDone(job, before, unstable=True)
            digest = self.digests and wants_digest(job.path, before.st_size)
            return self._copy_fd(job, sfd, before, stable=self.stable_source, digest=digest)
        finally:
            os.close(sfd)

    def _copy_database(self, job: CopyJob, sfd: int, before: os.stat_result) -> CopyDone:
        """A database: its snapshot lands, or, if none can be taken within the bound, a
        copy of the file that held still; one that kept changing is never committed."""
        path = job.src or job.path
        at = time.time_ns()
        sig = folded_mtime_ns(self.src, path, before)  # before the snapshot: never too new
        try:
            snap = self.snapshots.take(self.src.abspath(path))
        except FileNotFoundError:
            raise SourceVanished(job.path) from None
        except SnapshotError as exc:
            if not self.src.exists(path):
                raise SourceVanished(job.path) from None
            log.warning("%s: no snapshot (%s); copying the file if it holds still", job.path,
                        exc)
            done = self._copy_fd(job, sfd, before, stable=False)
            done.sig_mtime_ns, done.racy = sig, is_racy(sig, before, at)
            return done
        return self._copy_snapshot(job, snap, before, sig, at)

    def _copy_snapshot(self, job: CopyJob, snap: int, before: os.stat_result, sig: int,
                       at: int) -> CopyDone:
        try:
            snap_st = os.fstat(snap)
            done = self._copy_fd(job, snap, before, stable=True, size=snap_st.st_size,
                                 layout=snap_st)
        finally:
            os.close(snap)
        done.snapshot, done.sig_mtime_ns, done.racy = True, sig, is_racy(sig, before, at)
        return done

    def _copy_fd(self, job: CopyJob, sfd: int, before: os.stat_result, *, stable: bool,
                 size: int | None = None, digest: bool = False,
                 layout: os.stat_result | None = None) -> CopyDone:
        """Copy what ``sfd`` holds (``size`` bytes, by default ``before``'s) into a temporary
        and rename it into place. ``before`` is the source's stat: mode and mtime for the
        destination, the signature to record. Unless ``stable``, the source is stat'ed
        again after the copy: if it changed, nothing is committed (the destination keeps
        what it had) and the copy is marked unstable, for the caller to try again.
        ``digest``: the source is hashed after the copy and before that stat, so a copy
        committed is a copy of the bytes hashed (spaceport.engine.digest). A ``stable``
        source (the primary under our lock, at a stage-in) is hashed as its bytes pass by
        instead: reading it again would cost a second read of the primary (a sparse one is
        hashed after: its holes never pass by). ``layout``: the stat of ``sfd`` itself where
        ``before`` is another file's (a snapshot's source)."""
        moved = [0]  # bytes this attempt reported to the tracker, taken back on failure
        size = before.st_size if size is None else size
        fd, tmp = self.dst.create_temp(job.path, job.tmp, mode=before.st_mode)
        try:
            sparse = maybe_sparse(layout or before, size)
            passing = new_hash() if digest and stable and not sparse else None
            copied = self.bytes.copy(sfd, fd, size, moved, sparse=sparse, hasher=passing)
            hashed = None
            if passing is not None:
                hashed = passing.digest() if copied == size else None
            elif digest and copied == size:
                try:
                    hashed = digest_of(sfd, size)
                except EOFError:  # it shrank meanwhile: the stat below says unstable
                    pass
            after = before if stable else os.fstat(sfd)
            unstable = copied != (size if stable else after.st_size) or (
                after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                before.st_size, before.st_mtime_ns, before.st_ctime_ns)
            if unstable:  # never committed: the destination keeps what it had
                self.dst.discard_temp(fd, tmp)
                self.tracker.advance(self.task, nbytes=-moved[0])
                return CopyDone(job, before, unstable=True)
            self.check()
            if self.fence is not None:
                self.fence.before_commit()  # the file becomes visible next
        except BaseException:
            self.dst.discard_temp(fd, tmp)
            self.tracker.advance(self.task, nbytes=-moved[0])
            raise
        try:
            dst_st = self.dst.commit_temp(fd, tmp, job.path, mode=before.st_mode,
                                          mtime_ns=before.st_mtime_ns)
        except BaseException:
            self.tracker.advance(self.task, nbytes=-moved[0])
            if self.fence is not None:  # its rename may have landed: the retry is fenced anew
                self.fence.attempted(job.path)
            raise
        if self.fence is not None:
            self.fence.committed(job.path)
        done = CopyDone(job, before, dst_st, digest=hashed)
        if hashed is not None:  # a file that may be appended to: see placed_ctime
            done.dst_ctime_ns = self._placed_ctime(job.path, dst_st)
        return done

    def _placed_ctime(self, path: str, written: os.stat_result) -> int | None:
        """The destination's ctime once renamed into place (the rename changes it): what an
        append later proves the file by (spaceport.engine.append). One stat, only for files
        that get a digest; None if the name no longer holds what was written."""
        try:
            st = self.dst.lstat(path)
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != (written.st_size, written.st_mtime_ns):
            return None
        return st.st_ctime_ns


def interleave_folders(items: Sequence[T], path_of: Callable[[T], str]) -> list[T]:
    """The same items, ordered so that neighbours lie in different folders (see below)."""
    by_folder: dict[str, list[T]] = {}
    for item in items:
        by_folder.setdefault(parent_of(path_of(item)), []).append(item)
    if len(by_folder) < 2:
        return list(items)
    keyed = []
    for members in by_folder.values():
        n = len(members)
        keyed.extend(((i + 0.5) / n, item) for i, item in enumerate(members))
    keyed.sort(key=itemgetter(0))
    return [item for _, item in keyed]


def spread_over_folders(jobs: Sequence[CopyJob]) -> list[CopyJob]:
    """The same jobs, ordered so that copies running at once land in different folders.

    Creating and renaming a file hold its folder's lock in the kernel for the whole round
    trip: eight workers writing into one folder of a FUSE mount take turns instead of
    overlapping. Each folder's files are spread evenly over the run (a file's key is its
    place in its folder divided by the folder's size), so the big folders, which bound the
    run, are worked on from the start and the small ones fill the gaps. Big files go first,
    so that none of them is left alone at the end of the run.
    """
    big = sorted((j for j in jobs if j.size >= BIG_FILE), key=lambda j: -j.size)
    small = [j for j in jobs if j.size < BIG_FILE] if big else jobs
    return big + interleave_folders(small, attrgetter("path"))


def run_copies(copier: Copier, jobs: Iterable[CopyJob], workers: int,
               on_done: Callable[[CopyDone], None]) -> None:
    """Run copies on a bounded pool; ``on_done`` is called in this thread for each result.

    A list of jobs is run in the order of :func:`spread_over_folders`; an iterator as given.
    On KeyboardInterrupt the running copies are stopped (their temporaries removed), the
    results that did land are still handed to ``on_done``, then the interrupt propagates.
    """
    if isinstance(jobs, Sequence):
        jobs = spread_over_folders(jobs)
    run_pool(jobs, workers, copier.copy, on_done, copier.stop, "copy")
