"""CERIT's lock, kept as a mirror of ours: while a deployment holds a primary that CERIT's
app has used (or is told ``--cerit``), ``<primary>/scipion-docker/project.lock`` says so in
a form every CERIT controller reads as "locked" (:mod:`spaceport.formats.cerit`), so that
CERIT's app, started on the same project, refuses it instead of restoring and saving over
it with ``rsync --delete``.

The order (docs/LOCKING.md, "CERIT's lock"):

* taking: spaceport's lock first, then the mirror. A CERIT lock found there (CERIT's app
  holds the project) refuses the deployment, and our lock is released again.
* holding: the mirror is checked at every save. Gone (removed by hand): written again. CERIT's
  own content there (CERIT's app took the project after all): the save stops with exit 4,
  like a lost lock: two apps writing one project is what the lock exists to prevent.
* releasing: the mirror first, then spaceport's lock. Every save is done by then, so a CERIT
  app starting in between finds the project final; and while spaceport's lock is still ours
  no other spaceport deployment can have written a mirror of its own, so the file removed is
  ours (it is read first). The other order would leave, for a moment or after a crash, a
  mirror without its lock: a project refused by everyone, and a mirror a new deployment
  could have made its own in between, which our removal would then take away.

The file is never rewritten while it is ours: it holds no time, nothing in it ages.
"""

from __future__ import annotations

import logging

from ...clock import iso, utcnow
from ...errors import LockedError, LockLostError
from ...formats.cerit import (
    CERIT_DIR,
    CERIT_LOCK,
    SYMLINK_DUMP_NAME,
    Mirror,
    parse_mirror,
)
from ...formats.legacy import parse_cerit_lock
from ...store.base import Store
from .record import LockInfo

log = logging.getLogger("spaceport.safety.lock")  # one logger for the whole lock package


class CeritLockTaken(LockLostError):
    """CERIT's app holds the project we hold: its own lock is where our mirror was."""

    def __init__(self, message: str, holder: str, **kwargs):
        super().__init__(message, **kwargs)
        self.holder = holder


def used_by_cerit(store: Store) -> bool:
    """Has CERIT's app used this primary? (Its folder or its link list is there.)"""
    return store.exists(CERIT_DIR) or store.exists(SYMLINK_DUMP_NAME)


def mirror_of(info: LockInfo) -> Mirror:
    return Mirror(info.deployment_id, info.host, info.instance, info.created or iso(utcnow()))


def _read(store: Store) -> bytes | None:
    try:
        return store.read_bytes(CERIT_LOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        return b"(a folder)"  # never ours, never free


def keep_mirror(store: Store, info: LockInfo, *, taking: bool) -> None:
    """Make sure CERIT's lock on ``store`` is our mirror (written if missing). CERIT's own
    lock there: LockedError while ``taking`` (nothing was written), CeritLockTaken (exit 4)
    while holding. A mirror of another spaceport deployment is replaced: we hold spaceport's
    lock, so that deployment does not any more (taken over as stale, or unlocked by force)."""
    if not info.cerit_lock:
        return
    raw = _read(store)
    mine = mirror_of(info)
    if raw is not None:
        found = parse_mirror(raw)
        if found is not None and found.deployment_id == info.deployment_id:
            return
        if found is None:
            _refuse(store, raw, taking)
        log.warning("CERIT's lock on %s was %s, whose spaceport lock is gone; it now names "
                    "this deployment", store.root, found.describe())
        store.write_bytes_atomic(CERIT_LOCK, mine.to_bytes())
        return
    store.makedirs(CERIT_DIR)
    try:
        store.create_exclusive(CERIT_LOCK, mine.to_bytes())
    except FileExistsError:  # CERIT's app, in this very instant
        raw = _read(store) or b""
        found = parse_mirror(raw)
        if found is None or found.deployment_id != info.deployment_id:
            _refuse(store, raw, taking)
        return
    if not taking:
        log.warning("CERIT's lock on %s was gone (removed by hand?); it is written again, "
                    "naming this deployment", store.root)


def _refuse(store: Store, raw: bytes, taking: bool):
    holder = parse_cerit_lock(CERIT_LOCK, raw).describe()
    if taking:
        raise LockedError(f"{store.root} is in use by CERIT's app: {holder}.",
                          hint="Nothing was copied, and spaceport's own lock was released "
                               "again. Stop that app first (it removes its lock when it ends).")
    raise CeritLockTaken(
        f"CERIT's app took {store.root} while this deployment holds it: {holder}.",
        holder=holder,
        hint="Nothing more was written to the primary; the working copy is untouched. Two "
             "apps now work on one project: stop CERIT's app, then save this copy again.")


def drop_mirror(store: Store, deployment_id: str) -> None:
    """Remove CERIT's lock if it is the mirror of ``deployment_id`` (read first: anything
    else there is left alone, and said). Called while spaceport's lock is still ours, so no
    other deployment can have put a mirror there meanwhile; CERIT's controllers never write
    over a file they read as locked."""
    raw = _read(store)
    if raw is None:
        return
    found = parse_mirror(raw)
    if found is None or found.deployment_id != deployment_id:
        log.warning("CERIT's lock on %s is not this deployment's mirror (%s); it is left as "
                    "it is", store.root, parse_cerit_lock(CERIT_LOCK, raw).describe())
        return
    try:
        store.unlink(CERIT_LOCK)
    except FileNotFoundError:
        pass


def forget_mirror_of(store: Store, removed) -> None:
    """After a lock was set aside (unlock, forced or stale): its mirror goes too, so CERIT's
    app and spaceport do not keep refusing a project nobody holds."""
    if isinstance(removed, LockInfo) and removed.cerit_lock:
        drop_mirror(store, removed.deployment_id)
