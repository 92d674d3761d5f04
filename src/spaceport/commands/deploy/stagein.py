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

import errno
import logging
import os

from ...clock import utcnow
from ...engine.index import Index, IndexDamagedError, Known, proven
from ...engine.plan import DeployPlan, plan_deploy
from ...engine.recorder import IndexRecorder, file_known, remove_leftover_temps
from ...engine.scan import Entry, Kind
from ...engine.transfer import Copier, CopyDone, CopyJob, run_copies
from ...errors import Interrupted, VolumeFullError
from ...formats.links import (MANIFEST_NAME, MANIFEST_STATE, NOTES_META, Link, notes_for_index,
                              resolve_target, unrestored_from)
from ...formats.marker import MARKER_DIR, index_path
from ...formats.trash import TrashBin
from ...safety.invariant import GuardedWork, NotProvenError
from ...stopping import Halt
from ...store.base import UnsafePathError, join, parent_of, temp_name
from ...store.posix import mkdir_mode
from ...store.sides import PRIMARY, WORK
from ..failures import partial_error
from ..workcopy import WorkingCopy, scan_primary, scan_work
from .linksource import with_primary_links

log = logging.getLogger(__name__)

FULL = (errno.ENOSPC, errno.EDQUOT)
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
    pscan = scan_primary(primary, opts, stop)
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
    run = StageIn(primary, work, index, marker, opts, report, stop, check)
    run.failed.extend((path or ".", exc) for path, exc in pscan.unreadable.items())
    run.execute(plan, wscan.entries, source.links, known,
                authoritative=source.source == "manifest")
    for item in report.unrestored:
        log.warning("link not restored: %s", item)
    # The saves write these into the manifest's header: nothing left out is forgotten.
    index.set_meta(NOTES_META, notes_for_index(report.carried + report.unrestored,
                                               source.imported_from))
    index.set_meta(MANIFEST_STATE, "ok" if source.source == "manifest" else source.source)


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
        short.append(f"{_size(need)} of data, {_size(free)} free")
    if vfs.f_files and inodes > vfs.f_favail:  # f_files 0: no inode limit (btrfs)
        short.append(f"{inodes} new files and folders, room for {vfs.f_favail}")
    if short:
        raise VolumeFullError(
            f"the working volume of {work_path} is too small for this stage-in: it needs "
            f"{' and '.join(short)}.",
            hint="Nothing was copied and the lock is released. Make room on the working "
                 "volume (or give a bigger one), then run the same command again.")


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


