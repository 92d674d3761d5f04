"""The storage core: a small set of operations every backend provides.

Modelled on borgstore's and fsspec's abstract bases: a handful of primitives (stat, list,
open for reading, write a temporary and commit it by rename, mkdir, rename, remove) and slow
but correct helpers built on them. A backend *declares* what it can do (``Capabilities``)
instead of being probed later, so the engine can plan around a primary that cannot hold
symbolic links or silently ignores ``chmod``.

Paths given to a store are relative to its root, use ``/`` as separator, and are ``str``
with surrogate escapes, so any byte string a POSIX filesystem allows round-trips.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat as stat_mod
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, NamedTuple

# Errors that a network filesystem (OneData over FUSE) may return transiently.
RETRYABLE_ERRNOS = frozenset(
    {errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN,
     errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
     errno.EINTR}
)
# Errors meaning the whole storage is gone, not one file.
# (ECONNABORTED: what a FUSE mount answers to calls in flight when its server dies.)
UNAVAILABLE_ERRNOS = frozenset({errno.ENOTCONN, errno.ESHUTDOWN, errno.ENODEV,
                                errno.ECONNABORTED})

TEMP_PREFIX = ".spaceport-tmp-"
_TEMP_RE = re.compile(r"^\.spaceport-tmp-([0-9a-f]{8})-[0-9a-f]{12}$")


def temp_name(token: str) -> str:
    """A temporary file name carrying ``token`` (derived from the deployment id).

    Only names with our own token are ever treated as leftovers, so a user file that merely
    looks like a spaceport temporary is kept like any other file.
    """
    return f"{TEMP_PREFIX}{token}-{secrets.token_hex(6)}"


def is_our_temp(name: str, token: str) -> bool:
    m = _TEMP_RE.match(name)
    return bool(m) and m.group(1) == token


_ASIDE_RE = re.compile(r"^\.spaceport-tmp-([0-9a-f]{8})-aside-([0-9]+)$")


def aside_name(token: str, ino: int) -> str:
    """The name a working-copy entry is moved to just before spaceport removes it
    (spaceport.safety.invariant): it carries the inode, so the entry can be found again by its
    index row if the process dies before the removal."""
    return f"{TEMP_PREFIX}{token}-aside-{ino}"


def our_aside(name: str, token: str) -> int | None:
    """The inode an aside name of ours carries, or None."""
    m = _ASIDE_RE.match(name)
    return int(m.group(2)) if m and m.group(1) == token else None


class UnsafePathError(OSError):
    """A path that would lead out of the store's root: absolute, with ``..``, or through a
    symbolic link. Nothing was created."""


def relative_path_problem(rel: str) -> str | None:
    """Why ``rel`` is not a plain path below a root (absolute, ``.``/``..`` or empty parts,
    NUL), or None if it is one."""
    if not rel:
        return "the path is empty"
    if rel.startswith("/"):
        return "the path is absolute"
    if "\0" in rel:
        return "the path holds a NUL byte"
    parts = rel.split("/")
    if ".." in parts:
        return "the path has a '..' component"
    if "." in parts or "" in parts:
        return "the path has an empty or '.' component"
    return None


class DetachedError(OSError):
    """The store's root path no longer leads to the folder in use (a mount vanished)."""

    def __init__(self, message: str, root: str):
        super().__init__(errno.ENOTCONN, message, root)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in RETRYABLE_ERRNOS


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared up front (rclone's ``fs.Features``)."""

    symlinks: bool  # can hold symbolic links
    reliable_chmod: bool  # chmod works (OneData: may fail or be ignored)
    reliable_mtime: bool  # setting mtimes works (OneData: may fail or be ignored)
    atomic_rename: bool = True
    parallel_ops: int = 8  # concurrency that pays off on this backend


class DirItem(NamedTuple):
    """One name in a directory listing, with its lstat (links are never followed).

    A named tuple: a listing of a 10^5-file folder makes one per file, and a tuple is made
    several times faster than a frozen dataclass."""

    name: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.st.st_mode)


