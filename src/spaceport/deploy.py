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

from .engine import (Options, folder_is_empty, open_primary, open_work, separate_folders,
                     wipe_folder)
from .errors import FormatError, RefusedError, SpaceportError
from .hostinfo import hostname
from .index import Index, IndexDamagedError
from .invariant import prove_by_content
from .legacy import LegacyImport, RootUnknown, read_legacy_links
from .links import Link, Unrestored, read_manifest_full, resolve_target
from .lock import (DeploymentLock, LockInfo, LockKeeper, WorkCopy, describe, held_error,
                   lock_id, read_lock, utcnow, validate_status_dir)
from .marker import (DEPLOYED, DEPLOYING, MARKER_DIR, REMOVING, Marker, index_path, marker_dir,
                     new_marker, read_marker, remove_marker_file, work_id, write_marker)
from .plan import SavePlan, plan_save
from .save import SaveReport, forget_removed, pending_changes, save, scan_work
from .stagein import scan_primary, stage_in
from .store.base import Store
from .worklock import hold_work

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
    trashed: int = 0  # versions of this copy the primary had lost, kept in its trash
    kept: list[str] = field(default_factory=list)  # the user's, left where they are
    saved: SaveReport | None = None  # --resume: what was saved first (conflicts kept)

    def incomplete(self) -> SpaceportError | None:
        """The error (exit 1) for a deploy that completed but left links out, or None."""
        return links_left_out(self.unrestored)


class LinksLeftOut(SpaceportError):
    """Everything was deployed except some links, which are named."""


