"""The deployment lock: at most one deployment writes a primary folder.

The storage (OneData over FUSE, or any folder) offers exclusive create, rename, rename
without replace, and unlink: no compare-and-swap, no ``flock`` across nodes. docs/LOCKING.md
gives the protocol, what it guarantees and what no protocol can guarantee there; the model
in docs/lock-model/ checks it. In short:

* ``<status>/lock`` is published once, complete (written under a name of our own, then
  renamed into place without replacing), read back, and then never rewritten by its holder.
* The heartbeat lives beside it, in ``<status>/heartbeat.<deployment id>``, which only that
  deployment writes. A reader judges staleness by watching that file stop changing on its own
  monotonic clock, never by comparing clocks or pids across hosts.
* Release reads the lock once more, renames it to a name of our own and reads what it moved
  before deleting it, so it never deletes a lock another deployment took meanwhile; such a
  lock is kept aside as broken, never put back (putting it back breaks fencing: the model
  shows how).
* Writers are fenced by :class:`spaceport.safety.fence.Fence`.

Format-1 locks (written by spaceport 0.1, heartbeat inside the lock) count as held; the
deployment that owns one migrates it at its next deploy or save. Locks of the older tools
count as held too: :mod:`spaceport.formats.legacy` recognises westlife's ``<status>/lock`` and CERIT's
``scipion-docker/project.lock``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from .. import __version__
from ..clock import iso, stamp, utcnow
from ..errors import (
    FormatError,
    LockedError,
    LockLostError,
    SpaceportError,
    StorageUnavailableError,
    UsageError,
)
from ..formats.legacy import (
    LegacyLock,
    parse_westlife_lock,
    read_legacy_lock,
    set_aside_legacy_lock,
)
from ..hostinfo import ProcessIdentity, current_user, hostname, machine_id
from ..store.base import DetachedError, Store, join
from ..wording import duration, quote

log = logging.getLogger(__name__)

LOCK_FORMAT = 2
HEARTBEAT_FORMAT = 1
DEFAULT_STATUS_DIR = ".deployment_status_do_not_delete"
LOCK_NAME = "lock"
HEARTBEAT_PREFIX = "heartbeat."
DEFAULT_STALE_AFTER = 600  # seconds without a heartbeat change before a lock looks abandoned
# Errors of a rename that does not know RENAME_NOREPLACE (some FUSE servers, NFS).
_NO_NOREPLACE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


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


def _parse_lock(rel: str, raw: bytes):
    try:
        return LockInfo.from_json(raw)
    except FormatError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        legacy = parse_westlife_lock(rel, raw.decode("utf-8", "replace"))
        if legacy:
            return legacy
        return UnreadableLock(rel, "empty" if not raw.strip() else f"{type(exc).__name__}: {exc}")


def read_lock(store: Store, status_dir: str):
    """The lock currently on the primary, whatever its format (a spaceport lock, an old
    tool's, an unreadable file); None if there is none."""
    rel = join(status_dir, LOCK_NAME)
    try:
        raw = store.read_bytes(rel)
    except (FileNotFoundError, NotADirectoryError):
        return read_legacy_lock(store, status_dir)  # CERIT's, outside the status folder
    return _parse_lock(rel, raw)


def describe(holder, beat: "Heartbeat | None" = None) -> str:
    return holder.describe(beat) if isinstance(holder, LockInfo) else holder.describe()


def _identity(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_lock_and_identity(store: Store, status_dir: str):
    """read_lock for ``lock`` itself, with the identity of the file read (from its fd)."""
    rel = join(status_dir, LOCK_NAME)
    try:
        fd = store.open_read(rel)
    except (FileNotFoundError, NotADirectoryError):
        return read_lock(store, status_dir), None  # no spaceport lock: maybe an old tool's
    try:
        seen = _identity(os.fstat(fd))
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return _parse_lock(rel, b"".join(chunks)), seen


def read_heartbeat(store: Store, status_dir: str, deployment_id: str) -> Heartbeat | None:
    try:
        raw = store.read_bytes(join(status_dir, HEARTBEAT_PREFIX + deployment_id))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return Heartbeat.from_json(raw)
    except (ValueError, TypeError):
        return None  # torn by a crash mid-write on a store without atomic rename: no beat


def _signal(store: Store, status_dir: str, holder) -> bytes | None:
    """What changes while the holder lives: its heartbeat file (format 2), or the lock
    itself (format 1 beat inside it)."""
    name = HEARTBEAT_PREFIX + holder.deployment_id if holder.format >= 2 else LOCK_NAME
    try:
        return store.read_bytes(join(status_dir, name))
    except FileNotFoundError:
        return None


def lock_id(holder) -> str | None:
    return holder.deployment_id if isinstance(holder, LockInfo) else None


def locked_error(holder, primary: str, beat: Heartbeat | None = None,
                 stale: str | None = None) -> LockedError:
    hint = ("Nothing was changed. Undeploy it there first. If that deployment no longer exists, "
            f"make doubly sure, then run: spaceport unlock --force {primary}")
    if stale:
        hint = (f"The lock looks stale: {stale}. Nothing was changed. If that deployment is "
                f"gone, run: spaceport unlock {primary} (or deploy with --take-over-stale)")
    return LockedError(f"{primary} is already deployed: held by {describe(holder, beat)}.",
                       hint=hint)


def held_error(store: Store, status_dir: str, holder) -> LockedError:
    """The refusal for a primary held by ``holder``, with its last heartbeat."""
    beat = read_heartbeat(store, status_dir, holder.deployment_id) \
        if isinstance(holder, LockInfo) else None
    return locked_error(holder, store.root, beat)


def provably_gone(store: Store, status_dir: str, holder) -> str | None:
    """Why a live lock's process is known dead without waiting, or None."""
    if not (isinstance(holder, LockInfo) and holder.live and holder.format >= 2):
        return None
    beat = read_heartbeat(store, status_dir, holder.deployment_id)
    return beat.process().gone_reason() if beat else None


def watch_stale(store: Store, status_dir: str, holder, *,
                on_tick: Callable[[float, float], None] | None = None,
                poll: float | None = None) -> str | None:
    """Why ``holder`` is abandoned, judged on our own clock; None if it may be alive.

    A lock kept by a command-line deployment is never stale (no process beats it between
    commands). A daemon's lock is stale when its process is provably gone on this very
    machine, or when its heartbeat did not change for ``stale_after`` seconds while we
    watched. ``on_tick(elapsed, total)`` reports the watch for a progress bar.
    """
    if not (isinstance(holder, LockInfo) and holder.live):
        return None
    gone = provably_gone(store, status_dir, holder)
    if gone:
        return gone
    total = float(holder.stale_after)
    poll = poll if poll is not None else min(5.0, max(0.2, total / 20))
    first = _signal(store, status_dir, holder)
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if on_tick:
            on_tick(min(elapsed, total), total)
        if elapsed >= total:
            return f"its heartbeat did not change for {duration(total)} while watched"
        time.sleep(min(poll, total - elapsed))
        if lock_id(read_lock(store, status_dir)) != holder.deployment_id:
            return None  # released or taken meanwhile: not this holder's lock any more
        if _signal(store, status_dir, holder) != first:
            return None


def _rename_noreplace(store: Store, src: str, dst: str) -> bool:
    """rename(src, dst) without replacing; False where the storage cannot promise that."""
    try:
        store.rename_noreplace(src, dst)
    except OSError as exc:
        if exc.errno in _NO_NOREPLACE:
            return False
        raise
    return True


def _keep_broken(store: Store, status_dir: str, held: str, moved) -> None:
    """A record we moved out of ``lock`` that is not the one we meant to remove: it never
    goes back (giving it back lets its owner commit without bound after a third deployment
    came and went: docs/lock-model/, finding 1). It is kept as a broken lock; its owner is
    fenced at its next check and must deploy again."""
    aside = join(status_dir, f"{LOCK_NAME}.broken-{stamp()}-{secrets.token_hex(3)}")
    store.rename(held, aside)
    log.error("the lock of another deployment (%s) was taken meanwhile and moved by mistake; "
              "it is kept as %s and that deployment must deploy again", describe(moved), aside)


def set_aside(store: Store, status_dir: str, expected: str | None = None, *,
              why: str = "broken"):
    """Move the lock out of the way as ``lock.<why>-<time>-<random>`` and return what was
    moved (read after the move, so a report never names another lock than the one removed).

    With ``expected`` (a deployment id), only that deployment's lock is meant: the lock is
    read again just before the move and left alone if it is another's (None is returned);
    if another's was moved all the same (taken in the instant between), it is kept aside as
    broken, never put back, and None is returned.
    """
    lock_rel = join(status_dir, LOCK_NAME)
    if expected is not None and lock_id(read_lock(store, status_dir)) != expected:
        return None
    aside = join(status_dir, f"{LOCK_NAME}.{why}-{stamp()}-{secrets.token_hex(3)}")
    try:
        store.rename(lock_rel, aside)
    except FileNotFoundError:
        return None
    moved = _parse_lock(aside, store.read_bytes(aside))
    if expected is not None and lock_id(moved) != expected:
        _keep_broken(store, status_dir, aside, moved)
        return None
    return moved


def force_unlock(store: Store, status_dir: str):
    """Remove any lock (after the user confirmed). Returns what was removed."""
    removed = set_aside(store, status_dir)
    if isinstance(removed, LegacyLock):  # a westlife lock: keep the old tool's naming
        return removed
    if removed is not None:
        return removed
    legacy = read_legacy_lock(store, status_dir)  # CERIT's, outside the status folder
    if legacy is not None:
        set_aside_legacy_lock(store, legacy, stamp())
    return legacy


class DeploymentLock:
    """A lock we hold. The lock file is never rewritten; the heartbeat is our own file."""

    def __init__(self, store: Store, status_dir: str, info: LockInfo):
        self.store = store
        self.status_dir = status_dir
        self.info = info
        self.last_save: str | None = info.last_save
        self._beaten = False
        self._seen: tuple | None = None  # identity of the lock file last read and found ours
        self._io = threading.Lock()

    @property
    def rel(self) -> str:
        return join(self.status_dir, LOCK_NAME)

    @property
    def heartbeat_rel(self) -> str:
        return join(self.status_dir, HEARTBEAT_PREFIX + self.info.deployment_id)

    # -- taking it -----------------------------------------------------------------
    @classmethod
    def acquire(cls, store: Store, status_dir: str, *, deployment_id: str, work: WorkCopy,
                parameters: dict | None = None, instance: str | None = None,
                stale_after: int = DEFAULT_STALE_AFTER, live: bool = False,
                take_over_stale: bool = False,
                on_watch: Callable[[float, float], None] | None = None) -> "DeploymentLock":
        """Take the lock for ``deployment_id``, or resume it if it is already ours."""
        store.makedirs(status_dir)
        proc = ProcessIdentity.current()
        info = LockInfo(deployment_id=deployment_id, host=work.host,
                        instance=instance or default_instance(), user=current_user(),
                        primary=store.root, work=work.path, created=iso(utcnow()),
                        pid=proc.pid, boot_id=proc.boot_id, machine_id=machine_id(),
                        work_id=work.work_id, stale_after=stale_after,
                        parameters=parameters or {}, live=live)
        holder = read_lock(store, status_dir)
        if lock_id(holder) == deployment_id:
            lock = cls.resume(store, status_dir, holder, work, info)
            lock.heartbeat()  # a new process (a restarted daemon) beats from now on
            return lock
        if holder is not None:
            if not take_over_stale:
                raise locked_error(holder, store.root, cls._beat_of(store, status_dir, holder))
            stale = watch_stale(store, status_dir, holder, on_tick=on_watch)
            if not stale:
                raise locked_error(holder, store.root,
                                   cls._beat_of(store, status_dir, holder)) from None
            log.warning("taking over a stale lock: %s (%s)", holder.describe(), stale)
            if set_aside(store, status_dir, holder.deployment_id, why="stale") is None:
                raise locked_error(read_lock(store, status_dir) or holder, store.root)
        lock = cls(store, status_dir, info)
        lock._publish()
        lock.heartbeat()
        return lock

    @classmethod
    def resume(cls, store: Store, status_dir: str, holder: LockInfo, work: WorkCopy,
               fresh: LockInfo | None = None) -> "DeploymentLock":
        """Our own deployment's lock, found again (a re-run, a restarted daemon). Refused
        when ``work`` is not the working copy the lock names (a copy of it)."""
        if not holder.names(work):
            raise LockLostError(
                f"the lock on {store.root} belongs to the working copy {holder.work} on host "
                f"{holder.host}, not to {work.path} on {work.host}.",
                hint="A copied working copy never becomes a second writer: nothing was "
                     f"written. Work in {holder.work} on {holder.host}, or deploy afresh "
                     "into an empty folder once that deployment is undeployed.")
        lock = cls(store, status_dir, holder)
        if holder.format < LOCK_FORMAT:
            proc = ProcessIdentity.current()
            lock._migrate(fresh or replace(
                holder, format=LOCK_FORMAT, heartbeat=None, last_save=None, pid=proc.pid,
                boot_id=proc.boot_id, machine_id=machine_id(), work_id=work.work_id))
        return lock

    @staticmethod
    def _beat_of(store, status_dir, holder) -> Heartbeat | None:
        if isinstance(holder, LockInfo):
            return read_heartbeat(store, status_dir, holder.deployment_id)
        return None

    def _publish(self) -> None:
        """Write the lock under a name of our own, then rename it into place without
        replacing: nobody ever sees a partial lock, and a failure leaves no lock behind."""
        data = self.info.to_json()
        tmp = join(self.status_dir, f"{LOCK_NAME}.new.{self.info.deployment_id}")
        try:
            self.store.unlink(tmp)  # our own leftover from an attempt that was killed
        except FileNotFoundError:
            pass
        try:
            self.store.create_exclusive(tmp, data)
        except OSError as exc:
            self._forget(tmp)
            raise SpaceportError(
                f"could not write the lock in {self.store.abspath(self.status_dir)}: "
                f"{exc.strerror or exc}.",
                hint="Nothing was changed and no lock was left behind. Make room on the "
                     "primary (or fix its permissions), then run the same command again.") from exc
        try:
            published = _rename_noreplace(self.store, tmp, self.rel)
        except FileExistsError:
            self._forget(tmp)
            holder = read_lock(self.store, self.status_dir)
            raise locked_error(holder or UnreadableLock(self.rel, "appeared meanwhile"),
                               self.store.root) from None
        if not published:  # no RENAME_NOREPLACE on this storage: exclusive create instead
            self._forget(tmp)
            self._create_in_place(data)
        self._read_back()

    def _create_in_place(self, data: bytes) -> None:
        try:
            self.store.create_exclusive(self.rel, data)
        except FileExistsError:
            holder = read_lock(self.store, self.status_dir)
            raise locked_error(holder or UnreadableLock(self.rel, "appeared meanwhile"),
                               self.store.root) from None
        except OSError as exc:
            # We created it exclusively a moment ago: a failed write leaves ours, remove it.
            if lock_id(read_lock(self.store, self.status_dir)) in (None, self.info.deployment_id):
                self._forget(self.rel)
            raise SpaceportError(f"could not write the lock on {self.store.root}: "
                                 f"{exc.strerror or exc}.",
                                 hint="Nothing was changed. Make room on the primary, then "
                                      "run the same command again.") from exc

    def _read_back(self) -> None:
        # On a network filesystem a rename is not a promise until it is read back.
        holder, self._seen = read_lock_and_identity(self.store, self.status_dir)
        if lock_id(holder) != self.info.deployment_id:
            raise locked_error(holder or UnreadableLock(self.rel, "vanished"), self.store.root)

    def _forget(self, rel: str) -> None:
        try:
            self.store.unlink(rel)
        except OSError:
            pass

    def _migrate(self, fresh: LockInfo) -> None:
        """Replace our own format-1 lock by a format-2 one: moved aside under a name of our
        own (a lock taken meanwhile is kept aside, never put back), then published anew without
        replace."""
        if set_aside(self.store, self.status_dir, self.info.deployment_id,
                     why="format1") is None:
            self.verify()  # raises: not ours any more
        fresh.created = self.info.created
        self.info = fresh
        self.last_save = self.last_save or fresh.last_save
        self._publish()
        log.info("migrated the lock on %s to format %d", self.store.root, LOCK_FORMAT)

    # -- holding it ----------------------------------------------------------------
    def verify(self) -> LockInfo:
        """Fencing: raise LockLostError unless the lock on the primary is still ours.

        The holder never rewrites its lock, so while the file found at ``lock`` is the very
        one we read back (same inode, size, mtime and ctime), it is ours: one stat instead
        of open, read and close (each a round trip on OneData). Any other file is read."""
        self.store.check_attached()
        try:
            st = self.store.lstat(self.rel)
        except FileNotFoundError:
            st = None
        if st is not None and self._seen is not None and _identity(st) == self._seen:
            return self.info
        try:
            holder, seen = read_lock_and_identity(self.store, self.status_dir)
        except FormatError as exc:
            raise LockLostError(f"the lock on {self.store.root} is no longer ours: {exc}") from exc
        if lock_id(holder) == self.info.deployment_id:
            self._seen = seen
            return holder
        self._seen = None
        what = describe(holder) if holder else "it was removed"
        raise LockLostError(
            f"lock lost on {self.store.root}: {what}.",
            hint="Nothing more was written to the primary after this check. Your working copy "
                 "is untouched. Find out who unlocked or took the folder before saving again.")

    def heartbeat(self, **updates) -> None:
        """Verify the lock is ours, then rewrite our heartbeat file (never the lock)."""
        with self._io:
            self.verify()
            if "last_save" in updates:
                self.last_save = updates["last_save"]
            elif not self._beaten and self.last_save is None:
                # A new holder object of a running deployment: keep the last save it recorded.
                old = read_heartbeat(self.store, self.status_dir, self.info.deployment_id)
                self.last_save = old.last_save if old else None
            self._beaten = True
            proc = ProcessIdentity.current()
            beat = Heartbeat(self.info.deployment_id, secrets.token_hex(8), iso(utcnow()),
                             hostname(), proc.pid, proc.boot_id, proc.pid_ns, proc.started,
                             self.last_save)
            self.store.write_bytes_atomic(self.heartbeat_rel, beat.to_json())

    def release(self) -> None:
        """Remove our lock, and only ours: read it once more (a lock that is not ours is not
        touched), rename it to a name of our own, read what was moved, and unlink it only if
        it is ours. Another's, taken in the instant between, is kept aside as broken."""
        with self._io:
            self.verify()  # raises, touching nothing, if the lock is not ours
            mine = join(self.status_dir, f"{LOCK_NAME}.release.{self.info.deployment_id}")
            try:
                self.store.rename(self.rel, mine)
            except FileNotFoundError:
                self.verify()  # raises LockLostError: there is no lock at all
            moved = _parse_lock(mine, self.store.read_bytes(mine))
            if lock_id(moved) != self.info.deployment_id:
                _keep_broken(self.store, self.status_dir, mine, moved)
                raise LockLostError(
                    f"lock lost on {self.store.root}: {describe(moved)} took it just before "
                    "this release.",
                    hint="That lock was set aside as lock.broken-…, not deleted; its "
                         "deployment is stopped at its next check and must deploy again. "
                         "Your working copy is untouched.")
            self.store.unlink(mine)
            self._forget(self.heartbeat_rel)


class LockKeeper:
    """Beats a lock's heartbeat from a background thread while work goes on.

    If the lock is found lost, ``lost`` is set and every later ``check()`` raises, so
    workers stop before their next write. Storage errors are logged and retried at the next
    beat: a flaky mount must not silently give up the lock.
    """

    def __init__(self, lock: DeploymentLock, interval: float | None = None,
                 fence=None):
        self.lock = lock
        self.interval = interval if interval is not None else max(1.0, lock.info.stale_after / 4)
        self.fence = fence
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
        if self.fence is not None:
            self.fence.check()

    def _run(self) -> None:
        # With a fence (a save at work) the lock is read every second, commits or not, and
        # the heartbeat file is written every ``interval``.
        tick = min(self.interval, self.fence.max_age) if self.fence else self.interval
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval
                    self.lock.heartbeat()
                else:
                    self.fence.refresh()
                self.last_error = None
            except LockLostError as exc:
                log.error("%s", exc.message)
                self._lose(exc)
                return
            except OSError as exc:
                self.last_error = exc
                log.warning("lock heartbeat failed (%s); will retry", exc)
                if isinstance(exc, DetachedError):
                    # The path leads elsewhere now: nothing written through the old
                    # descriptor would be seen. Stop the writers (exit 6 for them).
                    self._lose(StorageUnavailableError(
                        f"the primary {self.lock.store.root} was unmounted during the work.",
                        hint="Nothing more was written. The working copy and the lock are "
                             "kept; mount the primary again and rerun the command."))
                    return

    def _lose(self, exc) -> None:
        self.lost = exc
        if self.fence is not None:
            self.fence.lose(exc)
