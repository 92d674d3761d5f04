"""The deployment lock: at most one live deployment per primary folder.

The lock is a small JSON file, ``<primary>/<status>/lock``, that a person can read. There is
no working ``flock`` across the nodes that mount one OneData space, so the protocol is
borg's and restic's: create the file exclusively, read it back and check our id is in it,
refresh a heartbeat from a background thread, and before every write to the primary read it
back again (fencing). If the lock is gone or replaced we stop writing: there is no safe way
to go on.

The older tools' locks (westlife's ``HOST:``... file in the status folder, CERIT's
``scipion-docker/project.lock``) are recognised in :mod:`spaceport.legacy`; they count as
held, so a migration never races an old deployment.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from . import __version__
from .errors import (FormatError, LockedError, LockLostError, StorageUnavailableError,
                     UsageError)
from .legacy import LegacyLock, read_legacy_lock, set_aside_legacy_lock
from .store.base import DetachedError, Store, join

log = logging.getLogger(__name__)

LOCK_FORMAT = 1
DEFAULT_STATUS_DIR = ".deployment_status_do_not_delete"
LOCK_NAME = "lock"
DEFAULT_STALE_AFTER = 600  # seconds without heartbeat before a lock looks abandoned


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    # Python 3.10's fromisoformat does not accept a trailing "Z".
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def human_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def validate_status_dir(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UsageError(f"invalid status folder name {name!r}: give a single folder name, "
                         f"e.g. {DEFAULT_STATUS_DIR}")
    return name


def default_instance() -> str:
    return os.environ.get("SPACEPORT_INSTANCE") or socket.gethostname()


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


@dataclass
class LockInfo:
    """The content of a spaceport lock file."""

    deployment_id: str
    host: str
    instance: str
    pid: int
    user: str
    primary: str
    work: str
    created: str
    heartbeat: str
    stale_after: int = DEFAULT_STALE_AFTER
    parameters: dict = field(default_factory=dict)
    tool_version: str = __version__
    last_save: str | None = None
    # True when a long-running process (the daemon) keeps the lock and beats its heartbeat.
    # A deployment made from the command line lives on between commands with no process
    # behind it: neither a silent heartbeat nor a gone pid means it is abandoned.
    live: bool = False
    format: int = LOCK_FORMAT

    def to_json(self) -> bytes:
        data = {"format": self.format, **{k: v for k, v in asdict(self).items() if k != "format"}}
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
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def heartbeat_age(self, now: datetime | None = None) -> float:
        return ((now or utcnow()) - parse_iso(self.heartbeat)).total_seconds()

    def stale_reason(self, now: datetime | None = None) -> str | None:
        """Why this lock looks abandoned, or None if its holder may be alive."""
        if not self.live:
            return None
        age = self.heartbeat_age(now)
        if age > self.stale_after:
            return f"no heartbeat for {human_age(age)} (stale after {self.stale_after} s)"
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return f"its process {self.pid} on this host is gone"
        return None

    def describe(self) -> str:
        age = human_age(self.heartbeat_age())
        kind = "" if self.live else " (a command-line deployment: it beats only while a " \
                                    "spaceport command runs)"
        return (f"host {self.host}, instance {self.instance}, pid {self.pid}, user {self.user}, "
                f"since {self.created}, last heartbeat {age} ago{kind}, working copy {self.work}")


@dataclass
class UnreadableLock:
    """A lock file that exists but cannot be parsed (truncated, corrupted)."""

    file: str
    error: str

    def describe(self) -> str:
        return f"an unreadable lock file {self.file} ({self.error})"


AnyLock = LockInfo | LegacyLock | UnreadableLock


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(store: Store, status_dir: str) -> AnyLock | None:
    """The lock currently on the primary, whatever its format; None if there is none."""
    rel = join(status_dir, LOCK_NAME)
    try:
        raw = store.read_bytes(rel)
    except (FileNotFoundError, NotADirectoryError):
        return read_legacy_lock(store, status_dir)  # CERIT's, outside the status folder
    try:
        return LockInfo.from_json(raw)
    except FormatError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        return read_legacy_lock(store, status_dir) or UnreadableLock(
            rel, "empty" if not raw.strip() else f"{type(exc).__name__}: {exc}")


def locked_error(holder: AnyLock, primary: str) -> LockedError:
    stale = holder.stale_reason() if isinstance(holder, LockInfo) else None
    hint = ("Nothing was changed. Undeploy it there first. If that deployment no longer exists, "
            f"make doubly sure, then run: spaceport unlock --force {primary}")
    if stale:
        hint = (f"The lock looks stale: {stale}. Nothing was changed. If that deployment is "
                f"gone, run: spaceport unlock --force {primary} (or deploy with --take-over-stale)")
    return LockedError(f"{primary} is already deployed: held by {holder.describe()}.", hint=hint)


class DeploymentLock:
    """A lock we hold. Every write-side method reads the lock back first (fencing)."""

    def __init__(self, store: Store, status_dir: str, info: LockInfo):
        self.store = store
        self.status_dir = status_dir
        self.info = info
        self._write_lock = threading.Lock()

    @property
    def rel(self) -> str:
        return join(self.status_dir, LOCK_NAME)

    @classmethod
    def acquire(cls, store: Store, status_dir: str, *, deployment_id: str, work: str,
                parameters: dict | None = None, instance: str | None = None,
                stale_after: int = DEFAULT_STALE_AFTER, live: bool = False,
                take_over_stale: bool = False) -> "DeploymentLock":
        """Take the lock for ``deployment_id``, or resume it if it is already ours."""
        store.makedirs(status_dir)
        now = iso(utcnow())
        info = LockInfo(deployment_id=deployment_id, host=socket.gethostname(),
                        instance=instance or default_instance(), pid=os.getpid(),
                        user=current_user(), primary=store.root, work=work, created=now,
                        heartbeat=now, stale_after=stale_after, parameters=parameters or {},
                        live=live)
        holder = read_lock(store, status_dir)
        if isinstance(holder, LockInfo) and holder.deployment_id == deployment_id:
            info.created = holder.created  # resuming our own deployment (restart, re-run)
            info.last_save = holder.last_save
            lock = cls(store, status_dir, info)
            lock.heartbeat()
            return lock
        if holder is not None:
            stale = holder.stale_reason() if isinstance(holder, LockInfo) else None
            if not (take_over_stale and stale):
                raise locked_error(holder, store.root)
            log.warning("taking over a stale lock: %s (%s)", holder.describe(), stale)
            _set_aside(store, status_dir)
        lock = cls(store, status_dir, info)
        lock._create_exclusive()
        return lock

    def _create_exclusive(self) -> None:
        data = self.info.to_json()
        try:
            self.store.create_exclusive(self.rel, data)
        except FileExistsError:
            holder = read_lock(self.store, self.status_dir)
            raise locked_error(holder or UnreadableLock(self.rel, "appeared meanwhile"),
                               self.store.root) from None
        # Read back: on a network filesystem an exclusive create is not a guarantee.
        holder = read_lock(self.store, self.status_dir)
        if not (isinstance(holder, LockInfo) and holder.deployment_id == self.info.deployment_id):
            raise locked_error(holder or UnreadableLock(self.rel, "vanished"), self.store.root)

    def verify(self) -> LockInfo:
        """Fencing: raise LockLostError unless the lock on the primary is still ours."""
        self.store.check_attached()
        try:
            holder = read_lock(self.store, self.status_dir)
        except FormatError as exc:
            raise LockLostError(f"the lock on {self.store.root} is no longer ours: {exc}") from exc
        if isinstance(holder, LockInfo) and holder.deployment_id == self.info.deployment_id:
            return holder
        what = holder.describe() if holder else "it was removed"
        raise LockLostError(
            f"lock lost on {self.store.root}: {what}.",
            hint="Nothing more was written to the primary. Your working copy is untouched. "
                 "Find out who unlocked or took the folder before saving again.")

    def heartbeat(self, **updates) -> None:
        """Refresh the heartbeat (and fields such as last_save): verify, then rewrite."""
        with self._write_lock:
            self.verify()
            for key, value in updates.items():
                setattr(self.info, key, value)
            self.info.heartbeat = iso(utcnow())
            self.info.pid = os.getpid()
            self.store.write_bytes_atomic(self.rel, self.info.to_json())

    def release(self) -> None:
        with self._write_lock:
            self.verify()
            self.store.unlink(self.rel)


def _set_aside(store: Store, status_dir: str) -> None:
    """Move a lock out of the way, keeping it for the record (lock.broken-<time>)."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    try:
        store.rename(join(status_dir, LOCK_NAME), join(status_dir, f"{LOCK_NAME}.broken-{stamp}"))
    except FileNotFoundError:
        pass


