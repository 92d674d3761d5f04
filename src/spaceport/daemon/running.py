"""The running phase: an autosave every interval (sooner after a failure), a save asked for
over HTTP, and the deletions the last save held, confirmed to be carried out by the next."""

from __future__ import annotations

import logging
import threading
import time

from ..commands.options import Options
from ..commands.save import save
from ..commands.workcopy import pending_changes
from ..errors import LockLostError
from ..safety.worklock import require_working_copy
from ..wording import count, duration
from .config import DaemonConfig
from .hold import LockHold
from .logs import fields
from .mainloop import POLL, MainLoop, Stops
from .state import RUNNING, State, Worker

log = logging.getLogger("spaceport.daemon")  # its name from before the package
LOOK_EVERY = 10.0  # seconds between looks at the unsaved changes (at most the interval)

KEEP_WORK_SECONDS = 1.0  # how often the working copy's marker and busy record are looked at


class Autosaves:
    """Saves the working copy while the daemon runs; ``worker`` is the save under way."""

    def __init__(self, cfg: DaemonConfig, opts: Options, *, state: State, stops: Stops,
                 loop: MainLoop, hold: LockHold):
        self.cfg, self.opts, self.state = cfg, opts, state
        self.stops, self.loop, self.hold = stops, loop, hold
        self.save_now = threading.Event()
        self.worker: Worker | None = None
        self.held_paths: list[str] = []  # deletions the last save held (deletion_guard)
        self.confirmed: frozenset[str] = frozenset()  # of those, confirmed: the next save
        self.looker: Worker | None = None  # a look at what is unsaved, for the page
        self._looked = float("-inf")
        self.look_every = max(2.0, min(cfg.interval, LOOK_EVERY))

    def run(self) -> None:
        """Until a signal stops the daemon (a fenced daemon saves no more, and waits)."""
        interval = self.cfg.interval
        if not self.stops.fenced.is_set():
            self.state.set_phase(RUNNING, f"autosave every {duration(interval)}")
        failures = 0
        next_at = time.monotonic() + (0.0 if self.state.resumed else interval)
        kept_at = 0.0
        while True:
            self.loop.apply_signals()
            if self.stops.shutdown.is_set():
                return
            now = time.monotonic()
            if now - kept_at >= KEEP_WORK_SECONDS:
                # A few local stats: a marker deleted under the daemon is put back within a
                # second, before a command beside it could take it for a lost one.
                kept_at = now
                self.hold.keep_work()
            if self.worker is not None and not self.worker.is_alive():
                ok = self._done(self.worker)
                self.worker = None
                failures = 0 if ok else failures + 1
                next_at = now + (interval if ok else self._backoff(failures))
            if self.worker is None and not self.stops.fenced.is_set() \
                    and (self.save_now.is_set() or now >= next_at):
                task = "requested save" if self.save_now.is_set() else "autosave"
                self.save_now.clear()
                self.worker = Worker(task, self._save, task)
                self.worker.start()
            self.state.next_save_in = None if self.worker or self.stops.fenced.is_set() \
                else max(0.0, next_at - now)
            self._look(now)
            self.loop.log_progress()
            time.sleep(POLL)

    def _look(self, now: float) -> None:
        """Between saves, a look at what a save would do now (a local scan and the index,
        nothing on the primary): the page shows unsaved changes, count and size."""
        if self.looker is not None and not self.looker.is_alive():
            if self.looker.stale:
                pass  # a save ended while it looked: what it saw is history
            elif self.looker.error is None:
                self.state.record_pending(self.looker.result)
            else:
                log.debug("could not look at the unsaved changes: %s", self.looker.error)
            self.looker = None
        if self.looker is None and self.worker is None and \
                now - self._looked >= self.look_every and not self.stops.fenced.is_set():
            self._looked = now
            self.looker = Worker("look", self._pending)
            self.looker.stale = False
            self.looker.start()

    def _pending(self) -> dict:
        return pending_changes(self.cfg.work, require_working_copy(self.cfg.work)).summary()

    def _backoff(self, failures: int) -> float:
        """Sooner than the interval after a failure: unsaved work should not wait longer."""
        first = max(1.0, self.opts.retry.initial_delay)
        return min(self.cfg.interval, first * 2 ** (failures - 1))

    def _save(self, task: str):
        confirmed = self.confirmed
        with self.hold.busy:
            self.hold.keep_work()
            report = save(self.cfg.work, self.opts, task=task, stop=self.stops.save_stop,
                          confirmed=confirmed)
        self.held_paths = report.held_paths
        if confirmed and self.confirmed is confirmed:
            self.confirmed = frozenset()  # carried out; a new confirmation is needed for more
        return report

    def _done(self, worker: Worker) -> bool:
        self._looked = float("-inf")  # look again at once: what the save left unsaved
        if self.looker is not None:
            self.looker.stale = True
        if worker.error is None:
            self.state.record_save(worker.started, report=worker.result, task=worker.name)
            return True
        if self.stops.shutdown.is_set():
            log.info("autosave stopped for the final save")
            return False
        if isinstance(worker.error, LockLostError):
            self.hold.trouble(worker.error)
        self.state.record_save(worker.started, error=worker.error, task=worker.name)
        return False

    # -- requests from the web -------------------------------------------------------
    def request_save(self) -> tuple[int, str]:
        if self.stops.fenced.is_set():
            return 409, "the lock was lost: nothing is saved any more"
        if self.state.phase != RUNNING:
            return 409, f"not running (phase {self.state.phase}); nothing to save yet"
        self.save_now.set()
        return 202, "a save starts now" if self.worker is None else \
            "a save is running; another one follows it"

    def request_confirm_deletions(self) -> tuple[int, str]:
        """POST /confirm-deletions: the deletions the last save held are carried out by the
        next save (exactly those paths: the guard still judges anything else)."""
        if self.stops.fenced.is_set():
            return 409, "the lock was lost: nothing is saved any more"
        if self.state.phase != RUNNING:
            return 409, f"not running (phase {self.state.phase})"
        paths = self.held_paths
        if not paths:
            return 409, "no deletions are held"
        self.confirmed = frozenset(paths)
        self.state.record_confirmed(len(paths))
        self.save_now.set()
        log.info("%s confirmed: the next save carries them out",
                 count(len(paths), "held deletion"), extra=fields(event="deletions-confirmed"))
        return 202, (f"{count(len(paths), 'held deletion')} confirmed: the save that starts "
                     "now moves them to the trash on the primary")
