"""What the daemon knows about itself, for its page, /status, /metrics and its log.

One :class:`State` per daemon, written by its threads and read by the HTTP server's, so
every access takes its lock. :class:`DaemonTracker` adds to the engine's progress tracker
the totals that /metrics needs (a task's own numbers restart with each save) and an
optional bandwidth limit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict, deque
from typing import TYPE_CHECKING, Protocol

from .. import __version__
from ..engine.bandwidth import RateLimit
from ..engine.progress import Tracker
from ..errors import Interrupted, SpaceportError
from ..safety.deletion_guard import held_warning
from ..wording import count, duration, human_size

if TYPE_CHECKING:
    from .config import DaemonConfig

log = logging.getLogger("spaceport.daemon")

STARTING, LOCKING, STAGING_IN = "starting", "locking", "staging-in"
READY, RUNNING, STAGING_OUT = "ready", "running", "staging-out"
RELEASED, STOPPED, FAILED, LOCK_LOST = "released", "stopped", "failed", "lock-lost"
# --wait-for-lock: another deployment (or CERIT's app) holds the primary; nothing is taken,
# the lock is looked at again every few seconds, and stage-in starts once it is free.
WAITING_FOR_LOCK = "waiting-for-lock"
PHASES = (STARTING, LOCKING, WAITING_FOR_LOCK, STAGING_IN, READY, RUNNING, STAGING_OUT,
          RELEASED, STOPPED, FAILED, LOCK_LOST)
READY_PHASES = frozenset({READY, RUNNING})
ERRORS_KEPT = 50
MAIN_LOOP_STALL = 60.0  # seconds without a tick of the main loop: /healthz says 503


class Worker(threading.Thread):
    """A thread that keeps its function's result or exception for the main loop."""

    def __init__(self, name: str, fn, *args):
        super().__init__(name=name, daemon=True)
        self.fn, self.args = fn, args
        self.result = None
        self.error: BaseException | None = None
        self.started = time.time()

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main loop
            self.error = exc


class DaemonTracker(Tracker):
    """The engine's tracker, plus totals that only grow and an optional rate limit."""

    def __init__(self, bwlimit: float | None = None):
        super().__init__(RateLimit(bwlimit))
        self.bytes_moved: dict[str, int] = defaultdict(int)
        self.files_moved: dict[str, int] = defaultdict(int)

    def advance(self, name: str, *, files: int = 0, nbytes: int = 0) -> None:
        super().advance(name, files=files, nbytes=nbytes)
        with self._lock:
            # A failed copy takes its bytes back from the task; they still crossed the wire.
            self.bytes_moved[name] += max(nbytes, 0)
            self.files_moved[name] += max(files, 0)

    def unthrottle(self) -> None:
        """Lift the limit (shutting down: the stop and the final save must not wait)."""
        self.limit.lift()

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.bytes_moved), dict(self.files_moved)


