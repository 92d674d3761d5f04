"""The daemon's life, ``spaceport run``: one deployment, in a container or on a VM.

Phases (DESIGN.md), one module each: locking -> staging-in (source clone and project restore
in parallel; :mod:`.staging_in`) -> ready (ready file, /readyz 200) -> running (autosave every
interval, lock heartbeat; :mod:`.running`) -> staging-out (on SIGTERM/SIGINT: stop what runs,
final save with retries inside a deadline; :mod:`.staging_out`) -> released (lock removed,
work cleaned unless kept) -> exit 0.

Threads: the main thread only orchestrates and watches for signals (:mod:`.mainloop`).
Copies, saves and clones run in worker threads; the lock heartbeat and the HTTP server in
their own. The primary is written by one thing at a time (:mod:`.hold`): a save carries its
own heartbeat, and the daemon's heartbeat steps aside while it runs.
"""

from __future__ import annotations

import logging
import time

from ..commands.options import Options
from ..errors import EXIT_LOCK_LOST, SpaceportError
from ..safety.worklock import DAEMON_COMMAND, hold_work
from ..store.retry import is_unavailable
from .cloning import SourceClone
from .config import DaemonConfig, remove_file
from .hold import LockHold
from .logs import fields
from .mainloop import MainLoop, Stops
from .running import Autosaves
from .staging_in import StagingIn
from .staging_out import ABORT_GRACE, StagingOut
from .state import FAILED, LOCK_LOST, DaemonTracker, State, describe

log = logging.getLogger("spaceport.daemon")  # its name from before the package


class Daemon:
    """Runs the phases; the web server reads ``state`` and calls ``request_*``."""

    def __init__(self, cfg: DaemonConfig, opts: Options, tracker: DaemonTracker):
        self.cfg, self.opts, self.tracker = cfg, opts, tracker
        self.state = State(cfg, tracker)
        self.stops = Stops()
        self.loop = MainLoop(self.stops, self.state, tracker)
        self.hold = LockHold(cfg, opts, self.state, self.stops)
        self.source = SourceClone(cfg, opts, tracker, self.state, self.stops)
        parts = dict(state=self.state, stops=self.stops, loop=self.loop, hold=self.hold)
        self.staging_in = StagingIn(cfg, opts, tracker=tracker, source=self.source, **parts)
        self.autosaves = Autosaves(cfg, opts, **parts)
        self.staging_out = StagingOut(cfg, opts, tracker=tracker, autosaves=self.autosaves,
                                      source=self.source, **parts)

    # -- the life ------------------------------------------------------------------
    def run(self) -> int:
        """The whole life; returns the exit code. The caller serves HTTP around it."""
        remove_file(self.cfg.ready_file)
        remove_file(self.cfg.instance_status_file)  # a restarted daemon is not ready yet
        previous = self.loop.catch_signals()
        try:
            # The working copy is ours for the whole life: a command beside the daemon, or a
            # second daemon, is refused instead of becoming a second writer.
            with hold_work(self.cfg.work, DAEMON_COMMAND, wait=0) as held:
                self.hold.work_hold = held
                code = self._life()
        except SpaceportError as exc:
            code = self._failed(exc, exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - reported with its traceback
            log.exception("unexpected error")
            code = self._failed(exc, 6 if is_unavailable(exc) else 1)
        finally:
            self.hold.stop_heartbeat()
            remove_file(self.cfg.ready_file)
            remove_file(self.cfg.instance_status_file)
        self.state.exit_code = code
        if code and self.cfg.linger > 0:
            log.info("serving the status page %g s more so the failure can be seen",
                     self.cfg.linger)
            self.loop.sleep(self.cfg.linger, until=self.stops.shutdown.is_set)
        self.loop.restore_signals(previous)
        return code

    def _life(self) -> int:
        try:
            ready = self.staging_in.run()
        except BaseException:
            self._abandon(failed=True)
            raise
        if not ready:
            return self._abandon(failed=False)
        if not self.stops.fenced.is_set():  # the lock may be lost while the clone still runs
            self.staging_in.become_ready()
        self.autosaves.run()
        if self.stops.fenced.is_set():
            self.loop.wait([w for w in (self.autosaves.worker, self.source.worker) if w],
                           deadline=time.monotonic() + ABORT_GRACE)
            log.error("stopping with the lock lost: nothing was saved; the lock (not ours) "
                      "and the working copy %s are left as they are", self.cfg.work)
            return EXIT_LOCK_LOST
        return self.staging_out.run()

    def _abandon(self, *, failed: bool) -> int:
        """A stop or a failure before ready: a resumed deployment's working copy may hold
        work from before the restart, so it is staged out; any other gives the primary back
        as it was."""
        if self.hold.held and self.state.resumed:
            return self.staging_out.run()
        return self.staging_in.abandon(failed=failed)

    def _failed(self, exc: BaseException, code: int) -> int:
        if self.state.phase != LOCK_LOST:
            self.state.set_phase(FAILED, describe(exc), quiet=True)
        self.state.problem("daemon", exc, quiet=True)
        hint = getattr(exc, "hint", None)
        log.error("failed: %s%s", describe(exc), f" {describe(hint)}" if hint else "",
                  extra=fields(event="phase", phase=FAILED, exit_code=code))
        return code

    # -- requests from the web -------------------------------------------------------
    def request_save(self) -> tuple[int, str]:
        return self.autosaves.request_save()

    def request_confirm_deletions(self) -> tuple[int, str]:
        return self.autosaves.request_confirm_deletions()

    def request_clone(self) -> tuple[int, str]:
        return self.source.request()