def links_left_out(unrestored: list[Unrestored], *, done: str = "everything else was "
                   "deployed") -> LinksLeftOut | None:
    if not unrestored:
        return None
    shown = "\n".join(f"  {u}" for u in unrestored[:50])
    more = f"\n  ... and {len(unrestored) - 50} more" if len(unrestored) > 50 else ""
    return LinksLeftOut(
        f"{len(unrestored)} link(s) were not restored; {done}:\n{shown}{more}",
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
        out.append(f"copy          {self.files} file(s), {self.nbytes / 1048576:.1f} MiB")
        source = self.links
        if source is None:
            out.append("links         not known: the deploy is refused before")
        elif source.source == "manifest":
            out.append(f"links         {len(source.links)} from links.jsonl")
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
    return preview


def _work_outlook(work: str, marker: Marker | None, primary: str,
                  own: bool) -> tuple[str, SpaceportError | None]:
    if not os.path.isdir(work):
        return "does not exist yet: it is created", None
    if marker is None:
        if folder_is_empty(work):
            return "empty", None
        return "not empty and not a working copy", RefusedError(
            f"{work} is not empty and is not a spaceport working copy.",
            hint="Deploy into an empty folder, or use --discard-local to delete what is in it.")
    if os.path.realpath(marker.primary) != os.path.realpath(primary):
        return f"the working copy of another primary ({marker.primary})", RefusedError(
            f"{work} is the working copy of another primary ({marker.primary}).")
    if own and marker.phase == DEPLOYED:
        return "already deployed here: the deploy changes nothing", None
    if marker.phase == DEPLOYING:  # what it copied is told from edits by its content
        return ("a deploy that was interrupted: what it copied is compared with the primary, "
                "the rest is copied (edits made meanwhile are refused without --resume)"), None
    try:
        pending = pending_changes(work, marker).pending
    except IndexDamagedError:
        pending = True
    if pending and not own:
        return "holds changes never saved", RefusedError(
            f"{work} holds changes that were never saved to the primary.",
            hint="Use --resume to save them first, or --discard-local to throw them away.")
    return "a working copy of this primary: only what is missing or changed is copied", None


def deploy(primary_path: str, work_path: str, opts: Options, *, resume: bool = False,
           discard_local: bool = False, take_over_stale: bool = False,
           allow_mass_delete: bool = False,
           stop: threading.Event | None = None) -> DeployReport:
    """Deploy ``primary_path`` onto ``work_path``. See the module docstring.
    ``allow_mass_delete``: as for save, for the save of unsaved work ``resume`` makes."""
    validate_status_dir(opts.status_dir)
    primary_path, work_path = separate_folders(primary_path, work_path,
                                               ("primary", "working copy"))
    if not os.path.exists(work_path):
        # Refuse a held primary before creating anything: a refused deploy leaves no folder.
        with open_primary(primary_path, "00000000", opts) as probe:
            holder = read_lock(probe, opts.status_dir)
            if holder is not None and not take_over_stale:
                raise held_error(probe, opts.status_dir, holder)
    with _claimed(work_path), hold_work(work_path, "deploy", wait=opts.busy_wait,
                                        say=opts.say):
        return _deploy_held(primary_path, work_path, opts, resume, discard_local,
                            take_over_stale, stop or threading.Event(), allow_mass_delete)


@contextmanager
def _claimed(work_path: str):
    """Create WORK if needed; if the deploy fails before it holds the lock, take away what
    was created here (the folder, the marker folder), so a refusal leaves nothing behind."""
    made_work = not os.path.exists(work_path)
    made_marker = not os.path.exists(marker_dir(work_path))
    os.makedirs(work_path, exist_ok=True)
    try:
        yield
    except BaseException:
        if made_marker and read_marker_quietly(work_path) is None:
            shutil.rmtree(marker_dir(work_path), ignore_errors=True)
            if made_work:
                try:
                    os.rmdir(work_path)
                except OSError:
                    pass
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
                 allow_mass_delete: bool = False) -> DeployReport:
    marker = read_marker(work_path)
    if marker is None and not discard_local and not folder_is_empty(work_path):
        marker = _reattach(primary_path, work_path, opts, resume)  # or refused, saying why
    if marker and os.path.realpath(marker.primary) != os.path.realpath(primary_path) \
            and not discard_local:
        raise RefusedError(f"{work_path} is the working copy of another primary "
                           f"({marker.primary}).",
                           hint="Nothing was changed. Use another folder, or --discard-local "
                                "to throw its content away.")
    token = marker.token if marker else "00000000"
    with open_primary(primary_path, token, opts) as probe:
        holder = read_lock(probe, opts.status_dir)
    here = WorkCopy.here(work_path, work_id(work_path))
    own = bool(marker and lock_id(holder) == marker.deployment_id)
    if own:
        if not holder.names(here):  # a copy of the working copy: never a second writer
            DeploymentLock.resume(probe, opts.status_dir, holder, here)  # raises, naming both
    report = DeployReport(resumed_own=own)
    previous = marker
    pending = None
    if own and marker.phase != DEPLOYED:
        # Our own deploy, interrupted: what it copied is recognised, what the user changed
        # meanwhile is theirs (saved first with --resume, else refused).
        pending = _check_local_work(primary_path, work_path, marker, opts, resume, False)
    elif not own:
        pending = _check_local_work(primary_path, work_path, marker, opts, resume,
                                    discard_local)
        marker = new_marker(primary_path, opts.status_dir, created=None if discard_local
                            or marker is None else marker.created)
    report.deployment_id = marker.deployment_id
    with open_primary(primary_path, marker.token, opts) as primary:
        lock = _take_lock(primary, work_path, marker, previous, here, opts, take_over_stale)
        if own and marker.phase == DEPLOYED:
            # Our own finished deployment restarting (a daemon killed and started again):
            # the working copy is the truth and may hold edits made after the last save.
            # Copying from the primary now would overwrite them; there is nothing to fetch.
            return report
        try:
            # Read under the lock (a deployment releasing it may have just written it), and
            # before anything is copied: an unreadable old list refuses the deploy.
            source = links_to_restore(primary, opts)
            marker.phase = DEPLOYING
            write_marker(work_path, marker)
            if pending is not None and pending.pending and resume:
                report.saved = save(work_path, opts, lock=lock, keep_conflicts=True,
                                    allow_mass_delete=allow_mass_delete,
                                    task="save unsaved work", stop=stop)
                report.saved_first = True
                source = links_to_restore(primary, opts)  # the save may have written it
            with LockKeeper(lock, opts.heartbeat_interval) as keeper:
                stage_in(primary, work_path, marker, opts, report, source, stop,
                         check=keeper.check)
            marker.phase = DEPLOYED
            write_marker(work_path, marker)
        except BaseException:
            # The primary was not changed (beyond the lock, and what --resume saved): give
            # the folder back. A re-run resumes from what was copied, since the index kept it.
            try:
                lock.release()
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.warning("could not release the lock after a failed deploy: %s", exc)
            raise
    return report


