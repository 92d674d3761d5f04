"""Stopping on a signal: SIGINT, SIGTERM and SIGHUP alike, and never in the middle of a step.

Ctrl-C, a ``kill``, a dropped ssh session: deploy, save and undeploy stop cleanly, record
what landed, and exit 130 with one line, wherever the signal lands. The handler therefore
raises nothing: an exception thrown at an arbitrary bytecode can land between a SQLite
``BEGIN`` and its ``COMMIT`` (the next transaction then fails with "cannot start a
transaction within a transaction") or inside a ``finally`` that was cleaning up. It only
sets a flag; the flows look at the flag at safe points (between chunks of a copy, between
folders of a scan, between steps) and end with :class:`~spaceport.errors.Interrupted`.

The flag takes no lock: ``threading.Event.set()`` from a handler deadlocks if the signal
lands while the main thread holds the Event's own lock. A second signal exits at once
(``os._exit(130)``): every write spaceport makes is a rename of a complete file, so that is
as safe as the SIGKILL every command already survives, and the same command run again
resumes.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import EXIT_INTERRUPTED, Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL = 0.05  # seconds between two looks at the flag while waiting


class StopFlag:
    """What :class:`threading.Event` offers a copy loop (``set``, ``is_set``, ``wait``),
    without a lock, so a signal handler may set it."""

    def __init__(self) -> None:
        self._set = False
        self.signal: int | None = None  # the signal that set it, if one did

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        self._set = False

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(POLL if left is None else min(POLL, left))
        return self.is_set()


class Halt(StopFlag):
    """A flag of its own that also reads as set when ``parent`` is: a run stops its copies
    for a reason of its own (a full disk) without claiming that the user asked it to."""

    def __init__(self, parent=None) -> None:
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return self._set or (self.parent is not None and self.parent.is_set())


# The flag of the command this process runs, if it installed one: waits deep in the engine
# (another command's busy lock, retry backoff) end early when it is set.
_current: StopFlag | None = None


def requested() -> bool:
    return _current is not None and _current.is_set()


def check(what: str = "stopped") -> None:
    """Raise Interrupted if this process was asked to stop."""
    if requested():
        raise Interrupted(what)


def sleep(seconds: float) -> None:
    """time.sleep that ends with Interrupted as soon as the process is asked to stop."""
    end = time.monotonic() + seconds
    while True:
        check("stopped while waiting")
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(POLL, left))


def _say(text: str) -> None:
    try:
        os.write(2, text.encode())  # no buffered stream, no lock: safe in a handler
    except OSError:
        pass


@contextmanager
def stop_on_signals(flag: StopFlag | None = None, *, restore: bool = True) -> Iterator[StopFlag]:
    """While inside, SIGINT, SIGTERM and SIGHUP set ``flag``; a second one exits 130 at once.
    ``restore=False`` leaves the handlers in place afterwards (a command line that has done
    its work: a signal while it prints its report changes nothing, and it exits as it would;
    :func:`spaceport.cli.main` gives them back when it is called as a library)."""
    global _current
    flag = flag or StopFlag()

    def handler(signum, frame) -> None:
        if flag.is_set():
            _say(f"\n{signal.Signals(signum).name} again: stopping at once. Run the same "
                 "command again to resume.\n")
            os._exit(EXIT_INTERRUPTED)
        flag.signal = signum
        flag.set()
        _say(f"\n{signal.Signals(signum).name} received: stopping after the files in flight "
             "(again to stop at once)\n")

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    outer, _current = _current, flag
    try:
        yield flag
    finally:
        _current = outer
        for sig, old in previous.items() if restore else ():
            signal.signal(sig, old)
