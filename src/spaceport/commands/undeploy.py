"""Undeploy: final save, proof that everything is saved, the working copy removed, unlock.

The working copy is given up only when a final check proves every entry of it saved
(:func:`~spaceport.safety.invariant.find_unsaved`): each file still has the signature it was saved
with, and the primary still holds what was written there (with ``--checksum``, the same
bytes). What the check finds the primary lost or changed meanwhile is saved again (a changed
primary version kept as a conflict copy) and checked again. A file that keeps changing while
it is saved, or changes after the final save, keeps the lock and the working copy (safety
rule 10), with the message to stop the application and run undeploy again.

The removal goes through the guard (:mod:`spaceport.safety.invariant`): an entry is removed only if
it still is what was proven saved; the lock is released only when the removal is complete.

Removing the working copy keeps WORK itself (it may be a mount point) and, in its
``.spaceport/``, the log and what ``--discard-local`` set aside, with a record of the
undeploy in place of the marker: running undeploy again answers "already undeployed".
"""

from __future__ import annotations

import logging
import os
import shutil
import stat as stat_mod
import time
from dataclasses import dataclass, field

from ..engine.content import scratch_snapshots
from ..engine.filters import Exclude, compile_excludes
from ..engine.index import Index
from ..engine.plan import links_for_manifest, unsaved_summary
from ..engine.scan import Kind
from ..engine.snapshot import RACY_SECONDS
from ..errors import NotSavedError, PartialSaveError, RefusedError
from ..formats.legacy import TOP_LEVEL_NAMES as LEGACY_TOP_NAMES
from ..formats.links import MANIFEST_STATE, read_manifest_full
from ..formats.marker import (
    MARKER_DIR,
    REMOVING,
    UNDEPLOYED,
    Marker,
    marker_dir,
    read_marker,
    read_undeployed_record,
    write_marker,
    write_undeployed_record,
)
from ..safety.deletion_guard import held_links, held_refusal
from ..safety.invariant import WorkGuard, find_unsaved, remove_saved
from ..safety.worklock import BUSY_FILE
from ..wording import count
from .deploy.discard import DISCARDED_DIR
from .folders import volume_artifacts
from .options import Options
from .save import SaveReport, save_copy
from .workcopy import WorkingCopy, excludes_of, open_copy, scan_primary, scan_work

log = logging.getLogger(__name__)

STOP_THE_APP = "stop the application, then run undeploy again"
FINAL_ROUNDS = 3  # saves before giving up on a working copy that keeps changing
LOG_DIR = "log"  # <work>/.spaceport/log/: see spaceport.formats.worklog
KEPT_IN_MARKER = (LOG_DIR, DISCARDED_DIR)  # what removing a working copy leaves


@dataclass
class UndeployReport:
    save: SaveReport | None  # None: it was undeployed before, nothing was saved now
    work_removed: bool
    already: str | None = None  # when the earlier undeploy happened ("" if not known)
    kept: list[str] = field(default_factory=list)  # what stays in WORK/.spaceport/
    mount_point: bool = False  # WORK is a mount point: the folder itself always stays
    resaved: list[str] = field(default_factory=list)  # found not saved by the check, saved
    left: list[str] = field(default_factory=list)  # never project data, left in WORK


def undeploy(work_path: str, opts: Options, *, keep_work: bool = False,
             allow_mass_delete: bool = False, checksum: bool = False,
             stop=None) -> UndeployReport:
    work_path = os.path.abspath(work_path)
    done = _already_undeployed(work_path)
    if done is not None:
        return done
    with open_copy(work_path, opts, "undeploy") as copy:
        if copy.marker.phase in (REMOVING, UNDEPLOYED) and not copy.holds_lock():
            return _finish_released(copy, keep_work, checksum)
        return _undeploy_held(copy, keep_work, allow_mass_delete, checksum, stop)