class State:
    """The daemon's facts; thread-safe."""

    def __init__(self, cfg: "DaemonConfig", tracker: DaemonTracker):
        self.cfg, self.tracker = cfg, tracker
        self._lock = threading.Lock()
        self.phase, self.message = STARTING, ""
        self.started = self.phase_since = time.time()
        self.deployment_id: str | None = None
        self.resumed = False
        self.lock_lost: str | None = None
        self.been_ready = False  # ready once: the application may run (the web proxy's gate)
        self.exit_code: int | None = None
        self.next_save_in: float | None = None
        self.url: str | None = None
        self.problems: dict[str, str] = {}  # what makes health "degraded", by source
        self.errors: deque[dict] = deque(maxlen=ERRORS_KEPT)
        self.error_counts: Counter[str] = Counter()
        self.saves: Counter[str] = Counter()  # "ok", "failed"
        self.save_seconds = 0.0
        self.last_save: dict | None = None
        self.last_ok_save: float | None = None
        self.last_clone: dict | None = None
        self.clone_progress = None  # the CloneProgress of the clone under way or the last one
        self.held_deletions: dict | None = None  # what the deletion guard holds (last save)
        self.special: list[str] = []  # special files the last save skipped
        self.pending: dict | None = None  # what a save would do now (a look, see running)
        self.pending_at: float | None = None
        self.confirmed: dict | None = None  # the last confirmation of held deletions
        # The daemon has an API token (set by the web server; never the token itself):
        # held deletions can be confirmed on its page. Without one, nothing confirms them
        # while it runs, and its log says what does.
        self.has_token = False
        self._tick = time.monotonic()
        self._last_progress_log = time.monotonic()

    # -- changes -------------------------------------------------------------------
    def set_phase(self, phase: str, message: str = "", *, quiet: bool = False) -> None:
        with self._lock:
            self.phase, self.message, self.phase_since = phase, message, time.time()
            self.been_ready = self.been_ready or phase in READY_PHASES
        if not quiet:
                log.info("phase %s%s", phase, f": {message}" if message else "",
                     extra={"fields": {"event": "phase", "phase": phase}})

    def set_message(self, message: str) -> None:
        """A new message for the same phase (its "since" stays); not logged."""
        with self._lock:
            self.message = message

    def tick(self) -> None:
        self._tick = time.monotonic()

    def problem(self, where: str, what: BaseException | str, *, quiet: bool = False) -> None:
        text = describe(what)
        with self._lock:
            repeated = self.problems.get(where) == text
            self.problems[where] = text
            self.errors.append({"time": time.time(), "where": where, "message": text})
            self.error_counts[where] += 1
        if not repeated and not quiet:
            log.warning("%s: %s", where, text, extra={"fields": {"event": "error",
                                                                  "where": where}})

    def solved(self, where: str) -> None:
        with self._lock:
            gone = self.problems.pop(where, None)
        if gone:
            log.info("%s: working again", where, extra={"fields": {"event": "recovered",
                                                                    "where": where}})

    def record_save(self, started: float, *, report=None, error: BaseException | None = None,
                    task: str = "autosave") -> None:
        seconds = time.time() - started
        entry = {"task": task, "time": time.time(), "seconds": round(seconds, 3),
                 "ok": error is None}
        if report is not None:
            entry.update(uploaded=report.uploaded, bytes=report.uploaded_bytes,
                         deleted=report.deleted, moved=getattr(report, "moved", 0),
                         unchanged=report.plan.get("unchanged", 0),
                         trashed=list(getattr(report, "trashed", ())),
                         trash_batch=report.trash_batch)
        if error is not None:
            entry["error"] = describe(error)
        with self._lock:
            self.last_save = entry
            self.saves["ok" if error is None else "failed"] += 1
            self.save_seconds += seconds
            if error is None:
                self.last_ok_save = entry["time"]
        if report is not None:
            self.record_held(report)
        if error is None:
            self.solved("save")
            log.info("%s done in %.1f s: %s uploaded, %d renamed, %d moved to the trash", task,
                     seconds, count(entry["uploaded"], "file"), entry.get("moved", 0),
                     entry["deleted"],
                     extra={"fields": {"event": "save", **entry}})
        else:
            self.problem("save", f"{task} failed: {entry['error']}")

    def record_held(self, report) -> None:
        """The deletions the save held (said in the log when they change, not at every
        autosave) and the special files it skipped."""
        with self._lock:
            self.held_deletions, self.special = report.held, list(report.special)
        if report.held and report.held_new:
            log.warning("%s", held_warning(report.held, how_to_confirm(self.cfg,
                                                                       self.has_token)),
                        extra={"fields": {"event": "deletions-held",
                                          "held": report.held["count"]}})

    def record_pending(self, summary: dict | None) -> None:
        """What a save would do now, from the last look at the working copy."""
        with self._lock:
            self.pending, self.pending_at = summary, time.time()

    def record_confirmed(self, count_confirmed: int) -> None:
        with self._lock:
            self.confirmed = {"time": time.time(), "count": count_confirmed}

    def record_clone(self, started: float, *, report=None, error: BaseException | None = None):
        entry = {"time": time.time(), "seconds": round(time.time() - started, 3),
                 "ok": error is None}
        if report is not None:
            entry.update(files=report.files, copied=report.copied, bytes=report.copied_bytes,
                         removed=report.removed)
        with self._lock:
            self.last_clone = entry
        if error is None:
            self.solved("clone")
            log.info("source cloned: %d files (%d copied, %d removed) in %.1f s",
                     report.files, report.copied, report.removed, entry["seconds"],
                     extra={"fields": {"event": "clone", **entry}})
        elif not isinstance(error, Interrupted):
            self.problem("clone", error)

    # -- reading -------------------------------------------------------------------
    def health(self) -> tuple[str, str]:
        """("ok" | "degraded" | "lock-lost" | "failed" | "stalled", why)."""
        with self._lock:
            if time.monotonic() - self._tick > MAIN_LOOP_STALL:
                return "stalled", f"the main loop has not run for {MAIN_LOOP_STALL:g} s"
            if self.lock_lost:
                return "lock-lost", f"the lock is held by {self.lock_lost}"
            if self.phase == FAILED:
                return "failed", self.message
            if self.problems:
                return "degraded", "; ".join(f"{k}: {v}" for k, v in self.problems.items())
            return "ok", ""

    def snapshot(self) -> dict:
        """Everything /status, the page and /metrics show. No secret is ever in here."""
        health, why = self.health()
        cfg = self.cfg
        with self._lock:
            return {
                "version": __version__, "phase": self.phase, "message": self.message,
                "phase_since": self.phase_since, "started": self.started, "now": time.time(),
                "ready": self.phase in READY_PHASES, "health": health, "health_reason": why,
                "deployment_id": self.deployment_id, "resumed": self.resumed,
                "primary": cfg.primary, "work": cfg.work, "source": cfg.source,
                "source_work": cfg.source_work, "interval": cfg.interval,
                "final_save_deadline": cfg.final_save_deadline,
                "next_save_in": self.next_save_in, "lock_lost": self.lock_lost,
                "tasks": self.tracker.snapshot(), "last_save": self.last_save,
                "last_successful_save": self.last_ok_save,
                "saves": {"ok": self.saves["ok"], "failed": self.saves["failed"],
                          "seconds_total": round(self.save_seconds, 3)},
                "last_clone": self.last_clone, "source_progress": self._source_progress(),
                "errors": list(self.errors)[::-1],
                "held_deletions": self.held_deletions, "special": list(self.special),
                "pending": self.pending, "pending_at": self.pending_at,
                "confirmed": self.confirmed,
                "error_counts": dict(self.error_counts), "exit_code": self.exit_code,
            }

    def _source_progress(self) -> dict | None:
        """The source's clone apart from the project: where it is and what is missing. The
        desktop may start before it is complete (--source-in-background)."""
        cfg, p = self.cfg, self.clone_progress
        if not cfg.source:
            return None
        stage = p.stage if p is not None else "waiting"
        return {"in_background": cfg.source_in_background, "stage": stage,
                "complete": stage == "complete",
                "first_files": p.first_files if p else 0, "first_done": p.first_done if p else 0,
                "files_missing": p.files_missing if p else None,
                "bytes_missing": p.bytes_missing if p else None}

    def ready_text(self) -> str:
        return json.dumps({"phase": READY, "deployment_id": self.deployment_id,
                           "url": self.url, "time": time.time()}) + "\n"

    def progress_line(self, every: float) -> str | None:
        """One log line about running copies, at most every ``every`` seconds."""
        now = time.monotonic()
        if now - self._last_progress_log < every:
            return None
        self._last_progress_log = now
        parts = [progress_text(t) for t in self.tracker.snapshot() if t["finished"] is None]
        return "progress: " + "; ".join(parts) if parts else None


