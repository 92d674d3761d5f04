"""The daemon's life, ``spaceport run``: one deployment, in a container or on a VM.

Phases (DESIGN.md): locking -> staging-in (source clone and project restore in parallel) ->
ready (ready file, /readyz 200) -> running (autosave every interval, lock heartbeat) ->
staging-out (on SIGTERM/SIGINT: stop what runs, final save with retries inside a deadline)
-> released (lock removed, work cleaned unless kept) -> exit 0.

Threads: the main thread only orchestrates and watches for signals. The signal handler only
counts (setting an Event from a handler can deadlock on the Event's lock when the signal
lands while the main thread holds it); the main loop polls the count every POLL seconds.
Copies, saves and clones run in worker threads; the lock heartbeat and the HTTP server in
their own. The primary is written by one thing at a time (``primary_busy``): a save carries
its own heartbeat, and the daemon's heartbeat steps aside while it runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import replace

from ..commands.clone import clone, wipe_clone
from ..commands.deploy import deploy
from ..commands.options import Options
from ..commands.save import save
from ..commands.undeploy import final_save, remove_saved_work
from ..errors import (
    EXIT_INTERRUPTED,
    EXIT_LOCK_LOST,
    Interrupted,
    LockLostError,
    PartialSaveError,
    SpaceportError,
    StorageUnavailableError,
)
from ..formats.marker import (
    DEPLOYED,
    UNDEPLOYED,
    Marker,
    marker_dir,
    read_marker,
    require_marker,
    work_id,
    write_marker,
)
from ..safety.lock import DeploymentLock, LockInfo, WorkCopy, locked_error, read_lock
from ..safety.worklock import DAEMON_COMMAND, hold_work
from ..store.retry import RetryPolicy, is_unavailable
from ..store.sides import open_primary
from ..wording import count, duration
from .config import DaemonConfig, remove_file, write_file_atomic
from .heartbeat import Heartbeat
from .logs import fields
from .state import (
    FAILED,
    LOCK_LOST,
    LOCKING,
    READY,
    RELEASED,
    RUNNING,
    STAGING_IN,
    STAGING_OUT,
    STOPPED,
    DaemonTracker,
    State,
    Worker,
    describe,
    human_bytes,
)

log = logging.getLogger("spaceport.daemon")  # its name from before the package

POLL = 0.1  # seconds between two looks of the main loop at signals and workers
PROGRESS_LOG_SECONDS = 30.0  # a progress line in the log during long copies
FINAL_RETRY_FIRST, FINAL_RETRY_MAX = 1.0, 30.0  # backoff between final-save attempts
ABORT_GRACE = 15.0  # after the deadline, how long a stopped final save may take to return


class Daemon:
    """Runs the phases; the web server reads ``state`` and calls ``request_*``."""

    def __init__(self, cfg: DaemonConfig, opts: Options, tracker: DaemonTracker):
        self.cfg, self.opts, self.tracker = cfg, opts, tracker
        self.state = State(cfg, tracker)
        self.shutdown = threading.Event()  # first SIGTERM/SIGINT
        self.copy_stop = threading.Event()  # stops stage-in copies and clones
        self.save_stop = threading.Event()  # stops an autosave (shutdown, fencing)
        self.abort = threading.Event()  # stops the final save (deadline, second signal)
        self.save_now = threading.Event()
        self.fenced = threading.Event()  # the lock was taken by someone else
        self.primary_busy = threading.Lock()
        self.marker: Marker | None = None
        self.heartbeat: Heartbeat | None = None
        self.autosaver: Worker | None = None
        self.cloner: Worker | None = None
        self._signals: list[int] = []
        self._applied = 0
        self._clone_lock = threading.Lock()
        self.held_paths: list[str] = []  # deletions the last save held (deletion_guard)
        self.confirmed: frozenset[str] = frozenset()  # of those, confirmed: the next save

    # -- the life ------------------------------------------------------------------
    def run(self) -> int:
        """The whole life; returns the exit code. The caller serves HTTP around it."""
        remove_file(self.cfg.ready_file)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            # The working copy is ours for the whole life: a command beside the daemon, or a
            # second daemon, is refused instead of becoming a second writer.
            with hold_work(self.cfg.work, DAEMON_COMMAND, wait=0):
                code = self._life()
        except SpaceportError as exc:
            code = self._failed(exc, exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - reported with its traceback
            log.exception("unexpected error")
            code = self._failed(exc, 6 if is_unavailable(exc) else 1)
        finally:
            if self.heartbeat:
                self.heartbeat.stop()
            remove_file(self.cfg.ready_file)
        self.state.exit_code = code
        if code and self.cfg.linger > 0:
            log.info("serving the status page %g s more so the failure can be seen",
                     self.cfg.linger)
            self._sleep(self.cfg.linger, until=self.shutdown.is_set)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return code

    def _life(self) -> int:
        try:
            ready = self._stage_in()
        except BaseException:
            self._abandon_stage_in(failed=True)
            raise
        if not ready:
            return self._abandon_stage_in(failed=False)
        if not self.fenced.is_set():  # the lock may be lost while the clone still runs
            self._become_ready()
        self._run_autosaves()
        if self.fenced.is_set():
            self._wait([w for w in (self.autosaver, self.cloner) if w],
                       deadline=time.monotonic() + ABORT_GRACE)
            log.error("stopping with the lock lost: nothing was saved; the lock (not ours) "
                      "and the working copy %s are left as they are", self.cfg.work)
            return EXIT_LOCK_LOST
        return self._stage_out()

    def _failed(self, exc: BaseException, code: int) -> int:
        if self.state.phase != LOCK_LOST:
            self.state.set_phase(FAILED, describe(exc), quiet=True)
        self.state.problem("daemon", exc, quiet=True)
        hint = getattr(exc, "hint", None)
        log.error("failed: %s%s", describe(exc), f" {describe(hint)}" if hint else "",
                  extra=fields(event="phase", phase=FAILED, exit_code=code))
        return code

    # -- staging in ------------------------------------------------------------------
    def _stage_in(self) -> bool:
        """True when both sides are in place, False if a signal stopped it; raises on failure."""
        self.state.set_phase(LOCKING, f"checking the lock of {self.cfg.primary}")
        self._precheck_lock()
        self._apply_signals()
        if self.shutdown.is_set():
            return False
        self.state.set_phase(STAGING_IN, "restoring the project" +
                             (" and cloning the source" if self.cfg.source else ""))
        workers = [Worker("project", self._restore_project)]
        if self.cfg.source:
            workers.append(Worker("source", self._clone_source))
        for worker in workers:
            worker.start()

        def watch() -> None:
            if any(w.error for w in workers if not w.is_alive()):
                self.copy_stop.set()  # one side failed: stop the other, no point going on
            self._log_progress()

        self._wait(workers, on_tick=watch)
        errors = [w.error for w in workers if w.error is not None]
        real = [e for e in errors if not (isinstance(e, Interrupted) and self.copy_stop.is_set())]
        if real:
            raise real[0]
        return not self.shutdown.is_set() and not errors

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
                        take_over_stale=self.cfg.take_over_stale, stop=self.copy_stop)
        self._took_lock(require_marker(self.cfg.work), resumed=False)
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
        self._took_lock(marker, resumed=True)
        log.info("resumed deployment %s: the working copy is kept as it is and saved first",
                 marker.deployment_id[:8], extra=fields(event="resumed"))

    def _took_lock(self, marker: Marker, *, resumed: bool) -> None:
        self.marker = marker
        self.state.deployment_id, self.state.resumed = marker.deployment_id, resumed
        self.heartbeat = Heartbeat(self.cfg.primary, marker, self.opts, self.primary_busy,
                                   self.state, on_lost=self.lose_lock)
        self.heartbeat.start()

    def _clone_source(self) -> None:
        with self._clone_lock:
            self.tracker.start("clone", files=0, nbytes=0)
            started = time.time()
            try:
                report = clone(self.cfg.source, self.cfg.source_work, self.opts,
                               stop=self.copy_stop)
            except BaseException as exc:
                self.state.record_clone(started, error=exc)
                raise
            self.state.record_clone(started, report=report)

    def _abandon_stage_in(self, *, failed: bool) -> int:
        """After a stop or failure before ready: give the primary back as it was."""
        if self.marker is None or self.heartbeat is None or self.heartbeat.released:
            if not failed:  # deploy() released the lock it had taken
                self.state.set_phase(STOPPED, "stopped before ready; nothing was saved and "
                                              "the lock is not held")
            return 0
        if self.state.resumed:  # the working copy may hold work from before the restart
            return self._stage_out()
        with self.primary_busy:
            with open_primary(self.cfg.primary, self.marker.token, self.opts) as store:
                DeploymentLock(store, self.marker.status_dir,
                               self._adopt(store)).release()
            self.heartbeat.stop(released=True)
        # Nothing was changed in it: a later deploy reuses it and copies only what is missing.
        self.marker.phase = UNDEPLOYED
        write_marker(self.cfg.work, self.marker)
        if not failed:
            self.state.set_phase(STOPPED, "stopped before ready; the lock was released, "
                                          "nothing was saved")
        return 0

    def _adopt(self, store) -> LockInfo:
        holder = read_lock(store, self.marker.status_dir)
        if isinstance(holder, LockInfo) and holder.deployment_id == self.marker.deployment_id:
            return holder
        raise LockLostError(f"the lock on {self.cfg.primary} is not ours: "
                            f"{holder.describe() if holder else 'there is no lock'}.")

    def _become_ready(self) -> None:
        self.state.set_phase(READY, "stage-in done")
        if self.cfg.ready_file:
            write_file_atomic(self.cfg.ready_file, self.state.ready_text())

    # -- running ---------------------------------------------------------------------
    def _run_autosaves(self) -> None:
        interval = self.cfg.interval
        if not self.fenced.is_set():
            self.state.set_phase(RUNNING, f"autosave every {duration(interval)}")
        failures = 0
        next_at = time.monotonic() + (0.0 if self.state.resumed else interval)
        while True:
            self._apply_signals()
            if self.shutdown.is_set():
                return
            now = time.monotonic()
            if self.autosaver is not None and not self.autosaver.is_alive():
                ok = self._autosave_done(self.autosaver)
                self.autosaver = None
                failures = 0 if ok else failures + 1
                next_at = now + (interval if ok else self._backoff(failures))
            if self.autosaver is None and not self.fenced.is_set() \
                    and (self.save_now.is_set() or now >= next_at):
                task = "requested save" if self.save_now.is_set() else "autosave"
                self.save_now.clear()
                self.autosaver = Worker(task, self._save_worker, task)
                self.autosaver.start()
            self.state.next_save_in = None if self.autosaver or self.fenced.is_set() \
                else max(0.0, next_at - now)
            self._log_progress()
            time.sleep(POLL)

    def _backoff(self, failures: int) -> float:
        """Sooner than the interval after a failure: unsaved work should not wait longer."""
        first = max(1.0, self.opts.retry.initial_delay)
        return min(self.cfg.interval, first * 2 ** (failures - 1))

    def _save_worker(self, task: str):
        confirmed = self.confirmed
        with self.primary_busy:
            report = save(self.cfg.work, self.opts, task=task, stop=self.save_stop,
                          confirmed=confirmed)
        self.held_paths = report.held_paths
        if confirmed and self.confirmed is confirmed:
            self.confirmed = frozenset()  # carried out; a new confirmation is needed for more
        return report

    def _autosave_done(self, worker: Worker) -> bool:
        if worker.error is None:
            self.state.record_save(worker.started, report=worker.result, task=worker.name)
            return True
        if self.shutdown.is_set():
            log.info("autosave stopped for the final save")
            return False
        if isinstance(worker.error, LockLostError):
            self._lock_trouble(worker.error)
        self.state.record_save(worker.started, error=worker.error, task=worker.name)
        return False

    def _lock_trouble(self, exc: LockLostError) -> None:
        """A lock that is gone may come back (an unmount); one held by another never does."""
        try:
            with open_primary(self.cfg.primary, self.marker.token,
                              replace(self.opts, retry=RetryPolicy.none())) as store:
                holder = read_lock(store, self.marker.status_dir)
        except (OSError, SpaceportError):
            return
        if holder is not None and not (isinstance(holder, LockInfo)
                                       and holder.deployment_id == self.marker.deployment_id):
            self.lose_lock(holder.describe())

    def lose_lock(self, holder: str) -> None:
        """Fencing: another deployment holds the primary. Stop writing, for good."""
        if self.fenced.is_set():
            return
        self.fenced.set()
        self.save_stop.set()  # an autosave in flight stops at its next file
        self.state.lock_lost = holder
        self.state.set_phase(LOCK_LOST, f"the lock was taken by another deployment ({holder})")
        log.error("lock lost on %s: it is now held by %s. Nothing more is written to the "
                  "primary; the working copy %s is kept. Find out who took the folder before "
                  "saving this copy by hand.", self.cfg.primary, holder, self.cfg.work,
                  extra=fields(event="lock-lost"))
        if self.heartbeat:
            self.heartbeat.stop(join=False)

    # -- staging out -----------------------------------------------------------------
    def _stage_out(self) -> int:
        deadline = time.monotonic() + self.cfg.final_save_deadline
        self.state.set_phase(STAGING_OUT,
                             f"final save (deadline {self.cfg.final_save_deadline:g} s)")
        remove_file(self.cfg.ready_file)
        self.copy_stop.set()
        self.save_stop.set()
        self.tracker.unthrottle()  # the last save goes as fast as it can
        self._wait([w for w in (self.autosaver, self.cloner) if w], deadline=deadline)
        delay, attempt, last = FINAL_RETRY_FIRST, 0, None
        while True:
            attempt += 1
            worker = Worker("final-save", self._final_attempt)
            worker.start()
            self._wait([worker], deadline=deadline, on_deadline=self.abort.set)
            if worker.is_alive():
                self.abort.set()
                self._wait([worker], deadline=time.monotonic() + ABORT_GRACE)
            if not worker.is_alive() and worker.error is None:
                self.state.set_phase(RELEASED, "final save done, lock released")
                return 0
            error = worker.error
            if isinstance(error, Interrupted) and last is not None:
                error = None  # cut short by the deadline: the attempt before says why
            last = error or last or StorageUnavailableError(
                "the final save did not finish within the deadline.")
            if isinstance(last, LockLostError):
                self._lock_trouble(last)  # replaced: fenced, no retry; missing: may come back
            if self.abort.is_set() or self.fenced.is_set() or not retry_final(last) \
                    or time.monotonic() + delay >= deadline:
                return self._final_failed(last, attempt)
            log.warning("final save attempt %d failed (%s); retrying in %g s (%d s left)",
                        attempt, describe(last), delay, deadline - time.monotonic())
            self.state.record_save(worker.started, error=last, task="final save")
            self._sleep(delay, until=self.abort.is_set)
            delay = min(delay * 2, FINAL_RETRY_MAX)

    def _final_attempt(self) -> None:
        marker = self.marker
        with self.primary_busy:
            # Saved and proven saved (spaceport.undeploy): what the primary lost meanwhile is
            # saved again; a file that keeps changing keeps the lock and the working copy.
            report = final_save(self.cfg.work, marker, self.opts, stop=self.abort,
                                confirmed=self.confirmed)
            self.state.record_save(time.time() - report.seconds, report=report, task="final save")
            if report.held:
                # Nothing is lost (the primary keeps the files) and nothing stays stuck: the
                # journal on the primary records them, and the lock is released as always.
                log.warning("the final save held %s (the working copy looks wrong: %s); "
                            "everything else is saved. They stay on the primary, recorded in "
                            "its journal ('spaceport status --primary %s'); the lock is "
                            "released.", count(report.held["count"], "deletion"),
                            report.held["reason"], self.cfg.primary,
                            extra=fields(event="deletions-held", held=report.held["count"]))
            with open_primary(self.cfg.primary, marker.token, self.opts) as store:
                DeploymentLock(store, marker.status_dir, self._adopt(store)).release()
            self.heartbeat.stop(released=True)
        marker.phase = UNDEPLOYED
        write_marker(self.cfg.work, marker)
        log.info("final save done and lock released", extra=fields(event="released"))
        if not self.cfg.keep_work:
            self._clean()

    def _clean(self) -> None:
        """The work is proven safe on the primary: removed through the guard (only what
        still is what was saved; anything written after the final save stays)."""
        for path, wipe in ((self.cfg.work, self._remove_work), (self.cfg.source_work, wipe_clone)):
            if not path:
                continue
            try:
                wipe(path)
                log.info("removed the working copy %s", path)
            except (OSError, SpaceportError) as exc:
                log.warning("could not clean %s: %s", path, describe(exc))

    def _remove_work(self, path: str) -> None:
        remove_saved_work(path, self.marker)  # raises, keeping all, if anything changed
        shutil.rmtree(marker_dir(path), ignore_errors=True)

    def _final_failed(self, exc: BaseException, attempts: int) -> int:
        code = exc.exit_code if isinstance(exc, SpaceportError) else 6 if is_unavailable(exc) else 1
        if self.abort.is_set() and len(self._signals) > 1:
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

    # -- requests from the web -------------------------------------------------------
    def request_save(self) -> tuple[int, str]:
        if self.fenced.is_set():
            return 409, "the lock was lost: nothing is saved any more"
        if self.state.phase != RUNNING:
            return 409, f"not running (phase {self.state.phase}); nothing to save yet"
        self.save_now.set()
        return 202, "a save starts now" if self.autosaver is None else \
            "a save is running; another one follows it"

    def request_confirm_deletions(self) -> tuple[int, str]:
        """POST /confirm-deletions: the deletions the last save held are carried out by the
        next save (exactly those paths: the guard still judges anything else)."""
        if self.fenced.is_set():
            return 409, "the lock was lost: nothing is saved any more"
        if self.state.phase != RUNNING:
            return 409, f"not running (phase {self.state.phase})"
        paths = self.held_paths
        if not paths:
            return 409, "no deletions are held"
        self.confirmed = frozenset(paths)
        self.save_now.set()
        log.info("%s confirmed: the next save carries them out",
                 count(len(paths), "held deletion"), extra=fields(event="deletions-confirmed"))
        return 202, (f"{count(len(paths), 'held deletion')} confirmed: the save that starts "
                     "now moves them to the trash on the primary")

    def request_clone(self) -> tuple[int, str]:
        if not self.cfg.source:
            return 409, "no source is configured (--source, --source-work)"
        if self.state.phase not in (READY, RUNNING, LOCK_LOST):
            return 409, f"not now (phase {self.state.phase})"
        if self._clone_lock.locked():
            return 409, "a clone is already running"
        self.cloner = Worker("clone", self._clone_quietly)
        self.cloner.start()
        return 202, "the clone starts now"

    def _clone_quietly(self) -> None:
        try:
            self._clone_source()
        except Interrupted:
            log.info("clone stopped")
        except BaseException as exc:  # noqa: BLE001 - reported on the page, the daemon goes on
            log.error("clone failed: %s", describe(exc))

    # -- signals and waiting ---------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._signals.append(signum)  # nothing else here: see the module docstring

    def _apply_signals(self) -> None:
        self.state.tick()
        while self._applied < len(self._signals):
            name = signal.Signals(self._signals[self._applied]).name
            self._applied += 1
            if self._applied == 1:
                log.info("%s received: stopping", name, extra=fields(event="signal"))
                self.shutdown.set()
                self.copy_stop.set()
                self.save_stop.set()
                self.tracker.unthrottle()
            else:
                log.warning("%s received again: aborting; the lock and the working copy are "
                            "kept", name)
                self.abort.set()

    def _wait(self, workers, *, deadline: float | None = None, on_tick=None,
              on_deadline=None) -> None:
        while any(w.is_alive() for w in workers):
            self._apply_signals()
            if on_tick:
                on_tick()
            if deadline is not None and time.monotonic() >= deadline:
                if on_deadline:
                    on_deadline()
                return
            time.sleep(POLL)

    def _sleep(self, seconds: float, *, until) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            self._apply_signals()
            time.sleep(POLL)

    def _log_progress(self) -> None:
        line = self.state.progress_line(PROGRESS_LOG_SECONDS)
        if line:
            log.info("%s", line, extra=fields(event="progress"))


def retry_final(exc: BaseException) -> bool:
    """Worth another final-save attempt: the storage may come back; safety refusals not."""
    return isinstance(exc, (StorageUnavailableError, PartialSaveError, LockLostError, OSError))


def same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


