"""The save, as the sequence of its steps.

    hold the working copy   (workcopy.open_copy: marker, busy lock, stores, lock, index)
    scan and plan           (against the index only: the primary is not listed)
    settle databases        (settle: snapshots first, then the tree scanned again)
    hold deletions          (held: the deletion guard)
    moves                   (moves: renames on the primary)
    kinds that changed      (removals.clear_replaced)
    new folders             (folders)
    uploads and appends     (uploads, appends, conflicts)
    folder modes            (folders)
    deletions               (removals.remove_deleted: into the trash; none if anything failed)
    the link manifest       (manifest: last, after all data)
    CERIT's link list       (cerit_dump: symlink-dump, when the deployment keeps CERIT's lock)
    record the save         (finish: index, heartbeat, journal, trash purge)

Everything the steps share is one :class:`~.run.SaveRun`; the lock's keeper beats and
fences while the steps write.
"""

from __future__ import annotations

import threading
import time

from ...engine.plan import SavePlan, plan_save
from ...engine.recorder import remove_leftover_temps
from ...engine.snapshot import Snapshotter, companions_before_databases
from ...errors import LockLostError, RefusedError
from ...formats.marker import DEPLOYING, MARKER_DIR, REMOVING, UNDEPLOYED, Marker
from ...safety.deletion_guard import warn_special_once
from ...safety.lock import DeploymentLock, LockKeeper
from ...store.base import join
from ...store.sides import PRIMARY
from ..options import Options
from ..workcopy import REBUILT, WorkingCopy, forget_removed, open_copy
from .cerit_dump import plan_dump, write_dump
from .finish import finish
from .folders import make_folders, set_folder_modes
from .held import hold_deletions
from .manifest import write_links
from .moves import make_moves
from .removals import clear_replaced, remove_deleted
from .report import SaveReport
from .run import SaveRun, lost_during_save
from .settle import settle_databases
from .uploads import report_vanished, upload

SCRATCH_DIR = "snapshots"  # in the work marker: database snapshots on their way up


def save(work_path: str, opts: Options, *, dry_run: bool = False,
         allow_mass_delete: bool = False, lock: DeploymentLock | None = None,
         keep_conflicts: bool = False, task: str = "save",
         stop: threading.Event | None = None,
         confirmed: frozenset[str] = frozenset()) -> SaveReport:
    """Save the working copy at ``work_path`` to its primary: hold it, then
    :func:`save_copy`. ``lock``: the deployment lock the caller holds (a deploy, the
    daemon); without one, the lock on the primary must name this copy (else exit 4)."""
    with open_copy(work_path, opts, task, lock=lock,
                   before=lambda marker: refuse_unsaveable(work_path, marker, lock)) as copy:
        return save_copy(copy, dry_run=dry_run, allow_mass_delete=allow_mass_delete,
                         keep_conflicts=keep_conflicts, task=task, stop=stop,
                         confirmed=confirmed)


def refuse_unsaveable(work_path: str, marker: Marker, lock: DeploymentLock | None) -> None:
    """A deploy that did not finish, or a copy undeployed, is not saved."""
    if marker.phase == DEPLOYING and lock is None:
        raise RefusedError(f"the deployment into {work_path} did not finish.",
                           hint="Nothing was saved. Run the same deploy command again to "
                                "complete it, then save.")
    if marker.phase == UNDEPLOYED:
        raise LockLostError(f"{work_path} was undeployed; it no longer holds the lock.",
                            hint="Deploy it again to work on it.")


