"""The daemon's main thread: signals, waiting for workers, progress lines.

The main thread only orchestrates and watches for signals. The signal handler only counts
(setting an Event from a handler can deadlock on the Event's lock when the signal lands while
the main thread holds it); the loop applies the count every POLL seconds, while it waits for
workers or sleeps. Copies, saves and clones run in worker threads; the lock heartbeat and the
HTTP server in their own.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from .logs import fields
from .state import DaemonTracker, State

log = logging.getLogger("spaceport.daemon")  # its name from before the package

POLL = 0.1  # seconds between two looks of the main loop at signals and workers
PROGRESS_LOG_SECONDS = 30.0  # a progress line in the log during long copies


class Stops:
    """What stops what: set by a signal, a deadline or fencing; read by the phases and the
    workers."""

    def __init__(self):
        self.shutdown = threading.Event()  # first SIGTERM/SIGINT
        self.copy_stop = threading.Event()  # stops stage-in copies and clones
        self.save_stop = threading.Event()  # stops an autosave (shutdown, fencing)
        self.abort = threading.Event()  # stops the final save (deadline, second signal)
        self.fenced = threading.Event()  # the lock was taken by someone else


class MainLoop:
    """The main thread's waiting: every POLL seconds it applies the signals counted since
    its last look, ticks the state (a stalled main loop makes /healthz say 503) and checks
    what it waits for."""

    def __init__(self, stops: Stops, state: State, tracker: DaemonTracker):
        self.stops, self.state, self.tracker = stops, state, tracker
        self._signals: list[int] = []
        self._applied = 0

    def catch_signals(self) -> dict:
        """Count SIGTERM and SIGINT from now on; returns the handlers they had."""
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def restore_signals(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    @property
    def signals_received(self) -> int:
        return len(self._signals)

    def _on_signal(self, signum, frame) -> None:
        self._signals.append(signum)  # nothing else here: see the module docstring

    def apply_signals(self) -> None:
        """The first signal stops what runs (a final save follows); a second one aborts
        the final save, keeping the lock and the working copy."""
        self.state.tick()
        while self._applied < len(self._signals):
            name = signal.Signals(self._signals[self._applied]).name
            self._applied += 1
            if self._applied == 1:
                log.info("%s received: stopping", name, extra=fields(event="signal"))
                self.stops.shutdown.set()
                self.stops.copy_stop.set()
                self.stops.save_stop.set()
                self.tracker.unthrottle()
            else:
                log.warning("%s received again: aborting; the lock and the working copy are "
                            "kept", name)
                self.stops.abort.set()

    def wait(self, workers, *, deadline: float | None = None, on_tick=None,
             on_deadline=None) -> None:
        """Until the workers are done, or the ``deadline`` (monotonic) passed."""
        while any(w.is_alive() for w in workers):
            self.apply_signals()
            if on_tick:
                on_tick()
            if deadline is not None and time.monotonic() >= deadline:
                if on_deadline:
                    on_deadline()
                return
            time.sleep(POLL)

    def sleep(self, seconds: float, *, until) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            self.apply_signals()
            time.sleep(POLL)

    def log_progress(self) -> None:
        line = self.state.progress_line(PROGRESS_LOG_SECONDS)
        if line:
            log.info("%s", line, extra=fields(event="progress"))
