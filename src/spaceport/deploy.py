"""Deploy: lock the primary, copy it onto the working copy, re-create the links.

A deploy is resumable: the work marker is written before the first file is copied, and the
index records each file after its rename, so running the same command again after a crash
copies only what is missing. Deploying onto a working copy that holds changes not yet saved
is refused (safety rule 9) unless the user says what to do with them.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from . import preflight
from .discard import Discard, prepare_discard
from .engine import (PRIMARY, WORK, IndexRecorder, Options, file_known, folder_is_empty,
                     open_primary, open_work, partial_error, remove_leftover_temps,
                     separate_folders)
from .errors import FormatError, Interrupted, RefusedError, SpaceportError
from .index import Index, IndexDamagedError, Known
from .legacy import TOP_LEVEL_NAMES, LegacyImport, RootUnknown, read_legacy_links
from .links import (MANIFEST_NAME, NOTES_META, Link, Unrestored, capture, notes_for_index,
                    read_manifest_full, resolve_target, unrestored_from)
from .lock import (DeploymentLock, LockKeeper, WorkCopy, describe, held_error, lock_id,
                   read_lock, utcnow, validate_status_dir)
from .marker import (DEPLOYED, DEPLOYING, MARKER_DIR, Marker, index_path, marker_dir,
                     new_marker, read_marker, remove_marker_file, work_id, write_marker)
from .plan import DeployPlan, SavePlan, plan_deploy, unsaved_summary
from .save import MANIFEST_STATE, pending_changes, save, scan_work
from .scan import Entry, Kind, scan_tree
from .store.base import Store, UnsafePathError, join, parent_of, temp_name
from .store.posix import mkdir_mode
from .transfer import Copier, CopyDone, CopyJob, run_copies
from .worklock import hold_work
from .wording import count, human_size, show_path

log = logging.getLogger(__name__)


@dataclass
class DeployReport:
    deployment_id: str = ""
    resumed_own: bool = False
    saved_first: bool = False
    files: int = 0
    copied: int = 0
    copied_bytes: int = 0
    already_current: int = 0
    removed_from_work: int = 0
    links: int = 0
    links_source: str = "none"  # manifest, legacy, none
    legacy: LegacyImport | None = None  # what the import of an old tool's list found
    unrestored: list[Unrestored] = field(default_factory=list)  # left out by this deploy
    carried: list[Unrestored] = field(default_factory=list)  # left out at an earlier one
    special: list[str] = field(default_factory=list)
    discarded: Discard | None = None  # what --discard-local set aside, and where

    def incomplete(self) -> SpaceportError | None:
        """The error (exit 1) for a deploy that completed but left links out, or None."""
        return links_left_out(self.unrestored)


# The answer to unsaved work in a working copy of this very primary: both ways are safe.
UNSAVED_HINT = ("Use --resume to save them first and then deploy, or --discard-local to set "
                "them aside (they are moved into .spaceport/discarded/, not deleted) and "
                "deploy what the primary holds.")


def other_primary(work: str, marker: Marker) -> RefusedError:
    """The refusal for the working copy of another primary (never a hint to discard it)."""
    return RefusedError(
        f"{work} is the working copy of another primary ({marker.primary}).",
        hint=f"Nothing was changed. Deploy into a new or empty folder. To be done with that "
             f"working copy, undeploy it: spaceport undeploy {work} (it saves what is "
             f"unsaved to {marker.primary} first).")


class LinksLeftOut(SpaceportError):
    """Everything was deployed except some links, which are named."""


def links_left_out(unrestored: list[Unrestored], *, done: str = "everything else was "
                   "deployed") -> LinksLeftOut | None:
    if not unrestored:
        return None
    shown = "\n".join(f"  {u}" for u in unrestored[:50])
    more = f"\n  ... and {len(unrestored) - 50} more" if len(unrestored) > 50 else ""
    return LinksLeftOut(
        f"{count(len(unrestored), 'link')} {'was' if len(unrestored) == 1 else 'were'} not "
        f"restored; {done}:\n{shown}{more}",
        hint="The lists on the primary are left as they are, and every links.jsonl a save "
             "writes keeps these lines in its header, so 'spaceport status --primary' keeps "
             "showing them. Re-create those links by hand where they are needed.")


@dataclass
class LinkSource:
    """The links a deploy restores, where they come from, and what is known not restored."""

    links: list[Link] = field(default_factory=list)
    source: str = "none"  # manifest, legacy, none
    legacy: LegacyImport | None = None
    unrestored: list[Unrestored] = field(default_factory=list)  # left out now
    carried: list[Unrestored] = field(default_factory=list)  # recorded by earlier saves
    imported_from: dict | None = None


def links_to_restore(primary: Store, opts: Options) -> LinkSource:
    """The manifest's links; without a manifest, the import of the newest old tool's list.

    RefusedError (exit 5) if an old list's working root cannot be told: importing it
    without would put every link in the wrong place."""
    manifest = read_manifest_full(primary, opts.status_dir)
    if manifest is not None:
        return LinkSource(manifest.links, "manifest", unrestored=manifest.refused,
                          carried=manifest.unrestored, imported_from=manifest.imported_from)
    try:
        legacy = read_legacy_links(primary, opts.status_dir, opts.legacy_root)
    except RootUnknown as exc:
        raise RefusedError(
            f"{exc}.", hint="Nothing was copied. Give the folder the old tool worked in, "
                            "e.g. spaceport deploy --legacy-root /data/ScipionUserData ...; "
                            "'spaceport deploy --dry-run' shows what an import will do.") from None
    if legacy is None:
        return LinkSource()
    return LinkSource(legacy.links, "legacy", legacy, unrestored=list(legacy.unrestored),
                      imported_from=legacy.summary())


def with_primary_links(source: LinkSource, scan, root: str) -> LinkSource:
    """A primary that can hold links (a plain folder, not OneData) brings them along: with
    no manifest and no old list, the links found on it are restored like any other entry,
    and the first save records them in the manifest. They are left alone on the primary."""
    found = [capture(e.path, e.target or "", [root, os.path.realpath(root)])
             for e in scan.entries.values() if e.kind is Kind.LINK]
    if source.source != "none":
        listed = {link.path for link in source.links}
        extra = [link.path for link in found if link.path not in listed]
        if extra:
            log.warning("%s on the primary %s not restored: %s is the record of the "
                        "project's links (%s)", count(len(extra), "symbolic link"),
                        "is" if len(extra) == 1 else "are",
                        "links.jsonl" if source.source == "manifest" else "the old list",
                        ", ".join(show_path(p) for p in sorted(extra)[:5])
                        + (", ..." if len(extra) > 5 else ""))
        return source
    if not found:
        return source
    log.info("no links.jsonl yet: %s found in the primary folder %s restored (the first "
             "save records %s in links.jsonl)", count(len(found), "link"),
             "is" if len(found) == 1 else "are", "it" if len(found) == 1 else "them")
    return LinkSource(sorted(found), "primary")


@dataclass
class DeployPreview:
    """What ``deploy`` would do, found without changing anything (``deploy --dry-run``)."""

    primary: str
    work: str
    holder: object | None = None
    work_note: str = ""
    refused: SpaceportError | None = None  # the deploy would stop with this
    files: int = 0
    nbytes: int = 0
    links: LinkSource | None = None

    def outcome(self) -> SpaceportError | None:
        """The error the deploy would end with: locked (3), refused (5), links left out (1)."""
        if self.refused is not None:
            return self.refused
        return links_left_out(self.links.unrestored if self.links else [],
                              done="everything else would be deployed")

    def lines(self) -> list[str]:
        out = [f"would deploy  {self.primary} -> {self.work}  (dry run: nothing was changed)",
               "lock          " + (describe(self.holder) if self.holder else "none")]
        out.append(f"working copy  {self.work_note}")
        out.append(f"copy          {count(self.files, 'file')}, {human_size(self.nbytes)}")
        source = self.links
        if source is None:
            out.append("links         not known: the deploy is refused before")
        elif source.source == "manifest":
            out.append(f"links         {count(len(source.links), 'link')} from links.jsonl")
        elif source.source == "primary":
            out.append(f"links         {count(len(source.links), 'link')} found in the "
                       "primary folder (no links.jsonl yet)")
        elif source.legacy is not None:
            out += ["old system    " + source.legacy.system]
            out += [("import        " if i == 0 else "              ") + text
                    for i, text in enumerate(source.legacy.describe())]
        else:
            out.append("links         none (no links.jsonl, no old list)")
        if source is not None and source.source == "manifest":
            out += [f"not restored  {u}" for u in source.unrestored]
            out += [f"left out before  {u}" for u in source.carried]
        return out


def preview_deploy(primary_path: str, work_path: str, opts: Options) -> DeployPreview:
    """Everything ``deploy`` checks and plans, with no lock taken and nothing written."""
    validate_status_dir(opts.status_dir)
    primary_path, work_path = separate_folders(primary_path, work_path,
                                               ("primary", "working copy"))
    preview = DeployPreview(primary_path, work_path)
    preflight.refuse_swapped(primary_path, work_path, opts.status_dir)
    try:
        preflight.check_access(primary_path, opts.status_dir, opts.retry)
    except preflight.AccessError as exc:
        preview.refused = exc
    marker = read_marker(work_path) if os.path.isdir(work_path) else None
    with open_primary(primary_path, "00000000", opts) as primary:
        preview.holder = holder = read_lock(primary, opts.status_dir)
        own = bool(marker and lock_id(holder) == marker.deployment_id
                   and holder.names(WorkCopy.here(work_path, work_id(work_path))))
        if holder is not None and not own:
            preview.refused = held_error(primary, opts.status_dir, holder)
        preview.work_note, refusal = _work_outlook(work_path, marker, primary_path, own)
        preview.refused = preview.refused or refusal
        try:
            preview.links = links_to_restore(primary, opts)
        except RefusedError as exc:
            preview.refused = preview.refused or exc
        scan = scan_primary(primary, opts)
        preview.files, preview.nbytes = scan.files, scan.bytes
        if preview.links is not None:
            preview.links = with_primary_links(preview.links, scan, primary.root)
    return preview


def _work_outlook(work: str, marker: Marker | None, primary: str,
                  own: bool) -> tuple[str, SpaceportError | None]:
    if not os.path.isdir(work):
        return "does not exist yet: it is created", None
    if marker is None:
        if folder_is_empty(work):
            return "empty", None
        return "not empty and not a working copy", preflight.not_a_working_copy(work, primary)
    if os.path.realpath(marker.primary) != os.path.realpath(primary):
        return (f"the working copy of another primary ({marker.primary})",
                other_primary(work, marker))
    if own and marker.phase == DEPLOYED:
        return "already deployed here: the deploy changes nothing", None
    try:
        pending = pending_changes(work, marker).pending
    except IndexDamagedError:
        pending = True
    if pending and not own:
        return "holds changes never saved", RefusedError(
            f"{work} holds changes that were never saved to the primary.",
            hint=UNSAVED_HINT)
    return "a working copy of this primary: only what is missing or changed is copied", None


def deploy(primary_path: str, work_path: str, opts: Options, *, resume: bool = False,
           discard_local: bool = False, take_over_stale: bool = False,
           stop: threading.Event | None = None,
           confirm: Callable[[Discard], None] | None = None) -> DeployReport:
    """Deploy ``primary_path`` onto ``work_path``. See the module docstring.

    ``discard_local``: set aside what the working copy holds that was never saved (see
    :mod:`spaceport.discard`), after ``confirm`` (if given) accepted the list."""
    validate_status_dir(opts.status_dir)
    primary_path, work_path = separate_folders(primary_path, work_path,
                                               ("primary", "working copy"))
    preflight.check(primary_path, work_path, opts.status_dir, opts.retry)
    if not os.path.exists(work_path):
        # Refuse a held primary before creating anything: a refused deploy leaves no folder.
        with open_primary(primary_path, "00000000", opts) as probe:
            holder = read_lock(probe, opts.status_dir)
            if holder is not None and not take_over_stale:
                raise held_error(probe, opts.status_dir, holder)
    with _claimed(work_path), hold_work(work_path, "deploy", wait=opts.busy_wait,
                                        say=opts.say):
        return _deploy_held(primary_path, work_path, opts, resume, discard_local,
                            take_over_stale, stop or threading.Event(), confirm)


@contextmanager
def _claimed(work_path: str):
    """Create WORK if needed; if the deploy fails before it holds the lock, take away what
    was created here (the folder, the marker folder), so a refusal leaves nothing behind."""
    made = []  # the folders created here, WORK first, then its missing parents
    folder = work_path
    while not os.path.exists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    made_marker = not os.path.exists(marker_dir(work_path))
    os.makedirs(work_path, exist_ok=True)
    try:
        yield
    except BaseException:
        if made_marker and read_marker_quietly(work_path) is None:
            shutil.rmtree(marker_dir(work_path), ignore_errors=True)
            for folder in made:
                try:
                    os.rmdir(folder)  # only if empty
                except OSError:
                    break
        raise


def read_marker_quietly(work_path: str) -> Marker | None:
    try:
        return read_marker(work_path)
    except FormatError:
        return None


def _take_lock(primary, work_path: str, marker: Marker, previous: Marker | None,
               here: WorkCopy, opts: Options, take_over_stale: bool) -> DeploymentLock:
    """Write the new deployment's marker, then take the lock. The marker comes first so
    that a deploy killed right after the lock was published finds its own lock when run
    again; if the lock is refused, the marker is put back as it was."""
    fresh = previous is None or previous.deployment_id != marker.deployment_id
    if fresh:
        marker.phase = DEPLOYING
        write_marker(work_path, marker)
    try:
        return DeploymentLock.acquire(
            primary, opts.status_dir, deployment_id=marker.deployment_id, work=here,
            parameters=opts.parameters(), instance=opts.instance,
            stale_after=opts.stale_after, live=opts.live_lock,
            take_over_stale=take_over_stale, on_watch=opts.on_watch)
    except BaseException:
        if fresh:
            if previous is not None:
                write_marker(work_path, previous)
            else:
                remove_marker_file(work_path)
        raise


def _deploy_held(primary_path: str, work_path: str, opts: Options, resume: bool,
                 discard_local: bool, take_over_stale: bool, stop: threading.Event,
                 confirm: Callable[[Discard], None] | None) -> DeployReport:
    marker = read_marker(work_path)
    if marker and os.path.realpath(marker.primary) != os.path.realpath(primary_path) \
            and not discard_local:
        raise other_primary(work_path, marker)
    token = marker.token if marker else "00000000"
    with open_primary(primary_path, token, opts) as probe:
        holder = read_lock(probe, opts.status_dir)
    here = WorkCopy.here(work_path, work_id(work_path))
    own = bool(marker and lock_id(holder) == marker.deployment_id)
    if own:
        if not holder.names(here):  # a copy of the working copy: never a second writer
            DeploymentLock.resume(probe, opts.status_dir, holder, here)  # raises, naming both
    report = DeployReport(resumed_own=own)
    if discard_local:  # refused unless a working copy of this primary; nothing moves yet
        blocked = None
        if not (own or holder is None or take_over_stale):
            with open_primary(primary_path, token, opts) as store:
                blocked = held_error(store, opts.status_dir, holder)
        report.discarded = prepare_discard(work_path, marker, primary_path, blocked=blocked,
                                           confirm=confirm)
    previous = marker
    pending = None
    if not own:
        pending = _check_local_work(work_path, marker, resume, discard_local, primary_path)
        if discard_local and marker:
            marker = None
        if marker:  # an earlier deployment's copy, all saved (or to be saved first)
            marker = Marker(new_marker(primary_path, opts.status_dir).deployment_id,
                            primary_path, opts.status_dir, marker.created)
        else:
            marker = new_marker(primary_path, opts.status_dir)
    report.deployment_id = marker.deployment_id
    with open_primary(primary_path, marker.token, opts) as primary:
        lock = _take_lock(primary, work_path, marker, previous, here, opts, take_over_stale)
        if own and marker.phase == DEPLOYED and not (discard_local and report.discarded.needed):
            # Our own finished deployment restarting (a daemon killed and started again):
            # the working copy is the truth and may hold edits made after the last save.
            # Copying from the primary now would overwrite them; there is nothing to fetch.
            return report
        try:
            # Read under the lock (a deployment releasing it may have just written it), and
            # before anything is copied: an unreadable old list refuses the deploy.
            try:
                source = links_to_restore(primary, opts)
            except RefusedError:
                _put_marker_back(work_path, marker, previous)  # nothing was copied
                raise
            if discard_local:  # under our lock, before anything is copied
                report.discarded.carry_out()
            marker.phase = DEPLOYING
            write_marker(work_path, marker)
            if pending is not None and pending.pending and resume:
                save(work_path, opts, lock=lock, conflicts_to_trash=True, task="save unsaved work")
                report.saved_first = True
            with LockKeeper(lock, opts.heartbeat_interval):
                _stage_in(primary, work_path, marker, opts, report, source, stop)
            marker.phase = DEPLOYED
            write_marker(work_path, marker)
        except BaseException:
            # The primary was not changed (beyond the lock): give the folder back. A re-run
            # resumes from what was copied, since the index kept it.
            try:
                lock.release()
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.warning("could not release the lock after a failed deploy: %s", exc)
            raise
    return report


def _put_marker_back(work_path: str, marker: Marker, previous: Marker | None) -> None:
    """A deploy refused before copying anything leaves the working copy's marker as it
    found it (and a new folder is then removed, see _claimed)."""
    if previous is None:
        remove_marker_file(work_path)
    elif previous.deployment_id != marker.deployment_id:
        write_marker(work_path, previous)


def _check_local_work(work: str, marker: Marker | None, resume: bool, discard: bool,
                      primary: str):
    """Safety rule 9: never silently discard changes not yet saved to the primary."""
    if marker is None:
        if folder_is_empty(work):
            return None
        raise preflight.not_a_working_copy(work, primary)
    if discard:  # set aside once the lock is ours (spaceport.discard)
        return None
    try:
        plan = pending_changes(work, marker)
    except IndexDamagedError as exc:
        if resume:
            return SavePlan(links_changed=True)  # unknown: the save first rebuilds the index
        raise RefusedError(f"{work} may hold changes never saved, and its state index is "
                           f"damaged ({exc.message}).",
                           hint="Nothing was changed. Use --resume to save the working copy "
                                "first (the index is rebuilt by comparing both sides), or "
                                "--discard-local to set all of it aside (moved into "
                                ".spaceport/discarded/, not deleted) and deploy "
                                "afresh.") from exc
    if plan.pending and not resume:
        s = plan.summary()
        raise RefusedError(
            f"{work} holds changes that were never saved to the primary: "
            f"{unsaved_summary(s)}.",
            hint="Nothing was changed. " + UNSAVED_HINT)
    return plan


def _stage_in(primary: Store, work_path: str, marker: Marker, opts: Options,
              report: DeployReport, source: LinkSource, stop: threading.Event) -> None:
    try:
        index = Index(index_path(work_path))
    except IndexDamagedError as exc:
        # Nobody worked on a copy that is still being staged in: start the index afresh.
        Index.set_aside(index_path(work_path), utcnow().strftime("%Y%m%dT%H%M%SZ"))
        log.warning("%s; starting it afresh (the stage-in compares again)", exc.message)
        index = Index(index_path(work_path))
    try:
        with open_work(work_path, marker.token) as work:
            remove_leftover_temps(index, work, WORK)
            remove_leftover_temps(index, primary, PRIMARY)
            pscan = scan_primary(primary, opts, stop)
            if primary.exists(MARKER_DIR):
                log.warning("the primary holds a folder named %s; it is not deployed (the "
                            "name is reserved for spaceport's work marker)", MARKER_DIR)
            report.special = pscan.special
            source = with_primary_links(source, pscan, primary.root)
            wscan = scan_work(work, marker)
            known = index.load()
            plan = plan_deploy(pscan, wscan, known)
            report.links_source, report.legacy = source.source, source.legacy
            report.unrestored, report.carried = list(source.unrestored), source.carried
            if source.legacy and source.legacy.phantoms:
                log.info("%s: %d entries found through links to folders (%s) are not links "
                         "of the project; skipped", source.legacy.file,
                         len(source.legacy.phantoms), ", ".join(source.legacy.through))
            run = _StageIn(primary, work, index, marker, opts, report, stop)
            run.failed.extend((path or ".", exc) for path, exc in pscan.unreadable.items())
            run.execute(plan, wscan.entries, source.links, known)
            for item in report.unrestored:
                log.warning("link not restored: %s", item)
            # The saves write these into the manifest's header: nothing left out is forgotten.
            index.set_meta(NOTES_META, notes_for_index(report.carried + report.unrestored,
                                                       source.imported_from))
            index.set_meta(MANIFEST_STATE, "ok" if source.source == "manifest" else source.source)
    finally:
        index.close()


def scan_primary(primary: Store, opts: Options, stop: threading.Event | None = None):
    """The primary's tree as a deploy copies it: without the status folder, the work
    marker's name, and the old tools' own files (not project data)."""
    return scan_tree(primary, skip_top={opts.status_dir, MARKER_DIR} | TOP_LEVEL_NAMES,
                     jobs=opts.jobs, stop=stop)


class _StageIn:
    def __init__(self, primary, work, index, marker, opts, report, stop):
        self.primary, self.work, self.index = primary, work, index
        self.marker, self.opts, self.report, self.stop = marker, opts, report, stop
        self.recorder = IndexRecorder(index, WORK)
        self.failed: list[tuple[str, BaseException]] = []

    def execute(self, plan: DeployPlan, here: dict[str, Entry], links: list[Link],
                known: dict[str, Known]) -> None:
        try:
            self._remove_stale(plan)
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
            self._restore_links(links, here)
            created = {e.path for e in plan.mkdirs}
            for entry in sorted(plan.dirs, key=lambda e: -e.path.count("/")):
                mode_now = mkdir_mode(entry.mode) if entry.path in created else here[entry.path].mode
                if mode_now != entry.mode:
                    self.work.chmod(entry.path, entry.mode)
                self.recorder.done(Known(entry, None, None))
            self._forget_others(plan, links, known)
        finally:
            self.recorder.flush()
        if self.failed:
            raise partial_error("deploy", self.failed, "Nothing on the primary was changed; "
                                "run the same command again to resume.")

    def _remove_stale(self, plan: DeployPlan) -> None:
        """Work entries the primary no longer has (the folder was changed meanwhile)."""
        for entry in plan.removals:
            try:
                if entry.kind is Kind.DIR:
                    self.work.walk_remove(entry.path)
                else:
                    self.work.unlink(entry.path)
            except FileNotFoundError:
                pass
            self.recorder.forget(entry.path)
            self.report.removed_from_work += 1

    def _download(self, plan: DeployPlan) -> None:
        tracker = self.opts.tracker
        jobs = [CopyJob(e.path, e.size, temp_name(self.marker.token)) for e in plan.downloads]
        tracker.start("deploy", files=len(jobs), nbytes=plan.download_bytes)
        self.index.add_inflight(WORK, [(j.path, join(parent_of(j.path), j.tmp)) for j in jobs])
        copier = Copier(self.primary, self.work, tracker=tracker, task="deploy",
                        retry=self.opts.retry, stop=self.stop, stable_source=True)

        def on_done(done: CopyDone) -> None:
            tmp = join(parent_of(done.job.path), done.job.tmp)
            if done.error is not None:
                self.failed.append((done.job.path, done.error))
                if not isinstance(done.error, Interrupted):
                    log.error("could not copy %s: %s", done.job.path, done.error)
                # The temporary's record stays: if its removal failed too (the storage
                # went away), the next run removes it.
                return
            self.report.copied += 1
            self.report.copied_bytes += done.src_st.st_size
            self.recorder.done(file_known(done.src_st, done.dst_st, done.job.path,
                                          work_is_src=False), tmp=tmp)

        try:
            run_copies(copier, jobs, self.opts.jobs, on_done)
        finally:
            tracker.finish("deploy")
        for _, exc in self.failed:
            if isinstance(exc, BaseException) and not isinstance(exc, OSError):
                raise exc  # interrupted: stop here, the index has what landed

    def _restore_links(self, links: list[Link], here: dict[str, Entry]) -> None:
        root = self.work.root
        manifest = join(self.opts.status_dir, MANIFEST_NAME)
        for link in links:
            target = resolve_target(link, root, self.opts.rebase)
            current = here.get(link.path)
            if current is not None and current.kind is Kind.LINK and current.target == target:
                pass
            elif current is not None and current.kind is not Kind.LINK:
                self.report.unrestored.append(unrestored_from(
                    link, f"a {current.kind.name.lower()} of that name is on the primary "
                          "(it is kept)", manifest))
                continue
            else:
                if current is not None:
                    self.work.unlink(link.path)
                try:
                    # Walks from WORK's descriptor; never through a link (safety rule 11).
                    self.work.symlink(target, link.path, parents=True)
                except UnsafePathError as exc:
                    self.report.unrestored.append(unrestored_from(link, exc.strerror, manifest))
                    continue
            self.recorder.done(Known(Entry(link.path, Kind.LINK, target=target), None, None))
            self.report.links += 1
        wanted = {link.path for link in links}
        for path, entry in here.items():
            if entry.kind is Kind.LINK and path not in wanted:
                self.work.unlink(path)  # a link that was removed in the saved project
                self.recorder.forget(path)

    def _forget_others(self, plan: DeployPlan, links: list[Link], known: dict[str, Known]) -> None:
        """Index rows for anything not on the primary now are dropped: the index must
        describe exactly what both sides hold after a deploy."""
        present = {e.path for e in plan.dirs} | {e.path for e in plan.downloads} \
            | {e.path for e, _ in plan.current} | {link.path for link in links}
        for path in known:
            if path not in present:
                self.recorder.forget(path)
