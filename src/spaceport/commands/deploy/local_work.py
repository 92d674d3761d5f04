"""What a working copy already holds when a deploy comes: a copy of another primary
(refused), a copy whose marker is gone (re-attached only by ``--resume`` and only when the
lock names it), and changes never saved (refused, saved first with ``--resume``, or set
aside with ``--discard-local``)."""

from __future__ import annotations

import logging
import os

from ...clock import utcnow
from ...engine.index import Index, IndexDamagedError
from ...engine.plan import SavePlan, plan_save, unsaved_summary
from ...errors import RefusedError, SpaceportError
from ...formats.links import resolve_target
from ...formats.marker import (
    DEPLOYING,
    MARKER_DIR,
    REMOVING,
    Marker,
    index_path,
    write_marker,
)
from ...hostinfo import hostname
from ...safety.invariant import prove_by_content
from ...safety.lock import LockInfo, alive_here, describe, read_lock
from ...safety.worklock import daemon_refusal
from ...store.base import Store
from ...store.sides import open_primary, open_work
from ..folders import folder_is_empty
from ..options import Options
from ..workcopy import forget_removed, scan_work
from . import preflight
from .linksource import links_to_restore

log = logging.getLogger(__name__)


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


def reattach(primary_path: str, work_path: str, opts: Options, resume: bool) -> Marker:
    """A working copy whose marker is gone: re-attached by ``--resume`` when the lock on the
    primary names this host and this very folder and no daemon of it still runs; refused,
    saying why, in any other case.

    A daemon's marker deleted under it is not a lost deployment: the daemon still writes the
    primary under that deployment's id, and fencing cannot tell two writers of one id apart.
    Its busy lock keeps commands out (spaceport.safety.worklock); its heartbeat, beaten by a
    process that runs on this very machine, is a second proof that holds even where that
    lock cannot be seen (a daemon of an older spaceport, which locked ``busy`` alone)."""
    with open_primary(primary_path, "00000000", opts) as probe:
        holder = read_lock(probe, opts.status_dir)
        beat = alive_here(probe, opts.status_dir, holder)
    if beat is not None:
        raise daemon_refusal(work_path, beat.pid, beat.host)
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


def check_local_work(primary_path: str, work: str, marker: Marker | None, opts: Options,
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
                                                 links=manifest_targets(ps, opts, work)):
                plan = plan_save(scan, index)
            return plan
    finally:
        index.close()


def manifest_targets(primary: Store, opts: Options, work: str) -> dict[str, str] | None:
    """path -> target of the links the primary's manifest (or old list) holds, as they are
    re-created under ``work``; None if they cannot be read."""
    try:
        links = links_to_restore(primary, opts).links
    except SpaceportError:
        return None
    return {link.path: resolve_target(link, work, opts.rebase) for link in links}
