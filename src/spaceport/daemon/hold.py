"""The daemon's hold on the primary: its deployment's marker, the lock heartbeat, one writer
at a time, and fencing when another deployment took the lock.

The primary is written by one thing at a time (``busy``): a save carries its own heartbeat,
and the daemon's heartbeat steps aside while it runs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from ..commands.options import Options
from ..errors import LockLostError, SpaceportError
from ..formats.marker import Marker
from ..safety.lock import CeritLockTaken, DeploymentLock, LockInfo, read_lock
from ..store.retry import RetryPolicy
from ..store.sides import open_primary
from .config import DaemonConfig
from .heartbeat import Heartbeat
from .logs import fields
from .mainloop import Stops
from .state import LOCK_LOST, State

log = logging.getLogger("spaceport.daemon")  # its name from before the package


class LockHold:
    """The lock the daemon holds, from the moment stage-in took it to the release."""

    def __init__(self, cfg: DaemonConfig, opts: Options, state: State, stops: Stops):
        self.cfg, self.opts, self.state, self.stops = cfg, opts, state, stops
        self.busy = threading.Lock()  # the primary is written by one thing at a time
        self.marker: Marker | None = None
        self.heartbeat: Heartbeat | None = None

    def took(self, marker: Marker, *, resumed: bool) -> None:
        """The lock of ``marker``'s deployment is ours: beat it from now on."""
        self.marker = marker
        self.state.deployment_id, self.state.resumed = marker.deployment_id, resumed
        self.heartbeat = Heartbeat(self.cfg.primary, marker, self.opts, self.busy, self.state,
                                   on_lost=self.lose)
        self.heartbeat.start()

    @property
    def held(self) -> bool:
        """Taken by this daemon and not released yet."""
        return not (self.marker is None or self.heartbeat is None or self.heartbeat.released)

    def release(self) -> None:
        """Give the lock back (the caller holds ``busy``); LockLostError if it is not ours."""
        with open_primary(self.cfg.primary, self.marker.token, self.opts) as store:
            DeploymentLock(store, self.marker.status_dir, self._adopt(store)).release()
        self.heartbeat.stop(released=True)

    def _adopt(self, store) -> LockInfo:
        holder = read_lock(store, self.marker.status_dir)
        if isinstance(holder, LockInfo) and holder.deployment_id == self.marker.deployment_id:
            return holder
        raise LockLostError(f"the lock on {self.cfg.primary} is not ours: "
                            f"{holder.describe() if holder else 'there is no lock'}.")

    def stop_heartbeat(self) -> None:
        if self.heartbeat:
            self.heartbeat.stop()

    def trouble(self, exc: LockLostError) -> None:
        """A lock that is gone may come back (an unmount); one held by another never does,
        nor a project CERIT's app took (its own lock where our mirror was)."""
        if isinstance(exc, CeritLockTaken):
            self.lose(f"CERIT's app: {exc.holder}")
            return
        try:
            with open_primary(self.cfg.primary, self.marker.token,
                              replace(self.opts, retry=RetryPolicy.none())) as store:
                holder = read_lock(store, self.marker.status_dir)
        except (OSError, SpaceportError):
            return
        if holder is not None and not (isinstance(holder, LockInfo)
                                       and holder.deployment_id == self.marker.deployment_id):
            self.lose(holder.describe())

    def lose(self, holder: str) -> None:
        """Fencing: another deployment holds the primary. Stop writing, for good."""
        if self.stops.fenced.is_set():
            return
        self.stops.fenced.set()
        self.stops.save_stop.set()  # an autosave in flight stops at its next file
        self.state.lock_lost = holder
        self.state.set_phase(LOCK_LOST, f"the lock was taken by another deployment ({holder})")
        log.error("lock lost on %s: it is now held by %s. Nothing more is written to the "
                  "primary; the working copy %s is kept. Find out who took the folder before "
                  "saving this copy by hand.", self.cfg.primary, holder, self.cfg.work,
                  extra=fields(event="lock-lost"))
        if self.heartbeat:
            self.heartbeat.stop(join=False)
