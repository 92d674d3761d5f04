"""The lock kept alive while a command works: heartbeats from a background thread.

A save from the command line holds the lock for as long as it writes; the daemon beats its
own heartbeat between saves (:mod:`spaceport.daemon.heartbeat`).
"""

from __future__ import annotations

import logging
import threading
import time

from ...errors import LockLostError, StorageUnavailableError
from ...store.base import DetachedError
from .holding import DeploymentLock

log = logging.getLogger("spaceport.safety.lock")  # one logger for the whole lock package


class LockKeeper:
    """Beats a lock's heartbeat from a background thread while work goes on.

    If the lock is found lost, ``lost`` is set and every later ``check()`` raises, so
    workers stop before their next write. Storage errors are logged and retried at the next
    beat: a flaky mount must not silently give up the lock.
    """

    def __init__(self, lock: DeploymentLock, interval: float | None = None,
                 fence=None):
        self.lock = lock
        self.interval = interval if interval is not None else max(1.0, lock.info.stale_after / 4)
        self.fence = fence
        self.lost: LockLostError | StorageUnavailableError | None = None
        self.last_error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-heartbeat", daemon=True)

    def __enter__(self) -> "LockKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost:
            raise self.lost
        if self.fence is not None:
            self.fence.check()

    def _run(self) -> None:
        # With a fence (a save at work) the lock is read every second, commits or not, and
        # the heartbeat file is written every ``interval``.
        tick = min(self.interval, self.fence.max_age) if self.fence else self.interval
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval
                    self.lock.heartbeat()
                else:
                    self.fence.refresh()
                self.last_error = None
            except LockLostError as exc:
                log.error("%s", exc.message)
                self._lose(exc)
                return
            except OSError as exc:
                self.last_error = exc
                log.warning("lock heartbeat failed (%s); will retry", exc)
                if isinstance(exc, DetachedError):
                    # The path leads elsewhere now: nothing written through the old
                    # descriptor would be seen. Stop the writers (exit 6 for them).
                    self._lose(StorageUnavailableError(
                        f"the primary {self.lock.store.root} was unmounted during the work.",
                        hint="Nothing more was written. The working copy and the lock are "
                             "kept; mount the primary again and rerun the command."))
                    return

    def _lose(self, exc) -> None:
        self.lost = exc
        if self.fence is not None:
            self.fence.lose(exc)
