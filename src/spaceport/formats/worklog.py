"""A log per working copy: ``<work>/.spaceport/log/spaceport.log``.

What each command did to the working copy, as plain lines with times (UTC), one line per
event: the command line, what spaceport logged while it ran (warnings always, the steps at
INFO), what it told the person at the terminal, and how it ended (exit code and message).
It rotates at 1 MiB and keeps 5 old files (``spaceport.log.1`` ... ``.5``). It is never saved
to the primary, and an undeploy that removes the working copy keeps it.

Nothing is written into a folder that is not a working copy: the lines wait in memory until
the work marker exists (a deploy creates it), so a refused deploy into a folder of other
files leaves nothing behind.
"""

from __future__ import annotations

import getpass
import logging
import logging.handlers
import os
import shlex
import socket
from datetime import datetime, timezone

from .. import __version__
from .marker import MARKER_FILE, UNDEPLOYED_FILE, marker_dir

LOG_DIR = "log"
LOG_NAME = "spaceport.log"
MAX_BYTES = 1 << 20
BACKUPS = 5
PENDING_MAX = 2000  # lines kept while waiting for the marker


def log_path(work: str) -> str:
    return os.path.join(marker_dir(work), LOG_DIR, LOG_NAME)


class _Lines(logging.Formatter):
    """``2026-11-29T07:06:07Z INFO    deploy[4242] message | second line``."""

    def __init__(self, command: str):
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        text = " | ".join(line.rstrip() for line in text.splitlines() if line.strip())
        return (f"{stamp:%Y-%m-%dT%H:%M:%SZ} {record.levelname:<7} "
                f"{self.command}[{record.process}] {text}")


class WorkLogHandler(logging.Handler):
    """Appends to the working copy's log once it is a working copy; until then, keeps the
    lines in memory."""

    def __init__(self, work: str, command: str):
        super().__init__(level=logging.INFO)
        self.work = os.path.abspath(work)
        self.setFormatter(_Lines(command))
        self._file: logging.handlers.RotatingFileHandler | None = None
        self._pending: list[logging.LogRecord] = []

    def _ready(self) -> bool:
        folder = marker_dir(self.work)
        return any(os.path.exists(os.path.join(folder, name))
                   for name in (MARKER_FILE, UNDEPLOYED_FILE))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._file is None:
                if not self._ready():
                    if len(self._pending) < PENDING_MAX:
                        self._pending.append(record)
                    return
                os.makedirs(os.path.dirname(log_path(self.work)), exist_ok=True)
                self._file = logging.handlers.RotatingFileHandler(
                    log_path(self.work), maxBytes=MAX_BYTES, backupCount=BACKUPS,
                    encoding="utf-8", errors="backslashreplace")
                self._file.setFormatter(self.formatter)
                for early in self._pending:
                    self._file.emit(early)
                self._pending.clear()
            self._file.emit(record)
        except Exception:  # noqa: BLE001 - a log must never break the command
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def started_line(argv: list[str]) -> str:
    """The first line of a command in the log: what was run, by whom, where."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return (f"spaceport {shlex.join(argv)} (spaceport {__version__}, user {user}, host "
            f"{socket.gethostname()}, in {os.getcwd()})")
