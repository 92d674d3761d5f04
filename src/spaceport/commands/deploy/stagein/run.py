"""One stage-in being carried out: what its steps share (the working copy, the report, the
index recorder, the failures so far, the halt that stops the copies)."""

from __future__ import annotations

import errno
import threading

from ....engine.recorder import IndexRecorder
from ....errors import Interrupted
from ....stopping import Halt
from ....store.sides import WORK
from ...workcopy import WorkingCopy

FULL = (errno.ENOSPC, errno.EDQUOT)


class StageRun:
    """The state the stage-in's steps share."""

    def __init__(self, copy: WorkingCopy, report, stop: threading.Event, check):
        self.copy = copy
        self.primary, self.work, self.index = copy.primary, copy.work, copy.index
        self.marker, self.opts, self.report, self.stop = copy.marker, copy.opts, report, stop
        self.check = check
        self.halt = Halt(stop)  # the copies stop on a signal, or at a full disk
        self.recorder = IndexRecorder(self.index, WORK)
        self.failed: list[tuple[str, BaseException]] = []
        self.full: OSError | None = None
        self.unsafe: set[str] = set()  # proven versions whose copy to the trash failed

    def stopped(self) -> None:
        if self.stop.is_set():
            raise Interrupted("the deploy was stopped; run it again to resume")
