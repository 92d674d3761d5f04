"""One command at a time per working copy (safety rule 9).

Two saves of one working copy at once trash each other's uploads; two deploys into one
folder remove each other's temporaries. Every command that writes a working copy's state
(deploy, save, undeploy, trash restore) and the daemon, for its whole life, hold an OS lock
(``flock``) on ``<work>/.spaceport/busy``. The kernel drops it when the process dies, however
it dies, so a killed command never leaves the working copy locked. The file also says who
holds it, for the message a second command prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .. import stopping
from ..errors import LockLostError, SpaceportError
from ..formats.marker import marker_dir
from ..hostinfo import hostname

BUSY_FILE = "busy"
DEFAULT_WAIT = 10.0  # seconds a command waits for another one on the same working copy

# Paths this process holds already: the daemon holds its working copy for its life and
# runs saves inside; a flock on a second descriptor would wait for itself.
_held: dict[str, int] = {}
_held_lock = threading.Lock()


DAEMON_COMMAND = "run"


class WorkBusyError(SpaceportError):
    """Another spaceport command works on this working copy."""


class DaemonOwnsWorkError(LockLostError):
    """A running daemon keeps this working copy: a command beside it is a second writer."""


def busy_path(work: str) -> str:
    return os.path.join(marker_dir(work), BUSY_FILE)


NAME_GRACE = 0.5  # seconds a refused command waits for the holder's name to appear


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
    info = read_holder(work)
    if not info:
        return "another spaceport command"
    return (f"'spaceport {info.get('command', '?')}' (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}, since {info.get('since', '?')})")


@contextmanager
def hold_work(work: str, command: str, *, wait: float = DEFAULT_WAIT,
              say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the working copy's OS lock for the duration; wait up to ``wait`` seconds for
    another command to finish, then raise WorkBusyError naming it."""
    key = os.path.realpath(work)
    with _held_lock:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                _held[key] -= 1
        return
    os.makedirs(marker_dir(work), exist_ok=True)
    fd = os.open(busy_path(work), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _take(fd, work, wait, say)
        record = json.dumps({"command": command, "pid": os.getpid(), "host": hostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError:
            pass  # a full disk: the flock holds all the same; only the name is missing
        with _held_lock:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_lock:
                _held.pop(key, None)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # the working copy was wiped (undeploy) or its disk is full
    finally:
        os.close(fd)  # closing drops the flock


def _take(fd: int, work: str, wait: float, say: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + max(0.0, wait)
    named_by = time.monotonic() + NAME_GRACE
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if not read_holder(work) and time.monotonic() < named_by:
            # The holder writes its name just after it takes the flock (and clears it just
            # before it lets go): give it that moment rather than answer "someone".
            time.sleep(0.02)
            continue
        if read_holder(work).get("command") == DAEMON_COMMAND:
            info = read_holder(work)
            raise DaemonOwnsWorkError(
                f"{work} is kept by a running spaceport daemon (pid {info.get('pid', '?')} on "
                f"{info.get('host', '?')}); a command beside it would be a second writer.",
                hint="Nothing was changed. Ask the daemon to save (POST /save with its token), "
                     "or stop it (SIGTERM: it saves, unlocks and exits); then commands work "
                     "on this copy again.")
        holder = describe_holder(work)
        if time.monotonic() >= deadline:
            raise WorkBusyError(
                f"{work} is busy: {holder} is working on it.",
                hint="Nothing was changed. Run this command again when that one has finished "
                     "(or give --wait SECONDS to wait longer).")
        if say and not told:
            say(f"waiting for {holder} to finish with {work} (up to {wait:g} s)")
            told = True
        stopping.sleep(0.1)  # Ctrl-C while waiting: Interrupted, nothing was done
