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
from typing import Callable

from ...errors import FormatError, RefusedError
from ...formats.marker import (
    DEPLOYED,
    DEPLOYING,
    Marker,
    marker_dir,
    new_marker,
    read_marker,
    remove_marker_file,
    work_id,
    write_marker,
)
from ...safety.deletion_guard import held_refusal
from ...safety.invariant import GuardedWork
from ...safety.lock import (
    DeploymentLock,
    LockKeeper,
    WorkCopy,
    held_error,
    lock_id,
    read_lock,
    validate_status_dir,
)
from ...safety.worklock import hold_work
from ...store import WORK_CAPABILITIES
from ...store.sides import open_primary
from ..folders import folder_is_empty, separate_folders
from ..options import Options
from ..save import save_copy
from ..workcopy import WorkingCopy
from . import preflight
from .discard import Discard, prepare_discard
from .linksource import links_to_restore
from .local_work import check_local_work, other_primary, reattach
from .report import DeployReport
from .stagein import open_stage_index, stage_in

log = logging.getLogger(__name__)


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
            take_over_stale=take_over_stale, cerit=opts.cerit, on_watch=opts.on_watch)
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
    marker, holder, here, own = _found_here(primary_path, work_path, opts, resume,
                                            discard_local)
    report = DeployReport(resumed_own=own)
    if discard_local:  # refused unless a working copy of this primary; nothing moves yet
        blocked = None
        if not (own or holder is None or take_over_stale):
            with open_primary(primary_path, marker.token if marker else "00000000",
                              opts) as store:
                blocked = held_error(store, opts.status_dir, holder)
        report.discarded = prepare_discard(work_path, marker, primary_path, blocked=blocked,
                                           confirm=confirm)
    previous = marker
    pending = None
    if not (own and marker.phase == DEPLOYED):
        # Our own deploy, interrupted: what it copied is recognised, what the user changed
        # meanwhile is theirs (saved first with --resume, else refused). Another's: the
        # same, then a new deployment.
        pending = check_local_work(primary_path, work_path, marker, opts, resume,
                                   discard_local)
    if not own:
        marker = new_marker(primary_path, opts.status_dir, created=None if discard_local
                            or marker is None else marker.created)
        marker.exclude = list(previous.exclude) if previous is not None else []
    if opts.exclude is not None:  # --exclude given: the working copy's filter from now on
        marker.exclude = list(opts.exclude)
    report.deployment_id = marker.deployment_id
    with open_primary(primary_path, marker.token, opts) as primary:
        lock = _take_lock(primary, work_path, marker, previous, here, opts, take_over_stale)
        if own and marker.phase == DEPLOYED and not (discard_local and report.discarded.needed):
            # Our own finished deployment restarting (a daemon killed and started again):
            # the working copy is the truth and may hold edits made after the last save.
            # Copying from the primary now would overwrite them; there is nothing to fetch.
            return report
        try:
            with _held_copy(work_path, marker, opts, primary, lock) as copy:
                _fill(copy, report, previous, pending, resume=resume,
                      discard_local=discard_local, allow_mass_delete=allow_mass_delete,
                      stop=stop)
        except BaseException:
            # The primary was not changed (beyond the lock, and what --resume saved): give
            # the folder back. A re-run resumes from what was copied, since the index kept it.
            try:
                lock.release()
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.warning("could not release the lock after a failed deploy: %s", exc)
            raise
    return report


def _found_here(primary_path: str, work_path: str, opts: Options, resume: bool,
                discard_local: bool):
    """What WORK is (its marker, re-attached if it was lost), the lock on the primary, and
    whether that lock is this working copy's own: (marker, holder, here, own)."""
    marker = read_marker(work_path)
    if marker is None and not discard_local and not folder_is_empty(work_path):
        marker = reattach(primary_path, work_path, opts, resume)  # or refused, saying why
    if marker and os.path.realpath(marker.primary) != os.path.realpath(primary_path) \
            and not discard_local:
        raise other_primary(work_path, marker)
    token = marker.token if marker else "00000000"
    with open_primary(primary_path, token, opts) as probe:
        holder = read_lock(probe, opts.status_dir)
        here = WorkCopy.here(work_path, work_id(work_path))
        own = bool(marker and lock_id(holder) == marker.deployment_id)
        if own and not holder.names(here):  # a copy of the working copy: never a second
            DeploymentLock.resume(probe, opts.status_dir, holder, here)  # writer; raises
    return marker, holder, here, own


@contextmanager
def _held_copy(work_path: str, marker: Marker, opts: Options, primary, lock):
    """The working copy being deployed, as one value: its work store guarded (nothing in
    it replaced or removed unless proven saved), its index as the stage-in opens it."""
    with GuardedWork(work_path, WORK_CAPABILITIES, temp_token=marker.token) as work:
        copy = WorkingCopy(work_path, marker, opts, primary, work, lock,
                           _index=open_stage_index(work_path))
        try:
            yield copy
        finally:
            copy.close()


def _fill(copy: WorkingCopy, report: DeployReport, previous: Marker | None, pending, *,
          resume: bool, discard_local: bool, allow_mass_delete: bool,
          stop: threading.Event) -> None:
    """Under the lock: the links read, unsaved work set aside or saved first, the stage-in,
    and the marker's phase DEPLOYED once everything is in."""
    marker, primary = copy.marker, copy.primary
    # Read under the lock (a deployment releasing it may have just written it), and before
    # anything is copied: an unreadable old list refuses the deploy.
    try:
        source = links_to_restore(primary, copy.opts)
    except RefusedError:
        _put_marker_back(copy.path, marker, previous)  # nothing was copied
        raise
    if discard_local:  # under our lock, before anything is copied
        report.discarded.carry_out()
    marker.phase = DEPLOYING
    write_marker(copy.path, marker)
    if pending is not None and pending.pending and resume:
        report.saved = save_copy(copy, keep_conflicts=True,
                                 allow_mass_delete=allow_mass_delete,
                                 task="save unsaved work", stop=stop)
        report.saved_first = True
        if report.saved.held:  # the deploy would bring the held files back: ask
            refusal = held_refusal(report.saved.held, "deploy", "spaceport deploy --resume "
                                   f"--allow-mass-delete {primary.root} {copy.path}")
            refusal.save_report = report.saved  # what the save did (deploy --json says it)
            raise refusal
        source = links_to_restore(primary, copy.opts)  # the save may have written it
    with LockKeeper(copy.lock, copy.opts.heartbeat_interval) as keeper:
        stage_in(copy, report, source, stop, check=keeper.check)
    marker.phase = DEPLOYED
    write_marker(copy.path, marker)


def _put_marker_back(work_path: str, marker: Marker, previous: Marker | None) -> None:
    """A deploy refused before copying anything leaves the working copy's marker as it
    found it (and a new folder is then removed, see _claimed)."""
    if previous is None:
        remove_marker_file(work_path)
    elif previous.deployment_id != marker.deployment_id:
        write_marker(work_path, previous)
