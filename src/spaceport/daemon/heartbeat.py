"""The daemon's lock heartbeat, in its own thread while the daemon holds the lock."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import LockLostError, SpaceportError
from ..safety.lock import DeploymentLock, LockInfo, read_lock
from ..store.retry import RetryPolicy
from ..store.sides import open_primary
from .state import describe

if TYPE_CHECKING:
    from .lifecycle import Daemon


class Heartbeat:
    """The daemon's lock heartbeat, from the moment it holds the lock to the release.

    Each beat opens the primary afresh: after a oneclient restart the old descriptor points
    into a dead mount. A beat that cannot reach the lock is a problem to report and retry
    (the lock is never given up silently); a lock held by someone else is fencing.
    """

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.interval = daemon.opts.heartbeat_interval or max(1.0, daemon.opts.stale_after / 4)
        self.released = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daemon-heartbeat", daemon=True)
        self._quick = replace(daemon.opts, retry=RetryPolicy.none())  # the next beat retries

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, released: bool = False, join: bool = True) -> None:
        self.released = self.released or released
        self._stop.set()
        if join and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.daemon.primary_busy.acquire(blocking=False):
                try:
                    self.beat()
                finally:
                    self.daemon.primary_busy.release()

    def beat(self) -> None:
        d, marker = self.daemon, self.daemon.marker
        try:
            with open_primary(d.cfg.primary, marker.token, self._quick) as store:
                holder = read_lock(store, marker.status_dir)
                if isinstance(holder, LockInfo) and holder.deployment_id == marker.deployment_id:
                    DeploymentLock(store, marker.status_dir, holder).heartbeat()
                    d.state.solved("lock")
                elif holder is None:
                    d.state.problem("lock", "the lock file is missing on the primary (not "
                                            "mounted, or removed); nothing is written until "
                                            "it is back")
                else:
                    d.lose_lock(holder.describe())
        except LockLostError as exc:  # replaced between the read and the write
            d.state.problem("lock", exc)
        except (OSError, SpaceportError) as exc:
            d.state.problem("lock", f"lock heartbeat failed: {describe(exc)}")
