"""Staging-out, on SIGTERM/SIGINT: stop what runs, a final save with retries inside a
deadline, the lock released, the work cleaned unless kept. A final save that fails keeps
the lock and the working copy, so nothing is lost."""

from __future__ import annotations

import logging
import shutil
import time

from ..commands.clone import wipe_clone
from ..commands.options import Options
from ..commands.undeploy import final_save_copy, remove_saved_copy
from ..commands.workcopy import WorkingCopy, open_copy
from ..errors import (
    EXIT_INTERRUPTED,
    Interrupted,
    LockLostError,
    PartialSaveError,
    SpaceportError,
    StorageUnavailableError,
)
from ..formats.marker import UNDEPLOYED, marker_dir, write_marker
from ..store.retry import is_unavailable
from ..wording import count
from .cloning import SourceClone
from .config import DaemonConfig, remove_file
from .hold import LockHold
from .logs import fields
from .mainloop import MainLoop, Stops
from .running import Autosaves
from .state import FAILED, RELEASED, STAGING_OUT, DaemonTracker, State, Worker, describe

log = logging.getLogger("spaceport.daemon")  # its name from before the package

FINAL_RETRY_FIRST, FINAL_RETRY_MAX = 1.0, 30.0  # backoff between final-save attempts
ABORT_GRACE = 15.0  # after the deadline, how long a stopped final save may take to return
# How long the final save lets a stopped clone end first. The clone writes only the source's
# copy, not the primary: the final save need not wait for it, but one that ends within this
# leaves its notice and its temporaries in order before the last save starts.
CLONE_STOP_GRACE = 5.0