def _undeploy_held(copy: WorkingCopy, keep_work: bool, allow_mass_delete: bool,
                   checksum: bool, stop) -> UndeployReport:
    """Final save and proof, the copy removed through the guard, the lock released."""
    resaved: list[str] = []
    report = final_save_copy(copy, allow_mass_delete=allow_mass_delete, checksum=checksum,
                             stop=stop, resaved=resaved)
    if report.held:  # a person is there to answer: the daemon goes on instead (lifecycle)
        refusal = held_refusal(report.held, "undeploy",
                               f"spaceport undeploy --allow-mass-delete {copy.path}")
        refusal.save_report = report  # what the final save did (undeploy --json says it)
        raise refusal
    lock = copy.adopt_lock()
    # Proven saved: a rerun after a kill from here on finishes the undeploy, whether or not
    # the lock was released yet (see _finish_released).
    copy.marker.phase = REMOVING
    write_marker(copy.path, copy.marker)
    left: list[str] = []
    if not keep_work:
        left = remove_saved_copy(copy)
    lock.release()
    result = UndeployReport(report, work_removed=not keep_work, resaved=resaved, left=left)
    _after_release(copy.path, copy.marker, keep_work, result)
    return result


def _after_release(work_path: str, marker: Marker, keep_work: bool,
                   report: UndeployReport) -> None:
    if keep_work:
        marker.phase = UNDEPLOYED
        # Kept copies keep their marker: a later deploy sees an all-saved copy and reuses it.
        write_marker(work_path, marker)
    else:
        _leave_record(work_path, marker, report)


def _already_undeployed(work_path: str) -> UndeployReport | None:
    """The answer to undeploy of a working copy already removed, or None."""
    if not os.path.isdir(work_path) or read_marker(work_path) is not None:
        return None
    record = read_undeployed_record(work_path)
    if record is None:
        return None  # not a working copy at all: require_marker says so
    report = UndeployReport(None, work_removed=True, already=record.get("undeployed", ""))
    report.kept = _kept(work_path)
    report.mount_point = os.path.ismount(work_path)
    return report


def _leave_record(work_path: str, marker: Marker, report: UndeployReport) -> None:
    """Empty ``.spaceport/`` but for the log and the discarded files, and write the record
    of this undeploy in place of the marker."""
    keep = set(KEPT_IN_MARKER) | {BUSY_FILE}  # the busy file is held by this very command
    with os.scandir(marker_dir(work_path)) as it:
        for entry in it:
            if entry.name in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    write_undeployed_record(work_path, marker)
    report.kept = _kept(work_path)
    report.mount_point = os.path.ismount(work_path)


def _kept(work_path: str) -> list[str]:
    return [name for name in KEPT_IN_MARKER
            if os.path.isdir(os.path.join(marker_dir(work_path), name))]


def _finish_released(copy: WorkingCopy, keep_work: bool, checksum: bool) -> UndeployReport:
    """An undeploy (or a daemon's clean-up) that was stopped after it released the lock:
    what is left is removed if it is proven saved, else it stays and is named."""
    work_path, marker = copy.path, copy.marker
    if marker.phase == UNDEPLOYED:  # a kept copy, worked on since?
        pending = copy.pending()
        if pending.pending:
            raise RefusedError(
                f"{work_path} was undeployed, and changes made since were never saved: "
                f"{unsaved_summary(pending.summary())}.",
                hint="Nothing was changed. To save them, deploy it again and undeploy: "
                     f"spaceport deploy --resume {marker.primary} {work_path}")
    unsaved = check_saved(copy, checksum=checksum)
    if unsaved.in_work or unsaved.on_primary or unsaved.content:
        how = "was undeployed (--keep-work)" if marker.phase == UNDEPLOYED else \
            "was being undeployed"
        raise NotSavedError(
            f"{work_path} {how} and its lock is released, but it holds what is not saved: "
            f"{', '.join(unsaved.paths()[:20]) or 'the link manifest'}.",
            hint="Nothing was removed. Deploy it again with --resume to save it.")
    left: list[str] = []
    already = "" if marker.phase == UNDEPLOYED else None
    if not keep_work:
        left = remove_saved_copy(copy)
    report = UndeployReport(SaveReport(), work_removed=not keep_work, left=left,
                            already=already)
    _after_release(work_path, marker, keep_work, report)
    if already is None:
        log.info("%s: the undeploy that was interrupted is complete", work_path)
    return report


