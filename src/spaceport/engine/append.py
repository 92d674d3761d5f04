"""Appends are appends: a file that only grew is saved by writing its new bytes alone.

Scipion appends to ``Logs/project.log`` and to every run's logs all the time; uploading a
200 MB log whole at each autosave wrote gigabytes to OneData for megabytes of news.

What proves an append, on the working copy: the file is the one saved (same inode and
mode), it is longer than it was saved, and the sha256 of its first ``saved size`` bytes
equals the digest the index kept of the bytes that save put on the primary
(:mod:`spaceport.engine.digest`). On the primary, the file must be the one this copy left
there, by more than its size and mtime (both can be put back: ``touch -r``, ``rsync -t``):

* its size, mtime and **ctime** as the primary reports them are the ones recorded when this
  copy last wrote it (:func:`~spaceport.engine.index.primary_state`; the ctime is read once
  the upload is renamed into place, or after the append's last write; nothing sets a ctime
  back), or it is this copy's own unfinished append (recorded in the index before its first
  byte was written);
* and its last :data:`TAIL` bytes below the saved size, read back (one small read), are the
  working copy's (which the digest proved are the bytes saved).

A primary file with another size, mtime or tail is someone else's: kept as a conflict copy,
ours uploaded whole. One whose size, mtime and tail are ours but whose ctime moved cannot be
proven ours (an edit elsewhere in it, its times put back): it goes to the save's trash
batch, and ours is uploaded whole, atomically. Either way both versions are kept, never
mixed.

The append itself: the primary file is opened for writing in place (never truncated), the
new bytes are written at offset ``saved size`` (the saved bytes are never written to), the
mtime is set to the source's, the file is fsynced, and only then is the new row recorded,
with the digest of the whole new content, in the same transaction that ends the record of
the append in flight. The first byte written is a commit on the primary: it goes through
the fence like a rename into place. The source must hold still while its bytes are written
(the same size, mtime and ctime before and after): if it changed, the primary file is cut
back to its saved size and the append is tried again, then left to a whole upload.

Crash rule (docs/RELIABILITY.md): a process killed during an append leaves on the primary
the saved bytes, untouched, followed by part of the new ones; the index records the append
only once it is complete, and knows it was in flight. The next save redoes it from the saved
size (or, if the working copy changed otherwise meanwhile, uploads the file whole).
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable

from ..errors import Interrupted
from ..store.base import Store
from .bytecopy import BUFFER
from .digest import hash_range
from .index import OTHER, UNPROVEN, Index, Known, primary_state
from .recorder import file_known
from .scan import Entry
from .snapshot import fd_is_database
from .transfer import RACY_NS, UNSTABLE_PAUSE, UNSTABLE_RETRIES, racy

if TYPE_CHECKING:  # the fence is a safety mechanism the save hands down
    from ..safety.fence import Fence

log = logging.getLogger(__name__)

TAIL = 64 << 10  # bytes read back below the saved size: one read on a FUSE mount


@dataclass
class AppendResult:
    """What became of one append candidate."""

    path: str
    row: Known | None = None  # appended: the row recorded (new size, times, digest)
    written: int = 0  # bytes written on the primary
    whole: str = ""  # not appended: why the file is uploaded whole instead
    foreign: bool = False  # the primary's file is not what this copy saved there
    unproven: bool = False  # it may be, but cannot be proven: kept in the trash first

    @property
    def appended(self) -> bool:
        return self.row is not None


class _Unstable(Exception):
    """The source changed while its new bytes were written; the primary was cut back."""


class Appender:
    """Saves files that grew by writing their new bytes. Runs in the save's coordinating
    thread: it writes the index (the append in flight, then the row) around each append."""

    def __init__(self, work: Store, primary: Store, index: Index, *, fence: Fence,
                 check: Callable[[], None], stop: threading.Event):
        self.work, self.primary, self.index = work, primary, index
        self.fence, self.check, self.stop = fence, check, stop

    def forget_stale(self, candidates: set[str]) -> None:
        """Appends left in flight for files that are no longer append candidates: they are
        uploaded whole (or deleted), so the record could only mislead a later save."""
        for path in set(self.index.appends_in_flight()) - candidates:
            self.index.end_append(path)

    def append(self, entry: Entry, old: Known) -> AppendResult:
        """Save ``entry``, saved before as ``old``, by writing its new bytes if that is
        proven right; otherwise say why it must be uploaded whole. OSError from the
        storage propagates (the caller decides: a whole upload, or stop)."""
        pause = UNSTABLE_PAUSE
        for attempt in range(UNSTABLE_RETRIES + 1):
            try:
                return self._append_once(entry, old)
            except _Unstable:
                if attempt == UNSTABLE_RETRIES:
                    break
                log.info("%s changed while its new bytes were written; trying again",
                         entry.path)
                if self.stop.wait(pause):
                    raise Interrupted("stopped before appending to " + entry.path) from None
                pause *= 2
        return AppendResult(entry.path, whole="it kept changing while its new bytes were "
                                              "written")

    def _append_once(self, entry: Entry, old: Known) -> AppendResult:
        path, saved = entry.path, old.entry.size
        try:
            sfd = self.work.open_read(path)
        except FileNotFoundError:
            return AppendResult(path, whole="it is gone")  # the upload reports it vanished
        try:
            before = self._settled_stat(sfd)
            if (before.st_ino != old.entry.ino or before.st_size <= saved
                    or stat_mod.S_IMODE(before.st_mode) != old.entry.mode):
                return AppendResult(path, whole="it is no longer the saved file, grown")
            if fd_is_database(sfd, before.st_size):
                return AppendResult(path, whole="it is a database")
            try:
                hasher = hash_range(sfd, 0, saved)
            except EOFError:
                return AppendResult(path, whole="it shrank")
            if hasher.digest() != old.digest:
                return AppendResult(path, whole="its saved bytes changed")
            return self._write_tail(entry, old, sfd, before, hasher)
        finally:
            os.close(sfd)

    def _settled_stat(self, sfd: int) -> os.stat_result:
        """As the copier does: a file changed within the clock's last tick is left to
        settle, since a write in the same tick would not show in its times."""
        before = os.fstat(sfd)
        if racy(before):
            time.sleep(max(0, before.st_ctime_ns + RACY_NS - time.time_ns()) / 1e9)
            before = os.fstat(sfd)
            if racy(before):
                raise _Unstable()
        return before

    def _write_tail(self, entry: Entry, old: Known, sfd: int, before: os.stat_result,
                    hasher) -> AppendResult:
        path, saved, size = entry.path, old.entry.size, before.st_size
        self.check()
        try:
            pfd = self.primary.open_in_place(path)
        except FileNotFoundError:
            return AppendResult(path, whole="it is not on the primary any more")
        try:
            pst = os.fstat(pfd)
            refused = self._prove_primary(path, sfd, pfd, pst, old)
            if refused is not None:
                return refused
            self.index.start_append(path, saved)  # before the first byte: see the docstring

            def tail() -> int:
                done = self._copy_tail(path, sfd, pfd, saved, size, hasher)
                if pst.st_size > size:  # an older unfinished append wrote further than now
                    os.ftruncate(pfd, size)
                return done
            # The first byte written is a commit; a write retried is fenced again.
            written = self.fence.commit(f"{path} (appended)", tail)
            after = os.fstat(sfd)
            if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                    before.st_size, before.st_mtime_ns, before.st_ctime_ns):
                # Never leave bytes of a moving file: back to what was saved (the saved
                # bytes themselves were never written to). Still in flight in the index:
                # the mtime is not the saved one any more.
                self.fence.commit(f"{path} (cut back to its saved size)",
                                  lambda: os.ftruncate(pfd, saved))
                raise _Unstable()
            dst_st = self.primary.finish_in_place(pfd, mtime_ns=before.st_mtime_ns)
        finally:
            os.close(pfd)
        row = file_known(before, dst_st, path, work_is_src=True)
        row.digest = hasher.digest()
        row.pctime_ns = dst_st.st_ctime_ns  # after the last write and the mtime: final
        self.index.end_append(path, row)
        return AppendResult(path, row, written)

    def _prove_primary(self, path: str, sfd: int, pfd: int, pst: os.stat_result,
                       old: Known) -> AppendResult | None:
        """None if the primary's file (``pst``: its stat) is the one this copy left there
        (see the module docstring), else why not, as the result of a whole upload."""
        saved = old.entry.size
        if not stat_mod.S_ISREG(pst.st_mode):
            return AppendResult(path, whole="the primary holds something else there")
        unfinished = self.index.appending(path) == saved and pst.st_size >= saved
        state = None if unfinished else primary_state(pst.st_size, pst.st_mtime_ns,
                                                      pst.st_ctime_ns, old)
        if state == OTHER:
            return AppendResult(path, whole="the primary's file changed meanwhile",
                                foreign=True)
        start = max(0, saved - TAIL)
        if _read(pfd, start, saved, partial(self.primary.read_at, path)) != \
                _read(sfd, start, saved):
            return AppendResult(path, whole="the primary's file does not end with the bytes "
                                            "saved", foreign=True)
        if state == UNPROVEN:
            return AppendResult(path, whole="changed in place, its size and mtime put back: "
                                            "its change time moved", unproven=True)
        return None

    def _copy_tail(self, path: str, sfd: int, pfd: int, start: int, end: int, hasher) -> int:
        """Write bytes ``start`` to ``end`` of the source at the same offsets on the
        primary, feeding each buffer to ``hasher`` as it is written: the digest recorded
        is of the very bytes written."""
        buf = bytearray(min(BUFFER, end - start))
        view = memoryview(buf)
        offset = start
        while offset < end:
            if self.stop.is_set():
                raise Interrupted("stopped in the middle of an append")
            self.check()
            n = os.preadv(sfd, [view[:min(len(buf), end - offset)]], offset)
            if n == 0:
                break  # it shrank: the stat after the copy says so, and it is cut back
            hasher.update(view[:n])
            done = 0
            while done < n:
                done += self.primary.write_at(path, pfd, view[done:n], offset + done)
            offset += n
        return offset - start


def _read(fd: int, start: int, end: int, pread=os.pread) -> bytes:
    """Bytes ``start`` to ``end`` of ``fd`` (fewer if it ends sooner), read by ``pread``
    (the primary's: retried)."""
    out = bytearray()
    while start + len(out) < end:
        chunk = pread(fd, end - start - len(out), start + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)
