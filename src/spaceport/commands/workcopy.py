"""A working copy as a command holds it: one value, opened once and handed down every step.

A command that works on a working copy needs the same things in the same order: its marker
(refused without one: an unmounted volume looks like that), the busy lock that keeps other
commands out (:mod:`spaceport.safety.worklock`), the two stores, the state index (rebuilt by
comparing both sides when damaged), and the deployment lock on the primary, adopted only if
it names this very copy. :func:`open_copy` builds them once; :class:`WorkingCopy` carries
them to the save, the final check and the removal of an undeploy, so none of them opens the
same things again from a path.

The scan of a working copy (:func:`scan_work`) lives here too: what counts as project data
in a working copy (not the marker, not the reserved names) is a fact about working copies.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from ..clock import utcnow
from ..engine.filters import Exclude, compile_excludes
from ..engine.index import Index, IndexDamagedError
from ..engine.plan import SavePlan, plan_save
from ..engine.scan import ScanResult, scan_tree
from ..engine.snapshot import fold_companions
from ..errors import LockLostError
from ..formats.legacy import TOP_LEVEL_NAMES as LEGACY_TOP_NAMES
from ..formats.marker import (
    DEPLOYED,
    MARKER_DIR,
    Marker,
    index_path,
    work_id,
    write_marker,
)
from ..safety.invariant import prove_by_content, settle_asides
from ..safety.lock import DeploymentLock, UnreadableLock, WorkCopy, lock_id, read_lock
from ..safety.worklock import hold_work, require_working_copy
from ..store.base import Store
from ..store.posix import PosixStore
from ..store.sides import open_primary, open_work
from .folders import volume_artifacts
from .options import Options

log = logging.getLogger(__name__)

REBUILT = "rebuilt"  # index meta: rebuilt by comparing both sides; a save keeps conflicts


@dataclass
class WorkingCopy:
    """One working copy, held by a command: see the module docstring."""

    path: str
    marker: Marker
    opts: Options
    primary: Store  # the primary, every call retried (store.retrying)
    work: PosixStore
    lock: DeploymentLock | None = None  # the deployment lock, once adopted (or handed in)
    _index: Index | None = field(default=None, repr=False)

    @property
    def index(self) -> Index:
        """The state index, opened at first use (set aside and rebuilt if damaged)."""
        if self._index is None:
            self._index = open_or_rebuild_index(self.path, self.marker, self.primary,
                                                self.work, self.opts)
        return self._index

    def adopt_lock(self) -> DeploymentLock:
        """The lock on the primary, if it belongs to this very working copy; else exit 4."""
        if self.lock is None:
            self.lock = adopt_lock(self.primary, self.marker, self.path)
        return self.lock

    def holds_lock(self) -> bool:
        """Does the lock on the primary belong to this copy's deployment? (No exit 4.)"""
        return lock_id(read_lock(self.primary, self.marker.status_dir)) == \
            self.marker.deployment_id

    def scan(self, *, remove_temps: bool = False, stop=None, settle: bool = False
             ) -> ScanResult:
        """The working copy as a save sees it (see :func:`scan_work`); ``settle``: asides
        a killed command left are settled first (only a command that holds the copy)."""
        return scan_work(self.work, self.marker, remove_temps=remove_temps, stop=stop,
                         index=self.index if settle else None)

    def pending(self) -> SavePlan:
        """What a save would do now, from a scan of the working copy and the index."""
        return plan_save(self.scan(), self.index)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


@contextmanager
def open_copy(work_path: str, opts: Options, task: str, *,
              lock: DeploymentLock | None = None, before=None) -> Iterator[WorkingCopy]:
    """Hold the working copy at ``work_path`` for the command ``task``: its marker is
    required (exit 5 without), other commands wait or are refused (worklock), and both
    stores are opened. ``lock``: the deployment lock the caller holds already (a deploy, the
    daemon); else it is adopted when a step asks for it. ``before(marker)`` may refuse the
    copy once it is held, before the primary is opened."""
    work_path = os.path.abspath(work_path)
    require_working_copy(work_path)  # before the busy lock, which would create the marker folder
    with hold_work(work_path, task, wait=opts.busy_wait, say=opts.say), ExitStack() as stack:
        marker = require_working_copy(work_path)
        if before is not None:
            before(marker)
        remember_excludes(work_path, marker, opts)
        primary = stack.enter_context(open_primary(marker.primary, marker.token, opts))
        work = stack.enter_context(open_work(work_path, marker.token))
        copy = WorkingCopy(work_path, marker, opts, primary, work, lock)
        stack.callback(copy.close)
        yield copy


def scan_work(work: Store, marker: Marker, *, remove_temps: bool = False,
              stop=None, index: Index | None = None) -> ScanResult:
    """The working copy's project data: everything but the marker and the reserved names."""
    # The status folder's name is reserved at the top: a folder of that name in the working
    # copy would otherwise be saved into the primary's status folder, over the lock.
    # The old tools' files (symlink-dump, scipion-docker/) are not project data: a deploy
    # never copies them, so a save must neither overwrite them nor let them into the index.
    # Special files are said once per deployment by the save (deletion_guard), not here:
    # the daemon scans every 2 s.
    scan = scan_tree(work, skip_top={MARKER_DIR, marker.status_dir} | LEGACY_TOP_NAMES
                     | volume_artifacts(work.root), temp_token=marker.token, stop=stop,
                     warn_special=False, exclude=excludes_of(marker))
    for name in (marker.status_dir, *sorted(LEGACY_TOP_NAMES)):
        if work.exists(name):
            log.warning("%s in the working copy is not saved: that name is reserved for the "
                        "primary's status folder or the old tools' files", name)
    # Our own leftovers from a killed deploy; removed only by a command that holds the
    # working copy (a status beside a running deploy must not take its temporaries away).
    for tmp in scan.temps if remove_temps else ():
        try:
            work.unlink(tmp)
        except FileNotFoundError:
            pass
    if index is not None and settle_asides(work, index, scan.asides, marker.token):
        return scan_work(work, marker, stop=stop)
    fold_companions(scan, work)  # a database's -journal/-wal/-shm are never saved alone
    return scan