def force_unlock(store: Store, status_dir: str) -> AnyLock | None:
    """Remove any lock (after the user confirmed). Returns what was removed."""
    holder = read_lock(store, status_dir)
    if isinstance(holder, LegacyLock):
        set_aside_legacy_lock(store, holder, utcnow().strftime("%Y%m%dT%H%M%SZ"))
    elif holder is not None:
        _set_aside(store, status_dir)
    return holder


class LockKeeper:
    """Refreshes a lock's heartbeat from a background thread while work goes on.

    If the lock is found lost, ``lost`` is set and every later ``check()`` raises, so
    workers stop before their next write. Storage errors are logged and retried at the next
    beat: a flaky mount must not silently give up the lock.
    """

    def __init__(self, lock: DeploymentLock, interval: float | None = None):
        self.lock = lock
        self.interval = interval if interval is not None else max(1.0, lock.info.stale_after / 4)
        self.lost: LockLostError | StorageUnavailableError | None = None
        self.last_error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-heartbeat", daemon=True)

    def __enter__(self) -> "LockKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost:
            raise self.lost

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.lock.heartbeat()
                self.last_error = None
            except LockLostError as exc:
                log.error("%s", exc.message)
                self.lost = exc
                return
            except OSError as exc:
                self.last_error = exc
                log.warning("lock heartbeat failed (%s); will retry", exc)
                if isinstance(exc, DetachedError):
                    # The path leads elsewhere now: nothing written through the old
                    # descriptor would be seen. Stop the writers (exit 6 for them).
                    self.lost = StorageUnavailableError(
                        f"the primary {self.lock.store.root} was unmounted during the work.",
                        hint="Nothing more was written. The working copy and the lock are "
                             "kept; mount the primary again and rerun the command.")
                    return