class StagingOut:
    """The final save and the release; returns the daemon's exit code."""

    def __init__(self, cfg: DaemonConfig, opts: Options, *, tracker: DaemonTracker,
                 state: State, stops: Stops, loop: MainLoop, hold: LockHold,
                 autosaves: Autosaves, source: SourceClone):
        self.cfg, self.opts, self.tracker, self.state = cfg, opts, tracker, state
        self.stops, self.loop, self.hold = stops, loop, hold
        self.autosaves, self.source = autosaves, source

    def run(self) -> int:
        deadline = time.monotonic() + self.cfg.final_save_deadline
        self.state.set_phase(STAGING_OUT,
                             f"final save (deadline {self.cfg.final_save_deadline:g} s)")
        remove_file(self.cfg.ready_file)
        remove_file(self.cfg.instance_status_file)
        self.stops.copy_stop.set()
        self.stops.save_stop.set()
        self.tracker.unthrottle()  # the last save goes as fast as it can
        if self.source.worker is not None:
            self.loop.wait([self.source.worker],
                           deadline=min(deadline, time.monotonic() + CLONE_STOP_GRACE))
        self.loop.wait([w for w in (self.autosaves.worker,) if w], deadline=deadline)
        delay, attempt, last = FINAL_RETRY_FIRST, 0, None
        while True:
            attempt += 1
            worker = Worker("final-save", self._final_attempt)
            worker.start()
            self.loop.wait([worker], deadline=deadline, on_deadline=self.stops.abort.set)
            if worker.is_alive():
                self.stops.abort.set()
                self.loop.wait([worker], deadline=time.monotonic() + ABORT_GRACE)
            if not worker.is_alive() and worker.error is None:
                self.state.set_phase(RELEASED, "final save done, lock released")
                return 0
            error = worker.error
            if isinstance(error, Interrupted) and last is not None:
                error = None  # cut short by the deadline: the attempt before says why
            last = error or last or StorageUnavailableError(
                "the final save did not finish within the deadline.")
            if isinstance(last, LockLostError):
                self.hold.trouble(last)  # replaced: fenced, no retry; missing: may come back
            if self.stops.abort.is_set() or self.stops.fenced.is_set() \
                    or not retry_final(last) or time.monotonic() + delay >= deadline:
                return self._final_failed(last, attempt)
            log.warning("final save attempt %d failed (%s); retrying in %g s (%d s left)",
                        attempt, describe(last), delay, deadline - time.monotonic())
            self.state.record_save(worker.started, error=last, task="final save")
            self.loop.sleep(delay, until=self.stops.abort.is_set)
            delay = min(delay * 2, FINAL_RETRY_MAX)

    def _final_attempt(self) -> None:
        # One working copy held through the final save, the proof, the release and the
        # clean-up (the daemon holds it already; this only opens what a save needs).
        self.hold.keep_work()
        with open_copy(self.cfg.work, self.opts, "final save") as copy:
            with self.hold.busy:
                # Saved and proven saved (spaceport.commands.undeploy): what the primary
                # lost meanwhile is saved again; a file that keeps changing keeps the lock
                # and the working copy.
                report = final_save_copy(copy, stop=self.stops.abort,
                                         confirmed=self.autosaves.confirmed)
                self.state.record_save(time.time() - report.seconds, report=report,
                                       task="final save")
                if report.held:
                    # Nothing is lost (the primary keeps the files) and nothing stays
                    # stuck: the journal on the primary records them, and the lock is
                    # released as always.
                    log.warning("the final save held %s (the working copy looks wrong: %s); "
                                "everything else is saved. They stay on the primary, recorded "
                                "in its journal ('spaceport status --primary %s'); the lock "
                                "is released.", count(report.held["count"], "deletion"),
                                report.held["reason"], self.cfg.primary,
                                extra=fields(event="deletions-held",
                                             held=report.held["count"]))
                self.hold.release()
            marker = self.hold.marker
            marker.phase = UNDEPLOYED
            write_marker(self.cfg.work, marker)
            log.info("final save done and lock released", extra=fields(event="released"))
            if not self.cfg.keep_work:
                self._clean(copy)

    def _clean(self, copy: WorkingCopy) -> None:
        """The work is proven safe on the primary: removed through the guard (only what
        still is what was saved; anything written after the final save stays)."""
        for path, wipe in ((self.cfg.work, lambda _: self._remove_work(copy)),
                           (self.cfg.source_work, wipe_clone)):
            if not path:
                continue
            clone = self.source.worker
            if path == self.cfg.source_work and clone is not None and clone.is_alive():
                clone.join(CLONE_STOP_GRACE)  # stopped since the staging-out began
                if clone.is_alive():
                    log.warning("the source's clone has not stopped yet; %s is left as it is",
                                path)
                    continue
            try:
                wipe(path)
                log.info("removed the working copy %s", path)
            except (OSError, SpaceportError) as exc:
                log.warning("could not clean %s: %s", path, describe(exc))

    def _remove_work(self, copy: WorkingCopy) -> None:
        remove_saved_copy(copy)  # raises, keeping all, if anything changed
        shutil.rmtree(marker_dir(copy.path), ignore_errors=True)

    def _final_failed(self, exc: BaseException, attempts: int) -> int:
        code = exc.exit_code if isinstance(exc, SpaceportError) else 6 if is_unavailable(exc) else 1
        if self.stops.abort.is_set() and self.loop.signals_received > 1:
            code = EXIT_INTERRUPTED
        self.state.record_save(time.time(), error=exc, task="final save")
        self.state.set_phase(FAILED, f"final save failed: {describe(exc)}", quiet=True)
        log.error("final save failed after %s: %s. The lock on %s and the working "
                  "copy %s are kept, so nothing is lost; when the primary is back, start "
                  "the daemon again, or run 'spaceport save %s' then 'spaceport undeploy %s'.",
                  count(attempts, "attempt"), describe(exc),
                  self.cfg.primary, self.cfg.work, self.cfg.work, self.cfg.work,
                  extra=fields(event="phase", phase=FAILED, exit_code=code))
        return code


def retry_final(exc: BaseException) -> bool:
    """Worth another final-save attempt: the storage may come back; safety refusals not."""
    return isinstance(exc, (StorageUnavailableError, PartialSaveError, LockLostError, OSError))
