"""One command at a time per working copy (safety rule 9).

Two saves of one working copy at once trash each other's uploads; two deploys into one
folder remove each other's temporaries. Every command that writes a working copy's state
(deploy, save, undeploy, trash restore) and the daemon, for its whole life, hold an OS lock
(``flock``) on the working copy. The kernel drops it when the process dies, however it dies,
so a killed command never leaves the working copy locked.

What is locked is the working copy's folder itself, and ``<work>/.spaceport/busy`` beside it:

* **The folder** is what a deletion cannot take away. A flock belongs to an inode, not to a
  name: with ``busy`` alone, a ``busy`` deleted while a save held it let the next command
  create a new file of that name, lock it at once and run beside the save (issue 18: the
  first save then failed with "Stale file handle", the second had removed its temporary).
  Nothing inside WORK can replace WORK's own inode, and ``rm -rf WORK/.spaceport`` under a
  running daemon leaves the daemon's lock in force.
* **``busy``** says who holds the copy, for the message a second command prints, and is
  locked too, so a command of an older spaceport (which locks ``busy`` alone) is kept out as
  well. Each lock is taken on a descriptor and then checked to be the file now at its path
  (same device and inode); if the path leads elsewhere (it was deleted or replaced between
  the open and the flock), the file at the path is locked instead.

Where a folder cannot be flocked at all (EBADF, ENOLCK, EOPNOTSUPP: no filesystem in use here
does that, but some network filesystems might), ``busy`` alone is locked, with a warning once.
On NFS a folder's flock is local to the node (directories take no NFS lock), while ``busy``'s
is the server's, across nodes, as before: together they keep both.

A folder whose marker is gone is "not a working copy" only if nobody holds its lock:
:func:`refuse_if_kept` (asked by ``require_marker`` and status) refuses with exit 4 and the
daemon's hint while a live spaceport process holds it, named by ``busy`` or, ``busy`` gone
too, by the kernel's lock table (/proc/locks) and that process's command line.

A holder that lives long (the daemon) asks :meth:`WorkHold.folder_intact` and
:meth:`WorkHold.repair` now and then: a ``busy`` deleted under it is written again, so that a
second command names the daemon rather than "another spaceport command".
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .. import stopping
from ..errors import LockLostError, SpaceportError
from ..formats.marker import Marker, marker_dir, read_marker, require_marker
from ..hostinfo import hostname

BUSY_FILE = "busy"
DEFAULT_WAIT = 10.0  # seconds a command waits for another one on the same working copy

DAEMON_COMMAND = "run"

NAME_GRACE = 0.5  # seconds a refused command waits for the holder's name to appear
# A folder's flock refused by its filesystem (not "held by someone"): busy alone, said once.
_NO_FOLDER_LOCK = frozenset({errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL,
                             errno.ENOSYS})
log = logging.getLogger(__name__)
_said_no_folder_lock: set[str] = set()


class WorkBusyError(SpaceportError):
    """Another spaceport command works on this working copy."""


class DaemonOwnsWorkError(LockLostError):
    """A running daemon keeps this working copy: a command beside it is a second writer."""


def busy_path(work: str) -> str:
    return os.path.join(marker_dir(work), BUSY_FILE)


def read_holder(work: str) -> dict:
    try:
        with open(busy_path(work), "rb") as f:
            info = json.loads(f.read() or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def who_holds(work: str) -> dict | None:
    """The command holding the working copy now (its record: command, pid, host, since),
    or None if none does. A look: a shared flock tried and let go at once, nothing
    created; the record alone is not believed (a killed holder leaves it behind)."""
    try:
        fd = os.open(busy_path(work), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # never held, or no marker folder at all
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(work) or {"command": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(work: str) -> str:
    return describe_record(read_holder(work))


def describe_record(info: dict) -> str:
    if not info:
        return "another spaceport command"
    since = f", since {info['since']}" if info.get("since") else ""
    return (f"'spaceport {info.get('command', '?')}' (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}{since})")


def daemon_refusal(work: str, pid: object = "?", host: object = "?", *,
                   marker_gone: bool = False, named: bool = True) -> DaemonOwnsWorkError:
    """The refusal of a command beside a running daemon (exit 4), with what to do.
    ``marker_gone``: WORK's marker was deleted under it; ``named``: the holder is known to
    be a daemon (else a spaceport process holding the folder that cannot be named)."""
    who = "a running spaceport daemon" if named else \
        "a running spaceport process (a daemon, as far as can be told)"
    gone = (f" Its marker ({os.path.basename(marker_dir(work))}/) was deleted under it: "
            "the daemon writes it again within seconds, and commands that only read "
            "(status, verify, trash list) work again then.") if marker_gone else ""
    return DaemonOwnsWorkError(
        f"{work} is kept by {who} (pid {pid} on {host}); a command beside it would be a "
        f"second writer.{gone}",
        hint="Nothing was changed. Ask the daemon to save (POST /save with its token), or "
             "stop it (SIGTERM: it saves, unlocks and exits); then commands work on this "
             "copy again.")


def _flock_pids(path: str) -> list[int]:
    """The processes holding a flock on the file or folder at ``path``, as /proc/locks
    shows them (Linux; pids of our pid namespace, 0 for one outside it): [] if unknown."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4569 fe:00:2220110 0 EOF"; "1: -> FLOCK ..." waits.
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == want and int(parts[4]) > 0:
                pids.append(int(parts[4]))
        except ValueError:
            continue
    return pids


