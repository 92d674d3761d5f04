"""A POSIX folder as a store: a plain directory, or a OneData space mounted over FUSE.

Every operation is made relative to a directory descriptor opened once on the root. If the
mount vanishes under a running command (a lazy unmount, a crashed oneclient), the descriptor
still points into the old filesystem: calls fail with ENOTCONN instead of quietly writing
into the bare mount-point directory, which is what path-based tools do.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat

from .base import (
    Capabilities,
    DetachedError,
    DirItem,
    Store,
    UnsafePathError,
    join,
    parent_of,
    relative_path_problem,
    temp_name,
)

log = logging.getLogger(__name__)

_new_tuple = tuple.__new__
_UMASK = os.umask(0)
os.umask(_UMASK)


def mkdir_mode(mode: int) -> int:
    """The mode ``mkdir(path, mode | 0o700)`` really gives, after the umask."""
    return (mode | 0o700) & ~_UMASK & 0o7777

# Capabilities of a OneData mount (and how spaceport treats any primary): no links, and
# chmod or mtimes may fail or be ignored. Work folders are ordinary local filesystems.
PRIMARY_CAPABILITIES = Capabilities(symlinks=False, reliable_chmod=False, reliable_mtime=False)
WORK_CAPABILITIES = Capabilities(symlinks=True, reliable_chmod=True, reliable_mtime=True)


RENAME_NOREPLACE = 1  # <linux/fs.h>
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def renameat2(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, flags: int) -> None:
    """Linux renameat2(2); os.rename has no flags. ENOSYS where libc lacks it."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", src)
    if _renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), dst)
        if code == errno.ENOENT:
            raise FileNotFoundError(code, os.strerror(code), src)
        raise OSError(code, os.strerror(code), src)


