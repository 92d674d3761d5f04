"""Reading the lock on a primary, and the refusal that names its holder.

A reader takes whatever is at ``<status>/lock`` (a spaceport lock of any format, an old
tool's, an unreadable file), or CERIT's lock outside the status folder
(:mod:`spaceport.formats.legacy`), and says who holds it.
"""

from __future__ import annotations

import os

from ...errors import LockedError
from ...formats.legacy import read_legacy_lock
from ...formats.statusfile import is_status_file_problem, say_once, what_is_wrong
from ...store.base import Store, join
from .record import (
    HEARTBEAT_PREFIX,
    LOCK_NAME,
    Heartbeat,
    LockInfo,
    UnreadableLock,
    parse_lock,
)


def read_lock(store: Store, status_dir: str):
    """The lock currently on the primary, whatever its format (a spaceport lock, an old
    tool's, an unreadable file); None if there is none."""
    rel = join(status_dir, LOCK_NAME)
    try:
        raw = store.read_bytes(rel)
    except (FileNotFoundError, NotADirectoryError):
        return read_legacy_lock(store, status_dir)  # CERIT's, outside the status folder
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        return UnreadableLock(rel, "it " + what_is_wrong(exc))
    return parse_lock(rel, raw)


def read_moved(store: Store, rel: str):
    """The record in a file moved out of ``lock`` (to ``rel``): whatever it is, a folder
    or an unreadable file included, said as an unreadable lock rather than raised."""
    try:
        return parse_lock(rel, store.read_bytes(rel))
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        return UnreadableLock(rel, "it " + what_is_wrong(exc))


def describe(holder, beat: "Heartbeat | None" = None) -> str:
    return holder.describe(beat) if isinstance(holder, LockInfo) else holder.describe()


def file_identity(st: os.stat_result) -> tuple:
    """What tells one lock file from another without reading it: the holder never rewrites
    its lock, so the same inode, size, mtime and ctime mean the same file."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_lock_and_identity(store: Store, status_dir: str):
    """read_lock for ``lock`` itself, with the identity of the file read (from its fd)."""
    rel = join(status_dir, LOCK_NAME)
    try:
        raw, st = store.read_file(rel)
    except (FileNotFoundError, NotADirectoryError):
        return read_lock(store, status_dir), None  # no spaceport lock: maybe an old tool's
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        return UnreadableLock(rel, "it " + what_is_wrong(exc)), None
    return parse_lock(rel, raw), file_identity(st)


def read_heartbeat(store: Store, status_dir: str, deployment_id: str) -> Heartbeat | None:
    """The heartbeat of ``deployment_id``; None if there is none, or none can be read (a
    folder in its place: said in the log, and by the holder when it cannot beat)."""
    rel = join(status_dir, HEARTBEAT_PREFIX + deployment_id)
    try:
        raw = store.read_bytes(rel)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        where = store.abspath(rel) if hasattr(store, "abspath") else rel
        say_once(f"the heartbeat file {where} {what_is_wrong(exc)}: it is read as no "
                 "heartbeat")
        return None
    try:
        return Heartbeat.from_json(raw)
    except (ValueError, TypeError):
        return None  # torn by a crash mid-write on a store without atomic rename: no beat


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
