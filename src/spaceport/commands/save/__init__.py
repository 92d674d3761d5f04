"""Save: bring the primary up to date with the working copy, touching only what changed.

Order matters for safety: moves, new directories, then uploads (files first, then SQLite
databases as snapshots, deepest folder first: docs/RELIABILITY.md), then deletions
(skipped if any upload failed, as rclone does), then the link manifest, last. A save with
nothing changed reads the lock, rewrites its heartbeat, and makes no per-file call on the
primary. :mod:`.flow` reads as the sequence; each step is a module of this package.
"""

from .flow import save, save_copy
from .report import SaveReport

__all__ = ["save", "save_copy", "SaveReport"]
