"""The source's clone: beside the project's restore at stage-in, and again when asked
(POST /clone). One clone at a time; a failed one on request is reported on the page and the
daemon goes on.

At stage-in the clone copies first the source files the project's links point at
(:mod:`spaceport.commands.clone_first`), then the rest in path order. With
``--source-in-background`` the daemon is ready once the project is in, and this clone goes on
behind it (:mod:`.staging_in`); its progress is shown apart from the project's
(``State.source_progress``), and its notice at the copy's root points to the page."""

from __future__ import annotations

import logging
import threading
import time

from ..commands.clone import CloneProgress, clone
from ..commands.clone_first import needed_by_project
from ..commands.options import Options
from ..errors import Interrupted
from .config import DaemonConfig
from .mainloop import Stops
from .state import LOCK_LOST, READY, RUNNING, DaemonTracker, State, Worker, describe

log = logging.getLogger("spaceport.daemon")  # its name from before the package


class SourceClone:
    """Clones ``cfg.source`` into ``cfg.source_work``; ``worker`` is a clone asked for."""

    def __init__(self, cfg: DaemonConfig, opts: Options, tracker: DaemonTracker, state: State,
                 stops: Stops):
        self.cfg, self.opts, self.tracker, self.state, self.stops = cfg, opts, tracker, state, stops
        self.worker: Worker | None = None
        self._lock = threading.Lock()

    def run(self, *, project_first: bool = False) -> None:
        """One clone; ``project_first``: what the project's links point at comes first."""
        with self._lock:
            self.tracker.start("clone", files=0, nbytes=0)
            started = time.time()
            progress = self.state.clone_progress = CloneProgress()
            try:
                first = needed_by_project(self.cfg.primary, self.cfg.work, self.cfg.source_work,
                                          self.opts) if project_first else []
                report = clone(self.cfg.source, self.cfg.source_work, self.opts,
                               stop=self.stops.copy_stop, first=first,
                               watch=self._watch_text(), progress=progress)
            except BaseException as exc:
                # A failure before the clone got going (the source not mounted) too.
                progress.stage = "stopped" if isinstance(exc, Interrupted) else "failed"
                self.state.record_clone(started, error=exc)
                raise
            self.state.record_clone(started, report=report)

    def at_stage_in(self) -> None:
        self.run(project_first=True)

    def _watch_text(self) -> str:
        where = self.state.url or "the progress page of spaceport (its --listen address)"
        return (f"{where} (the line 'Source data'), or 'spaceport wait --source --url "
                f"{self.state.url or 'URL'}' in a terminal")

    def request(self) -> tuple[int, str]:
        """POST /clone: the HTTP status and message."""
        if not self.cfg.source:
            return 409, "no source is configured (--source, --source-work)"
        if self.state.phase not in (READY, RUNNING, LOCK_LOST):
            return 409, f"not now (phase {self.state.phase})"
        if self._lock.locked():
            return 409, "a clone is already running"
        self.worker = Worker("clone", self._quietly)
        self.worker.start()
        return 202, "the clone starts now"

    def _quietly(self) -> None:
        try:
            self.run()
        except Interrupted:
            log.info("clone stopped")
        except BaseException as exc:  # noqa: BLE001 - reported on the page, the daemon goes on
            log.error("clone failed: %s", describe(exc))
