"""Staleness without trusting clocks: is a lock's holder gone?

docs/LOCKING.md, "Staleness without trusting clocks". A lock taken from the command line is
never stale. A daemon's lock is stale when its process is provably gone on this very
machine (same boot, same pid namespace), or when its heartbeat did not change for
``stale_after`` seconds while we watched, on our own monotonic clock: the holder's clock is
never compared with ours.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from ...formats.statusfile import is_status_file_problem
from ...store.base import Store, join
from ...wording import duration
from .reading import lock_id, read_heartbeat, read_lock
from .record import HEARTBEAT_PREFIX, LOCK_NAME, Heartbeat, LockInfo


def _signal(store: Store, status_dir: str, holder) -> bytes | None:
    """What changes while the holder lives: its heartbeat file (format 2), or the lock
    itself (format 1 beat inside it)."""
    name = HEARTBEAT_PREFIX + holder.deployment_id if holder.format >= 2 else LOCK_NAME
    try:
        return store.read_bytes(join(status_dir, name))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        return None  # a folder in its place does not beat


def provably_gone(store: Store, status_dir: str, holder) -> str | None:
    """Why a live lock's process is known dead without waiting, or None."""
    if not (isinstance(holder, LockInfo) and holder.live and holder.format >= 2):
        return None
    beat = read_heartbeat(store, status_dir, holder.deployment_id)
    return beat.process().gone_reason() if beat else None


def alive_here(store: Store, status_dir: str, holder) -> Heartbeat | None:
    """The heartbeat of a live lock (a daemon's) whose process provably runs on this very
    machine and is not this process: a holder alive now, whatever became of its working
    copy's marker. None when that cannot be shown (another host, another pid namespace, no
    heartbeat)."""
    if not (isinstance(holder, LockInfo) and holder.live and holder.format >= 2):
        return None
    beat = read_heartbeat(store, status_dir, holder.deployment_id)
    if beat is None or beat.pid == os.getpid() or not beat.process().running_here():
        return None
    return beat


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
