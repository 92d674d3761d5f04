"""Versions of this working copy the primary lost (changed or deleted there while the copy
was away): each kept in the primary's trash before it is replaced or removed here, since it
was saved once (rule zero)."""

from __future__ import annotations

import logging

from ....clock import utcnow
from ....engine.plan import DeployPlan
from ....engine.scan import Entry, Kind
from ....engine.transfer import Copier, CopyDone, CopyJob, run_copies
from ....formats.trash import TrashBin
from ....store.base import join, parent_of, temp_name
from ....store.sides import PRIMARY
from .run import StageRun

log = logging.getLogger(__name__)


def keep_in_trash(run: StageRun, entries: list[Entry]) -> None:
    """Copy each into the primary's trash before it is replaced or removed here: it was
    saved once, and the primary changed or deleted it while this copy was away."""
    if not entries:
        return
    trash = TrashBin(run.primary, run.marker.status_dir, utcnow())
    jobs = [CopyJob(trash.place_for(e.path), e.size, temp_name(run.marker.token),
                    src=e.path) for e in entries]
    run.index.add_inflight(PRIMARY, [(j.path, join(parent_of(j.path), j.tmp))
                                      for j in jobs])
    copier = Copier(run.work, run.primary, tracker=run.opts.tracker, task="deploy",
                    retry=run.opts.retry, stop=run.halt, check=run.check)
    finished = []

    def on_done(done: CopyDone) -> None:
        finished.append(join(parent_of(done.job.path), done.job.tmp))
        if done.error is not None:
            run.unsafe.add(done.job.src)
            run.failed.append((done.job.src, done.error))
            return
        log.info("%s: the primary changed or deleted it meanwhile; this copy's version "
                 "is kept in the trash (%s)", done.job.src, trash.name)
        run.report.trashed += 1

    run_copies(copier, jobs, run.opts.jobs, on_done)
    run.index.drop_inflight(PRIMARY, finished)
    run.stopped()


def remove_gone(run: StageRun, plan: DeployPlan) -> None:
    """Work entries the primary no longer has: proven files (kept in the trash just
    now) and folders that are empty by then. Nothing else."""
    for entry in plan.removals:
        if entry.path in run.unsafe:
            continue
        if run.work.guard.remove(entry.path, entry):
            run.recorder.forget(entry.path)
            run.report.removed_from_work += entry.kind is Kind.FILE