def scan_primary(primary: Store, opts: Options, stop: threading.Event | None = None, *,
                 exclude: Exclude | None = None):
    """The primary's tree as a deploy copies it: without the status folder, the work
    marker's name, the old tools' own files (not project data), and what the working
    copy excludes (``exclude``: not copied, never listed below an excluded folder)."""
    return scan_tree(primary, skip_top={opts.status_dir, MARKER_DIR} | LEGACY_TOP_NAMES,
                     jobs=opts.jobs, stop=stop, exclude=exclude or compile_excludes(()))


def excludes_of(marker: Marker) -> Exclude:
    """The exclude patterns the working copy remembers, compiled (cached by pattern)."""
    return compile_excludes(marker.exclude)


def remember_excludes(work_path: str, marker: Marker, opts: Options) -> None:
    """``--exclude`` given to this command: from now on the working copy's own filter
    (later saves, the daemon and status use it). Not given: the remembered one stays."""
    if opts.exclude is None or list(opts.exclude) == list(marker.exclude):
        return
    log.info("the working copy's exclude patterns are now: %s (were: %s)",
             " ".join(opts.exclude) or "none", " ".join(marker.exclude) or "none")
    marker.exclude = list(opts.exclude)
    write_marker(work_path, marker)


def forget_removed(index: Index, plan: SavePlan) -> None:
    """In a working copy being removed (marker phase REMOVING), what is gone was removed by
    spaceport after it was proven saved: its rows are dropped, it is never deleted on the
    primary."""
    gone = [k.entry.path for k in plan.deletes]
    if gone:
        index.record([], forget=gone)
        log.info("%d entries removed by an undeploy that was interrupted are not deletions",
                 len(gone))
    plan.deletes = []


def adopt_lock(primary: Store, marker: Marker, work_path: str) -> DeploymentLock:
    """The lock on the primary, if it belongs to this very working copy; else exit 4.

    (A running daemon's working copy is refused earlier, by its busy lock: see worklock.)"""
    holder = read_lock(primary, marker.status_dir)
    if lock_id(holder) == marker.deployment_id:
        return DeploymentLock.resume(primary, marker.status_dir, holder,
                                     WorkCopy.here(work_path, work_id(work_path)))
    what = holder.describe() if holder else "there is no lock at all"
    hint = ("Nothing was written to the primary; the working copy is untouched.")
    if holder is None:
        hint += (" If the primary is a OneData mount, check that it is mounted: an unmounted "
                 "mount point looks exactly like this.")
    elif isinstance(holder, UnreadableLock):
        hint += (f" Nobody can tell who holds the primary while its lock cannot be read. If "
                 f"this working copy's deployment is the only one, look at {holder.file} "
                 f"on the primary; 'spaceport unlock --force {primary.root}' sets it aside, "
                 f"and 'spaceport deploy --resume {primary.root} {work_path}' then saves this "
                 "copy under a lock of its own.")
    raise LockLostError(f"this working copy's deployment does not hold the lock on "
                        f"{primary.root}: {what}.", hint=hint)


def pending_changes(work_path: str, marker: Marker,
                    special: list[str] | None = None) -> SavePlan:
    """What a save would do now (used by status and the unsaved-work check of deploy);
    the special files found are added to ``special`` if given. Holds nothing: a look."""
    index = look_at_index(work_path)
    try:
        with open_work(work_path, marker.token) as work:
            scan = scan_work(work, marker)
            if special is not None:
                special.extend(scan.special)
            return plan_save(scan, index)
    finally:
        index.close()


def look_at_index(work_path: str) -> Index:
    """The state index for a look (status), never created by it: a missing index is read as
    an empty one in memory, so that the next save still sees it missing and rebuilds it."""
    path = index_path(work_path)
    return Index(path if os.path.exists(path) else ":memory:")


def open_or_rebuild_index(work_path: str, marker: Marker, primary: Store, work: Store,
                          opts: Options) -> Index:
    """The state index; a damaged one is set aside and rebuilt by comparing both sides.

    The rebuild trusts only what it can prove: a work file counts as saved when the primary
    holds the same bytes (:func:`~spaceport.safety.invariant.prove_by_content`); anything
    else is uploaded again (a differing primary version kept as a conflict copy), and files
    on the primary that the new index does not know are never deleted. Nothing can be lost,
    at the price of reading the files both sides hold.
    """
    path = index_path(work_path)
    if marker.phase == DEPLOYED and not os.path.exists(path):
        # A finished deployment always has its index: this one was deleted (with the
        # marker, under a daemon that wrote the marker again). An empty index would prove
        # nothing saved and keep no conflict: rebuilt like a damaged one.
        log.warning("the state index %s is gone; it is rebuilt from the working copy and "
                    "the primary", path)
    else:
        try:
            return Index(path)
        except IndexDamagedError as exc:
            aside = Index.set_aside(path, utcnow().strftime("%Y%m%dT%H%M%SZ"))
            log.warning("%s; it was moved to %s and is rebuilt from the working copy and the "
                        "primary", exc.message, aside)
    index = Index(path)
    prove_by_content(scan_work(work, marker), index, primary, work, jobs=opts.jobs)
    index.set_meta(REBUILT, "1")  # the next save keeps differing primary versions
    return index
