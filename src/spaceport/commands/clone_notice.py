"""The notice at the root of a clone that is not complete yet.

A person (or a script) who opens the source's working copy while its clone still runs, as
happens with ``spaceport run --source-in-background``, must not take what is there for the
whole source. While a clone runs, a plainly named text file at the copy's root says so: that
files are still arriving (each one whole, never half), how many are still to come, and
where to watch the progress. The clone removes it when it ends complete; a clone that is
stopped or fails leaves it, rewritten to say so, since the copy is still incomplete. A
copy that was never complete has it from the clone's first second; a re-run of a complete
one writes it only once it knows it will change something.

The name is part of what a clone never treats as source data (``SKIP_TOP`` in
:mod:`spaceport.commands.clone`): the clone neither copies a file of that name from the
source nor removes this one as something the source lacks.
"""

from __future__ import annotations

import os
import time

from ..clock import iso, utcnow
from ..store.base import TEMP_PREFIX
from ..wording import count, human_size

NOTICE_NAME = "SOURCE-DATA-INCOMPLETE.txt"
REWRITE_EVERY = 15.0  # seconds between two updates of the counts while files arrive
DEFAULT_WATCH = "the output of the command that runs the clone ('spaceport clone')"


class Notice:
    """Writes, updates and removes ``<dest>/SOURCE-DATA-INCOMPLETE.txt``."""

    def __init__(self, dest: str, source: str, watch: str | None = None):
        self.path = os.path.join(dest, NOTICE_NAME)
        self.source, self.watch = source, watch or DEFAULT_WATCH
        self._written = 0.0
        self.written = False  # by this clone

    def say(self, what: str, *, files: int | None = None, nbytes: int | None = None,
            first: int = 0, force: bool = True) -> None:
        """Write the notice: ``what`` is the state in a few words; ``files`` and ``nbytes``
        what is still to come, when known. Unless ``force``, at most every REWRITE_EVERY s."""
        now = time.monotonic()
        if not force and now - self._written < REWRITE_EVERY:
            return
        self._written = now
        if files is None:
            missing = "How much is missing is not known yet: the source is still being listed."
        else:
            missing = (f"As of {iso(utcnow())}, {count(files, 'file')} ({human_size(nbytes or 0)})"
                       " were still to come.")
        head = (f"The files the project links to ({count(first, 'file')}) are copied first, "
                "then the rest in path order.\n") if first else ""
        text = (
            "THE SOURCE DATA IN THIS FOLDER IS NOT COMPLETE YET.\n\n"
            f"{what}\n\n"
            f"It is a read-only copy of {self.source}. Files appear here one at a time, each "
            "only once it is complete: what you see is whole, but files are still missing.\n"
            f"{head}{missing}\n\n"
            "An import that reads this folder now sees only the files that have arrived; use "
            "streaming mode to take the others as they come, or wait until this file is gone.\n"
            f"Watch the progress: {self.watch}\n\n"
            "spaceport removes this file when the copy is complete.\n")
        # A hidden temporary name, like the clone's own: no import pattern matches it.
        tmp = os.path.join(os.path.dirname(self.path), f"{TEMP_PREFIX}notice-{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o444)
        os.replace(tmp, self.path)
        self.written = True

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