def final_save_copy(copy: WorkingCopy, *, allow_mass_delete=False, checksum: bool = False,
                    stop=None, task: str = "final save", resaved: list[str] | None = None,
                    confirmed: frozenset[str] = frozenset()) -> SaveReport:
    """Save, then prove everything saved; what the proof misses is saved again. Raises
    (the lock and the working copy kept) unless the proof holds. Deletions the deletion
    guard held are in ``report.held``: the proof accepts them (recorded, the primary keeps
    the files); the caller decides what to do (see held_refusal)."""
    keep_conflicts = False
    for _ in range(FINAL_ROUNDS):
        try:
            report = save_copy(copy, allow_mass_delete=allow_mass_delete,
                               keep_conflicts=keep_conflicts, task=task, stop=stop,
                               confirmed=confirmed)
        except PartialSaveError as exc:
            if not exc.kept_changing:
                raise
            raise PartialSaveError(
                f"{exc.message}\nAn application is still writing: {STOP_THE_APP}.",
                exc.failed, kept_changing=exc.kept_changing,
                hint="Their previous versions are on the primary, none torn.") from None
        unsaved = check_saved(copy, checksum=checksum, stop=stop)
        if not unsaved:
            return report
        if report.racy:
            # Databases written within the last second (an application that just closed
            # them checkpoints its WAL) were saved but cannot be recorded yet: the next
            # round, a second later, records them, rather than call them still changing.
            (stop.wait if stop is not None else time.sleep)(RACY_SECONDS)
        again = unsaved.on_primary + unsaved.content
        log.warning("the final check found %s not proven saved (%s); saving again",
                    unsaved_words(unsaved), ", ".join(unsaved.paths()[:10] + (
                        ["the link manifest"] if unsaved.links else [])))
        if resaved is not None:
            resaved.extend(again)
        # The next save uploads them (and writes the manifest, if it was not proven).
        copy.index.invalidate(again)
        if unsaved.links:
            copy.index.set_meta(MANIFEST_STATE, "stale")
        keep_conflicts = bool(unsaved.on_primary)
    names = ", ".join(unsaved.paths()[:20]) or "the link manifest"
    raise NotSavedError(
        f"{copy.path} could not be proven saved after {FINAL_ROUNDS} saves: {names} kept "
        f"changing. Nothing was removed and the lock is kept: {STOP_THE_APP}.",
        hint="Nothing was lost. 'spaceport status WORK' shows what is not saved yet.")


def unsaved_words(unsaved) -> str:
    """"2 entries", "the link manifest", "1 entry and the link manifest"."""
    parts = [count(len(unsaved.paths()), "entry")] if unsaved.paths() else []
    return " and ".join(parts + (["the link manifest"] if unsaved.links else []))


def check_saved(copy: WorkingCopy, *, checksum: bool = False, stop=None):
    """:class:`~spaceport.safety.invariant.Unsaved` for the working copy as it is now."""
    work, primary, index = copy.work, copy.primary, copy.index
    scan = copy.scan()
    pscan = scan_primary(primary, copy.opts, stop, exclude=excludes_of(copy.marker))
    # The manifest holds the working copy's links, and those whose removal the deletion
    # guard holds (they stay in the manifest, as held files stay on the primary).
    links = [e for e in scan.entries.values() if e.kind is Kind.LINK] + \
        [k.entry for k in held_links(index)]
    if scan.exclude:  # excluded links stay in the manifest as the index knows them
        links += [row.entry for path, row in index.load().items()
                  if row.entry.kind is Kind.LINK and path not in scan.entries
                  and scan.excluded(path, Kind.LINK)]
    manifest = read_manifest_full(primary, copy.marker.status_dir)
    wanted = set(links_for_manifest(links, [work.root, os.path.realpath(work.root)]))
    manifest_ok = index.get_meta(MANIFEST_STATE) == "ok" and manifest is not None \
        and set(manifest.links) == wanted
    if not checksum:
        return find_unsaved(scan, index, pscan, primary, work, manifest_ok=manifest_ok)
    with scratch_snapshots(marker_dir(copy.path)) as snapshots:
        return find_unsaved(scan, index, pscan, primary, work, manifest_ok=manifest_ok,
                            checksum=True, snapshots=snapshots)


