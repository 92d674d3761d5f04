"""``--bwlimit``: one meaning for every command that moves file data (deploy, save,
undeploy, clone, run, trash restore into a working copy).

The limit is on the bytes of file content copied, both ways, all workers together: what
the progress tracker counts (spaceport.engine.progress), so the rate a person sees and the
rate the limit holds are one number. Metadata calls, the hashing of a file already read and
the link manifest are not counted. The daemon lifts it for its final save (a pod being
deleted must not wait); a command run by hand keeps it to the end: it was asked for.

A token bucket without a burst: each chunk is reported after it moved, and the thread that
moved it sleeps until the chunk fits the rate, so over any stretch longer than one chunk
(at most 64 MiB, see spaceport.engine.transfer) the average stays at the limit.
"""

from __future__ import annotations

import threading
import time


class RateLimit:
    """A bandwidth limit shared by all copying threads; ``None``: no limit."""

    def __init__(self, bytes_per_second: float | None):
        self.rate = bytes_per_second
        self._lifted = threading.Event()
        self._lock = threading.Lock()
        self._next = 0.0

    def take(self, nbytes: int) -> None:
        """``nbytes`` just moved: sleep until they fit the rate."""
        if not self.rate or nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + nbytes / self.rate
            delay = self._next - now
        self._lifted.wait(delay)

    def lift(self) -> None:
        """No more limit, and sleeping threads wake now (shutting down)."""
        self.rate = None
        self._lifted.set()