def how_to_confirm(cfg: "DaemonConfig", has_token: bool) -> str:
    """How a person carries out the deletions this daemon holds, as its log says it (after
    "If you deleted them on purpose,"). Without a token nothing confirms them while it runs:
    POST /confirm-deletions is disabled and a command beside a running daemon is refused
    (exit 4); a stopped daemon has given its working copy up (its final save holds them too,
    recording them in the primary's journal), so a new deployment restores the files first."""
    if has_token:
        return ("confirm them on the daemon's page (its form asks for the token) or with POST "
                "/confirm-deletions (token)")
    return ("know that this daemon cannot confirm them (it was started without --token, and "
            "a command beside it is refused): stop it (the files stay on the primary, recorded "
            "in its journal), start it again with --token or --token-file, delete them again "
            "in the copy it restores, and confirm them on its page when it holds them; or, "
            f"with the daemon stopped, run 'spaceport deploy {cfg.primary} {cfg.work}', delete "
            f"them again, and run 'spaceport save --allow-mass-delete {cfg.work}'")


# One size formatter for the whole tool (spaceport.wording); the daemon's modules import it
# from here under its old name.
human_bytes = human_size


def progress_text(task: dict, *, share: bool = True) -> str:
    """One line about a copy; ``share=False`` leaves the percentage out (a bar shows it)."""
    if not task["bytes_total"] and not task["files_total"]:
        return f"{task['name']} scanning"
    part = task["bytes_done"] / task["bytes_total"] if task["bytes_total"] else 1.0
    eta = f", about {duration(task['eta'])} left" if task.get("eta") else ""
    return (f"{task['name']} {human_bytes(task['bytes_done'])} of "
            f"{human_bytes(task['bytes_total'])}" + (f" ({part:.0%})" if share else "")
            + f", {task['files_done']} of {count(task['files_total'], 'file')}, "
            f"{human_bytes(task['rate'])}/s{eta}")


def describe(what: BaseException | str) -> str:
    if isinstance(what, str):
        text = what
    elif isinstance(what, SpaceportError):
        text = what.message
    else:
        text = str(what) or type(what).__name__
    return " ".join(text.split())


class Backend(Protocol):
    """What the web server needs of the daemon: its state, and the requests it takes."""

    state: State
    tracker: DaemonTracker

    def request_save(self) -> tuple[int, str]: ...

    def request_clone(self) -> tuple[int, str]: ...

    def request_confirm_deletions(self) -> tuple[int, str]: ...
