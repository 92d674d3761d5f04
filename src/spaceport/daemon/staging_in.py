"""Locking and staging-in: the project restored (or our own deployment resumed) and the
source cloned, in parallel; or, after a stop or a failure before ready, the primary given
back as it was.

With ``--source-in-background`` staging-in ends when the project is in (its files and its
links): the source's clone goes on behind it, through the running phase (autosaves run
meanwhile), and a failure of that clone is reported on the page instead of stopping the
daemon, whose project is fine. Without it, both must be done, and one side failing stops
the other.

With ``--wait-for-lock`` a primary held by someone else (exit 3 without it) is waited for
(:class:`LockWait`): the phase ``waiting-for-lock`` names the holder while the lock is looked
at again every few seconds, and stage-in starts once it is free. Nothing is taken while
waiting, so a stop then leaves nothing behind."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from typing import Callable

from ..commands.deploy import deploy
from ..commands.options import Options
from ..errors import Interrupted, LockedError
from ..formats.marker import (
    DEPLOYED,
    UNDEPLOYED,
    Marker,
    read_marker,
    work_id,
    write_marker,
)
from ..safety.lock import DeploymentLock, LockInfo, WorkCopy, locked_error, read_lock
from ..safety.worklock import require_working_copy
from ..store.sides import open_primary
from ..wording import duration
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
    WAITING_FOR_LOCK,
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
        self.waiting = LockWait(cfg, state)
        self._staging_text = ""

    def run(self) -> bool:
        """True when both sides are in place, False if a signal stopped it; raises on failure."""
        self.state.set_phase(LOCKING, f"checking the lock of {self.cfg.primary}")
        try:
            precheck_lock(self.cfg, self.opts)
        except LockedError as exc:
            if not self._wait_until_free(exc, self._pause_here):
                return False
        self.loop.apply_signals()
        if self.stops.shutdown.is_set():
            return False
        background = bool(self.cfg.source and self.cfg.source_in_background)
        self._staging_text = "restoring the project" + (
            "; the source is cloned behind it" if background else
            " and cloning the source" if self.cfg.source else "")
        self.state.set_phase(STAGING_IN, self._staging_text)
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

    def _wait_until_free(self, refusal: LockedError, pause: Callable[[float], bool]) -> bool:
        """After ``refusal``, with --wait-for-lock: wait, looking at the lock again, until
        nobody else holds it (True) or a stop came (False). Without waiting, or once its
        time is up: the refusal, as before (exit 3). ``pause(seconds)`` is True if stopped."""
        while self.waiting.refused(refusal):
            if pause(self.waiting.pause()):
                return False
            try:
                still_held = precheck_lock(self.cfg, self.opts)
            except LockedError as exc:
                refusal = exc
                continue
            if not still_held:
                self.waiting.ended()
            return True
        raise refusal

    def _pause_here(self, seconds: float) -> bool:
        """The main thread's pause while waiting: it still answers signals."""
        self.loop.sleep(seconds, until=self.stops.shutdown.is_set)
        return self.stops.shutdown.is_set()

    def _restore_project(self) -> None:
        marker = read_marker(self.cfg.work) if os.path.isdir(self.cfg.work) else None
        if marker and marker.phase == DEPLOYED and same_path(marker.primary, self.cfg.primary) \
                and self._lock_is_ours(marker):
            self._resume(marker)
            return
        while True:
            self.tracker.start("deploy", files=0, nbytes=0)  # shows "scanning" until it starts
            try:
                report = deploy(self.cfg.primary, self.cfg.work, self.opts,
                                take_over_stale=self.cfg.take_over_stale,
                                stop=self.stops.copy_stop)
                break
            except LockedError as exc:
                # Taken between the look and the deploy, or a live holder that
                # --take-over-stale watched: waited for like at the look (the source's clone,
                # if any, goes on meanwhile).
                if not self._wait_until_free(exc, self.stops.copy_stop.wait):
                    raise Interrupted("stopped while waiting for the lock") from None
            # quiet while the holder is still there (deploy() watches it again)
            self.state.set_phase(STAGING_IN, self._staging_text,
                                 quiet=self.waiting.holder is not None)
        self.hold.took(require_working_copy(self.cfg.work), resumed=False)
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


def precheck_lock(cfg: DaemonConfig, opts: Options) -> bool:
    """Refuse at once (exit 3) if another deployment holds the primary, before any copy
    starts; deploy() takes the lock itself, race-free. True if another holds it but
    deploy() is to judge it (--take-over-stale)."""
    with open_primary(cfg.primary, "00000000", opts) as store:
        holder = read_lock(store, opts.status_dir)
    marker = read_marker(cfg.work) if os.path.isdir(cfg.work) else None
    if holder is None:
        return False
    if isinstance(holder, LockInfo) and marker is not None \
            and holder.deployment_id == marker.deployment_id:
        return False  # our own deployment; a second daemon on this copy waits for busy
    if cfg.take_over_stale:
        return True  # deploy() watches the holder's heartbeat and takes over only if stale
    raise locked_error(holder, cfg.primary)


class LockWait:
    """--wait-for-lock: a deploy refused because the primary is held (LockedError, exit 3:
    another deployment, a daemon or the command line's, or CERIT's app) waits instead, up to
    ``cfg.wait_for_lock`` seconds (inf: until it is free). Its phase, waiting-for-lock, says
    the refusal's own words (naming the holder) and when the lock is looked at again. How a
    stale lock is taken over does not change (--take-over-stale, in deploy())."""

    def __init__(self, cfg: DaemonConfig, state: State):
        self.cfg, self.state = cfg, state
        self.since: float | None = None  # the first refusal (monotonic): the limit counts from it
        self.holder: str | None = None  # who holds the primary, as last said; None once free

    def refused(self, exc: LockedError) -> bool:
        """True: wait (:meth:`pause`) and look again; False: refuse, as without waiting."""
        limit = self.cfg.wait_for_lock
        if limit <= 0:
            return False
        now = time.monotonic()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited >= limit:
            log.error("gave up waiting for the lock of %s after %s", self.cfg.primary,
                      duration(waited), extra=fields(event="lock-wait-over"))
            return False
        text = (f"{exc.message} Waiting until it is free: the lock is looked at again every "
                f"{self.cfg.lock_retry:g} s" + ("" if math.isinf(limit) else
                                                 f", for up to {duration(limit)} in all")
                + "; nothing is taken meanwhile.")
        holder = re.sub(r"\d+", "#", exc.message)  # the same holder, whatever its times say
        if holder != self.holder:
            self.holder = holder
            self.state.set_phase(WAITING_FOR_LOCK, text)  # logged: who holds it now
        elif self.state.phase != WAITING_FOR_LOCK:
            self.state.set_phase(WAITING_FOR_LOCK, text, quiet=True)
        else:
            self.state.set_message(text)
        return True

    def pause(self) -> float:
        """Seconds until the next look: every lock_retry, and never past the limit."""
        left = self.cfg.wait_for_lock - (time.monotonic() - (self.since or time.monotonic()))
        return max(0.05, min(self.cfg.lock_retry, left))

    def ended(self) -> None:
        """The primary is free: said once."""
        if self.holder is not None:
            self.holder = None
            log.info("the lock of %s is free after %s of waiting", self.cfg.primary,
                     duration(time.monotonic() - self.since),
                     extra=fields(event="lock-free"))


def same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
