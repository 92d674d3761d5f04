"""A OneData-like FUSE filesystem for tests and benchmarks.

It passes every call through to a backing folder, but behaves like a oneclient mount where
that matters to spaceport (DESIGN.md, "Facts about OneData"): no symbolic or hard links
(EPERM), no chown (EPERM), optionally silent no-op chmod/utimens, a configurable delay per
metadata call and per read/write (a network round trip), per-operation call counts, and
fault injection (EIO, ENOSPC, ENOTCONN...) switchable while mounted. Race tests can also
delay chosen calls, or hold them at a gate until the test releases them (:mod:`.stalls`,
which also says what a held call keeps locked in the kernel).

The filesystem runs in its own process (``python -m spaceport.testing.onedatafs``) so that
a test can crash it or lazily unmount it without taking pytest down; the
:class:`OneDataFS` class starts and controls that process.

Control channel: a Unix stream socket ``control.sock`` in a control directory OUTSIDE the
mount. One JSON line in, one JSON line out. We chose a socket over a watched rules file
because (1) the server answers only after it applied the request, so ``inject()`` returning
means the rule is active, with no polling and no half-written-file races; (2) it keeps
working while the mount itself fails every call (the faults we inject) or is unmounted;
(3) a dead filesystem process shows up at once as a refused connection, not a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno as errno_mod
import fnmatch
import functools
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

try:  # Optional at import time: fuse_available() reports why FUSE cannot run.
    import mfusepy
except Exception as exc:  # noqa: BLE001 - mfusepy raises OSError/AttributeError without libfuse
    mfusepy = None
    _MFUSEPY_ERROR = f"{type(exc).__name__}: {exc}"
else:
    _MFUSEPY_ERROR = ""

from .stalls import Selector, StallRule, Stalls

#: Every operation this filesystem implements (each a kernel request that it answers), i.e.
#: every key of :meth:`OneDataFS.counts` but REPLY_GETATTR.
OPS = (
    "access", "chmod", "chown", "create", "flush", "fsync", "getattr", "link", "mkdir",
    "mknod", "open", "opendir", "read", "readdir", "readlink", "release", "releasedir",
    "rename", "rmdir", "statfs", "symlink", "truncate", "unlink", "utimens", "write",
)
#: Data operations; all the others are metadata round trips.
IO_OPS = frozenset({"read", "write"})
#: The count of the getattr calls that libfuse's high-level layer makes to fill in the reply
#: of a request whose reply carries attributes; not a request of the kernel (see below).
REPLY_GETATTR = "getattr_in_reply"
#: The operations after which libfuse's high-level layer calls getattr for the reply: those
#: answered with fuse_entry_out (CREATE, MKDIR, MKNOD, SYMLINK, LINK) or fuse_attr_out
#: (SETATTR: chmod, chown, truncate, utimens).
ATTR_REPLY_OPS = frozenset({"create", "mkdir", "mknod", "symlink", "link", "chmod", "chown",
                            "truncate", "utimens"})
FSTYPE = "fuse.onedatafs"
SOCKET_NAME = "control.sock"
LOG_NAME = "onedatafs.log"
_RENAME_NOREPLACE = 1  # from <linux/fs.h>; os.rename has no flags argument
_AT_FDCWD = -100


def metadata_calls(counts: dict[str, int]) -> int:
    """The metadata requests the kernel sent (every call but read, write and the getattr
    calls libfuse makes to fill a reply): the round trips oneclient would make.

    Why those getattr calls are apart: this filesystem speaks libfuse's high-level API, where
    a CREATE is answered by calling create() and then getattr() for the new file's
    attributes, a SETATTR by utimens() (or chmod...) and then getattr(), a MKDIR by mkdir()
    and then getattr(). In the FUSE protocol each is one request with one reply, and the
    reply carries the attributes (fuse_entry_out, fuse_attr_out): a low-level server such as
    oneclient fills them from the answer of the operation's own round trip to the provider.
    They are still counted, as REPLY_GETATTR (:func:`server_calls` adds them), and still
    delayed, failed and held like any getattr. Every kernel request this filesystem answers
    is counted here, opendir and releasedir included; not counted: INIT (once a mount),
    FORGET (no reply) and the first write's GETXATTR (answered ENOSYS by libfuse, after which
    the kernel asks no more)."""
    return sum(n for op, n in counts.items() if op not in IO_OPS and op != REPLY_GETATTR)


def server_calls(counts: dict[str, int]) -> int:
    """Every call this (high-level) server made but read and write."""
    return sum(n for op, n in counts.items() if op not in IO_OPS)


def fuse_available() -> tuple[bool, str]:
    """(True, "") if a FUSE filesystem can be mounted here, else (False, why not)."""
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse is missing (container without --device /dev/fuse?)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False, "/dev/fuse is not readable and writable by this user"
    if shutil.which("fusermount3") is None:
        return False, "fusermount3 not found (apt-get install fuse3)"
    if mfusepy is None:
        return False, f"mfusepy is not importable ({_MFUSEPY_ERROR})"
    if mfusepy.fuse_version_major != 3:
        return False, f"libfuse 3 is required, mfusepy loaded {mfusepy.fuse_version_major}.x"
    return True, ""


def errno_value(value: int | str) -> int:
    """'EIO' or 5 -> 5; ValueError for anything that is not a known errno."""
    code = getattr(errno_mod, value.upper(), None) if isinstance(value, str) else value
    if isinstance(code, int) and code in errno_mod.errorcode:
        return code
    raise ValueError(f"unknown errno {value!r}; use a name such as 'EIO' or 'ENOSPC'")


# --------------------------------------------------------------------------- fault rules
@dataclass
class FaultRule:
    """Fail calls of `op` on paths matching `path` with `errno`, after `after` successes,
    `times` times (None = forever). `op` and `path` are fnmatch globs; note that `*`
    also matches `/`, so "/run1/*.mrc" matches "/run1/sub/x.mrc" as well."""

    op: str = "*"
    path: str = "*"
    errno: int = errno_mod.EIO
    after: int = 0
    times: Optional[int] = None
    seen: int = 0  # matching calls so far
    fired: int = 0  # calls failed so far

    def validate(self) -> "FaultRule":
        self.errno = errno_value(self.errno)
        if not any(fnmatch.fnmatchcase(op, self.op) for op in OPS):
            raise ValueError(f"op {self.op!r} matches no operation; known: {', '.join(OPS)}")
        if self.after < 0 or (self.times is not None and self.times < 0):
            raise ValueError("after and times must be >= 0")
        return self

    hit = Selector.hit  # the same selection as a stall rule's


# --------------------------------------------------------------------------- the filesystem
_Base: Any = mfusepy.Operations if mfusepy is not None else object


class OneDataOperations(_Base):
    """Passthrough to `backing` with OneData's restrictions, delays, counts and faults.

    File handles are real file descriptors on the backing files, and all data I/O is
    positional (pread/pwrite), so parallel readers and writers of one file never share a
    file offset, and files of any size stream through in kernel-sized chunks."""

    use_ns = True  # mfusepy: timestamps as integer nanoseconds, no float rounding

    def __init__(self, backing: str, *, meta_delay_ms: float = 0.0, io_delay_ms: float = 0.0,
                 chmod_noop: bool = False, utimens_noop: bool = False) -> None:
        # mfusepy registers any attribute named like a libfuse operation ("lock", "poll"...)
        # as a callback, hence the underscores on internal state.
        self.root = os.path.realpath(backing)
        self.meta_delay_ms = float(meta_delay_ms)
        self.io_delay_ms = float(io_delay_ms)
        self.chmod_noop = chmod_noop
        self.utimens_noop = utimens_noop
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OPS + (REPLY_GETATTR,), 0)
        self._bytes = dict.fromkeys(IO_OPS, 0)  # bytes read and written through the mount
        # OS thread -> path of the operation whose reply libfuse fills next. Keyed by thread
        # ident, not threading.local: ctypes gives each callback from a libfuse thread a
        # fresh Python thread state, so thread-locals do not outlive one callback.
        self._reply: dict[int, str | None] = {}
        self._rules: list[FaultRule] = []
        self._stalls = Stalls(OPS)
        self._after = threading.local()  # stalls to apply once this thread's call is done
        self.on_init: list = []  # callables run once libfuse is up (after any daemonizing fork)

    # -- the hook every operation goes through
    def _enter(self, op: str, *paths: Optional[str]) -> None:
        """Count the call, sleep like a network round trip, stall it if a rule says so,
        then maybe inject a fault. Stalls "after" the call are left for _leave."""
        # Paths are None for calls on an open handle of an already unlinked file.
        names = tuple(p if p is not None else "" for p in paths)
        # The getattr that libfuse makes, in this thread, right after an operation whose reply
        # carries attributes, for that operation's path (see metadata_calls).
        with self._lock:
            pending = self._reply.pop(threading.get_ident(), None)
            key = REPLY_GETATTR if op == "getattr" and paths and pending == paths[0] else op
            self._counts[key] += 1
            delay = self.io_delay_ms if op in IO_OPS else self.meta_delay_ms
            failing = next((r.errno for r in self._rules if r.hit(op, names)), 0)
        stalls = self._stalls.select(op, names)
        self._after.call = (op, names, [r for r in stalls if r.when == "after"])
        if delay > 0:
            time.sleep(delay / 1000.0)  # in this handler thread: concurrent calls overlap
        # Held in this handler thread: libfuse serves other calls in its other threads.
        failing = self._stalls.apply([r for r in stalls if r.when == "before"], op,
                                     names) or failing
        if failing:
            raise mfusepy.FuseOSError(failing)

    def _leave(self) -> None:
        """Apply the stalls that _enter left for after the call (done, or failed)."""
        op, names, after = getattr(self._after, "call", None) or ("", (), [])
        self._after.call = None
        if after:
            failing = self._stalls.apply(after, op, names)
            if failing:
                raise mfusepy.FuseOSError(failing)

    def _full(self, path: Optional[str]) -> str:
        if path is None:  # chmod/utimens on an open file whose name was removed
            raise mfusepy.FuseOSError(errno_mod.ESTALE)
        return self.root + path  # libfuse paths are absolute ("/", "/a/b")

    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        for hook in self.on_init:
            hook()

    # -- metadata
    def getattr(self, path: Optional[str], fh: Optional[int] = None) -> dict[str, Any]:
        self._enter("getattr", path)
        st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        attrs = {key: getattr(st, key) for key in (
            "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
            "st_blksize", "st_rdev")}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readdir(self, path: str, fh: int) -> list:
        self._enter("readdir", path)
        entries: list = [".", ".."]
        with os.scandir(self._full(path)) as it:
            for entry in it:
                # Only the type bits reach the kernel (d_type); scandir has them without a stat.
                mode = (stat.S_IFDIR if entry.is_dir(follow_symlinks=False) else
                        stat.S_IFLNK if entry.is_symlink() else
                        stat.S_IFREG if entry.is_file(follow_symlinks=False) else 0)
                entries.append((entry.name, {"st_mode": mode}, 0))
        return entries

    def opendir(self, path: str) -> int:
        self._enter("opendir", path)
        return 0

    def releasedir(self, path: Optional[str], fh: int) -> int:
        self._enter("releasedir", path)
        return 0

    def access(self, path: str, amode: int) -> None:
        self._enter("access", path)
        if not os.access(self._full(path), amode):
            raise mfusepy.FuseOSError(errno_mod.EACCES)

    def statfs(self, path: str) -> dict[str, int]:
        self._enter("statfs", path)
        sv = os.statvfs(self._full(path))
        return {key: getattr(sv, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    def mkdir(self, path: str, mode: int) -> None:
        self._enter("mkdir", path)
        os.mkdir(self._full(path), mode)

    def rmdir(self, path: str) -> None:
        self._enter("rmdir", path)
        os.rmdir(self._full(path))

    def unlink(self, path: str) -> None:
        self._enter("unlink", path)
        os.unlink(self._full(path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self._enter("rename", old, new)
        if flags & ~_RENAME_NOREPLACE:
            raise mfusepy.FuseOSError(errno_mod.EINVAL)  # RENAME_EXCHANGE/WHITEOUT: not OneData
        if flags:
            renameat2(self._full(old), self._full(new), flags)
        else:
            os.rename(self._full(old), self._full(new))  # atomic replace, as on the backing

    def chmod(self, path: Optional[str], mode: int) -> None:
        self._enter("chmod", path)
        if not self.chmod_noop:
            os.chmod(self._full(path), stat.S_IMODE(mode))

    # -- OneData has no owners, no links and no special files
    def _refuse(self, op: str, code: int, *paths: Optional[str]) -> int:
        self._enter(op, *paths)
        raise mfusepy.FuseOSError(code)

    def chown(self, path: Optional[str], uid: int, gid: int) -> int:
        return self._refuse("chown", errno_mod.EPERM, path)

    def symlink(self, target: str, source: str) -> int:  # mfusepy: target is the new link
        return self._refuse("symlink", errno_mod.EPERM, target)

    def link(self, target: str, source: str) -> int:
        return self._refuse("link", errno_mod.EPERM, target, source)

    def readlink(self, path: str) -> str:  # "not a link", whatever the path
        return self._refuse("readlink", errno_mod.EINVAL, path)

    def mknod(self, path: str, mode: int, dev: int) -> int:  # fifos, sockets, devices
        return self._refuse("mknod", errno_mod.EPERM, path)

    def utimens(self, path: Optional[str], times: Optional[tuple[int, int]] = None) -> None:
        self._enter("utimens", path)
        if self.utimens_noop:
            return
        full = self._full(path)
        if times is None:
            os.utime(full)
            return
        # libfuse passes UTIME_NOW/UTIME_OMIT in tv_nsec with tv_sec 0; mfusepy folds them
        # into plain nanosecond numbers, which we decode here.
        current = os.lstat(full)
        now = time.time_ns()
        atime = _resolve_time(times[0], current.st_atime_ns, now)
        mtime = _resolve_time(times[1], current.st_mtime_ns, now)
        os.utime(full, ns=(atime, mtime))

    def truncate(self, path: Optional[str], length: int, fh: Optional[int] = None) -> None:
        self._enter("truncate", path)
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path), length)

    # -- open files
    def open(self, path: str, flags: int) -> int:
        self._enter("open", path)
        # O_DIRECT would demand aligned buffers from our pread/pwrite; the kernel already
        # honours it on the FUSE side.
        return os.open(self._full(path), flags & ~os.O_DIRECT)

    def create(self, path: str, mode: int, flags: int) -> int:
        self._enter("create", path)
        # O_EXCL is passed through, so exclusive create is atomic on the backing.
        return os.open(self._full(path), (flags | os.O_CREAT) & ~os.O_DIRECT, mode)

    def read(self, path: Optional[str], size: int, offset: int, fh: int) -> bytes:
        self._enter("read", path)
        data = os.pread(fh, size, offset)
        with self._lock:
            self._bytes["read"] += len(data)
        return data

    def write(self, path: Optional[str], data: bytes, offset: int, fh: int) -> int:
        self._enter("write", path)
        n = os.pwrite(fh, data, offset)
        with self._lock:
            self._bytes["write"] += n
        return n

    def flush(self, path: Optional[str], fh: int) -> None:
        self._enter("flush", path)
        os.close(os.dup(fh))  # what close() would report on the backing (libfuse's passthrough)

    def fsync(self, path: Optional[str], datasync: int, fh: int) -> None:
        self._enter("fsync", path)
        (os.fdatasync if datasync else os.fsync)(fh)

    def release(self, path: Optional[str], fh: int) -> None:
        self._enter("release", path)
        os.close(fh)

    # -- control requests (from the control socket thread)
    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd in _STALL_COMMANDS:  # not under self._lock: wait_held blocks
            return self._stall_control(cmd, request)
        with self._lock:
            if cmd == "counts":
                return {"counts": dict(self._counts)}
            if cmd == "io_bytes":
                return {"bytes": dict(self._bytes)}
            if cmd == "reset_counts":
                self._counts = dict.fromkeys(OPS + (REPLY_GETATTR,), 0)
                self._bytes = dict.fromkeys(IO_OPS, 0)
            elif cmd == "inject":
                self._rules.append(FaultRule(**request["rule"]).validate())
            elif cmd == "clear_faults":
                self._rules.clear()
            elif cmd == "faults":
                return {"faults": [asdict(r) for r in self._rules]}
            elif cmd == "set_delays":
                for key in ("meta_delay_ms", "io_delay_ms"):
                    if request.get(key) is not None:
                        setattr(self, key, float(request[key]))
            elif cmd in ("config", "ping"):
                return {"pid": os.getpid(), "backing": self.root,
                        "meta_delay_ms": self.meta_delay_ms, "io_delay_ms": self.io_delay_ms,
                        "chmod_noop": self.chmod_noop, "utimens_noop": self.utimens_noop}
            else:
                raise ValueError(f"unknown control command {cmd!r}")
        return {}

    def _stall_control(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        stalls = self._stalls
        if cmd == "stall":
            stalls.add(StallRule(**request["rule"]))
        elif cmd == "hold":
            return {"name": stalls.add(StallRule(**request["rule"]))}
        elif cmd == "release":
            return {"released": stalls.release(request["name"])}
        elif cmd == "gate":
            return {"gate": asdict(stalls.gate(request["name"]))}
        elif cmd == "wait_held":
            return {"waiting": stalls.wait_held(request["name"], int(request.get("count", 1)),
                                                float(request.get("timeout", 10.0)))}
        elif cmd == "clear_stalls":
            return {"released": stalls.clear()}
        elif cmd == "stalls":
            return stalls.describe()
        return {}


_STALL_COMMANDS = frozenset({"stall", "hold", "release", "gate", "wait_held", "clear_stalls",
                             "stalls"})


def _leaving(method: Any, op: str) -> Any:
    fills_reply = op in ATTR_REPLY_OPS

    @functools.wraps(method)
    def call(self: OneDataOperations, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        finally:
            self._leave()
        if fills_reply and args:  # done: libfuse calls getattr for the reply (metadata_calls)
            with self._lock:
                self._reply[threading.get_ident()] = args[0]
        return result
    return call


# Every operation ends with _leave (its "after" stalls), however it returns or raises; a
# wrapper here keeps that out of the 25 method bodies.
for _op in OPS:
    setattr(OneDataOperations, _op, _leaving(getattr(OneDataOperations, _op), _op))


def _resolve_time(value: int, current: int, now: int) -> int:
    utime_now, utime_omit = (1 << 30) - 1, (1 << 30) - 2  # from <sys/stat.h>
    if value == utime_omit:
        return current
    return now if value == utime_now else value


_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: str, new: str, flags: int) -> None:
    """rename(2) with flags (RENAME_NOREPLACE=1), which os.rename cannot pass."""
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        raise OSError(errno_mod.EINVAL, "renameat2 is not available in this libc")
    if fn(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old, None, new)


# --------------------------------------------------------------------------- control socket
class ControlServer:
    """Serves the control socket. The socket is bound before mounting (so a bad path fails
    loudly), the serving thread starts from FUSE init (threads do not survive the fork that
    libfuse makes when it daemonizes)."""

    def __init__(self, control_dir: str, ops: OneDataOperations) -> None:
        # Absolute: libfuse chdirs to / when it daemonizes (no --foreground).
        self.path = os.path.abspath(os.path.join(control_dir, SOCKET_NAME))
        self.ops = ops
        if os.path.exists(self.path):
            os.unlink(self.path)  # a leftover from a killed run
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)

    def start(self) -> None:
        threading.Thread(target=self._serve, name="onedatafs-control", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # socket closed at shutdown
            # One thread per request: wait_held blocks until a call is held, and the
            # release that the test sends meanwhile must still be served.
            threading.Thread(target=self._answer, args=(conn,), name="onedatafs-request",
                             daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)  # a stuck client must not keep this thread forever
            try:
                request = json.loads(_recv_line(conn))
                reply = {"ok": True, **self.ops.control(request)}
            except Exception as exc:  # noqa: BLE001 - report any bad request to the client
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass  # client gone

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _recv_line(conn: socket.socket) -> bytes:
    with conn.makefile("rb") as f:
        return f.readline()


def _mount(ops: OneDataOperations, mountpoint: str, *, foreground: bool,
           attr_timeout: float, max_threads: int, debug: bool) -> None:
    """Run libfuse's multi-threaded loop until unmounted or signalled (SIGTERM/SIGINT)."""

    class _FUSE(mfusepy.FUSE):
        # mfusepy 3.1 drops rename's flags (RENAME_NOREPLACE); forward them.
        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            return self.operations.rename(old.decode(self.encoding, self.errors),
                                          new.decode(self.encoding, self.errors), flags)

    _FUSE(ops, mountpoint, foreground=foreground, debug=debug, nothreads=False,
          fsname="onedatafs", subtype="onedatafs",
          # Unlinking an open file really unlinks it, instead of libfuse renaming it to a
          # visible .fuse_hidden* file that would show up in spaceport's scans.
          hard_remove=True,
          attr_timeout=attr_timeout, entry_timeout=attr_timeout, negative_timeout=0,
          max_threads=max_threads)