def _command_of(pid: int) -> str:
    """The spaceport command process ``pid`` runs ("run" for a daemon), "?" if it cannot
    be told (another pid namespace, not a spaceport command line, gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "spaceport" or arg == "-mspaceport" or (
                arg == "spaceport" and i and argv[i - 1] == "-m"):
            words = [a for a in argv[i + 1:] if not a.startswith("-")]
            return words[0] if words else "?"
    return "?"


def folder_holder(work: str) -> dict | None:
    """Another process holding ``work``'s folder lock now, whatever became of its marker
    (``rm -rf WORK/.spaceport`` takes the marker and the busy record, never the folder's
    flock): its record (command, pid, host), from ``busy`` if that names it, else from the
    kernel's lock table and the holder's command line; None if no other process holds it
    (this process's own holds are not another's)."""
    with _held_lock:
        if os.path.realpath(work) in _held:
            return None
    try:
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None  # no folder: nobody holds it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        except OSError:
            return None  # a folder its filesystem cannot lock: busy alone (who_holds)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    return read_holder(work) or named_by_kernel(work) or {"command": "?"}


def named_by_kernel(work: str) -> dict:
    """The holder of ``work``'s folder lock as the kernel's lock table and its command
    line name it, for a holder whose ``busy`` record is gone: {} if it cannot be told."""
    for pid in _flock_pids(work):
        if pid != os.getpid():
            command = _command_of(pid)
            return {"command": command, "pid": pid, "host": hostname()} \
                if command != "?" else {}
    return {}


def refuse_if_kept(work: str) -> None:
    """For a WORK without its marker, before it is called "not a working copy": refuse if
    a live spaceport process holds the folder. A daemon whose marker was deleted under it
    keeps writing the primary under its deployment (it writes the marker again within
    seconds); a command beside it would be a second writer under the same id, which
    fencing cannot tell apart (issue 18). Exit 4 with the daemon's hint for a daemon, or
    for a holder that cannot be named; "busy" for another command that names itself."""
    info = folder_holder(work)
    if info is None:
        return
    command = info.get("command", "?")
    if command in (DAEMON_COMMAND, "?"):
        raise daemon_refusal(work, info.get("pid", "?"), info.get("host", "?"),
                             marker_gone=True, named=command == DAEMON_COMMAND)
    raise WorkBusyError(
        f"{work} is busy: {describe_record(info)} is working on it (its marker, "
        f"{os.path.basename(marker_dir(work))}/, is not there now).",
        hint="Nothing was changed. Run this command again when that one has finished.")


def _same_file(fd: int, path: str) -> bool:
    """Is the file at ``path`` the one open on ``fd`` (not deleted or replaced since)?"""
    try:
        by_path = os.stat(path)
    except OSError:
        return False
    by_fd = os.fstat(fd)
    return (by_path.st_dev, by_path.st_ino) == (by_fd.st_dev, by_fd.st_ino)


def _lock_at(path: str, flags: int) -> int | None:
    """A descriptor on the file now at ``path``, flocked; None if another process holds
    it. A file deleted or replaced between the open and the flock is not the working
    copy's any more: the file at the path is opened and locked instead."""
    while True:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


