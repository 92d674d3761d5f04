"""Locking and staging-in: the project restored (or our own deployment resumed) and the
source cloned, in parallel; or, after a stop or a failure before ready, the primary given
back as it was.

With ``--source-in-background`` staging-in ends when the project is in (its files and its
links): the source's clone goes on behind it, through the running phase (autosaves run
meanwhile), and a failure of that clone is reported on the page instead of stopping the
daemon, whose project is fine. Without it, both must be done, and one side failing stops
the other."""

from __future__ import annotations

import logging
import os

from ..commands.deploy import deploy
from ..commands.options import Options
from ..errors import Interrupted
from ..formats.marker import (
    DEPLOYED,
    UNDEPLOYED,
    Marker,
    read_marker,
    require_marker,
    work_id,
    write_marker,
)
from ..safety.lock import DeploymentLock, LockInfo, WorkCopy, locked_error, read_lock
from ..store.sides import open_primary
from .cloning import SourceClone
from .config import DaemonConfig, write_file_atomic
from .hold import LockHold
from .logs import fields
from .mainloop import MainLoop, Stops
from .state import (
    LOCKING,
    READY,
    STAGING_IN,
    STOPPED,
    DaemonTracker,
    State,
    Worker,
    human_bytes,
)

log = logging.getLogger("spaceport.daemon")  # its name from before the package


class StagingIn:
    """From nothing to both sides in place, the lock ours and beating (``hold``)."""

    def __init__(self, cfg: DaemonConfig, opts: Options, *, tracker: DaemonTracker,
                 state: State, stops: Stops, loop: MainLoop, hold: LockHold,
                 source: SourceClone):
        self.cfg, self.opts, self.tracker, self.state = cfg, opts, tracker, state
        self.stops, self.loop, self.hold, self.source = stops, loop, hold, source

    def run(self) -> bool:
        """True when both sides are in place, False if a signal stopped it; raises on failure."""
        self.state.set_phase(LOCKING, f"checking the lock of {self.cfg.primary}")
        self._precheck_lock()
        self.loop.apply_signals()
        if self.stops.shutdown.is_set():
            return False
        background = bool(self.cfg.source and self.cfg.source_in_background)
        self.state.set_phase(STAGING_IN, "restoring the project" + (
            "; the source is cloned behind it" if background else
            " and cloning the source" if self.cfg.source else ""))
        project = Worker("project", self._restore_project)
        workers = [project]
        if self.cfg.source:
            # The staging-out and the lock-lost exit wait for it like for a clone on request.
            self.source.worker = Worker("source", self.source.at_stage_in)
            workers.append(self.source.worker)
        for worker in workers:
            worker.start()
        needed = [project] if background else workers

        def watch() -> None:
            if any(w.error for w in needed if not w.is_alive()):
                self.stops.copy_stop.set()  # one side failed: stop the other, no point going on
            self.loop.log_progress()

        self.loop.wait(needed, on_tick=watch)
        errors = [w.error for w in needed if w.error is not None]
        real = [e for e in errors
                if not (isinstance(e, Interrupted) and self.stops.copy_stop.is_set())]
        if real:
            raise real[0]
        return not self.stops.shutdown.is_set() and not errors

    def _precheck_lock(self) -> None:
        """Refuse at once (exit 3) if another deployment holds the primary, before any copy
        starts; deploy() takes the lock itself, race-free."""
        with open_primary(self.cfg.primary, "00000000", self.opts) as store:
            holder = read_lock(store, self.opts.status_dir)
        marker = read_marker(self.cfg.work) if os.path.isdir(self.cfg.work) else None
        if holder is None:
            return
        if isinstance(holder, LockInfo) and marker is not None \
                and holder.deployment_id == marker.deployment_id:
            return  # our own deployment; a second daemon on this copy waits for the busy lock
        if self.cfg.take_over_stale:
            return  # deploy() watches the holder's heartbeat and takes over only if stale
        raise locked_error(holder, self.cfg.primary)

    def _restore_project(self) -> None:
        marker = read_marker(self.cfg.work) if os.path.isdir(self.cfg.work) else None
        if marker and marker.phase == DEPLOYED and same_path(marker.primary, self.cfg.primary) \
                and self._lock_is_ours(marker):
            self._resume(marker)
            return
        self.tracker.start("deploy", files=0, nbytes=0)  # shows "scanning" until it starts
        report = deploy(self.cfg.primary, self.cfg.work, self.opts,
                        take_over_stale=self.cfg.take_over_stale, stop=self.stops.copy_stop)
        self.hold.took(require_marker(self.cfg.work), resumed=False)
        log.info("project restored: %d files (%d copied, %s), %d links from %s",
                 report.files, report.copied, human_bytes(report.copied_bytes), report.links,
                 report.links_source, extra=fields(event="restored", files=report.files,
                                                   copied=report.copied))

    def _lock_is_ours(self, marker: Marker) -> bool:
        with open_primary(self.cfg.primary, marker.token, self.opts) as store:
            holder = read_lock(store, marker.status_dir)
        return isinstance(holder, LockInfo) and holder.deployment_id == marker.deployment_id

    def _resume(self, marker: Marker) -> None:
        """Our own deployment, restarted (SIGKILL, a crashed sidecar) after its stage-in
        had finished. Nobody else wrote the primary meanwhile (we held the lock), so there
        is nothing to restore, and deploy() would only scan the whole primary (hours of
        metadata calls on OneData) to find that out. The working copy is the newest truth
        and may hold unsaved work: the first autosave runs right after stage-in."""
        with open_primary(self.cfg.primary, marker.token, self.opts) as store:
            DeploymentLock.acquire(store, marker.status_dir, deployment_id=marker.deployment_id,
                                   work=WorkCopy.here(self.cfg.work, work_id(self.cfg.work)),
                                   parameters=self.opts.parameters(), instance=self.opts.instance,
                                   stale_after=self.opts.stale_after, live=True)
        self.hold.took(marker, resumed=True)
        log.info("resumed deployment %s: the working copy is kept as it is and saved first",
                 marker.deployment_id[:8], extra=fields(event="resumed"))

    def become_ready(self) -> None:
        behind = self.source.worker is not None and self.source.worker.is_alive()
        self.state.set_phase(READY, "project staged in; the source is still cloned behind it"
                             if behind else "stage-in done")
        if self.cfg.ready_file:
            write_file_atomic(self.cfg.ready_file, self.state.ready_text())
        if self.cfg.instance_status_file:
            # CERIT's controller writes exactly "ok", no newline; its desktop waits for it.
            write_file_atomic(self.cfg.instance_status_file, "ok")

    def abandon(self, *, failed: bool) -> int:
        """After a stop or failure before ready: give the primary back as it was. (A resumed
        deployment is not abandoned but staged out: see the lifecycle.)"""
        if not self.hold.held:
            if not failed:  # deploy() released the lock it had taken
                self.state.set_phase(STOPPED, "stopped before ready; nothing was saved and "
                                              "the lock is not held")
            return 0
        with self.hold.busy:
            self.hold.release()
        # Nothing was changed in it: a later deploy reuses it and copies only what is missing.
        marker = self.hold.marker
        marker.phase = UNDEPLOYED
        write_marker(self.cfg.work, marker)
        if not failed:
            self.state.set_phase(STOPPED, "stopped before ready; the lock was released, "
                                          "nothing was saved")
        return 0


def same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
