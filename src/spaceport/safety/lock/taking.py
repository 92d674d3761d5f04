"""Taking the lock: the record we publish, the way cleared (or refused), the publication.

docs/LOCKING.md, "Acquire": the complete lock is written under a name of our own and
renamed into place without replacing, then read back (on a network filesystem a rename is
not a promise until it is read). Where the storage does not know ``RENAME_NOREPLACE``, the
lock is created with ``O_EXCL`` instead. :meth:`.holding.DeploymentLock.acquire` runs these
steps in order.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import replace
from typing import Callable

from ...clock import iso, utcnow
from ...errors import LockLostError, SpaceportError
from ...hostinfo import ProcessIdentity, current_user, machine_id
from ...store.base import Store, join
from .reading import (
    held_error,
    lock_id,
    locked_error,
    read_lock,
    read_lock_and_identity,
)
from .record import (
    LOCK_FORMAT,
    LOCK_NAME,
    LockInfo,
    UnreadableLock,
    WorkCopy,
    default_instance,
)
from .release import forget, set_aside
from .stale import watch_stale

log = logging.getLogger("spaceport.safety.lock")  # one logger for the whole lock package

# Errors of a rename that does not know RENAME_NOREPLACE (some FUSE servers, NFS).
_NO_NOREPLACE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def new_record(store: Store, work: WorkCopy, *, deployment_id: str, parameters: dict | None,
               instance: str | None, stale_after: int, live: bool) -> LockInfo:
    """The lock this process would publish for ``deployment_id``, naming ``work``."""
    proc = ProcessIdentity.current()
    return LockInfo(deployment_id=deployment_id, host=work.host,
                    instance=instance or default_instance(), user=current_user(),
                    primary=store.root, work=work.path, created=iso(utcnow()),
                    pid=proc.pid, boot_id=proc.boot_id, machine_id=machine_id(),
                    work_id=work.work_id, stale_after=stale_after,
                    parameters=parameters or {}, live=live)


def clear_the_way(store: Store, status_dir: str, holder, *, take_over_stale: bool,
                  on_watch: Callable[[float, float], None] | None) -> None:
    """Another deployment holds the primary: refuse (LockedError, naming it), or, with
    ``take_over_stale``, watch it and set its lock aside if and only if it is stale. A lock
    that changed while we watched is left alone and refused."""
    if not take_over_stale:
        raise held_error(store, status_dir, holder)
    stale = watch_stale(store, status_dir, holder, on_tick=on_watch)
    if not stale:
        raise held_error(store, status_dir, holder) from None
    log.warning("taking over a stale lock: %s (%s)", holder.describe(), stale)
    if set_aside(store, status_dir, holder.deployment_id, why="stale") is None:
        raise locked_error(read_lock(store, status_dir) or holder, store.root)


def refuse_a_copy(store: Store, holder: LockInfo, work: WorkCopy) -> None:
    """Our own deployment's lock, found from ``work``: refused (LockLostError) when ``work``
    is not the working copy the lock names (a copy of it)."""
    if not holder.names(work):
        raise LockLostError(
            f"the lock on {store.root} belongs to the working copy {holder.work} on host "
            f"{holder.host}, not to {work.path} on {work.host}.",
            hint="A copied working copy never becomes a second writer: nothing was "
                 f"written. Work in {holder.work} on {holder.host}, or deploy afresh "
                 "into an empty folder once that deployment is undeployed.")


def format2_record(holder: LockInfo, work: WorkCopy) -> LockInfo:
    """Our format-1 lock as format 2, for this process (the heartbeat moves out of it)."""
    proc = ProcessIdentity.current()
    return replace(holder, format=LOCK_FORMAT, heartbeat=None, last_save=None, pid=proc.pid,
                   boot_id=proc.boot_id, machine_id=machine_id(), work_id=work.work_id)


def _rename_noreplace(store: Store, src: str, dst: str) -> bool:
    """rename(src, dst) without replacing; False where the storage cannot promise that."""
    try:
        store.rename_noreplace(src, dst)
    except OSError as exc:
        if exc.errno in _NO_NOREPLACE:
            return False
        raise
    return True


def publish(store: Store, status_dir: str, info: LockInfo) -> tuple | None:
    """Write the lock under a name of our own, then rename it into place without
    replacing: nobody ever sees a partial lock, and a failure leaves no lock behind.
    Returns the identity of the file read back (what fencing compares with)."""
    data = info.to_json()
    rel = join(status_dir, LOCK_NAME)
    tmp = join(status_dir, f"{LOCK_NAME}.new.{info.deployment_id}")
    try:
        store.unlink(tmp)  # our own leftover from an attempt that was killed
    except FileNotFoundError:
        pass
    try:
        store.create_exclusive(tmp, data)
    except OSError as exc:
        forget(store, tmp)
        raise SpaceportError(
            f"could not write the lock in {store.abspath(status_dir)}: "
            f"{exc.strerror or exc}.",
            hint="Nothing was changed and no lock was left behind. Make room on the "
                 "primary (or fix its permissions), then run the same command again.") from exc
    try:
        published = _rename_noreplace(store, tmp, rel)
    except FileExistsError:
        forget(store, tmp)
        holder = read_lock(store, status_dir)
        raise locked_error(holder or UnreadableLock(rel, "appeared meanwhile"),
                           store.root) from None
    if not published:  # no RENAME_NOREPLACE on this storage: exclusive create instead
        forget(store, tmp)
        _create_in_place(store, status_dir, info.deployment_id, data)
    return read_back(store, status_dir, info.deployment_id)


def _create_in_place(store: Store, status_dir: str, deployment_id: str, data: bytes) -> None:
    rel = join(status_dir, LOCK_NAME)
    try:
        store.create_exclusive(rel, data)
    except FileExistsError:
        holder = read_lock(store, status_dir)
        raise locked_error(holder or UnreadableLock(rel, "appeared meanwhile"),
                           store.root) from None
    except OSError as exc:
        # We created it exclusively a moment ago: a failed write leaves ours, remove it.
        if lock_id(read_lock(store, status_dir)) in (None, deployment_id):
            forget(store, rel)
        raise SpaceportError(f"could not write the lock on {store.root}: "
                             f"{exc.strerror or exc}.",
                             hint="Nothing was changed. Make room on the primary, then "
                                  "run the same command again.") from exc


def read_back(store: Store, status_dir: str, deployment_id: str) -> tuple | None:
    """The identity of our lock as found at ``lock``; LockedError if it is not ours."""
    # On a network filesystem a rename is not a promise until it is read back.
    holder, seen = read_lock_and_identity(store, status_dir)
    if lock_id(holder) != deployment_id:
        raise locked_error(holder or UnreadableLock(join(status_dir, LOCK_NAME), "vanished"),
                           store.root)
    return seen
