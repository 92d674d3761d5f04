"""The daemon's hold on the primary: its deployment's marker, the lock heartbeat, one writer
at a time, and fencing when another deployment took the lock.

The primary is written by one thing at a time (``busy``): a save carries its own heartbeat,
and the daemon's heartbeat steps aside while it runs.

The daemon also keeps its working copy tied to its deployment (:meth:`LockHold.keep_work`):
a work marker (``.spaceport/``) deleted under it is written again from the deployment it
holds. That is safe here, and only here: the daemon holds the working copy's folder by its
inode (:mod:`spaceport.safety.worklock`) and the lock on the primary, so it *knows* the
folder is the working copy of that deployment, which a command starting afresh cannot tell
from an unmounted volume (safety rule 3). Left missing, the marker would let nobody save:
not the daemon's autosaves, not its final save. A folder that is no longer the one it holds
(the volume unmounted or replaced) is not touched: that is reported, and the saves refuse it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from ..commands.options import Options
from ..errors import FormatError, LockLostError, SpaceportError
from ..formats.marker import Marker, read_marker, write_marker
from ..safety.lock import CeritLockTaken, DeploymentLock, LockInfo, read_lock
from ..safety.worklock import WorkHold
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
        self.work_hold: WorkHold | None = None  # the working copy, held for the daemon's life
        self._keeping = threading.Lock()

    def took(self, marker: Marker, *, resumed: bool) -> None:
        """The lock of ``marker``'s deployment is ours: beat it from now on."""
        self.marker = marker
        self.state.deployment_id, self.state.resumed = marker.deployment_id, resumed
        self.heartbeat = Heartbeat(self.cfg.primary, marker, self.opts, self.busy, self.state,
                                   on_lost=self.lose)
        self.heartbeat.start()

    def keep_work(self) -> None:
        """Put back the work marker and the busy record if they were deleted under the
        running daemon (see the module docstring); report what cannot be put back."""
        if self.work_hold is None or not self.held:
            return
        try:
            self._keep_work()
        except (OSError, SpaceportError) as exc:  # a full disk: said, and looked at again
            self.state.problem("work", f"the work marker of {self.cfg.work} could not be "
                               f"looked at or written again: {exc}")

    def _keep_work(self) -> None:
        with self._keeping:
            if not self.work_hold.folder_intact():
                self.state.problem("work", f"{self.cfg.work} is not the folder this daemon "
                                   "holds any more (replaced, or its volume unmounted); nothing "
                                   "is saved from it until it is back")
                return
            problems = [text for text in (self.work_hold.repair(),) if text]
            try:
                found = read_marker(self.cfg.work)
            except FormatError as exc:
                found, problems = None, problems + [exc.message]
            if found is None:
                write_marker(self.cfg.work, self.marker)
                problems.append(f"the work marker of {self.cfg.work} was gone; it was written "
                                f"again for deployment {self.marker.deployment_id[:8]} (the "
                                "state index, if gone too, is rebuilt by comparing both sides "
                                "at the next save)")
            elif found.deployment_id != self.marker.deployment_id:
                self.state.problem("work", f"the work marker of {self.cfg.work} names another "
                                   f"deployment ({found.deployment_id[:8]}); nothing is saved "
                                   "from it")
                return
        for text in problems:
            log.warning("%s", text, extra=fields(event="work-repaired"))
        self.state.solved("work")

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