# --------------------------------------------------------------------------- the controller
def _mounted_fstype(mountpoint: str) -> Optional[str]:
    """Filesystem type mounted exactly at `mountpoint`, from /proc (no stat: works on a
    dead FUSE mount, where stat fails with ENOTCONN)."""
    wanted, found = os.fsencode(mountpoint), None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            # Blanks, tabs, newlines and backslashes in paths appear as octal escapes.
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            if point == wanted:
                found = os.fsdecode(fields[fields.index(b"-") + 1])  # the top mount wins
    return found


class OneDataFS:
    """Start, control and stop a OneData-like filesystem process. A context manager."""

    def __init__(self, backing: str | os.PathLike, mountpoint: str | os.PathLike, *,
                 meta_delay_ms: float = 0.0, io_delay_ms: float = 0.0,
                 chmod_noop: bool = False, utimens_noop: bool = False,
                 attr_timeout: float = 1.0, control_dir: str | os.PathLike | None = None,
                 max_threads: int = 64) -> None:
        self.backing = os.path.realpath(backing)
        self.mountpoint = os.path.realpath(mountpoint)
        self.options = dict(meta_delay_ms=meta_delay_ms, io_delay_ms=io_delay_ms,
                            chmod_noop=chmod_noop, utimens_noop=utimens_noop,
                            attr_timeout=attr_timeout, max_threads=max_threads)
        self._given_control_dir = control_dir
        self.control_dir: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._log = None

    def __enter__(self) -> "OneDataFS":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the filesystem process is alive (it may outlive a lazy unmount)."""
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        o = self.options
        cmd = [sys.executable, "-m", "spaceport.testing.onedatafs", self.backing,
               self.mountpoint, "--foreground", "--control-dir", self.control_dir,
               "--meta-delay-ms", str(o["meta_delay_ms"]), "--io-delay-ms", str(o["io_delay_ms"]),
               "--attr-timeout", str(o["attr_timeout"]), "--max-threads", str(o["max_threads"])]
        cmd += ["--chmod-noop"] * o["chmod_noop"] + ["--utimens-noop"] * o["utimens_noop"]
        return cmd

    def start(self) -> "OneDataFS":
        """Spawn the process and wait until the mount and the control socket answer."""
        if self._proc is not None:
            return self
        if not os.path.isdir(self.backing) or not os.path.isdir(self.mountpoint):
            raise FileNotFoundError(f"backing {self.backing} and mountpoint {self.mountpoint} must be folders")
        if _mounted_fstype(self.mountpoint):
            raise RuntimeError(f"{self.mountpoint} is already a mount point")
        self.control_dir = (os.fspath(self._given_control_dir) if self._given_control_dir
                            else tempfile.mkdtemp(prefix="odfs-"))  # short: AF_UNIX paths <108 bytes
        os.makedirs(self.control_dir, exist_ok=True)
        if len(os.fsencode(os.path.join(self.control_dir, SOCKET_NAME))) >= 108:
            raise ValueError(f"control dir path too long for a Unix socket: {self.control_dir}")
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])  # works without `pip install`
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        # Output goes to a file, not a pipe nobody reads: a full pipe would block the fs.
        self._log = open(os.path.join(self.control_dir, LOG_NAME), "wb")
        self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(time.monotonic() + 20)
        return self

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc, text = self._proc.returncode, self.log_text()
                self.stop()
                raise RuntimeError(f"onedatafs exited with {rc} before mounting:\n{text}")
            if _mounted_fstype(self.mountpoint) == FSTYPE and os.path.ismount(self.mountpoint):
                try:
                    self._request("ping")
                    return
                except OSError:
                    pass  # socket thread not serving yet
            time.sleep(0.02)
        text = self.log_text()
        self.stop()
        raise RuntimeError(f"onedatafs did not mount {self.mountpoint} within 20 s:\n{text}")

    def log_text(self) -> str:
        """What the filesystem process wrote to stdout/stderr so far."""
        with contextlib.suppress(OSError, TypeError):  # TypeError: no control dir yet
            return Path(self.control_dir, LOG_NAME).read_text(errors="replace")
        return ""

    def _request(self, cmd: str, *, wait: float = 0.0, **fields: Any) -> dict[str, Any]:
        """Send one request; `wait`: seconds the server may take on top of the usual."""
        if self._proc is None or self.control_dir is None:
            raise RuntimeError("onedatafs is not running")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10 + wait)
            s.connect(os.path.join(self.control_dir, SOCKET_NAME))
            s.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            reply = json.loads(_recv_line(s) or b"{}")
        if not reply.get("ok"):
            raise ValueError(reply.get("error", "no reply from onedatafs"))
        reply.pop("ok")
        return reply

    def counts(self) -> dict[str, int]:
        return self._request("counts")["counts"]

    def io_bytes(self) -> dict[str, int]:
        """Bytes read and written through the mount: {"read": n, "write": n} (reset with
        the call counts by :meth:`reset_counts`)."""
        return self._request("io_bytes")["bytes"]

    def bytes_written(self) -> int:
        """Bytes written through the mount since the last :meth:`reset_counts`."""
        return self.io_bytes()["write"]

    def reset_counts(self) -> None:
        self._request("reset_counts")

    def settled_counts(self, quiet: float = 0.05) -> dict[str, int]:
        """The counts once no call has arrived for ``quiet`` seconds. The kernel sends a
        RELEASE or RELEASEDIR after the close() or closedir() that caused it has returned:
        a count taken, or reset, right after a command may hold its late releases."""
        counts = self.counts()
        while True:
            time.sleep(quiet)
            again = self.counts()
            if again == counts:
                return counts
            counts = again

    def inject(self, op: str = "*", path: str = "*", errno: int | str = "EIO",
               after: int = 0, times: Optional[int] = None) -> None:
        """Add a fault rule; it is active when this returns. See :class:`FaultRule`."""
        rule = FaultRule(op=op, path=path, errno=errno, after=after, times=times).validate()
        self._request("inject", rule=asdict(rule))

    def clear_faults(self) -> None:
        self._request("clear_faults")

    def faults(self) -> list[dict[str, Any]]:
        """The active rules with their `seen` and `fired` counters."""
        return self._request("faults")["faults"]

    def stall(self, op: str = "*", path: str = "*", ms: float = 100.0, after: int = 0,
              times: Optional[int] = None, when: str = "before") -> None:
        """Delay the selected calls by `ms` milliseconds each (in their own handler thread:
        other calls go on). Active when this returns. See :class:`StallRule`."""
        rule = StallRule(op=op, path=path, delay_ms=ms, after=after, times=times,
                         when=when).validate(OPS)
        self._request("stall", rule=asdict(rule))

    def hold(self, op: str = "*", path: str = "*", after: int = 0, times: Optional[int] = 1,
             *, name: Optional[str] = None, timeout: float = 60.0,
             on_timeout: Optional[str] = "ETIMEDOUT", when: str = "before") -> str:
        """Hold the selected calls at a new gate until :meth:`release`; returns its name.

        A held call fails with `on_timeout` (None: goes on) if not released within
        `timeout` seconds, so a broken test cannot hang for ever. Active when this returns.
        Mind what the kernel keeps locked during a held call (:mod:`.stalls`)."""
        rule = StallRule(op=op, path=path, after=after, times=times, gate=name or "",
                         timeout=timeout, on_timeout=on_timeout, when=when).validate(OPS)
        return self._request("hold", rule=asdict(rule))["name"]

    def release(self, name: str) -> int:
        """Open gate `name` for good: held calls go on. Returns how many were held."""
        return self._request("release", name=name)["released"]

    def waiting(self, name: str) -> int:
        """How many calls are blocked at gate `name` right now."""
        return self.gate(name)["waiting"]

    def gate(self, name: str) -> dict[str, Any]:
        """Gate `name`: open, waiting (now), held and timed_out (in all)."""
        return self._request("gate", name=name)["gate"]

    def wait_held(self, name: str, timeout: float = 10.0, count: int = 1) -> int:
        """Block until `count` calls are blocked at gate `name`, i.e. the processes that
        made them are stopped inside the call; returns how many are. TimeoutError if that
        does not happen within `timeout` seconds."""
        try:
            return self._request("wait_held", name=name, count=count, timeout=timeout,
                                 wait=timeout)["waiting"]
        except ValueError as exc:
            if str(exc).startswith("TimeoutError"):
                raise TimeoutError(str(exc)) from None
            raise

    def clear_stalls(self) -> int:
        """Remove every stall rule and gate; held calls go on. Returns how many were held."""
        return self._request("clear_stalls")["released"]

    def stalls(self) -> dict[str, Any]:
        """{"stalls": the rules with their counters, "gates": {name: gate}}."""
        return self._request("stalls")

    def config(self) -> dict[str, Any]:
        """What the running process reports: pid, backing, delays, no-op flags."""
        return self._request("config")

    def set_delays(self, meta_delay_ms: Optional[float] = None,
                   io_delay_ms: Optional[float] = None) -> None:
        self._request("set_delays", meta_delay_ms=meta_delay_ms, io_delay_ms=io_delay_ms)

    def lazy_unmount(self) -> None:
        """Detach the mount (fusermount3 -u -z) under whoever uses it; the process lives on
        until the last open file on it is closed."""
        _fusermount(self.mountpoint, lazy=True, check=True)

    def crash(self) -> None:
        """SIGKILL the filesystem process, leaving a dead mount (ENOTCONN) until stop()."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        """Unmount and end the process. Idempotent; never raises if already gone."""
        if self.running and self.control_dir:
            with contextlib.suppress(OSError, ValueError):
                self._request("clear_stalls")  # held calls would keep the mount busy
        clean = False
        if self._proc is not None and _mounted_fstype(self.mountpoint) == FSTYPE:
            clean = _fusermount(self.mountpoint, lazy=False)
            if not clean:
                _fusermount(self.mountpoint, lazy=True)  # busy: detach it at least
        if self._proc is not None:
            # After a clean unmount the process exits by itself; after a lazy one it would
            # wait for the last open file to close, so we end it (SIGTERM, then SIGKILL).
            self._end_process(grace=5.0 if clean else 0.2)
        if _mounted_fstype(self.mountpoint) == FSTYPE:
            _fusermount(self.mountpoint, lazy=True)  # a dead mount, e.g. left by crash()
        if self._log is not None:
            self._log, log = None, self._log
            log.close()
        if self.control_dir and not self._given_control_dir:
            shutil.rmtree(self.control_dir, ignore_errors=True)
        self.control_dir = None

    def _end_process(self, grace: float) -> None:
        proc, self._proc = self._proc, None
        for action, timeout in ((None, grace), (proc.terminate, 5.0), (proc.kill, None)):
            if action is not None:
                action()
            try:
                proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue


def _fusermount(mountpoint: str, *, lazy: bool, check: bool = False) -> bool:
    cmd = ["fusermount3", "-u", "-q"] + (["-z"] if lazy else []) + [mountpoint]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res.returncode == 0


# --------------------------------------------------------------------------- command line
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spaceport.testing.onedatafs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--meta-delay-ms", type=float, default=0.0)
    parser.add_argument("--io-delay-ms", type=float, default=0.0)
    parser.add_argument("--chmod-noop", action="store_true")
    parser.add_argument("--utimens-noop", action="store_true")
    parser.add_argument("--attr-timeout", type=float, default=1.0,
                        help="kernel attribute/entry cache seconds (libfuse default 1)")
    parser.add_argument("--max-threads", type=int, default=64)
    parser.add_argument("--control-dir", help="folder for control.sock (outside the mount)")
    parser.add_argument("--foreground", action="store_true")
    parser.add_argument("--debug", action="store_true", help="libfuse request trace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    ok, why = fuse_available()
    if not ok:
        print(f"onedatafs: {why}", file=sys.stderr)
        return 1
    os.umask(0)  # the kernel already applied the caller's umask to the modes it sends
    ops = OneDataOperations(args.backing, meta_delay_ms=args.meta_delay_ms,
                            io_delay_ms=args.io_delay_ms, chmod_noop=args.chmod_noop,
                            utimens_noop=args.utimens_noop)
    server = ControlServer(args.control_dir, ops) if args.control_dir else None
    if server:
        ops.on_init.append(server.start)
    try:
        _mount(ops, args.mountpoint, foreground=args.foreground, attr_timeout=args.attr_timeout,
               max_threads=args.max_threads, debug=args.debug)
    finally:
        if server:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