class StageIn:
    """One stage-in being carried out; split in steps so each stays readable."""

    def __init__(self, primary, work: GuardedWork, index, marker, opts, report, stop, check):
        self.primary, self.work, self.index = primary, work, index
        self.marker, self.opts, self.report, self.stop = marker, opts, report, stop
        self.check = check
        self.halt = Halt(stop)  # the copies stop on a signal, or at a full disk
        self.recorder = IndexRecorder(index, WORK)
        self.failed: list[tuple[str, BaseException]] = []
        self.full: OSError | None = None
        self.unsafe: set[str] = set()  # proven versions whose copy to the trash failed

    def execute(self, plan: DeployPlan, here: dict[str, Entry], links: list[Link],
                known: dict[str, Known], *, authoritative: bool) -> None:
        try:
            self._keep_in_trash(plan.to_trash)
            self._remove(plan)
            for entry in plan.mkdirs:
                self.work.makedirs(entry.path, entry.mode | 0o700)
                # Known at once, with the mode it has now: an interrupted stage-in leaves
                # nothing the index does not know, so a re-run sees no "unsaved work".
                now = Entry(entry.path, Kind.DIR, mode=mkdir_mode(entry.mode))
                self.recorder.done(Known(now, None, None))
            self._download(plan)
            if self.stop.is_set():
                raise Interrupted("the deploy was stopped; run it again to resume")
            for entry, old in plan.current:
                self.recorder.done(old)
            self.report.already_current = len(plan.current)
            self.report.files = len(plan.current) + len(plan.downloads)
            self._restore_links(links, here, known, authoritative)
            self._set_dir_modes(plan, here)
            self._forget_others(plan, links, known)
        finally:
            try:
                self.recorder.flush()
            except VolumeFullError:
                if self.full is None:
                    raise
                # The copies hit it first, and that is the summary; what landed without
                # its row is recognised by its content when the same command runs again.
        self.report.kept = list(dict.fromkeys(
            [e.path for e in plan.kept] + [p for p, _ in self.work.guard.kept]))
        if self.full is not None:
            raise VolumeFullError(
                f"the working volume is full ({os.strerror(self.full.errno)}): "
                f"{self.report.copied} file(s) were copied, "
                f"{len(plan.downloads) - self.report.copied} not.",
                hint="What was copied is complete and recorded. Make room on the working "
                     "volume, then run the same command again: it copies only the rest.")
        if self.failed:
            raise partial_error("deploy", self.failed, "Nothing on the primary was changed; "
                                "run the same command again to resume.")

    # -- proven versions the primary no longer has ---------------------------------------
    def _keep_in_trash(self, entries: list[Entry]) -> None:
        """Copy each into the primary's trash before it is replaced or removed here: it was
        saved once, and the primary changed or deleted it while this copy was away."""
        if not entries:
            return
        trash = TrashBin(self.primary, self.marker.status_dir, utcnow())
        jobs = [CopyJob(trash.place_for(e.path), e.size, temp_name(self.marker.token),
                        src=e.path) for e in entries]
        self.index.add_inflight(PRIMARY, [(j.path, join(parent_of(j.path), j.tmp))
                                          for j in jobs])
        copier = Copier(self.work, self.primary, tracker=self.opts.tracker, task="deploy",
                        retry=self.opts.retry, stop=self.halt, check=self.check)
        finished = []

        def on_done(done: CopyDone) -> None:
            finished.append(join(parent_of(done.job.path), done.job.tmp))
            if done.error is not None:
                self.unsafe.add(done.job.src)
                self.failed.append((done.job.src, done.error))
                return
            log.info("%s: the primary changed or deleted it meanwhile; this copy's version "
                     "is kept in the trash (%s)", done.job.src, trash.name)
            self.report.trashed += 1

        run_copies(copier, jobs, self.opts.jobs, on_done)
        self.index.drop_inflight(PRIMARY, finished)
        self._stopped()

    def _remove(self, plan: DeployPlan) -> None:
        """Work entries the primary no longer has: proven files (kept in the trash just
        now) and folders that are empty by then. Nothing else."""
        for entry in plan.removals:
            if entry.path in self.unsafe:
                continue
            if self.work.guard.remove(entry.path, entry):
                self.recorder.forget(entry.path)
                self.report.removed_from_work += entry.kind is Kind.FILE

    def _stopped(self) -> None:
        if self.stop.is_set():
            raise Interrupted("the deploy was stopped; run it again to resume")

    # -- copies ------------------------------------------------------------------------
    def _download(self, plan: DeployPlan) -> None:
        tracker = self.opts.tracker
        todo = [e for e in plan.downloads if e.path not in self.unsafe]
        jobs = [CopyJob(e.path, e.size, temp_name(self.marker.token)) for e in todo]
        self.work.replaces = {p: e for p, e in plan.replaces.items() if p not in self.unsafe}
        tracker.start("deploy", files=len(jobs), nbytes=sum(e.size for e in todo))
        self.index.add_inflight(WORK, [(j.path, join(parent_of(j.path), j.tmp)) for j in jobs])
        copier = Copier(self.primary, self.work, tracker=tracker, task="deploy",
                        retry=self.opts.retry, stop=self.halt, stable_source=True)

        def on_done(done: CopyDone) -> None:
            tmp = join(parent_of(done.job.path), done.job.tmp)
            error = done.error
            if isinstance(error, NotProvenError):  # the user's: kept, ours dropped
                self.recorder.done(tmp=tmp)
                return
            if error is not None:
                if getattr(error, "errno", None) in FULL:
                    if self.full is None:
                        self.full = error
                        self.halt.set()  # stop at the first: no flood of the same error
                    return
                if isinstance(error, Interrupted) and (self.full or self.stop.is_set()):
                    return  # not started: the rerun copies it
                self.failed.append((done.job.path, error))
                if not isinstance(error, Interrupted):
                    log.error("could not copy %s: %s", done.job.path, error)
                # The temporary's record stays: if its removal failed too (the storage
                # went away), the next run removes it.
                return
            self.report.copied += 1
            self.report.copied_bytes += done.src_st.st_size
            landed = self._landed(done)
            if landed is None:  # changed the moment it landed: the next run compares it
                self.recorder.done(tmp=tmp)
                return
            self.recorder.done(file_known(done.src_st, landed, done.job.path,
                                          work_is_src=False), tmp=tmp)

        try:
            run_copies(copier, jobs, self.opts.jobs, on_done)
        finally:
            tracker.finish("deploy")
        for _, exc in self.failed:
            if isinstance(exc, BaseException) and not isinstance(exc, OSError):
                raise exc  # interrupted: stop here, the index has what landed

    def _landed(self, done: CopyDone) -> os.stat_result | None:
        """The copy's stat as it is now, under its real name: the rename gave it a new ctime,
        which the index must hold. None if it is not the file written (changed since)."""
        try:
            st = self.work.lstat(done.job.path)
        except FileNotFoundError:
            return None
        wrote = done.dst_st
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (wrote.st_ino, wrote.st_size,
                                                       wrote.st_mtime_ns):
            return None
        return st

    # -- links and folders -----------------------------------------------------------
    def _restore_links(self, links: list[Link], here: dict[str, Entry],
                       known: dict[str, Known], authoritative: bool) -> None:
        """Links of the manifest (or an old tool's list). A link of the working copy is
        replaced or removed only if it is proven saved and the manifest says otherwise;
        without a manifest (the status folder was deleted), none is ever removed."""
        guard, manifest = self.work.guard, join(self.opts.status_dir, MANIFEST_NAME)
        for link in links:
            target = resolve_target(link, self.work.root, self.opts.rebase)
            current = here.get(link.path)
            if current is not None and current.kind is Kind.LINK and current.target == target:
                pass
            elif current is not None and current.kind is not Kind.LINK:
                self.report.unrestored.append(unrestored_from(
                    link, f"a {current.kind.name.lower()} of that name is in the working copy "
                          "(it is kept)", manifest))
                continue
            else:
                if current is not None and not (proven(current, known.get(link.path))
                                                and guard.remove(link.path, current)):
                    self.report.unrestored.append(unrestored_from(
                        link, f"the working copy's link to {current.target!r} was changed "
                              "and not saved yet (it is kept)", manifest))
                    continue
                try:
                    # Walks from WORK's descriptor; never through a link (safety rule 11).
                    self.work.symlink(target, link.path, parents=True)
                except UnsafePathError as exc:
                    self.report.unrestored.append(unrestored_from(link, exc.strerror, manifest))
                    continue
                except FileExistsError:
                    guard._keep(link.path, "it appeared while the deploy made the link")
                    continue
            self.recorder.done(Known(Entry(link.path, Kind.LINK, target=target), None, None))
            self.report.links += 1
        if not authoritative:
            return  # no manifest: every link of the working copy is kept, the next save
            # writes them into a new one
        wanted = {link.path for link in links}
        for path, entry in here.items():
            if entry.kind is Kind.LINK and path not in wanted and \
                    proven(entry, known.get(path)) and guard.remove(path, entry):
                log.info("link %s -> %s removed: the primary's manifest no longer has it",
                         path, entry.target)
                self.recorder.forget(path)

    def _set_dir_modes(self, plan: DeployPlan, here: dict[str, Entry]) -> None:
        created = {e.path for e in plan.mkdirs}
        for entry in sorted(plan.dirs, key=lambda e: -e.path.count("/")):
            now = here.get(entry.path)
            if entry.path not in created and (now is None or now.kind is not Kind.DIR):
                continue  # the user's file or link holds the name: kept, no folder made
            mode_now = mkdir_mode(entry.mode) if entry.path in created else now.mode
            if mode_now != entry.mode:
                self.work.chmod(entry.path, entry.mode)
            self.recorder.done(Known(self._work_folder(entry), None, None))

    def _work_folder(self, entry: Entry) -> Entry:
        """A primary folder's row, with the inode of the working copy's folder (the
        primary's inode means nothing here; the work one tells a folder moved later)."""
        try:
            ino = self.work.lstat(entry.path).st_ino
        except OSError:
            ino = 0  # unknown: the next save adopts it
        return Entry(entry.path, Kind.DIR, mode=entry.mode, ino=ino)

    def _forget_others(self, plan: DeployPlan, links: list[Link], known: dict[str, Known]) -> None:
        """Index rows for anything not on the primary now are dropped: the index must
        describe exactly what both sides hold after a deploy (what the working copy keeps
        of its own is then new to the next save, which uploads it)."""
        present = {e.path for e in plan.dirs} | {e.path for e in plan.downloads} \
            | {e.path for e, _ in plan.current} | {link.path for link in links}
        for path in known:
            if path not in present:
                self.recorder.forget(path)