class Store(ABC):
    """A folder tree on some storage, addressed by relative paths."""

    root: str
    capabilities: Capabilities

    # -- core primitives -------------------------------------------------------------
    @abstractmethod
    def lstat(self, rel: str) -> os.stat_result: ...

    @abstractmethod
    def listdir(self, rel: str) -> list[DirItem]: ...

    @abstractmethod
    def readlink(self, rel: str) -> str: ...

    @abstractmethod
    def open_read(self, rel: str) -> int:
        """Open a file for reading; returns a file descriptor the caller closes."""

    @abstractmethod
    def create_temp(self, rel: str, name: str | None = None,
                    mode: int | None = None) -> tuple[int, str]:
        """Create an exclusive temporary beside ``rel``; returns (fd, temp path).

        ``name`` is a temporary name chosen (and recorded) by the caller beforehand;
        ``mode`` the final mode, if known: creating with it saves a chmod in commit_temp.
        """

    @abstractmethod
    def commit_temp(self, fd: int, tmp: str, rel: str, *, mode: int | None,
                    mtime_ns: int | None) -> os.stat_result:
        """Finish a temporary: set mode and mtime through the fd, close it, rename it to rel.

        Returns the stat of the written file as seen through the descriptor, so callers
        need not stat it again. On any failure the temporary is removed.
        """

    @abstractmethod
    def discard_temp(self, fd: int | None, tmp: str) -> None: ...

    @abstractmethod
    def open_in_place(self, rel: str) -> int:
        """Open an existing file for reading and writing in place, never truncating nor
        creating it: an append reads back the last bytes saved, then writes its new bytes
        past them (spaceport.engine.append)."""

    @abstractmethod
    def finish_in_place(self, fd: int, *, mtime_ns: int | None) -> os.stat_result:
        """After writing in place: set the mtime through ``fd``, fsync it if this store
        fsyncs, and return its stat (the caller closes ``fd``)."""

    def read_at(self, rel: str, fd: int, size: int, offset: int) -> bytes:
        """``os.pread`` of ``fd``, a file of this store that open_read or open_in_place
        opened (``rel``: its path, for messages). A read of a file's data is a call on the
        storage like any other: a retrying store retries it (the same read again)."""
        return os.pread(fd, size, offset)

    def write_at(self, rel: str, fd: int, data, offset: int) -> int:
        """``os.pwrite`` of ``data`` at ``offset`` of ``fd`` (opened by open_in_place);
        returns the bytes written. The same bytes at the same offset: a retry of an attempt
        that landed writes nothing new."""
        return os.pwrite(fd, data, offset)

    @abstractmethod
    def create_exclusive(self, rel: str, data: bytes) -> None:
        """Create ``rel`` holding ``data``; FileExistsError if it exists (lock files)."""

    @abstractmethod
    def mkdir(self, rel: str, mode: int = 0o777) -> None: ...

    @abstractmethod
    def append_bytes(self, rel: str, data: bytes) -> None:
        """Append a short record to ``rel`` (created if missing): the save journal."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def rename_noreplace(self, src: str, dst: str) -> None:
        """rename(src, dst) that fails with FileExistsError if dst exists (the lock is
        published this way); OSError EINVAL/ENOSYS where the storage cannot do it."""

    def rename_or_refuse(self, src: str, dst: str) -> None:
        """rename(src, dst), never over an existing ``dst`` (FileExistsError): atomically
        where the storage has RENAME_NOREPLACE; where it has not, by looking first, which
        leaves a narrow window only a second writer could use (the caller holds the lock)."""
        try:
            self.rename_noreplace(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if self.exists(dst):
                raise FileExistsError(errno.EEXIST, "exists", dst) from None
            self.rename(src, dst)

    @abstractmethod
    def unlink(self, rel: str) -> None: ...

    @abstractmethod
    def rmdir(self, rel: str) -> None: ...

    @abstractmethod
    def symlink(self, target: str, rel: str, *, parents: bool = False) -> None:
        """Create a link at ``rel``; ``parents`` creates missing parent folders too.

        Never follows a symbolic link in a parent component, and refuses a ``rel`` that is
        absolute or has ``..`` in it (UnsafePathError): nothing is ever created outside the
        store's root."""

    @abstractmethod
    def chmod(self, rel: str, mode: int) -> None: ...

    @abstractmethod
    def set_mtime(self, rel: str, mtime_ns: int) -> None: ...

    def check_attached(self) -> None:
        """Raise ENOTCONN if the store's root is no longer reachable as it was opened.

        Backends without such a notion accept the default: always attached.
        """

    # -- helpers built on the primitives ---------------------------------------------
    def exists(self, rel: str) -> bool:
        try:
            self.lstat(rel)
        except FileNotFoundError:
            return False
        return True

    def makedirs(self, rel: str, mode: int = 0o777) -> None:
        """Create ``rel`` and missing parents; an existing directory is fine."""
        if rel in ("", "."):
            return
        try:
            self.mkdir(rel, mode)
        except FileExistsError:
            if not stat_mod.S_ISDIR(self.lstat(rel).st_mode):
                raise
        except FileNotFoundError:
            self.makedirs(parent_of(rel), mode)
            try:
                self.mkdir(rel, mode)
            except FileExistsError:
                pass

    def read_bytes(self, rel: str) -> bytes:
        return self.read_file(rel)[0]

    def read_file(self, rel: str) -> tuple[bytes, os.stat_result]:
        """The bytes of ``rel`` and the stat of the very file they were read from."""
        fd = self.open_read(rel)
        try:
            st = os.fstat(fd)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks), st
        finally:
            os.close(fd)

    def write_bytes_atomic(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` under a temporary name and rename it into place."""
        fd, tmp = self.create_temp(rel)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            self.discard_temp(fd, tmp)
            raise
        self.commit_temp(fd, tmp, rel, mode=mode, mtime_ns=None)

    def walk_remove(self, rel: str) -> None:
        """Remove a tree bottom-up (used for purging trash and local work folders)."""
        st = self.lstat(rel)
        if not stat_mod.S_ISDIR(st.st_mode):
            self.unlink(rel)
            return
        for item in self.listdir(rel):
            self.walk_remove(join(rel, item.name))
        self.rmdir(rel)

    def iter_tree(self, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
        """Every path below ``rel`` (depth first, parents first), never following links."""
        for item in self.listdir(rel):
            path = join(rel, item.name)
            yield path, item.st
            if item.is_dir:
                yield from self.iter_tree(path)


def join(*parts: str) -> str:
    """Join relative path parts with "/", skipping empty ones (the root is "")."""
    return "/".join(p for p in parts if p)


def parent_of(rel: str) -> str:
    return rel.rpartition("/")[0]

