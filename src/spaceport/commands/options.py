"""What a command's flow may be told: one value the command line and the daemon fill."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..engine.progress import Tracker
from ..formats.trash import DEFAULT_RETENTION_DAYS
from ..safety.lock import DEFAULT_STALE_AFTER, DEFAULT_STATUS_DIR
from ..safety.worklock import DEFAULT_WAIT
from ..store.retry import RetryPolicy

# Files copied at once (and folders listed, created or removed at once on the primary).
# Measured on a FUSE mount (docs/BENCHMARKS.md): with 5 ms per metadata call 32 jobs
# save 2.1 times faster than 8 and stage in 2.2 times faster; with 1 ms 16 and 32 tie
# and beat 8 by 10-15 %. Real OneData is 1-10 ms.
DEFAULT_JOBS = 32


@dataclass
class Options:
    """Everything a flow may be told; the command line and the daemon fill it."""

    jobs: int = DEFAULT_JOBS
    status_dir: str = DEFAULT_STATUS_DIR
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fsync: bool = True  # fsync files on the primary before their rename
    instance: str | None = None
    stale_after: int = DEFAULT_STALE_AFTER
    live_lock: bool = False  # a long-running process keeps the lock (the daemon)
    # Keep CERIT's lock as a mirror of ours and write its symlink-dump (also without this,
    # on a primary CERIT's app has used): safety/lock/mirror.py, formats/cerit.py.
    cerit: bool = False
    heartbeat_interval: float | None = None
    mass_delete_threshold: float = 0.5
    trash_retention_days: float = DEFAULT_RETENTION_DAYS
    legacy_root: str | None = None  # the old tools' working root; None: found from their lists
    rebase: list[tuple[str, str]] = field(default_factory=list)
    tracker: Tracker = field(default_factory=Tracker)
    busy_wait: float = DEFAULT_WAIT  # seconds to wait for another command on the working copy
    say: Callable[[str], None] | None = None  # a line for the person at the terminal
    on_watch: Callable[[float, float], None] | None = None  # progress of a stale-lock watch
    # --exclude patterns given to this command (checked): they become the working copy's
    # remembered filter. None: keep the one it remembers (spaceport.engine.filters).
    exclude: list[str] | None = None

    def parameters(self) -> dict:
        """What goes into the lock file for a person to read."""
        return {"jobs": self.jobs, "status_dir": self.status_dir,
                "mass_delete_threshold": self.mass_delete_threshold,
                "trash_retention_days": self.trash_retention_days}
