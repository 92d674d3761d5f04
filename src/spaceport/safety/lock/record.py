"""What the lock files say: the lock record, the heartbeat record and their JSON.

The files of docs/LOCKING.md ("The files"): ``<status>/lock``, published once by the
deployment that takes it, and ``<status>/heartbeat.<deployment id>``, rewritten by that
deployment only. Reading them from a store is in :mod:`.reading`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from ... import __version__
from ...errors import FormatError, UsageError
from ...formats.legacy import parse_westlife_lock
from ...hostinfo import ProcessIdentity, hostname
from ...wording import quote

LOCK_FORMAT = 2
HEARTBEAT_FORMAT = 1
DEFAULT_STATUS_DIR = ".deployment_status_do_not_delete"
LOCK_NAME = "lock"
HEARTBEAT_PREFIX = "heartbeat."
DEFAULT_STALE_AFTER = 600  # seconds without a heartbeat change before a lock looks abandoned


def validate_status_dir(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UsageError(f"invalid status folder name {quote(name)}: give a single folder name, "
                         f"e.g. {DEFAULT_STATUS_DIR}")
    return name


def default_instance() -> str:
    return os.environ.get("SPACEPORT_INSTANCE") or hostname()


@dataclass(frozen=True)
class WorkCopy:
    """Where a working copy is: what the lock names, so that a copy of it is refused."""

    host: str
    path: str
    work_id: str | None  # the inode of its marker folder: a copy gets another one

    @classmethod
    def here(cls, path: str, work_id: str | None) -> "WorkCopy":
        return cls(hostname(), os.path.abspath(path), work_id)


@dataclass
class LockInfo:
    """The content of a spaceport lock file."""

    deployment_id: str
    host: str
    instance: str
    user: str
    primary: str
    work: str
    created: str
    pid: int = 0  # the process that took the lock (for a person; liveness is in the heartbeat)
    boot_id: str | None = None
    machine_id: str | None = None
    work_id: str | None = None
    stale_after: int = DEFAULT_STALE_AFTER
    parameters: dict = field(default_factory=dict)
    tool_version: str = __version__
    # True when a long-running process (the daemon) keeps the lock and beats its heartbeat.
    # A deployment made from the command line lives on between commands with no process
    # behind it: neither a silent heartbeat nor a gone pid means it is abandoned.
    live: bool = False
    # CERIT's lock file this deployment keeps as a mirror of this lock (relative to the
    # primary; safety/lock/mirror.py), or None. Recorded here so the mirror is known as ours.
    cerit_lock: str | None = None
    format: int = LOCK_FORMAT
    # Format 1 kept its heartbeat and last save inside the lock; read, never written.
    heartbeat: str | None = None
    last_save: str | None = None

    def to_json(self) -> bytes:
        data = {"format": self.format, **{k: v for k, v in asdict(self).items()
                                          if k != "format" and not (k in ("heartbeat", "last_save")
                                                                    and self.format >= 2)}}
        return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")

    @classmethod
    def from_json(cls, raw: bytes) -> "LockInfo":
        data = json.loads(raw.decode("utf-8", "surrogateescape"))
        if not isinstance(data, dict) or "deployment_id" not in data:
            raise ValueError("not a spaceport lock")
        version = int(data.get("format", 0))
        if version > LOCK_FORMAT:
            raise FormatError(
                f"the lock was written by a newer spaceport (lock format {version}, this "
                f"version reads up to {LOCK_FORMAT}).", hint="Upgrade spaceport on this node.")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def names(self, copy: WorkCopy) -> bool:
        """Is ``copy`` the working copy this lock was taken for? The path must be the same,
        and the host (a VM, a node) or the marker folder itself (a volume that moved to a new
        pod keeps its inodes; ``cp -a`` makes new ones)."""
        if os.path.abspath(self.work) != copy.path:
            return False
        return self.host == copy.host or bool(self.work_id and self.work_id == copy.work_id)

    def describe(self, beat: "Heartbeat | None" = None) -> str:
        text = (f"host {self.host}, instance {self.instance}, user {self.user}, working copy "
                f"{self.work}, since {self.created}")
        if beat is not None:
            text += f", last heartbeat {beat.time} by its own clock"
        elif self.heartbeat:
            text += f", last heartbeat {self.heartbeat} by its own clock"
        return text + ("" if self.live else ", deployed from the command line")


@dataclass
class Heartbeat:
    """``<status>/heartbeat.<deployment id>``: rewritten by its deployment only."""

    deployment_id: str
    beat: str  # new random text at every beat: a reader sees a change, whatever the clocks
    time: str  # the holder's clock, for a person
    host: str
    pid: int
    boot_id: str | None = None
    pid_ns: str | None = None
    started: str | None = None
    last_save: str | None = None
    format: int = HEARTBEAT_FORMAT

    def process(self) -> ProcessIdentity:
        return ProcessIdentity(self.pid, self.boot_id, self.pid_ns, self.started)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Heartbeat":
        data = json.loads(raw.decode("utf-8", "surrogateescape"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class UnreadableLock:
    """A lock file that exists but cannot be parsed (truncated, corrupted)."""

    file: str
    error: str

    def describe(self, beat=None) -> str:
        return f"an unreadable lock file {self.file} ({self.error})"


AnyLock = "LockInfo | LegacyLock | UnreadableLock"  # LegacyLock: see spaceport.formats.legacy


def parse_lock(rel: str, raw: bytes):
    """The record in a file found at ``lock`` (or moved from there): a spaceport lock, a
    westlife lock, or an unreadable file. A lock of a newer format raises FormatError."""
    try:
        return LockInfo.from_json(raw)
    except FormatError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        legacy = parse_westlife_lock(rel, raw.decode("utf-8", "replace"))
        if legacy:
            return legacy
        return UnreadableLock(rel, "empty" if not raw.strip() else f"{type(exc).__name__}: {exc}")
