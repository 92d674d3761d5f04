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

from ..clock import utcnow
from ..engine.index import Index, IndexDamagedError
from ..engine.plan import SavePlan, plan_save, unsaved_summary
from ..errors import FormatError, RefusedError, SpaceportError
from ..formats.legacy import LegacyImport
from ..formats.links import Unrestored, resolve_target
from ..formats.marker import (DEPLOYED, DEPLOYING, MARKER_DIR, REMOVING, Marker, index_path,
                              marker_dir, new_marker, read_marker, remove_marker_file, work_id,
                              write_marker)
from ..hostinfo import hostname
from ..safety.deletion_guard import held_refusal
from ..safety.invariant import prove_by_content
from ..safety.lock import (DeploymentLock, LockInfo, LockKeeper, WorkCopy, describe, held_error,
                           lock_id, read_lock, validate_status_dir)
from ..safety.worklock import hold_work
from ..store.base import Store
from ..store.sides import open_primary, open_work
from ..wording import count, human_size
from . import preflight
from .discard import Discard, prepare_discard
from .folders import folder_is_empty, separate_folders
from .linksource import LinkSource, links_to_restore, with_primary_links
from .options import Options
from .save import SaveReport, save
from .stagein import scan_primary, stage_in
from .workcopy import forget_removed, pending_changes, scan_work

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
    trashed: int = 0  # versions of this copy the primary had lost, kept in its trash
    kept: list[str] = field(default_factory=list)  # the user's, left where they are
    saved: SaveReport | None = None  # --resume: what was saved first (conflicts kept)

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
            hint=UNSAVED_HINT)
    return "a working copy of this primary: only what is missing or changed is copied", None


def deploy(primary_path: str, work_path: str, opts: Options, *, resume: bool = False,
           discard_local: bool = False, take_over_stale: bool = False,
           allow_mass_delete: bool = False,
           stop: threading.Event | None = None,
           confirm: Callable[[Discard], None] | None = None) -> DeployReport:
    """Deploy ``primary_path`` onto ``work_path``. See the module docstring.

    ``discard_local``: set aside what the working copy holds that was never saved (see
    :mod:`spaceport.commands.discard`), after ``confirm`` (if given) accepted the list.
    ``allow_mass_delete``: as for save, for the save of unsaved work ``resume`` makes."""
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
                            take_over_stale, stop or threading.Event(), allow_mass_delete,
                            confirm)


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
                 allow_mass_delete: bool, confirm: Callable[[Discard], None] | None
                 ) -> DeployReport:
    marker = read_marker(work_path)
    if marker is None and not discard_local and not folder_is_empty(work_path):
        marker = _reattach(primary_path, work_path, opts, resume)  # or refused, saying why
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
    if own and marker.phase != DEPLOYED:
        # Our own deploy, interrupted: what it copied is recognised, what the user changed
        # meanwhile is theirs (saved first with --resume, else refused).
        pending = _check_local_work(primary_path, work_path, marker, opts, resume,
                                    discard_local)
    elif not own:
        pending = _check_local_work(primary_path, work_path, marker, opts, resume,
                                    discard_local)
        marker = new_marker(primary_path, opts.status_dir, created=None if discard_local
                            or marker is None else marker.created)
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
                report.saved = save(work_path, opts, lock=lock, keep_conflicts=True,
                                    allow_mass_delete=allow_mass_delete,
                                    task="save unsaved work", stop=stop)
                report.saved_first = True
                if report.saved.held:  # the deploy would bring the held files back: ask
                    raise held_refusal(report.saved.held, "deploy", "spaceport deploy --resume "
                                       f"--allow-mass-delete {primary_path} {work_path}")
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


def _put_marker_back(work_path: str, marker: Marker, previous: Marker | None) -> None:
    """A deploy refused before copying anything leaves the working copy's marker as it
    found it (and a new folder is then removed, see _claimed)."""
    if previous is None:
        remove_marker_file(work_path)
    elif previous.deployment_id != marker.deployment_id:
        write_marker(work_path, previous)


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
        elif not resume:  # a folder of somebody's files, as far as anyone can tell
            raise preflight.not_a_working_copy(work_path, primary_path)
        else:  # a copy whose lock is not ours: never re-attached
            why = describe(holder) if holder else "there is no lock"
            hint = (f"Nothing was changed. The lock on {primary_path} does not name this folder "
                    f"on this host ({why}), so it cannot be re-attached. Deploy into a new or "
                    "empty folder.")
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
        raise preflight.not_a_working_copy(work, primary_path)
    if discard:  # set aside once the lock is ours (spaceport.commands.discard)
        return None
    plan = user_changes(primary_path, work, marker, opts)
    if plan.pending and not resume:
        s = plan.summary()
        raise RefusedError(
            f"{work} holds changes that were never saved to the primary: "
            f"{unsaved_summary(s)}.",
            hint="Nothing was changed. " + UNSAVED_HINT)
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