class PosixStore(Store):
    """A store rooted at a directory of the local VFS."""

    def __init__(self, root: str, capabilities: Capabilities, *, temp_token: str,
                 fsync: bool = False):
        self.root = os.path.abspath(root)
        self.capabilities = capabilities
        self.temp_token = temp_token
        self.fsync = fsync
        self._temp_modes: dict[int, int] = {}  # fd of a temporary -> mode it was created with
        self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "PosixStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PosixStore({self.root!r})"

    def abspath(self, rel: str) -> str:
        return join(self.root, rel) if rel else self.root

    def check_attached(self) -> None:
        """Raise ENOTCONN if the root path no longer leads to the folder we opened.

        After a lazy unmount the descriptor still reaches the detached filesystem while the
        path shows the bare mount point: writing on would land out of everybody's sight.
        """
        try:
            by_path = os.stat(self.root)
        except OSError as exc:
            raise DetachedError(f"the folder is not reachable ({exc.strerror})",
                                self.root) from exc
        by_fd = os.fstat(self._fd)
        if (by_path.st_dev, by_path.st_ino) != (by_fd.st_dev, by_fd.st_ino):
            raise DetachedError("the mount vanished: the path no longer leads to the folder "
                                "in use", self.root)

    # -- reading ---------------------------------------------------------------------
    def lstat(self, rel: str) -> os.stat_result:
        return os.stat(rel or ".", dir_fd=self._fd, follow_symlinks=False)

    def listdir(self, rel: str) -> list[DirItem]:
        dfd = os.open(rel or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW,
                      dir_fd=self._fd)
        try:
            # scandir over a descriptor makes each entry's stat an fstatat() on it: no
            # path resolution from the root for every file. tuple.__new__ makes the named
            # tuples without the Python-level DirItem.__new__: a fifth of a local scan.
            try:
                with os.scandir(dfd) as it:
                    return [_new_tuple(DirItem, (e.name, e.stat(follow_symlinks=False)))
                            for e in it]
            except FileNotFoundError:
                # An entry was removed between the listing and its stat (a SQLite -journal
                # lives milliseconds): it is simply not there. The folder is listed again.
                return self._listdir_skipping_vanished(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _listdir_skipping_vanished(dfd: int) -> list[DirItem]:
        os.lseek(dfd, 0, os.SEEK_SET)
        items = []
        with os.scandir(dfd) as it:
            for e in it:
                try:
                    items.append(_new_tuple(DirItem, (e.name, e.stat(follow_symlinks=False))))
                except FileNotFoundError:
                    continue
        return items

    def readlink(self, rel: str) -> str:
        return os.readlink(rel, dir_fd=self._fd)

    def open_read(self, rel: str) -> int:
        return os.open(rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self._fd)

    # -- writing ---------------------------------------------------------------------
    def create_temp(self, rel: str, name: str | None = None,
                    mode: int | None = None) -> tuple[int, str]:
        tmp = join(parent_of(rel), name or temp_name(self.temp_token))
        # Created with the final mode where the umask allows it (owner-writable while we
        # write), so commit_temp needs no chmod, a round trip per file on the primary.
        create = 0o644 if mode is None else (mode & 0o777) | 0o600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create,
                     dir_fd=self._fd)
        self._temp_modes[fd] = create & ~_UMASK
        return fd, tmp

    def commit_temp(self, fd: int, tmp: str, rel: str, *, mode: int | None,
                    mtime_ns: int | None) -> os.stat_result:
        created = self._temp_modes.pop(fd, 0o644 & ~_UMASK)
        try:
            if mode is not None and (mode & 0o7777) != created:
                self._tolerant(os.chmod, fd, mode & 0o7777, what="chmod",
                               reliable=self.capabilities.reliable_chmod)
            if mtime_ns is not None:
                self._tolerant(os.utime, fd, ns=(mtime_ns, mtime_ns), what="set mtime",
                               reliable=self.capabilities.reliable_mtime)
            if self.fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            self.discard_temp(fd, tmp)
            raise
        try:
            os.close(fd)
        except BaseException:
            self.discard_temp(None, tmp)
            raise
        try:
            self._place(tmp, rel)
        except BaseException:
            self.discard_temp(None, tmp)
            raise
        return st

    def _place(self, tmp: str, rel: str) -> None:
        """The rename that puts a finished temporary in place. The working copy's guarded
        store (spaceport.safety.invariant) overrides it: it never replaces what is not proven saved."""
        os.rename(tmp, rel, src_dir_fd=self._fd, dst_dir_fd=self._fd)

    def discard_temp(self, fd: int | None, tmp: str) -> None:
        if fd is not None:
            self._temp_modes.pop(fd, None)
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(tmp, dir_fd=self._fd)
        except OSError:
            # The next run removes leftovers; the original error is what matters here.
            pass

    def open_in_place(self, rel: str) -> int:
        # Read and write: an append reads back the last bytes it proves before writing.
        return os.open(rel, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self._fd)

    def finish_in_place(self, fd: int, *, mtime_ns: int | None) -> os.stat_result:
        if mtime_ns is not None:
            self._tolerant(os.utime, fd, ns=(mtime_ns, mtime_ns), what="set mtime",
                           reliable=self.capabilities.reliable_mtime)
        if self.fsync:
            os.fsync(fd)
        return os.fstat(fd)

    def create_exclusive(self, rel: str, data: bytes) -> None:
        fd = os.open(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644,
                     dir_fd=self._fd)
        try:
            os.write(fd, data)  # one small write: readers never see half a record
            os.fsync(fd)
        finally:
            os.close(fd)

    def mkdir(self, rel: str, mode: int = 0o777) -> None:
        os.mkdir(rel, mode, dir_fd=self._fd)

    def append_bytes(self, rel: str, data: bytes) -> None:
        fd = os.open(rel, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644,
                     dir_fd=self._fd)
        try:
            os.write(fd, data)  # one write of a short line: O_APPEND keeps lines whole
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst, src_dir_fd=self._fd, dst_dir_fd=self._fd)

    def rename_noreplace(self, src: str, dst: str) -> None:
        renameat2(self._fd, src, self._fd, dst, RENAME_NOREPLACE)

    def unlink(self, rel: str) -> None:
        os.unlink(rel, dir_fd=self._fd)

    def rmdir(self, rel: str) -> None:
        os.rmdir(rel, dir_fd=self._fd)

    def symlink(self, target: str, rel: str, *, parents: bool = False) -> None:
        if not self.capabilities.symlinks:
            # Never even try on the primary: OneData cannot hold links (DESIGN.md).
            raise OSError(errno.EPERM, "this store cannot hold symbolic links", rel)
        problem = relative_path_problem(rel)
        if problem:
            raise UnsafePathError(errno.EINVAL, f"refused: {problem}", rel)
        folder, _, name = rel.rpartition("/")
        dfd = self._open_folder_beneath(folder, create=parents)
        try:
            os.symlink(target, name, dir_fd=dfd)
        finally:
            if dfd != self._fd:
                os.close(dfd)

    _DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def _open_folder_beneath(self, rel: str, *, create: bool) -> int:
        """A descriptor on the folder ``rel``, reached from the root descriptor one component
        at a time with O_NOFOLLOW: a symbolic link (or a file) anywhere on the way is refused
        with UnsafePathError instead of being followed out of the root. ``create`` makes the
        missing folders, each inside the one just opened. The caller closes the descriptor
        unless it is the root's."""
        fd = self._fd
        done = ""
        try:
            for part in rel.split("/") if rel else ():
                try:
                    sub = os.open(part, self._DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile: the open below checks what it is
                    sub = self._open_part(part, fd, join(done, part))
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    raise self._unsafe(part, fd, join(done, part)) from None
                if fd != self._fd:
                    os.close(fd)
                fd, done = sub, join(done, part)
        except BaseException:
            if fd != self._fd:
                os.close(fd)
            raise
        return fd

    def _open_part(self, part: str, fd: int, where: str) -> int:
        try:
            return os.open(part, self._DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise self._unsafe(part, fd, where) from None

    @staticmethod
    def _unsafe(part: str, fd: int, where: str) -> UnsafePathError:
        try:
            is_link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        what = "a symbolic link" if is_link else "not a folder"
        return UnsafePathError(errno.ELOOP if is_link else errno.ENOTDIR,
                               f"{where} is {what}: nothing is created through it", where)

    def chmod(self, rel: str, mode: int) -> None:
        self._tolerant(os.chmod, rel, mode & 0o7777, dir_fd=self._fd, follow_symlinks=False,
                       what="chmod", reliable=self.capabilities.reliable_chmod)

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        self._tolerant(os.utime, rel, ns=(mtime_ns, mtime_ns), dir_fd=self._fd,
                       follow_symlinks=False, what="set mtime",
                       reliable=self.capabilities.reliable_mtime)

    def _tolerant(self, fn, *args, what: str, reliable: bool, **kwargs) -> None:
        """Run a metadata call that OneData may refuse; refusals are not errors there."""
        try:
            fn(*args, **kwargs)
        except OSError as exc:
            if reliable or exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                                             errno.ENOSYS, errno.EINVAL, errno.EACCES):
                raise
            log.debug("%s not supported on %s: %s", what, self.root, exc)

    def __del__(self) -> None:  # pragma: no cover - safety net for forgotten close()
        try:
            self.close()
        except Exception:
            pass

