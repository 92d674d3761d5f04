"""Who and where we are: the facts a lock records so that another process can tell, without
trusting clocks or host names, whether the lock's holder could still be running.

A host name says little: two containers of one pod share it, and a pid means something only
inside its own pid namespace on its own boot. So a process is "provably gone" only when the
reader runs on the same boot (``/proc/sys/kernel/random/boot_id``) in the same pid namespace
(the inode of ``/proc/self/ns/pid``) and that pid is not running, or runs a process that
started at another time (the pid was reused).
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace").strip() or None
    except OSError:
        return None


def hostname() -> str:
    return socket.gethostname()


def boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def machine_id() -> str | None:
    return _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")


def pid_namespace() -> str | None:
    """An identity of our pid namespace, comparable between processes of one boot."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat),
    or None if there is no such process here."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ")".
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as another process on the same machine can recognise it."""

    pid: int
    boot_id: str | None
    pid_ns: str | None
    started: str | None

    @classmethod
    def current(cls) -> "ProcessIdentity":
        pid = os.getpid()
        return cls(pid, boot_id(), pid_namespace(), process_start(pid))

    def running_here(self) -> bool:
        """Provably running now, seen from here: the same boot and pid namespace, and that
        pid runs the very process that started then (False wherever we cannot tell)."""
        if not (self.boot_id and self.boot_id == boot_id()):
            return False
        if not (self.pid_ns and self.pid_ns == pid_namespace()):
            return False
        return bool(self.started) and process_start(self.pid) == self.started

    def gone_reason(self) -> str | None:
        """Why this process provably no longer runs, seen from here; None when it may run
        (including every case where we cannot tell: another boot or pid namespace)."""
        if not self.boot_id or self.boot_id != boot_id():
            return None
        if not self.pid_ns or self.pid_ns != pid_namespace():
            return None
        started = process_start(self.pid)
        if started is None:
            return f"its process {self.pid} is gone (same machine, same boot, same pid namespace)"
        if self.started and started != self.started:
            return f"its process {self.pid} is gone (the pid now belongs to another process)"
        return None