def remove_saved_copy(copy: WorkingCopy) -> list[str]:
    """:func:`remove_saved` for a held working copy."""
    return _remove_saved(copy.path, copy.marker, copy.index, copy.work)


def _remove_saved(work_path: str, marker: Marker, index: Index, work) -> list[str]:
    """Remove what the index proves saved, through the guard; raise NotSavedError (the
    caller keeps the lock) if anything changed meanwhile. Returns what is left in WORK that
    was never project data (reserved names, special files, the volume's own)."""
    if marker.phase != REMOVING:  # from now on, what goes missing was removed by us
        marker.phase = REMOVING
        write_marker(work_path, marker)
    scan = scan_work(work, marker, remove_temps=True, index=index)
    guard = WorkGuard(work, marker.token)
    removed = remove_saved(scan, index.load(), guard)
    index.record([], forget=removed)  # a rerun must not take them for deletions
    if guard.kept:
        shown = "\n".join(f"  {path}: {why}" for path, why in guard.kept[:20])
        raise NotSavedError(
            f"{len(guard.kept)} entries of {work_path} changed after the final save "
            f"and are kept:\n{shown}\nThe lock is kept too: {STOP_THE_APP}.",
            hint="Nothing was lost; what was removed is saved on the primary.")
    ignore = {MARKER_DIR} | volume_artifacts(work_path)
    left = left_over(work_path, ignore, {marker.status_dir} | LEGACY_TOP_NAMES,
                     compile_excludes(marker.exclude))
    for path, why in left:
        log.warning("%s is left in the working copy: it was never saved (%s)",
                    os.path.join(work_path, path), why)
    return [path for path, _ in left]


def left_over(work_path: str, ignore: set[str], reserved: set[str],
              excluded: Exclude | None = None) -> list[tuple[str, str]]:
    """What stays in WORK after the removal, by the entries themselves, not the folders
    that hold them: a fifo in ``proj/Tmp/`` is named as ``proj/Tmp/fifo`` (the folders
    above it stay only because it is in them); what ``excluded`` leaves out is named as
    such, a folder of it whole. (path, why) for each."""
    left = []
    stack = [name for name in sorted(os.listdir(work_path), reverse=True)
             if name not in ignore]
    while stack:
        rel = stack.pop()
        path = os.path.join(work_path, rel)
        st = os.lstat(path)
        if excluded and excluded.excludes(rel, stat_mod.S_ISDIR(st.st_mode)):
            left.append((rel, "excluded by the working copy's --exclude patterns"))
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            inside = sorted(os.listdir(path), reverse=True)
            if inside and "/" not in rel and rel in reserved:
                left.append((rel, "a reserved name"))
            elif inside:
                stack.extend(f"{rel}/{name}" for name in inside)
            else:
                left.append((rel, "an empty folder"))
            continue
        if "/" not in rel and rel in reserved:
            why = "a reserved name"
        elif stat_mod.S_ISFIFO(st.st_mode):
            why = "a fifo: special files cannot be saved"
        elif stat_mod.S_ISSOCK(st.st_mode):
            why = "a socket: special files cannot be saved"
        elif stat_mod.S_ISCHR(st.st_mode) or stat_mod.S_ISBLK(st.st_mode):
            why = "a device: special files cannot be saved"
        else:
            why = "written after the final check"
        left.append((rel, why))
    return left