class WorkHold:
    """One working copy held by this process: its folder and its ``busy`` file, flocked."""

    def __init__(self, work: str, command: str):
        self.work = work
        self.command = command
        self.root_fd = -1
        self.root_id: tuple[int, int] | None = None  # WORK's (device, inode) when taken
        self.busy_fd = -1
        self.record = b""
        self.users = 1  # re-entries of this process (the daemon runs saves inside)

    def try_take(self) -> bool:
        """Both locks, or neither (False: another process holds one)."""
        os.makedirs(marker_dir(self.work), exist_ok=True)
        root = self._lock_folder()
        if root is None:
            return False
        try:
            busy = _lock_at(busy_path(self.work), os.O_RDWR | os.O_CREAT)
        except BaseException:
            if root >= 0:
                os.close(root)
            raise
        if busy is None:  # an older spaceport holds busy alone
            if root >= 0:
                os.close(root)
            return False
        st = os.stat(self.work)
        self.root_fd, self.busy_fd, self.root_id = root, busy, (st.st_dev, st.st_ino)
        self.record = json.dumps({"command": self.command, "pid": os.getpid(),
                                  "host": hostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode()
        self._write_record()
        return True

    def _write_record(self) -> None:
        try:
            os.ftruncate(self.busy_fd, 0)
            os.pwrite(self.busy_fd, self.record, 0)
        except OSError:
            pass  # a full disk: the flock holds all the same; only the name is missing

    def _lock_folder(self) -> int | None:
        """The folder's lock: its descriptor, None if another process holds it, -1 if the
        filesystem refuses to lock a folder (then busy alone holds the copy)."""
        try:
            return _lock_at(self.work, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno not in _NO_FOLDER_LOCK:
                raise
            if self.work not in _said_no_folder_lock:
                _said_no_folder_lock.add(self.work)
                log.warning("the filesystem of %s cannot lock a folder (%s): only "
                            ".spaceport/busy keeps other commands out, and deleting it "
                            "would let one in", self.work, exc.strerror)
            return -1

    def folder_intact(self) -> bool:
        """Is WORK still the folder this process holds (not replaced, not unmounted)?"""
        try:
            st = os.stat(self.work)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.root_id

    def repair(self) -> str | None:
        """Put back ``busy`` if it was deleted or replaced (its folder too), locked: nobody
        else can hold it, since the working copy's folder is locked by us. Returns what was
        done, in words, or None if nothing was wrong."""
        if _same_file(self.busy_fd, busy_path(self.work)):
            return None
        os.makedirs(marker_dir(self.work), exist_ok=True)
        fd = _lock_at(busy_path(self.work), os.O_RDWR | os.O_CREAT)
        if fd is None:
            return f"{busy_path(self.work)} was replaced and is locked by another process"
        os.close(self.busy_fd)
        self.busy_fd = fd
        self._write_record()
        return f"{busy_path(self.work)} was deleted; it was written again"

    def release(self) -> None:
        if self.busy_fd >= 0:
            if _same_file(self.busy_fd, busy_path(self.work)):
                try:
                    os.ftruncate(self.busy_fd, 0)
                except OSError:
                    pass  # the working copy was wiped (undeploy) or its disk is full
            os.close(self.busy_fd)  # closing drops the flock
            self.busy_fd = -1
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


# Working copies this process holds already: the daemon holds its working copy for its life
# and runs saves inside; a flock on a second descriptor would wait for itself.
_held: dict[str, WorkHold] = {}
_held_lock = threading.Lock()


@contextmanager
def hold_work(work: str, command: str, *, wait: float = DEFAULT_WAIT,
              say: Callable[[str], None] | None = None) -> Iterator[WorkHold]:
    """Hold the working copy's OS lock for the duration; wait up to ``wait`` seconds for
    another command to finish, then raise WorkBusyError naming it (DaemonOwnsWorkError,
    exit 4, if it is a daemon)."""
    key = os.path.realpath(work)
    with _held_lock:
        held = _held.get(key)
        if held is not None:
            held.users += 1
    if held is not None:
        try:
            yield held
        finally:
            with _held_lock:
                held.users -= 1
        return
    held = WorkHold(work, command)
    try:
        _take(held, wait, say)
        with _held_lock:
            _held[key] = held
        try:
            yield held
        finally:
            with _held_lock:
                _held.pop(key, None)
    finally:
        held.release()


def _take(held: WorkHold, wait: float, say: Callable[[str], None] | None) -> None:
    work = held.work
    deadline = time.monotonic() + max(0.0, wait)
    named_by = time.monotonic() + NAME_GRACE
    told = False
    while True:
        if held.try_take():
            return
        info = read_holder(work)
        if not info and time.monotonic() < named_by:
            # The holder writes its name just after it takes the flock (and clears it just
            # before it lets go; a daemon writes it again if it was deleted): give it that
            # moment rather than answer "someone".
            time.sleep(0.02)
            continue
        if not info:  # busy deleted (with the whole marker, perhaps) under its holder
            info = named_by_kernel(work)
        if info.get("command") == DAEMON_COMMAND:
            raise daemon_refusal(work, info.get("pid", "?"), info.get("host", "?"))
        holder = describe_record(info)
        if time.monotonic() >= deadline:
            raise WorkBusyError(
                f"{work} is busy: {holder} is working on it.",
                hint="Nothing was changed. Run this command again when that one has finished "
                     "(or give --wait SECONDS to wait longer).")
        if say and not told:
            say(f"waiting for {holder} to finish with {work} (up to {wait:g} s)")
            told = True
        stopping.sleep(0.1)  # Ctrl-C while waiting: Interrupted, nothing was done


def require_working_copy(work: str) -> Marker:
    """WORK's marker, or a refusal: exit 4 if a live spaceport process holds the folder (a
    daemon whose marker was deleted under it, issue 18), else "not a working copy" (exit 5,
    :func:`spaceport.formats.marker.require_marker`)."""
    if read_marker(work) is None:
        refuse_if_kept(work)
    return require_marker(work)
