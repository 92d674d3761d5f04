"""A lock we hold: taken (or found again), checked before every commit, beaten, released.

The lock file is never rewritten by its holder; the heartbeat is a file of its own. Taking
is the sequence of :mod:`.taking`, giving back is :func:`.release.release_ours`; what stays
here is what a holder does while it holds: fencing reads (:meth:`DeploymentLock.verify`) and
heartbeats.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Callable

from ...clock import iso, utcnow
from ...errors import FormatError, LockLostError
from ...formats.cerit import CERIT_LOCK
from ...formats.statusfile import StatusFileError, named_if_unusable, say_once
from ...hostinfo import ProcessIdentity, hostname
from ...store.base import Store, join
from ...store.retry import commit_gate
from .mirror import keep_mirror, used_by_cerit
from .reading import (
    describe,
    file_identity,
    lock_id,
    read_heartbeat,
    read_lock,
    read_lock_and_identity,
)
from .record import (
    DEFAULT_STALE_AFTER,
    HEARTBEAT_PREFIX,
    LOCK_FORMAT,
    LOCK_NAME,
    Heartbeat,
    LockInfo,
    WorkCopy,
)
from .release import release_ours, set_aside
from .taking import clear_the_way, format2_record, new_record, publish, refuse_a_copy

log = logging.getLogger("spaceport.safety.lock")  # one logger for the whole lock package


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
                take_over_stale: bool = False, cerit: bool = False,
                on_watch: Callable[[float, float], None] | None = None) -> "DeploymentLock":
        """Take the lock for ``deployment_id``, or resume it if it is already ours.

        ``cerit``, or a primary CERIT's app has used: CERIT's lock is kept as a mirror of
        ours (:mod:`.mirror`), taken after ours; a CERIT lock there refuses the deploy."""
        store.makedirs(status_dir)
        info = new_record(store, work, deployment_id=deployment_id, parameters=parameters,
                          instance=instance, stale_after=stale_after, live=live)
        holder = read_lock(store, status_dir)
        if lock_id(holder) == deployment_id:
            lock = cls.resume(store, status_dir, holder, work, info)
            lock.first_beat()  # a new process (a restarted daemon) beats from now on
            lock.keep_mirror()
            return lock
        if holder is not None:
            clear_the_way(store, status_dir, holder, take_over_stale=take_over_stale,
                          on_watch=on_watch)
        if cerit or used_by_cerit(store):
            info.cerit_lock = CERIT_LOCK  # recorded in our lock: the mirror is known as ours
        lock = cls(store, status_dir, info)
        lock._publish()
        lock.first_beat()
        try:
            keep_mirror(store, info, taking=True)
        except BaseException:
            with lock._io:  # CERIT's app holds the project: ours goes again, mirror-less
                release_ours(store, status_dir, deployment_id, lock.verify, mirror=False)
            raise
        return lock

    @classmethod
    def resume(cls, store: Store, status_dir: str, holder: LockInfo, work: WorkCopy,
               fresh: LockInfo | None = None) -> "DeploymentLock":
        """Our own deployment's lock, found again (a re-run, a restarted daemon). Refused
        when ``work`` is not the working copy the lock names (a copy of it)."""
        refuse_a_copy(store, holder, work)
        lock = cls(store, status_dir, holder)
        if holder.format < LOCK_FORMAT:
            lock._migrate(fresh or format2_record(holder, work))
        return lock

    def _publish(self) -> None:
        self._seen = publish(self.store, self.status_dir, self.info)

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
        if st is not None and self._seen is not None and file_identity(st) == self._seen:
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
            write_heartbeat(self.store, self.heartbeat_rel, beat, self.verify)

    def first_beat(self) -> None:
        """The heartbeat of a lock just taken: one that cannot be written is said, and the
        deployment goes on (the lock is ours; the holder says it again at each beat)."""
        try:
            self.heartbeat()
        except StatusFileError as exc:
            say_once(f"{exc.message} {exc.hint}")

    def keep_mirror(self) -> None:
        """CERIT's lock is still our mirror (written again if it was removed); CeritLockTaken
        (exit 4) if CERIT's app holds it. Nothing when this lock keeps no mirror."""
        keep_mirror(self.store, self.info, taking=False)

    # -- giving it back --------------------------------------------------------------
    def release(self) -> None:
        """Remove our lock, and only ours: read it once more (a lock that is not ours is not
        touched), rename it to a name of our own, read what was moved, and unlink it only if
        it is ours. Another's, taken in the instant between, is kept aside as broken. CERIT's
        lock, if we keep it, goes first (see :mod:`.mirror` for why that order)."""
        with self._io:
            release_ours(self.store, self.status_dir, self.info.deployment_id, self.verify,
                         mirror=bool(self.info.cerit_lock))


def write_heartbeat(store: Store, rel: str, beat: Heartbeat,
                    verify: Callable[[], LockInfo]) -> None:
    """Write a holder's heartbeat file; a path that cannot hold it is named with what to do."""
    with named_if_unusable(
            store, rel, "the heartbeat file",
            meaning="this deployment's heartbeat cannot be written. Nothing else depends "
                    "on it here, but other nodes cannot see this deployment beat (a "
                    "daemon's lock then looks stale to them after its stale-after time), "
                    "and status shows no last save.",
            todo="Move what is at {where} out of the status folder (only spaceport "
                 "writes there): the next save, or the daemon's next beat, writes the "
                 "heartbeat anew."):
        # A retried write (a transient error: spaceport.store.retrying) reads the lock
        # again first: the heartbeat is written only while the lock is ours.
        with commit_gate(verify):
            store.write_bytes_atomic(rel, beat.to_json())