def _reattach(primary_path: str, work_path: str, opts: Options, resume: bool) -> Marker:
    """A working copy whose marker is gone: re-attached by ``--resume`` when the lock on the
    primary names this host and this very folder; refused, saying why, in any other case."""
    with open_primary(primary_path, "00000000", opts) as probe:
        holder = read_lock(probe, opts.status_dir)
    ours = isinstance(holder, LockInfo) and holder.host == hostname() and \
        os.path.abspath(holder.work) == work_path
    if not (ours and resume):
        if ours:
            hint = (f"Nothing was changed. Its marker ({MARKER_DIR}/) is gone, and the lock on "
                    f"{primary_path} names this folder on this host: 'spaceport deploy --resume "
                    f"{primary_path} {work_path}' re-attaches it (it compares both sides, saves "
                    "what differs and keeps both versions where the primary changed too).")
        else:
            why = describe(holder) if holder else "there is no lock"
            hint = (f"Nothing was changed. The lock on {primary_path} does not name this folder "
                    f"on this host ({why}), so it cannot be re-attached. Deploy into an empty "
                    "folder, or use --discard-local to delete what is in it.")
        raise RefusedError(f"{work_path} is not empty and is not a spaceport working copy.",
                           hint=hint)
    if os.path.exists(index_path(work_path)):  # what is left of it proves nothing now
        Index.set_aside(index_path(work_path), utcnow().strftime("%Y%m%dT%H%M%SZ"))
    marker = Marker(holder.deployment_id, primary_path, opts.status_dir, holder.created,
                    phase=DEPLOYING)
    write_marker(work_path, marker)
    log.warning("%s had lost its marker; re-attached to its deployment %s (held by this host): "
                "both sides are compared", work_path, holder.deployment_id[:8])
    return marker


def _check_local_work(primary_path: str, work: str, marker: Marker | None, opts: Options,
                      resume: bool, discard: bool) -> SavePlan | None:
    """Safety rule 9: never silently discard changes not yet saved to the primary. What the
    working copy holds that is provably the primary's (a killed deploy's copies) is recorded
    first, so only real changes count."""
    if marker is None:
        if folder_is_empty(work):
            return None
        if discard:
            wipe_folder(work)
            return None
        raise RefusedError(f"{work} is not empty and is not a spaceport working copy.",
                           hint="Nothing was changed. Deploy into an empty folder, or use "
                                "--discard-local to delete what is in it.")
    if discard:
        wipe_folder(work)
        return None
    plan = user_changes(primary_path, work, marker, opts)
    if plan.pending and not resume:
        s = plan.summary()
        raise RefusedError(
            f"{work} holds changes that were never saved to the primary: "
            f"{s['files_to_upload']} file(s) to upload ({s['bytes_to_upload']} bytes), "
            f"{s['entries_to_delete']} deletion(s), links changed: {s['links_changed']}.",
            hint="Nothing was changed. Use --resume to save them first and then deploy, or "
                 "--discard-local to throw them away.")
    return plan


def user_changes(primary_path: str, work: str, marker: Marker, opts: Options) -> SavePlan:
    """What a save of the working copy would do, once what provably equals the primary is
    recorded as saved (a damaged index is set aside first: nothing it says is trusted)."""
    path = index_path(work)
    try:
        index = Index(path)
    except IndexDamagedError as exc:
        aside = Index.set_aside(path, utcnow().strftime("%Y%m%dT%H%M%SZ"))
        log.warning("%s; it was moved to %s, and the working copy is compared with the "
                    "primary instead", exc.message, aside)
        index = Index(path)
    try:
        with open_work(work, marker.token) as ws, \
                open_primary(primary_path, marker.token, opts) as ps:
            scan = scan_work(ws, marker, index=index)
            plan = plan_save(scan, index)
            if marker.phase == REMOVING:  # an undeploy was interrupted: not deletions
                forget_removed(index, plan)
            if plan.pending and prove_by_content(scan, index, ps, ws, jobs=opts.jobs,
                                                 links=_manifest_targets(ps, opts, work)):
                plan = plan_save(scan, index)
            return plan
    finally:
        index.close()


def _manifest_targets(primary: Store, opts: Options, work: str) -> dict[str, str] | None:
    """path -> target of the links the primary's manifest (or old list) holds, as they are
    re-created under ``work``; None if they cannot be read."""
    try:
        links = links_to_restore(primary, opts).links
    except SpaceportError:
        return None
    return {link.path: resolve_target(link, work, opts.rebase) for link in links}
