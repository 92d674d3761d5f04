"""The primary as a store whose every call is retried (restic's retry backend, as a wrapper).

OneData mounts answer EIO, ENOTCONN, ETIMEDOUT or ESTALE now and then in normal operation.
Every call spaceport makes on the primary goes through this wrapper (``open_primary``
returns one): the lock's reads, its publication, heartbeat and release, the manifest, the
journal, the trash and its purge, folders made and removed, renames, stats and opens. A
transient error is retried with the policy's backoff (``--retries``, ``--retry-delay``); a
permanent one (ENOSPC, EACCES, EISDIR...) is raised at once.

A retried write must not be done twice. An attempt that failed may have landed all the same
(the reply was lost): each write says how to tell, on a retry, that its earlier attempt did
land, and then counts as done:

=================  ==========================================================================
rename             the source is gone and the destination is there
rename_noreplace   the same (then EEXIST does not mean another's file: the caller reads back)
unlink, rmdir      the entry is gone
mkdir              a folder is there
create_exclusive   the file is there and holds exactly our bytes
append_bytes       the file already ends with our record (so a journal line is never doubled)
write_at           nothing to tell: the same bytes at the same offset (an append's new bytes)
=================  ==========================================================================

Reads of an open file's data (``read_at``: an append's read-back, ``verify --checksum``) are
retried like the other reads.

A file written whole (``write_bytes_atomic``: the heartbeat, the manifest) is retried whole,
under a new temporary; the temporaries of a copy and their commit are not retried here: the
copier retries each file whole, and fences each attempt (spaceport.engine.transfer). Before
each retry the commit gate of the calling thread is called (spaceport.store.retry): a commit
retried is fenced again. Inside ``retry_call`` nothing is retried a second time.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from typing import Callable, TypeVar

from .base import Capabilities, DetachedError, DirItem, Store, is_retryable
from .retry import RetryPolicy, after_first_failure, inside_retry, retrying

T = TypeVar("T")


class RetryingStore(Store):
    """``inner`` with every call retried by ``policy``; see the module docstring."""

    def __init__(self, inner: Store, policy: RetryPolicy):
        self.inner = inner
        self.policy = policy
        self.root = inner.root
        self.capabilities: Capabilities = inner.capabilities

    def __getattr__(self, name: str):
        # What is not a store call (temp_token, fsync, abspath, close...) is the inner's.
        return getattr(self.inner, name)

    def __enter__(self) -> "RetryingStore":
        return self

    def __exit__(self, *exc) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"RetryingStore({self.inner!r})"

    def _call(self, what: str, fn: Callable[[], T],
              landed: Callable[[OSError], bool] | None = None) -> T:
        """``fn()``, retried; ``landed(exc)``, asked on a retry that failed, says whether an
        earlier attempt did what ``fn`` does (then the call is done)."""
        try:
            return fn()  # the first attempt is a plain call: most calls succeed
        except OSError as exc:
            if inside_retry() or self.policy.attempts <= 1 or not is_retryable(exc) \
                    or isinstance(exc, DetachedError):
                raise
            what = f"{what} on the primary"
            rest = after_first_failure(self.policy, what, exc)

        def again() -> T:
            try:
                return fn()
            except OSError as exc:
                if landed is not None and landed(exc):
                    return None  # type: ignore[return-value]
                raise

        return retrying(rest, what, failed_before=1)(again)

    def _gone(self, rel: str) -> bool:
        try:
            self.inner.lstat(rel)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return False

    # -- reading ---------------------------------------------------------------------
    def lstat(self, rel: str) -> os.stat_result:
        return self._call(f"stat {rel}", lambda: self.inner.lstat(rel))

    def listdir(self, rel: str) -> list[DirItem]:
        return self._call(f"list {rel or '.'}", lambda: self.inner.listdir(rel))

    def readlink(self, rel: str) -> str:
        return self._call(f"readlink {rel}", lambda: self.inner.readlink(rel))

    def open_read(self, rel: str) -> int:
        return self._call(f"open {rel}", lambda: self.inner.open_read(rel))

    def read_file(self, rel: str) -> tuple[bytes, os.stat_result]:
        # The whole read again: a read that failed half-way leaves nothing to go on from.
        return self._call(f"read {rel}", lambda: self.inner.read_file(rel))

    def read_at(self, rel: str, fd: int, size: int, offset: int) -> bytes:
        # The data of an open file (an append's read-back, verify --checksum): the same
        # read again.
        return self._call(f"read {rel}", lambda: self.inner.read_at(rel, fd, size, offset))

    def check_attached(self) -> None:
        self.inner.check_attached()  # a mount that vanished is told at once, never retried

    # -- writing ---------------------------------------------------------------------
    def create_temp(self, rel: str, name: str | None = None,
                    mode: int | None = None) -> tuple[int, str]:
        return self.inner.create_temp(rel, name, mode)  # the copier retries the whole file

    def commit_temp(self, fd: int, tmp: str, rel: str, *, mode: int | None,
                    mtime_ns: int | None) -> os.stat_result:
        return self.inner.commit_temp(fd, tmp, rel, mode=mode, mtime_ns=mtime_ns)

    def discard_temp(self, fd: int | None, tmp: str) -> None:
        self.inner.discard_temp(fd, tmp)

    def write_bytes_atomic(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        # Whole, under a new temporary each time: a rename that landed is simply done again.
        self._call(f"write {rel}", lambda: self.inner.write_bytes_atomic(rel, data, mode))

    def open_in_place(self, rel: str) -> int:
        return self._call(f"open {rel} for writing",
                          lambda: self.inner.open_in_place(rel))

    def finish_in_place(self, fd: int, *, mtime_ns: int | None) -> os.stat_result:
        # Not retried: an fsync that failed may have dropped the pages it was to write, and
        # a second one would say nothing about them. The caller decides (spaceport.engine.append).
        return self.inner.finish_in_place(fd, mtime_ns=mtime_ns)

    def write_at(self, rel: str, fd: int, data, offset: int) -> int:
        # An append's new bytes, written in place: the same bytes at the same offset again
        # (an attempt that landed, wholly or in part, is simply overwritten with itself).
        # The append is a fenced commit: each retry is fenced again (the commit gate).
        return self._call(f"write to {rel}",
                          lambda: self.inner.write_at(rel, fd, data, offset))

    def create_exclusive(self, rel: str, data: bytes) -> None:
        def ours(exc: OSError) -> bool:
            if not isinstance(exc, FileExistsError):
                return False
            try:
                return self.inner.read_bytes(rel) == data
            except OSError:
                return False
        self._call(f"create {rel}", lambda: self.inner.create_exclusive(rel, data), ours)

    def mkdir(self, rel: str, mode: int = 0o777) -> None:
        def made(exc: OSError) -> bool:
            if not isinstance(exc, FileExistsError):
                return False
            try:
                return stat_mod.S_ISDIR(self.inner.lstat(rel).st_mode)
            except OSError:
                return False
        self._call(f"mkdir {rel}", lambda: self.inner.mkdir(rel, mode), made)

    def append_bytes(self, rel: str, data: bytes) -> None:
        attempts = [0]

        def attempt() -> None:
            attempts[0] += 1
            if attempts[0] > 1 and self._ends_with(rel, data):
                return  # the attempt before landed: a record is never appended twice
            self.inner.append_bytes(rel, data)
        self._call(f"append to {rel}", attempt)

    def _ends_with(self, rel: str, data: bytes) -> bool:
        try:
            fd = self.inner.open_read(rel)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            return size >= len(data) and os.pread(fd, len(data), size - len(data)) == data
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        self._call(f"rename {src} -> {dst}", lambda: self.inner.rename(src, dst),
                   lambda exc: self._moved(exc, src, dst))

    def rename_noreplace(self, src: str, dst: str) -> None:
        self._call(f"rename {src} -> {dst}", lambda: self.inner.rename_noreplace(src, dst),
                   lambda exc: self._moved(exc, src, dst))

    def _moved(self, exc: OSError, src: str, dst: str) -> bool:
        """An earlier attempt renamed ``src`` to ``dst``: the source is gone (a rename is
        atomic: it is nowhere else) and the destination is there."""
        if exc.errno not in (errno.ENOENT, errno.EEXIST):
            return False
        return self._gone(src) and not self._gone(dst)

    def unlink(self, rel: str) -> None:
        self._call(f"remove {rel}", lambda: self.inner.unlink(rel),
                   lambda exc: isinstance(exc, FileNotFoundError))

    def rmdir(self, rel: str) -> None:
        self._call(f"remove {rel}/", lambda: self.inner.rmdir(rel),
                   lambda exc: isinstance(exc, FileNotFoundError))

    def symlink(self, target: str, rel: str, *, parents: bool = False) -> None:
        self.inner.symlink(target, rel, parents=parents)  # never on the primary: EPERM

    def chmod(self, rel: str, mode: int) -> None:
        self._call(f"chmod {rel}", lambda: self.inner.chmod(rel, mode))

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        self._call(f"set the mtime of {rel}", lambda: self.inner.set_mtime(rel, mtime_ns))
