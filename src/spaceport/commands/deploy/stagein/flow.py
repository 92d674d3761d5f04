"""The stage-in of a deploy: the primary copied onto the working copy, under the lock.

Resumable and never destructive. The index records each file after its rename, so a rerun
copies only what is missing; a copy a killed run could not record is recognised by its
content (:func:`~spaceport.safety.invariant.prove_by_content`), never taken for the user's edit.
Nothing in the working copy is replaced or removed unless the index proves it saved
(:mod:`spaceport.safety.invariant`): a proven version the primary no longer holds (changed or
deleted there while this copy was away) is first kept in the primary's trash; anything
else in the way is the user's and stays where it is.

Before copying, the free space and inodes of the working volume are compared with what the
stage-in needs; if the volume still fills up, the copy stops at the first ENOSPC with one
summary line, and the rerun continues.
"""

from __future__ import annotations

import logging
import os

from ....clock import utcnow
from ....engine.index import Index, IndexDamagedError, Known
from ....engine.plan import DeployPlan, plan_deploy
from ....engine.recorder import remove_leftover_temps
from ....engine.scan import Entry, Kind
from ....errors import Interrupted, VolumeFullError
from ....formats.links import MANIFEST_STATE, NOTES_META, Link, notes_for_index
from ....formats.marker import MARKER_DIR, index_path
from ....store.posix import mkdir_mode
from ....store.sides import PRIMARY, WORK
from ....wording import human_size
from ...failures import partial_error
from ...save.cerit_dump import CERIT_DUMP_STATE
from ...workcopy import WorkingCopy, excludes_of, scan_primary, scan_work
from ..linksource import with_primary_links
from .downloads import download
from .folders import forget_others, set_dir_modes
from .keep_versions import keep_in_trash, remove_gone
from .links import restore_links
from .run import StageRun

log = logging.getLogger(__name__)

INDEX_BYTES_PER_ENTRY = 512  # what a row costs the index on the working volume, roughly


def open_stage_index(work_path: str) -> Index:
    try:
        return Index(index_path(work_path))
    except IndexDamagedError as exc:
        # Set aside, never trusted: what is in the working copy is compared with the primary.
        Index.set_aside(index_path(work_path), utcnow().strftime("%Y%m%dT%H%M%SZ"))
        log.warning("%s; starting it afresh (the stage-in compares both sides)", exc.message)
        return Index(index_path(work_path))


def stage_in(copy: WorkingCopy, report, source, stop, check=lambda: None) -> None:
    """Copy what is missing onto the held working copy ``copy`` (its work store a
    :class:`GuardedWork`, its index opened by :func:`open_stage_index`); ``report`` a
    DeployReport, ``source`` a LinkSource; ``check`` raises if the lock was lost (before
    anything is written on the primary)."""
    primary, work, index, marker, opts = (copy.primary, copy.work, copy.index, copy.marker,
                                          copy.opts)
    remove_leftover_temps(index, work, WORK)
    remove_leftover_temps(index, primary, PRIMARY)
    pscan = scan_primary(primary, opts, stop, exclude=excludes_of(marker))
    if primary.exists(MARKER_DIR):
        log.warning("the primary holds a folder named %s; it is not deployed (the name is "
                    "reserved for spaceport's work marker)", MARKER_DIR)
    report.special = pscan.special
    source = with_primary_links(source, pscan, primary.root)
    wscan = scan_work(work, marker, remove_temps=True, stop=stop, index=index)
    known = index.load()
    plan = plan_deploy(pscan, wscan, known)
    report.links_source, report.legacy = source.source, source.legacy
    report.unrestored, report.carried = list(source.unrestored), source.carried
    if source.legacy and source.legacy.phantoms:
        log.info("%s: %d entries found through links to folders (%s) are not links of the "
                 "project; skipped", source.legacy.file, len(source.legacy.phantoms),
                 ", ".join(source.legacy.through))
    check_room(copy.path, plan, len(source.links))
    run = StageRun(copy, report, stop, check)
    run.failed.extend((path or ".", exc) for path, exc in pscan.unreadable.items())
    carry_out(run, plan, wscan.entries, source.links, known,
              authoritative=source.source == "manifest")
    for item in report.unrestored:
        log.warning("link not restored: %s", item)
    # The saves write these into the manifest's header: nothing left out is forgotten.
    index.set_meta(NOTES_META, notes_for_index(report.carried + report.unrestored,
                                               source.imported_from))
    index.set_meta(MANIFEST_STATE, "ok" if source.source == "manifest" else source.source)
    index.set_meta(CERIT_DUMP_STATE, None)  # CERIT's dump, if kept: the first save writes it


