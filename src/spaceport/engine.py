"""Machinery shared by deploy, save and undeploy: options, stores, the index recorder.

The flows themselves live in :mod:`spaceport.deploy` and :mod:`spaceport.save`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat as stat_mod
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import PartialSaveError, StorageUnavailableError, UsageError
from .index import Index, Known
from .lock import DEFAULT_STALE_AFTER, DEFAULT_STATUS_DIR
from .marker import MARKER_DIR
from .progress import Tracker
from .retry import RetryPolicy, retry_call, unavailable
from .scan import Entry, Kind
from .store import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore
from .transfer import KeptChangingError
from .trash import DEFAULT_RETENTION_DAYS
from .wording import count
from .worklock import DEFAULT_WAIT

log = logging.getLogger(__name__)

# Files copied at once (and folders listed, created or removed at once on the primary).
# Measured on a FUSE mount (docs/BENCHMARKS.md): with 5 ms per metadata call 32 jobs
# save 2.1 times faster than 8 and stage in 2.2 times faster; with 1 ms 16 and 32 tie
# and beat 8 by 10-15 %. Real OneData is 1-10 ms.
DEFAULT_JOBS = 32
PRIMARY, WORK = "primary", "work"  # sides of the inflight table


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
    heartbeat_interval: float | None = None
    mass_delete_threshold: float = 0.5
    trash_retention_days: float = DEFAULT_RETENTION_DAYS
    legacy_root: str | None = None  # the old tools' working root; None: found from their lists
    rebase: list[tuple[str, str]] = field(default_factory=list)
    tracker: Tracker = field(default_factory=Tracker)
    busy_wait: float = DEFAULT_WAIT  # seconds to wait for another command on the working copy
    say: Callable[[str], None] | None = None  # a line for the person at the terminal
    on_watch: Callable[[float, float], None] | None = None  # progress of a stale-lock watch

    def parameters(self) -> dict:
        """What goes into the lock file for a person to read."""
        return {"jobs": self.jobs, "status_dir": self.status_dir,
                "mass_delete_threshold": self.mass_delete_threshold,
                "trash_retention_days": self.trash_retention_days}


def open_primary(path: str, token: str, opts: Options) -> PosixStore:
    """Open the primary folder; a missing or broken mount is exit 6, not a traceback."""
    try:
        store = retry_call(opts.retry, PosixStore, path, PRIMARY_CAPABILITIES,
                           temp_token=token, fsync=opts.fsync, what=f"open {path}")
    except FileNotFoundError:
        raise StorageUnavailableError(
            f"the primary folder {path} does not exist.",
            hint="Is the OneData space mounted? Nothing was changed.") from None
    except NotADirectoryError:
        raise UsageError(f"the primary {path} is not a folder.") from None
    except OSError as exc:
        raise unavailable(exc, path) from exc
    return store


def open_work(path: str, token: str) -> PosixStore:
    return PosixStore(path, WORK_CAPABILITIES, temp_token=token, fsync=False)


def file_known(src_st: os.stat_result, dst_st: os.stat_result, path: str, *,
               work_is_src: bool) -> Known:
    """The index row for a file just copied, from the two stats the copy already has."""
    work_st, primary_st = (src_st, dst_st) if work_is_src else (dst_st, src_st)
    entry = Entry(path, Kind.FILE, work_st.st_size, work_st.st_mtime_ns,
                  stat_mod.S_IMODE(work_st.st_mode), work_st.st_ino, None, work_st.st_ctime_ns)
    return Known(entry, primary_st.st_size, primary_st.st_mtime_ns)


class IndexRecorder:
    """Batches index writes: one transaction per few hundred files or per second.

    Rows are handed over only after the file's rename succeeded; if the process dies before
    a flush, those files are simply copied again by the next run.
    """

    def __init__(self, index: Index, side: str, batch: int = 512, seconds: float = 1.0):
        self.index, self.side = index, side
        self.batch, self.seconds = batch, seconds
        self._rows: list[Known] = []
        self._forget: list[str] = []
        self._tmps: list[tuple[str, str]] = []
        self._last = time.monotonic()

    def done(self, known: Known | None = None, *, tmp: str | None = None) -> None:
        if known is not None:
            self._rows.append(known)
        if tmp is not None:
            self._tmps.append((self.side, tmp))
        self._maybe_flush()

    def forget(self, path: str) -> None:
        self._forget.append(path)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        pending = len(self._rows) + len(self._forget) + len(self._tmps)
        if pending >= self.batch or time.monotonic() - self._last > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self._rows or self._forget or self._tmps:
            self.index.record(self._rows, forget=self._forget, finished_tmps=self._tmps)
            self._rows, self._forget, self._tmps = [], [], []
        self._last = time.monotonic()


def remove_leftover_temps(index: Index, store: PosixStore, side: str) -> int:
    """Remove temporaries a killed run left behind (known from the index, no listing)."""
    tmps = index.inflight(side)
    for tmp in tmps:
        try:
            store.unlink(tmp)
        except FileNotFoundError:
            pass
    if tmps:
        index.drop_inflight(side, tmps)
        log.info("removed %d leftover temporary files on the %s side", len(tmps), side)
    return len(tmps)


def wipe_folder(path: str) -> None:
    """Remove everything inside ``path`` (not ``path`` itself: it may be a mount point)."""
    with os.scandir(path) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def separate_folders(first: str, second: str, names: tuple[str, str]) -> tuple[str, str]:
    """Absolute paths of two folders that must not overlap (one inside the other), the
    second of which must be a folder if it exists; UsageError otherwise."""
    first, second = os.path.abspath(first), os.path.abspath(second)
    real_a, real_b = os.path.realpath(first), os.path.realpath(second)
    for a, b in ((real_a, real_b), (real_b, real_a)):
        if a == b or a.startswith(b.rstrip("/") + "/"):
            raise UsageError(f"the {names[0]} {first} and the {names[1]} {second} overlap; "
                             "give two separate folders.")
    if os.path.lexists(second) and not os.path.isdir(second):
        raise UsageError(f"the {names[1]} {second} exists and is not a folder.")
    return first, second


def volume_artifacts(path: str) -> frozenset[str]:
    """Names at the top of a volume that belong to its filesystem, not to the project:
    ``lost+found`` at the root of a fresh ext4 volume (a Kubernetes working volume)."""
    return frozenset({"lost+found"}) if os.path.ismount(path) else frozenset()


def folder_is_empty(path: str) -> bool:
    ignore = {MARKER_DIR} | volume_artifacts(path)
    with os.scandir(path) as it:
        return not any(e.name not in ignore for e in it)


KEPT_CHANGING_HINT = ("Their previous versions are kept on the primary, none torn. Save "
                      "again once the application has finished writing them (or stop it).")


def describe_failures(failed: list[tuple[str, BaseException]]) -> tuple[str, str | None]:
    """A headline for per-file failures, and a hint when they share a known cause."""
    codes = {getattr(exc, "errno", None) for _, exc in failed}
    if any(isinstance(exc, KeptChangingError) for _, exc in failed):
        return ("files kept changing while they were copied (an application is writing "
                "them)", KEPT_CHANGING_HINT)
    if codes & {errno.ENOSPC, errno.EDQUOT}:
        return ("the destination storage is full (no space left or quota exceeded)",
                "Make room (or raise the quota), then run the same command again: the files "
                "that were written are kept and only the rest is copied.")
    if codes & {errno.EACCES, errno.EPERM}:
        return ("permission denied", "Check the permissions of the files named above.")
    return ("some files could not be copied", "Run the same command again to retry them.")


def partial_error(verb: str, failed: list[tuple[str, BaseException]], kept: str) -> PartialSaveError:
    headline, hint = describe_failures(failed)
    names = "\n".join(f"  {path}: {exc}" for path, exc in failed[:20])
    more = f"\n  … and {len(failed) - 20} more" if len(failed) > 20 else ""
    return PartialSaveError(
        f"{verb} incomplete: {headline}; {count(len(failed), 'file')} failed:\n{names}"
        f"{more}\n{kept}",
        [(p, str(e)) for p, e in failed], hint=hint,
        kept_changing=[p for p, e in failed if isinstance(e, KeptChangingError)])

