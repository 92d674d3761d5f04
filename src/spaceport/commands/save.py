"""Save: bring the primary up to date with the working copy, touching only what changed.

Order matters for safety: new directories, then uploads (files first, then SQLite
databases as snapshots, deepest folder first: docs/RELIABILITY.md), then deletions
(skipped if any upload failed, as rclone does), then the link manifest, last. A save with nothing changed
reads the lock, rewrites its heartbeat, and makes no per-file call on the primary.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat as stat_mod
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from ..clock import iso, utcnow
from ..engine.append import Appender
from ..engine.index import Index, IndexDamagedError, Known
from ..engine.plan import SavePlan, by_depth, links_for_manifest, plan_save
from ..engine.recorder import IndexRecorder, file_known, remove_leftover_temps
from ..engine.renames import Move, ancestors, depends_on, plan_without
from ..engine.scan import Entry, Kind, ScanResult, scan_tree
from ..engine.snapshot import (Snapshotter, companions_before_databases, fold_companions,
                               landing_levels, split_databases)
from ..engine.transfer import (Copier, CopyDone, CopyJob, interleave_folders, run_copies,
                               run_parallel)
from ..errors import Interrupted, LockLostError, RefusedError, StorageUnavailableError
from ..formats.legacy import TOP_LEVEL_NAMES as LEGACY_TOP_NAMES
from ..formats.links import MANIFEST_NAME, manifest_notes, write_manifest
from ..formats.marker import (DEPLOYING, MARKER_DIR, REMOVING, UNDEPLOYED, Marker, index_path,
                              require_marker, work_id)
from ..formats.trash import TrashBin, purge
from ..safety.deletion_guard import Held, held_summary, judge, record_held, warn_special_once
from ..safety.fence import Fence
from ..safety.invariant import conflict_name, prove_by_content, settle_asides
from ..safety.lock import DeploymentLock, LockKeeper, WorkCopy, lock_id, read_lock
from ..safety.worklock import hold_work
from ..store.base import DetachedError, Store, join, parent_of, temp_name
from ..store.posix import mkdir_mode
from ..store.retry import is_unavailable, retry_call, unavailable
from ..store.sides import PRIMARY, open_primary, open_work
from ..wording import count
from .failures import partial_error
from .folders import volume_artifacts
from .options import Options

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
ATTACH_CHECK_SECONDS = 1.0
MANIFEST_STATE = "manifest_state"  # index meta: "ok" once the manifest matches the index
SCRATCH_DIR = "snapshots"  # in the work marker: database snapshots on their way up
REBUILT = "rebuilt"  # index meta: rebuilt by comparing both sides; a save keeps conflicts


@dataclass
class SaveReport:
    plan: dict = field(default_factory=dict)
    dry_run: bool = False
    uploaded: int = 0
    uploaded_bytes: int = 0  # bytes written: an append counts its new bytes only
    appended: int = 0  # of the files uploaded, those saved by writing their new bytes alone
    dirs_created: int = 0
    deleted: int = 0
    moved: int = 0  # files and folders renamed on the primary (a folder: one, whatever it holds)
    kept_dirs: list[str] = field(default_factory=list)  # not removed: hold unknown files
    trash_batch: str | None = None
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (path, primary's kept as)
    manifest_written: bool = False
    links: int = 0
    deletes_skipped: bool = False
    special: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    snapshots: int = 0  # databases saved as snapshots
    vanished: int = 0  # files removed between the scan and their upload: not errors
    databases_held: list[str] = field(default_factory=list)  # left for the next save
    seconds: float = 0.0
    planned: SavePlan | None = None  # a dry run's plan, path by path
    refused: RefusedError | None = None  # a dry run: the real save would stop with this
    held: dict | None = None  # deletions the guard held (deletion_guard.Held.summary)
    held_paths: list[str] = field(default_factory=list)  # all of them
    held_new: bool = False  # not held (or not these) by the save before

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def scan_work(work: Store, marker: Marker, *, remove_temps: bool = False,
              stop=None, index: Index | None = None) -> ScanResult:
    # The status folder's name is reserved at the top: a folder of that name in the working
    # copy would otherwise be saved into the primary's status folder, over the lock.
    # The old tools' files (symlink-dump, scipion-docker/) are not project data: a deploy
    # never copies them, so a save must neither overwrite them nor let them into the index.
    # Special files are said once per deployment by the save (deletion_guard), not here:
    # the daemon scans every 2 s.
    scan = scan_tree(work, skip_top={MARKER_DIR, marker.status_dir} | LEGACY_TOP_NAMES
                     | volume_artifacts(work.root), temp_token=marker.token, stop=stop,
                     warn_special=False)
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
    raise LockLostError(f"this working copy's deployment does not hold the lock on "
                        f"{primary.root}: {what}.", hint=hint)


def pending_changes(work_path: str, marker: Marker,
                    special: list[str] | None = None) -> SavePlan:
    """What a save would do now (used by status and the unsaved-work check of deploy);
    the special files found are added to ``special`` if given."""
    index = Index(index_path(work_path))
    try:
        with open_work(work_path, marker.token) as work:
            scan = scan_work(work, marker)
            if special is not None:
                special.extend(scan.special)
            return plan_save(scan, index)
    finally:
        index.close()


def open_or_rebuild_index(work_path: str, marker: Marker, primary: Store, work: Store,
                          opts: Options) -> Index:
    """The state index; a damaged one is set aside and rebuilt by comparing both sides.

    The rebuild trusts only what it can prove: a work file counts as saved when the primary
    holds the same bytes (:func:`~spaceport.invariant.prove_by_content`); anything else is
    uploaded again (a differing primary version kept as a conflict copy), and files on the
    primary that the new index does not know are never deleted. Nothing can be lost, at
    the price of reading the files both sides hold.
    """
    path = index_path(work_path)
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


def lost_during_save(exc: LockLostError, fence: Fence) -> LockLostError:
    """The lock-lost error of a save, naming what may have landed after the loss."""
    written = fence.after_loss
    if not written:
        return LockLostError(exc.message, hint="Nothing more was written to the primary. "
                                               "Your working copy is untouched. Find out who "
                                               "unlocked or took the folder before saving again.")
    names = "\n".join(f"  {w}" for w in written[:50])
    more = f"\n  … and {len(written) - 50} more" if len(written) > 50 else ""
    return LockLostError(
        f"{exc.message}\n{count(len(written), 'write')} landed on the primary after the last check "
        f"that found the lock ours (at most one per worker), and may have gone to the new "
        f"holder's project:\n{names}{more}",
        hint="Nothing else was written. Your working copy is untouched; tell the new holder "
             "which files above to check.")


def hold_deletions(plan: SavePlan, index: Index, opts: Options, report: SaveReport, *,
                   allow: bool, confirmed: frozenset[str], record: bool) -> Held | None:
    """The deletion guard (:mod:`spaceport.deletion_guard`): the deletions it holds leave
    ``plan`` and go into ``report``; everything else in the plan is saved as usual. With
    ``record``, the index keeps what is held (status, the final check); the caller says it
    (the command line at every save, the daemon when ``report.held_new``)."""
    held = judge(plan, index, opts.mass_delete_threshold, allow=allow, confirmed=confirmed)
    if held is not None:
        report.held_paths = held.paths
    if record:
        report.held_new = record_held(index, held, iso(utcnow()))
        report.held = held_summary(index) if held else None
    elif held is not None:
        report.held = held.summary()
    return held


def save(work_path: str, opts: Options, *, dry_run: bool = False,
         allow_mass_delete: bool = False, lock: DeploymentLock | None = None,
         keep_conflicts: bool = False, task: str = "save",
         stop: threading.Event | None = None,
         confirmed: frozenset[str] = frozenset()) -> SaveReport:
    """Save the working copy at ``work_path`` to its primary. See the module docstring.

    ``keep_conflicts``: a primary file that is not the version this copy last saved there
    (changed by someone else, or never known) is kept as ``NAME.conflict-<host>-<time>``
    before it is replaced (``deploy --resume``, a rebuilt index, a final save that found the
    primary changed). ``stop.set()`` stops the running uploads within one chunk.

    Deletions the deletion guard holds (the working copy looks wrong) wait; the rest of the
    save goes on (``report.held``). ``allow_mass_delete``: nothing is held. ``confirmed``:
    these held paths were confirmed (the daemon's POST /confirm-deletions) and are deleted."""
    work_path = os.path.abspath(work_path)
    require_marker(work_path)  # before the busy lock, which would create the marker folder
    with hold_work(work_path, task, wait=opts.busy_wait, say=opts.say):
        return _save_held(work_path, opts, dry_run, allow_mass_delete, lock,
                          keep_conflicts, task, stop, confirmed)


def _save_held(work_path: str, opts: Options, dry_run: bool, allow_mass_delete: bool,
               lock: DeploymentLock | None, keep_conflicts: bool, task: str,
               stop: threading.Event | None, confirmed: frozenset[str]) -> SaveReport:
    started = time.monotonic()
    marker = require_marker(work_path)
    if marker.phase == DEPLOYING and lock is None:
        raise RefusedError(f"the deployment into {work_path} did not finish.",
                           hint="Nothing was saved. Run the same deploy command again to "
                                "complete it, then save.")
    if marker.phase == UNDEPLOYED:
        raise LockLostError(f"{work_path} was undeployed; it no longer holds the lock.",
                            hint="Deploy it again to work on it.")
    with open_primary(marker.primary, marker.token, opts) as primary, \
            open_work(work_path, marker.token) as work:
        lock = lock or adopt_lock(primary, marker, work_path)
        lock.verify()  # fencing before anything is written
        index = open_or_rebuild_index(work_path, marker, primary, work, opts)
        snapshots = Snapshotter(join(work.root, MARKER_DIR, SCRATCH_DIR))
        try:
            remove_leftover_temps(index, primary, PRIMARY)
            scan = scan_work(work, marker, remove_temps=True, stop=stop, index=index)
            plan = plan_save(scan, index)  # streams the index: no copy of it in memory
            unsettled: list[str] = []
            if not dry_run:
                scan, plan, unsettled = settle_databases(work, marker, index, scan, plan,
                                                         snapshots)
            companions_before_databases(plan)
            if marker.phase == REMOVING:
                forget_removed(index, plan)
            report = SaveReport(dry_run=dry_run, special=scan.special, links=len(plan.links))
            hold_deletions(plan, index, opts, report, allow=allow_mass_delete,
                           confirmed=confirmed, record=not dry_run)
            report.plan = plan.summary()  # without the deletions held
            if dry_run:  # the plan is shown, with what the guard would hold
                report.planned = plan
                return report
            warn_special_once(index, marker.deployment_id, scan.special)
            if plan.adopt:  # rows of a format-1 index, whole from now on
                index.record(plan.adopt)
            run = _SaveRun(primary, work, index, lock, marker, opts, report, task)
            run.snapshots, run.unreadable = snapshots, scan.unreadable
            run.unsettled = set(unsettled)
            run.entries = scan.entries
            run.stop = stop or threading.Event()
            keep_conflicts = keep_conflicts or index.get_meta(REBUILT) == "1"
            with LockKeeper(lock, opts.heartbeat_interval, fence=run.fence) as keeper:
                run.keeper = keeper
                try:
                    run.execute(plan, keep_conflicts)
                except LockLostError as exc:
                    raise lost_during_save(exc, run.fence) from exc
            report.seconds = time.monotonic() - started
            # Folders that could not be listed were neither saved nor deleted: say so.
            run.failed.extend((path or ".", exc) for path, exc in scan.unreadable.items())
            run.finish()
            index.set_meta(REBUILT, None)
            return report
        finally:
            snapshots.close()
            index.close()


SETTLE_ROUNDS = 3


def settle_databases(work: Store, marker: Marker, index: Index, scan: ScanResult,
                     plan: SavePlan, snapshots: Snapshotter
                     ) -> tuple[ScanResult, SavePlan, list[str]]:
    """Snapshot the databases this save uploads, then scan again and plan from that scan;
    returns it, with the databases that still have no snapshot (they wait).

    What a snapshot refers to existed when it was taken (Scipion writes a run's files
    before it records them, and forgets a run before it deletes its files), so everything
    it refers to that still exists is in the later scan and is uploaded before the
    databases land. If that scan finds databases changed since the first one, all are
    taken again and the tree scanned again (a few rounds at most); those still without a
    snapshot then are not saved this time, nor anything above them. Deletions are only
    those every scan agrees on: a file deleted meanwhile may still be named in a snapshot.
    """
    _, databases = split_databases(plan.uploads, work)
    gone = {k.entry.path for k in plan.deletes}
    missing: list[str] = []
    for _ in range(SETTLE_ROUNDS):
        if not databases:
            break
        # In the reverse of the order they land in: a database that refers to others
        # (project.sqlite to run.db, run.db to its output sets) is taken before them, so
        # they are never older than what it says of them.
        snapshots.take_early(work, [e.path for level in reversed(landing_levels(databases))
                                    for e in level])
        scan = scan_work(work, marker)
        plan = plan_save(scan, index)
        gone &= {k.entry.path for k in plan.deletes}
        _, databases = split_databases(plan.uploads, work)
        missing = [e.path for e in databases if not snapshots.has_early(e.path)]
        if not missing:
            break
    plan.deletes = [k for k in plan.deletes if k.entry.path in gone]
    return scan, plan, missing


class _SaveRun:
    """One save being carried out; split in steps so each stays readable."""

    def __init__(self, primary, work, index, lock, marker, opts, report, task):
        self.primary, self.work, self.index = primary, work, index
        self.lock, self.marker, self.opts, self.report = lock, marker, opts, report
        self.task = task
        self.stop = threading.Event()
        self.keeper: LockKeeper | None = None
        self.now = utcnow()
        self._trash: TrashBin | None = None
        self.recorder = IndexRecorder(index, PRIMARY)
        self.fence = Fence(lock.verify)  # gates every commit on the primary
        self.failed: list[tuple[str, BaseException]] = []
        self.vanished: list[str] = []  # gone between the scan and their upload
        self.vanished_new: list[str] = []  # of those, the ones the primary never had
        self.snapshots: Snapshotter | None = None
        self.unreadable: dict[str, OSError] = {}  # folders the scan could not list
        self.unsettled: set[str] = set()  # databases without an early snapshot: they wait
        self.entries: dict[str, Entry] = {}  # the scan the plan was made from
        self._attached_at = time.monotonic()
        self._detached: StorageUnavailableError | None = None

    def retry(self, fn, *args, what: str):
        return retry_call(self.opts.retry, fn, *args, what=what)

    @property
    def trash(self) -> TrashBin:
        if self._trash is None:
            self._trash = TrashBin(self.primary, self.marker.status_dir, self.now)
            self.report.trash_batch = self._trash.name
        return self._trash

    def check(self) -> None:
        """Before each write: the lock is still ours and the mount still attached."""
        if self.keeper:
            self.keeper.check()
        if self._detached is not None:
            raise self._detached
        now = time.monotonic()
        if now - self._attached_at >= ATTACH_CHECK_SECONDS:
            # One stat of the primary's root, at most once a second (and the kernel caches
            # it): a lazy unmount stops the writers within a second, not at the end.
            self._attached_at = now
            try:
                self.primary.check_attached()
            except DetachedError as exc:
                self._detached = unavailable(exc, self.primary.root)
                raise self._detached from exc

    def execute(self, plan: SavePlan, keep_conflicts: bool) -> None:
        try:
            self._move_all(plan)  # first: what a move carries is neither uploaded nor trashed
            self._stopped()
            self._clear_replaced(plan)
            self._make_dirs(plan)
            self._stopped()
            self._upload(plan, keep_conflicts)
            self._stopped()
            self._report_vanished()
            self._set_dir_modes(plan)
            if self.failed or self.report.databases_held:
                # As rclone does: no deletions, and no manifest (it comes last, after all
                # data), while anything failed. The next save does both. Nor while a
                # database waits: the one on the primary may still name what would go.
                self.report.deletes_skipped = bool(plan.deletes)
                return
            self._remove_all(plan.deletes)
            self._stopped()
            self._write_links(plan)
        finally:
            self.recorder.flush()

    # -- renames (spaceport.renames) -------------------------------------------------
    def _move_all(self, plan: SavePlan) -> None:
        """The moves found in the working copy, one rename each on the primary, in order.

        Each rename is fenced and never replaces an entry; the index rows follow only once
        it is made (a save killed in between finds the move made and only rekeys: see
        :meth:`_made_already`). A move that cannot be made (its new name taken on the
        primary by something spaceport does not know) is saved as before renames: what is
        at its new path is uploaded; its old files stay known where they were, and the
        next save deletes them (through the deletion guard). So do the moves after it that
        depend on it."""
        new_dirs = {e.path: e for e in plan.mkdirs}
        not_made: list[Move] = []
        for move in list(plan.moves):
            self._stopped()
            if any(depends_on(move, other) for other in not_made):
                not_made.append(move)
                continue
            reason = self._move(move, new_dirs)
            if reason is None:
                self.report.moved += 1
                continue
            not_made.append(move)
            log.warning("%s could not be moved to %s on the primary (%s): it is uploaded there "
                        "instead, and the next save deletes the old copy", move.old, move.new,
                        reason)
        for move in not_made:
            plan_without(plan, move, self.entries)

    def _move(self, move: Move, new_dirs: dict[str, Entry]) -> str | None:
        """One move; None once made and recorded, else why it was not made."""
        old, new = move.old, move.new
        for parent in [p for p in ancestors(new) if p in new_dirs]:  # a new folder first
            self.check()
            try:
                self.fence.commit(f"{parent}/ (created)", lambda: self.retry(
                    self.primary.mkdir, parent, new_dirs[parent].mode | 0o700,
                    what=f"create folder {parent}"))
            except FileExistsError:
                pass
        self.check()
        try:
            self.fence.commit(f"{old} -> {new} (moved)", lambda: self.retry(
                self.primary.rename_or_refuse, old, new, what=f"move {old} to {new}"))
        except (FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
            if not self._made_already(move):
                return "its new name is taken there" if isinstance(exc, FileExistsError) \
                    else f"{exc.strerror or exc}"
        except OSError as exc:
            if is_unavailable(exc):
                raise
            return f"{exc.strerror or exc}"
        self.recorder.flush()
        self.index.rekey(old, new)
        return None

    def _made_already(self, move: Move) -> bool:
        """A rename that did not happen now: was it made before (a killed save, or a
        retried call whose first try landed)? Yes if the old path is gone and the new one
        holds what the rows say (a file: the size and mtime it was saved with)."""
        if self.primary.exists(move.old):
            return False
        try:
            st = self.primary.lstat(move.new)
        except FileNotFoundError:
            return False
        if stat_mod.S_ISDIR(st.st_mode) != (move.kind is Kind.DIR):
            return False
        if move.expect is None:
            return True  # a folder that carried no file: its name is what is left to check
        rel, psize, pmtime_ns = move.expect
        if rel:
            try:
                st = self.primary.lstat(join(move.new, rel))
            except FileNotFoundError:
                return False
        return (st.st_size, st.st_mtime_ns) == (psize, pmtime_ns)

    def _stopped(self) -> None:
        """Between steps: a signal (or the daemon) asked to stop; what landed is recorded."""
        if self.stop.is_set():
            raise Interrupted("the save was stopped; what landed is recorded, and the same "
                              "command run again saves the rest")

    def _clear_replaced(self, plan: SavePlan) -> None:
        """Make way for entries whose kind changed (a folder became a file, or back)."""
        for old in plan.replaced:
            if old.entry.kind is Kind.DIR:
                prefix = old.entry.path + "/"
                inside = [k for k in plan.deletes if k.entry.path.startswith(prefix)]
                plan.deletes = [k for k in plan.deletes if not k.entry.path.startswith(prefix)]
                for child in inside:
                    with self.entry_step(child.entry.path):
                        self._remove(child)
                # What is left inside was never seen by spaceport: keep it, in the trash.
                with self.entry_step(old.entry.path):
                    self._remove(old, stuck_dir_to_trash=True)
            else:
                with self.entry_step(old.entry.path):
                    self._remove(old)

    def _remove(self, old: Known, stuck_dir_to_trash: bool = False) -> None:
        """Take a known entry off the primary: files to the trash, empty dirs removed."""
        self._removed(old, self._take_off(old, stuck_dir_to_trash))

    def _take_off(self, old: Known, stuck_dir_to_trash: bool = False) -> str:
        """The storage part of _remove, safe in a worker thread; says what happened."""
        self._stopped()
        self.check()
        path, kind = old.entry.path, old.entry.kind
        try:
            if kind is Kind.FILE:
                self.fence.commit(f"{path} (moved to the trash)", lambda: self.retry(
                    self.trash.move, path, what=f"move {path} to trash"))
                return "moved"
            if kind is Kind.DIR:
                self.fence.commit(f"{path}/ (removed)", lambda: self.retry(
                    self.primary.rmdir, path, what=f"remove folder {path}"))
        except FileNotFoundError:
            pass  # already gone (a parent moved with it, or someone removed it)
        except OSError as exc:
            if kind is not Kind.DIR or exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if stuck_dir_to_trash:
                log.warning("folder %s holds files spaceport never saw; it is replaced, so it "
                            "is kept in the trash (%s)", path, self.trash.name)
                self.fence.commit(f"{path}/ (moved to the trash)", lambda: self.retry(
                    self.trash.move, path, what=f"move {path} to trash"))
            else:
                return "kept"  # it holds files spaceport never saw (safety rule 4)
        return "removed"

    def _removed(self, old: Known, outcome: str) -> None:
        """The bookkeeping part of _remove, in the coordinating thread."""
        if outcome == "moved":
            self.report.deleted += 1
        elif outcome == "kept":
            self.report.kept_dirs.append(old.entry.path)  # left where it is
        self.recorder.forget(old.entry.path)

    def _remove_all(self, deletes: list[Known]) -> None:
        """Deletions, several at a time (each rename or rmdir is a round trip on OneData):
        first the files to the trash, then the folders, deepest first, a level at a time."""
        files = [k for k in deletes if k.entry.kind is not Kind.DIR]
        if files:
            self.trash  # noqa: B018 - the batch is named once, before the workers start

        def done(old: Known, outcome: str | None, error: Exception | None) -> None:
            with self.entry_step(old.entry.path):
                if error is not None:
                    raise error
                self._removed(old, outcome)

        dirs = [k for k in deletes if k.entry.kind is Kind.DIR]
        path_of = lambda k: k.entry.path  # noqa: E731
        for group in [interleave_folders(files, path_of)] + by_depth(dirs, path_of,
                                                                     deepest_first=True):
            run_parallel(self._take_off, group, self.opts.jobs, done, name="trash")

    @contextmanager
    def entry_step(self, path: str):
        """One entry's step: its failure is reported by name and the save goes on; only a
        storage that is gone (or a lost lock) stops everything."""
        try:
            yield
        except OSError as exc:
            if is_unavailable(exc):
                raise
            self.failed.append((path, exc))
            log.error("could not save %s: %s", path, exc)

    def _make_dirs(self, plan: SavePlan) -> None:
        def make(entry: Entry) -> None:
            self.check()
            try:
                # Owner-writable until the files are in; the exact mode is set after.
                self.fence.commit(f"{entry.path}/ (created)", lambda: self.retry(
                    self.primary.mkdir, entry.path, entry.mode | 0o700,
                    what=f"create folder {entry.path}"))
            except FileExistsError:
                pass

        def made(entry: Entry, _, error: Exception | None) -> None:
            with self.entry_step(entry.path):
                if error is not None:
                    raise error
                self.report.dirs_created += 1
                self.recorder.done(Known(entry, None, None))

        # A level of the tree at a time, its folders in parallel: each mkdir is a round trip.
        for level in by_depth(plan.mkdirs, lambda e: e.path):
            run_parallel(make, level, self.opts.jobs, made, name="mkdir")

    def _set_dir_modes(self, plan: SavePlan) -> None:
        for entry in [e for e in plan.mkdirs if mkdir_mode(e.mode) != e.mode] + plan.chmods:
            self.check()
            with self.entry_step(entry.path):
                self.fence.commit(f"{entry.path}/ (mode set)", lambda: self.retry(
                    self.primary.chmod, entry.path, entry.mode, what=f"chmod {entry.path}"))
                self.recorder.done(Known(entry, None, None))

    def _upload(self, plan: SavePlan, keep_conflicts: bool) -> None:
        if not plan.uploads:
            return
        uploads = plan.uploads
        if not keep_conflicts:  # (such a save compares every primary file first: no appends)
            appended = self._append_grown(plan)
            uploads = [e for e in plan.uploads if e.path not in appended]
        jobs = [CopyJob(e.path, e.size, temp_name(self.marker.token)) for e in uploads]
        self.index.add_inflight(PRIMARY, [(j.path, join(parent_of(j.path), j.tmp)) for j in jobs])
        known = self.index.load() if keep_conflicts else {}
        tracker = self.opts.tracker
        tracker.start(self.task, files=len(jobs), nbytes=sum(e.size for e in uploads))
        copier = Copier(self.work, self.primary, tracker=tracker, task=self.task,
                        retry=self.opts.retry, stop=self.stop, check=self.check,
                        fence=self.fence, snapshots=self.snapshots, early_only=True,
                        digests=True)

        def before(job: CopyJob) -> None:
            with self.entry_step(job.path):
                self._keep_conflict(job.path, known.get(job.path))

        def on_done(done: CopyDone) -> None:
            tmp = join(parent_of(done.job.path), done.job.tmp)
            if done.unsettled:  # a database only now: it waits, and all above it
                self.unsettled.add(done.job.path)
                self._hold([done.job.path])
                self.recorder.done(tmp=tmp)
                return
            if done.vanished:  # removed since the scan: deleted by the next save
                self.vanished.append(done.job.path)
                if self.index.get(done.job.path) is None:  # the primary never had it
                    self.vanished_new.append(done.job.path)
                self.recorder.done(tmp=tmp)
                return
            if done.error is not None:
                self.failed.append((done.job.path, done.error))
                if not isinstance(done.error, Interrupted):
                    log.error("could not save %s: %s", done.job.path, done.error)
                # The temporary's record stays: if its removal failed too (the storage
                # went away), the next run removes it.
                return
            self.report.uploaded += 1
            self.report.uploaded_bytes += done.src_st.st_size
            self.report.snapshots += done.snapshot
            if done.racy:  # changed too recently to trust its mtime: saved again next time
                self.recorder.done(tmp=tmp)
            else:
                row = file_known(done.src_st, done.dst_st, done.job.path, work_is_src=True)
                row.digest = done.digest  # a big plain file's: its next append is proven
                if done.sig_mtime_ns is not None:  # a WAL database: its -wal counts too
                    row.entry.mtime_ns = done.sig_mtime_ns
                self.recorder.done(row, tmp=tmp)

        try:
            if keep_conflicts:
                for job in jobs:
                    before(job)
            # Files first, then databases, deepest folder first (project.sqlite last): a
            # database never lands before the files and runs it refers to.
            by_path = {job.path: job for job in jobs}
            plain, databases = split_databases(uploads, self.work)
            run_copies(copier, [by_path[e.path] for e in plain], self.opts.jobs, on_done)
            for level in landing_levels(databases):
                held = [e.path for e in level if e.path in self.unsettled
                        or self._failed_below(parent_of(e.path))]
                if held:
                    self._hold(held)
                ready = [by_path[e.path] for e in level if e.path not in set(held)]
                run_copies(copier, ready, self.opts.jobs, on_done)
        finally:
            tracker.finish(self.task)
        self._raise_if_fatal()

    def _append_grown(self, plan: SavePlan) -> set[str]:
        """Files that only grew are saved by writing their new bytes alone
        (spaceport.append), one after another in this thread (it records each in the
        index); returns their paths. The others are uploaded whole with the rest: a
        primary file that is not what this copy saved there is first kept as a conflict
        copy (and if that fails, the file waits: it is not uploaded over it)."""
        appender = Appender(self.work, self.primary, self.index, fence=self.fence,
                            check=self.check, stop=self.stop)
        appender.forget_stale(set(plan.appends))
        done: set[str] = set()
        for entry in plan.uploads:
            old = plan.appends.get(entry.path)
            if old is None:
                continue
            self._stopped()
            try:
                result = appender.append(entry, old)
            except OSError as exc:
                if is_unavailable(exc):
                    raise
                log.warning("%s could not be appended to (%s); it is uploaded whole",
                            entry.path, exc)
                continue
            if result.appended:
                done.add(entry.path)
                self.report.uploaded += 1
                self.report.appended += 1
                self.report.uploaded_bytes += result.written
                continue
            log.info("%s is uploaded whole: %s", entry.path, result.whole)
            if result.foreign:
                failed = len(self.failed)
                with self.entry_step(entry.path):
                    self._keep_conflict(entry.path, old)
                if len(self.failed) > failed:
                    done.add(entry.path)  # never uploaded over a version not kept
        return done

    def _failed_below(self, folder: str) -> bool:
        """A file in ``folder`` or below failed, or a folder there could not be listed, or
        a file new since the last save vanished before it could be copied (a snapshot
        taken before it vanished may name it, and the primary never had it)."""
        prefix = folder + "/" if folder else ""
        return any(path.startswith(prefix) for path, _ in self.failed) or \
            any(path == folder or path.startswith(prefix) for path in self.unreadable) or \
            any(path.startswith(prefix) for path in self.vanished_new) or \
            any(path.startswith(prefix) for path in self.unsettled)

    def _hold(self, paths: list[str]) -> None:
        """Databases whose folder holds a file that failed (or vanished new) wait for the
        next save: a database never lands before what it may refer to."""
        self.report.databases_held.extend(paths)
        for path in paths:
            log.warning("%s is left for the next save: %s", path,
                        "a file in its folder failed" if self.failed else
                        "it changed too often during this save to be snapshotted before the "
                        "files it may name" if path in self.unsettled else
                        "its folder changed too much during this save")

    def _report_vanished(self) -> None:
        """A file removed between the scan and its upload is a deletion, not a failure.

        Its old version stays on the primary until the next save, which deletes it like
        any other (to the trash, under the deletion guard): that save also uploads the
        databases changed with the deletion (Scipion forgets a run before it deletes its
        files), and deletions come after them. Deleting it now could take a run's files
        away from under the project.sqlite still on the primary."""
        self.report.vanished = len(self.vanished)
        if self.vanished:
            log.info("%d file(s) were removed while this save ran; the next save deletes "
                     "them on the primary", len(self.vanished))

    def _keep_conflict(self, path: str, old: Known | None) -> None:
        """A primary file that is not what this copy last saved there (changed by someone
        else meanwhile, or never known to this copy) is kept beside it under a conflict name
        before the working copy's version replaces it: both are kept, and said."""
        try:
            st = self.primary.lstat(path)
        except FileNotFoundError:
            return
        if not stat_mod.S_ISREG(st.st_mode):
            return  # a folder or a link in the way: the upload reports it
        if old is not None and (st.st_size, st.st_mtime_ns) == (old.psize, old.pmtime_ns):
            return  # the version this copy saved: replacing it is an ordinary save
        name = conflict_name(path, self.primary.exists)
        self.check()
        self.fence.commit(f"{path} (kept as {name})", lambda: self.retry(
            self.primary.rename, path, name, what=f"keep {path} as {name}"))
        self.report.conflicts.append((path, name))
        log.warning("%s changed on the primary too; the primary's version is kept as %s",
                    path, name)

    def _raise_if_fatal(self) -> None:
        """Lock lost or storage gone: stop now, nothing further is written."""
        for _, exc in self.failed:
            if isinstance(exc, (LockLostError, StorageUnavailableError)):
                raise exc
        for _, exc in self.failed:
            if is_unavailable(exc):
                raise unavailable(exc, self.primary.root)

    def _write_links(self, plan: SavePlan) -> None:
        # "ok" only while the manifest on the primary is the one this copy wrote: a deploy
        # that found none, or a final check that found it gone or different, clears it, and
        # the manifest is written again from the working copy, which has every link.
        if not plan.links_changed and self.index.get_meta(MANIFEST_STATE) == "ok":
            return
        self.recorder.flush()
        roots = [self.work.root, os.path.realpath(self.work.root)]
        self.fence.commit(MANIFEST_NAME, lambda: self.retry(
            write_manifest, self.primary, self.marker.status_dir,
            links_for_manifest(plan.links, roots), self.work.root,
            manifest_notes(self.index), what=f"write {MANIFEST_NAME}"))
        for entry in plan.links:
            self.recorder.done(Known(entry, None, None))
        for path in plan.removed_links:  # else the manifest is written at every save again
            self.recorder.forget(path)
        self.recorder.flush()
        self.index.set_meta(MANIFEST_STATE, "ok")
        self.report.manifest_written = True

    def finish(self) -> None:
        """Record the save (index, lock, journal), purge old trash, report failures."""
        if self.failed:
            raise partial_error("save", self.failed,
                                "Everything else was saved. The lock and the working copy "
                                "are kept.")
        stamp = iso(self.now)
        self.index.set_meta("last_save", stamp)
        self.lock.heartbeat(last_save=stamp)
        self._journal(stamp)
        try:
            retention = timedelta(days=self.opts.trash_retention_days)
            self.report.purged = purge(self.primary, self.marker.status_dir,
                                       older_than=retention)
        except OSError as exc:
            log.warning("could not purge old trash: %s", exc)

    def _journal(self, stamp: str) -> None:
        r = self.report
        line = {"time": stamp, "deployment_id": self.marker.deployment_id,
                "host": self.lock.info.host, "instance": self.lock.info.instance,
                "uploaded": r.uploaded, "bytes": r.uploaded_bytes, "deleted": r.deleted,
                "moved": r.moved,
                "trash": r.trash_batch, "seconds": round(r.seconds, 3)}
        # Held deletions are on the record when they change, and at a final save: the
        # working copy that knew them may be gone after it (status --primary shows them).
        held = r.held is not None and (r.held_new or self.task == "final save")
        if held:
            line["held_deletions"] = {k: r.held[k] for k in
                                      ("count", "files", "reason", "top_level", "sample")}
        if not (r.uploaded or r.deleted or r.dirs_created or r.manifest_written or r.moved
                or held):
            return  # keep the journal to saves that changed something
        try:
            self.fence.commit(JOURNAL_NAME, lambda: self.primary.append_bytes(
                join(self.marker.status_dir, JOURNAL_NAME), (json.dumps(line) + "\n").encode()))
        except OSError as exc:
            log.warning("could not append to the save journal: %s", exc)

