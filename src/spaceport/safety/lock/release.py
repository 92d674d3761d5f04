"""A lock leaving ``<status>/lock``: our own release, a set-aside, a forced unlock.

Each one renames the lock to a name of its own and reads what it moved before deciding
anything, so it never deletes or reports a lock another deployment took meanwhile
(docs/LOCKING.md, "Release", "Forced unlock", "Stale takeover"). A record moved by mistake
is kept aside as broken, never put back: giving it back breaks fencing (docs/lock-model/,
finding 1).
"""

from __future__ import annotations

import logging
import secrets
from typing import Callable

from ...clock import stamp
from ...errors import LockLostError
from ...formats.legacy import LegacyLock, read_legacy_lock, set_aside_legacy_lock
from ...store.base import Store, join
from .mirror import drop_mirror, forget_mirror_of
from .reading import describe, lock_id, read_lock, read_moved
from .record import HEARTBEAT_PREFIX, LOCK_NAME

log = logging.getLogger("spaceport.safety.lock")  # one logger for the whole lock package


def forget(store: Store, rel: str) -> None:
    """Remove a file of our own; one already gone, or a failure, is not worth a report."""
    try:
        store.unlink(rel)
    except OSError:
        pass


def keep_broken(store: Store, status_dir: str, held: str, moved) -> None:
    """A record we moved out of ``lock`` that is not the one we meant to remove: it never
    goes back (giving it back lets its owner commit without bound after a third deployment
    came and went: docs/lock-model/, finding 1). It is kept as a broken lock; its owner is
    fenced at its next check and must deploy again."""
    aside = join(status_dir, f"{LOCK_NAME}.broken-{stamp()}-{secrets.token_hex(3)}")
    store.rename(held, aside)
    log.error("the lock of another deployment (%s) was taken meanwhile and moved by mistake; "
              "it is kept as %s and that deployment must deploy again", describe(moved), aside)


def release_ours(store: Store, status_dir: str, deployment_id: str,
                 verify: Callable[[], object], *, mirror: bool = False) -> None:
    """Remove our lock, and only ours: read it once more (``verify`` raises LockLostError,
    touching nothing, if the lock is not ours), rename it to a name of our own, read what
    was moved, and unlink it only if it is ours. Another's, taken in the instant between, is
    kept aside as broken. Our heartbeat file goes with our lock. ``mirror``: CERIT's lock,
    kept as our mirror, is removed first, while our lock still holds (:mod:`.mirror`)."""
    verify()  # raises, touching nothing, if the lock is not ours
    if mirror:
        drop_mirror(store, deployment_id)
    mine = join(status_dir, f"{LOCK_NAME}.release.{deployment_id}")
    try:
        store.rename(join(status_dir, LOCK_NAME), mine)
    except FileNotFoundError:
        verify()  # raises LockLostError: there is no lock at all
    moved = read_moved(store, mine)
    if lock_id(moved) != deployment_id:
        keep_broken(store, status_dir, mine, moved)
        raise LockLostError(
            f"lock lost on {store.root}: {describe(moved)} took it just before "
            "this release.",
            hint="That lock was set aside as lock.broken-…, not deleted; its "
                 "deployment is stopped at its next check and must deploy again. "
                 "Your working copy is untouched.")
    store.unlink(mine)
    forget(store, join(status_dir, HEARTBEAT_PREFIX + deployment_id))


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
    moved = read_moved(store, aside)
    if expected is not None and lock_id(moved) != expected:
        keep_broken(store, status_dir, aside, moved)
        return None
    return moved


def force_unlock(store: Store, status_dir: str):
    """Remove any lock (after the user confirmed). Returns what was removed."""
    removed = set_aside(store, status_dir)
    if isinstance(removed, LegacyLock):  # a westlife lock: keep the old tool's naming
        return removed
    if removed is not None:
        forget_mirror_of(store, removed)  # its CERIT lock goes with it
        return removed
    legacy = read_legacy_lock(store, status_dir)  # CERIT's, outside the status folder
    if legacy is not None:
        set_aside_legacy_lock(store, legacy, stamp())
    return legacy
