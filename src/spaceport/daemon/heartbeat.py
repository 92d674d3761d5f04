"""The daemon's lock heartbeat, in its own thread while the daemon holds the lock."""

from __future__ import annotations

import threading
from typing import Callable

from ..commands.options import Options
from ..errors import LockLostError, SpaceportError
from ..formats.marker import Marker
from ..safety.lock import DeploymentLock, LockInfo, read_lock
from ..store.sides import open_primary
from .state import State, describe


class Heartbeat:
    """The daemon's lock heartbeat, from the moment it holds the lock to the release.

    Each beat opens the primary afresh: after a oneclient restart the old descriptor points
    into a dead mount. A beat that cannot reach the lock is a problem to report and retry
    (the lock is never given up silently); a lock held by someone else is fencing.

    It beats the lock of ``marker``'s deployment on ``primary``, only while nothing else
    writes the primary (``busy``: a save carries its own heartbeat), reports into ``state``,
    and calls ``on_lost`` with the new holder when another deployment took the lock.
    """

    def __init__(self, primary: str, marker: Marker, opts: Options, busy: threading.Lock,
                 state: State, on_lost: Callable[[str], None]):
        self.primary, self.marker, self.busy = primary, marker, busy
        self.state, self.on_lost = state, on_lost
        self.interval = opts.heartbeat_interval or max(1.0, opts.stale_after / 4)
        self.released = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daemon-heartbeat", daemon=True)
        self.opts = opts  # each call of a beat is retried on transient errors (--retries)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, released: bool = False, join: bool = True) -> None:
        self.released = self.released or released
        self._stop.set()
        if join and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.busy.acquire(blocking=False):
                try:
                    self.beat()
                finally:
                    self.busy.release()

    def beat(self) -> None:
        marker = self.marker
        try:
            with open_primary(self.primary, marker.token, self.opts) as store:
                holder = read_lock(store, marker.status_dir)
                if isinstance(holder, LockInfo) and holder.deployment_id == marker.deployment_id:
                    DeploymentLock(store, marker.status_dir, holder).heartbeat()
                    self.state.solved("lock")
                elif holder is None:
                    self.state.problem("lock", "the lock file is missing on the primary (not "
                                               "mounted, or removed); nothing is written until "
                                               "it is back")
                else:
                    self.on_lost(holder.describe())
        except LockLostError as exc:  # replaced between the read and the write
            self.state.problem("lock", exc)
        except (OSError, SpaceportError) as exc:
            self.state.problem("lock", f"lock heartbeat failed: {describe(exc)}")