def carry_out(run: StageRun, plan: DeployPlan, here: dict[str, Entry], links: list[Link],
              known: dict[str, Known], *, authoritative: bool) -> None:
    """The steps, in their order: proven versions the primary lost kept in its trash (and
    then removed here), folders, copies, links, folder modes, and the index made exact."""
    try:
        keep_in_trash(run, plan.to_trash)
        remove_gone(run, plan)
        for entry in plan.mkdirs:
            run.work.makedirs(entry.path, entry.mode | 0o700)
            # Known at once, with the mode it has now: an interrupted stage-in leaves
            # nothing the index does not know, so a re-run sees no "unsaved work".
            now = Entry(entry.path, Kind.DIR, mode=mkdir_mode(entry.mode))
            run.recorder.done(Known(now, None, None))
        download(run, plan)
        if run.stop.is_set():
            raise Interrupted("the deploy was stopped; run it again to resume")
        for entry, old in plan.current:
            run.recorder.done(old)
        run.report.already_current = len(plan.current)
        run.report.files = len(plan.current) + len(plan.downloads)
        restore_links(run, links, here, known, authoritative)
        set_dir_modes(run, plan, here)
        forget_others(run, plan, links, known)
    finally:
        try:
            run.recorder.flush()
        except VolumeFullError:
            if run.full is None:
                raise
            # The copies hit it first, and that is the summary; what landed without
            # its row is recognised by its content when the same command runs again.
    run.report.kept = list(dict.fromkeys(
        [e.path for e in plan.kept] + [p for p, _ in run.work.guard.kept]))
    if run.full is not None:
        raise VolumeFullError(
            f"the working volume is full ({os.strerror(run.full.errno)}): "
            f"{run.report.copied} file(s) were copied, "
            f"{len(plan.downloads) - run.report.copied} not.",
            hint="What was copied is complete and recorded. Make room on the working "
                 "volume, then run the same command again: it copies only the rest.")
    if run.failed:
        raise partial_error("deploy", run.failed, "Nothing on the primary was changed; "
                            "run the same command again to resume.")


def check_room(work_path: str, plan: DeployPlan, links: int) -> None:
    """Refuse, before copying anything, a stage-in that cannot fit on the working volume."""
    vfs = os.statvfs(work_path)
    block = vfs.f_frsize or 4096
    new = [e for e in plan.downloads if e.path not in plan.replaces]
    need = sum(-(-e.size // block) * block for e in plan.downloads) \
        - sum(-(-e.size // block) * block for e in plan.replaces.values()) \
        + INDEX_BYTES_PER_ENTRY * (len(plan.downloads) + len(plan.mkdirs) + links)
    free = vfs.f_bavail * block
    inodes = len(new) + len(plan.mkdirs) + links
    short = []
    if need > free:
        short.append(f"{human_size(need)} of data, {human_size(free)} free")
    if vfs.f_files and inodes > vfs.f_favail:  # f_files 0: no inode limit (btrfs)
        short.append(f"{inodes} new files and folders, room for {vfs.f_favail}")
    if short:
        raise VolumeFullError(
            f"the working volume of {work_path} is too small for this stage-in: it needs "
            f"{' and '.join(short)}.",
            hint="Nothing was copied and the lock is released. Make room on the working "
                 "volume (or give a bigger one), then run the same command again.")

