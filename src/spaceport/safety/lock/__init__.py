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
count as held too: :mod:`spaceport.formats.legacy` recognises westlife's ``<status>/lock``
and CERIT's ``scipion-docker/project.lock``.

One module per part, in the order a reader meets them:

``record``   what the files say: LockInfo, Heartbeat, WorkCopy, their JSON, the names
``reading``  reading the lock and heartbeat on a primary; the refusal naming the holder
``stale``    is a holder gone? (its process provably dead, or its heartbeat silent)
``release``  a lock leaving ``lock``: our release, a set-aside, a forced unlock
``taking``   publishing a lock: the record, the way cleared or refused, the read-back
``holding``  DeploymentLock: a lock we hold (take, verify, heartbeat, release)
``keeper``   LockKeeper: heartbeats from a thread while a command works
``mirror``   CERIT's lock kept as a mirror of ours, for CERIT's own app
"""

from .holding import DeploymentLock
from .keeper import LockKeeper
from .mirror import CeritLockTaken, forget_mirror_of, used_by_cerit
from .reading import (
    describe,
    held_error,
    lock_id,
    locked_error,
    read_heartbeat,
    read_lock,
    read_lock_and_identity,
)
from .record import (
    DEFAULT_STALE_AFTER,
    DEFAULT_STATUS_DIR,
    HEARTBEAT_FORMAT,
    HEARTBEAT_PREFIX,
    LOCK_FORMAT,
    LOCK_NAME,
    AnyLock,
    Heartbeat,
    LockInfo,
    UnreadableLock,
    WorkCopy,
    default_instance,
    validate_status_dir,
)
from .release import force_unlock, set_aside
from .stale import alive_here, provably_gone, watch_stale

__all__ = [
    "CeritLockTaken", "forget_mirror_of", "used_by_cerit",
    "DEFAULT_STALE_AFTER", "DEFAULT_STATUS_DIR", "HEARTBEAT_FORMAT", "HEARTBEAT_PREFIX",
    "LOCK_FORMAT", "LOCK_NAME", "AnyLock", "DeploymentLock", "Heartbeat", "LockInfo",
    "LockKeeper", "UnreadableLock", "WorkCopy", "alive_here", "default_instance", "describe",
    "force_unlock", "held_error", "lock_id", "locked_error", "provably_gone", "read_heartbeat",
    "read_lock", "read_lock_and_identity", "set_aside", "validate_status_dir", "watch_stale",
]