def save_copy(copy: WorkingCopy, *, dry_run: bool = False, allow_mass_delete: bool = False,
              keep_conflicts: bool = False, task: str = "save",
              stop: threading.Event | None = None,
              confirmed: frozenset[str] = frozenset()) -> SaveReport:
    """Save a held working copy. See the module docstring for the steps.

    ``keep_conflicts``: a primary file that is not the version this copy last saved there
    (changed by someone else, or never known) is kept as ``NAME.conflict-<host>-<time>``
    before it is replaced (``deploy --resume``, a rebuilt index, a final save that found the
    primary changed). ``stop.set()`` stops the running uploads within one chunk.

    Deletions the deletion guard holds (the working copy looks wrong) wait; the rest of the
    save goes on (``report.held``). ``allow_mass_delete``: nothing is held. ``confirmed``:
    these held paths were confirmed (the daemon's POST /confirm-deletions) and are deleted."""
    started = time.monotonic()
    refuse_unsaveable(copy.path, copy.marker, copy.lock)
    lock = copy.adopt_lock()
    lock.verify()  # fencing before anything is written
    if not dry_run:
        lock.keep_mirror()  # CERIT's lock, if we keep it: still ours (else exit 4)
    index = copy.index
    snapshots = Snapshotter(join(copy.work.root, MARKER_DIR, SCRATCH_DIR))
    try:
        remove_leftover_temps(index, copy.primary, PRIMARY)
        report, plan, run = _prepare(copy, snapshots, dry_run, allow_mass_delete, confirmed,
                                     task, stop)
        if run is None:  # a dry run: the plan is shown, with what the guard would hold
            return report
        keep_conflicts = keep_conflicts or index.get_meta(REBUILT) == "1"
        with LockKeeper(lock, copy.opts.heartbeat_interval, fence=run.fence) as keeper:
            run.keeper = keeper
            try:
                carry_out(run, plan, keep_conflicts)
            except LockLostError as exc:
                raise lost_during_save(exc, run.fence) from exc
        report.seconds = time.monotonic() - started
        # Folders that could not be listed were neither saved nor deleted: say so.
        run.failed.extend((path or ".", exc) for path, exc in run.unreadable.items())
        finish(run)
        index.set_meta(REBUILT, None)
        return report
    finally:
        snapshots.close()


def _prepare(copy: WorkingCopy, snapshots: Snapshotter, dry_run: bool,
             allow_mass_delete: bool, confirmed: frozenset[str], task: str, stop
             ) -> tuple[SaveReport, SavePlan, SaveRun | None]:
    """Scan, plan, settle the databases and judge the deletions; the run that carries the
    plan out (None for a dry run, whose report holds the plan)."""
    index = copy.index
    scan = copy.scan(remove_temps=True, stop=stop, settle=True)
    plan = plan_save(scan, index)  # streams the index: no copy of it in memory
    unsettled: list[str] = []
    if not dry_run:
        scan, plan, unsettled = settle_databases(copy.work, copy.marker, index, scan, plan,
                                                 snapshots)
    companions_before_databases(plan)
    if copy.marker.phase == REMOVING:
        forget_removed(index, plan)
    report = SaveReport(dry_run=dry_run, special=scan.special, links=len(plan.links))
    hold_deletions(plan, index, copy.opts, report, allow=allow_mass_delete,
                   confirmed=confirmed, record=not dry_run)
    report.plan = plan.summary()  # without the deletions held
    if dry_run:
        report.planned = plan
        return report, plan, None
    warn_special_once(index, copy.marker.deployment_id, scan.special)
    if plan.adopt:  # rows of a format-1 index, whole from now on
        index.record(plan.adopt)
    run = SaveRun(copy, report, task, stop, snapshots)
    run.unreadable, run.unsettled, run.entries = scan.unreadable, set(unsettled), scan.entries
    return report, plan, run


def carry_out(run: SaveRun, plan: SavePlan, keep_conflicts: bool) -> None:
    """The steps that write, in their order (see the module docstring)."""
    try:
        make_moves(run, plan)  # first: what a move carries is neither uploaded nor trashed
        run.stopped()
        clear_replaced(run, plan)
        make_folders(run, plan)
        run.stopped()
        upload(run, plan, keep_conflicts)
        run.stopped()
        report_vanished(run)
        set_folder_modes(run, plan)
        if run.failed or run.report.databases_held:
            # As rclone does: no deletions, and no manifest (it comes last, after all
            # data), while anything failed. The next save does both. Nor while a
            # database waits: the one on the primary may still name what would go.
            run.report.deletes_skipped = bool(plan.deletes)
            return
        remove_deleted(run, plan.deletes)
        run.stopped()
        dump = plan_dump(run, plan)  # CERIT's link list, if this deployment keeps it
        write_links(run, plan, dump)
        write_dump(run, dump)
    finally:
        run.recorder.flush()
