"""The copies of a stage-in: what the working copy lacks, copied from the primary, each
file atomically and recorded in the index after its rename; the first ENOSPC stops them all
with one summary."""

from __future__ import annotations

import logging
import os

from ....engine.plan import DeployPlan
from ....engine.recorder import file_known
from ....engine.transfer import Copier, CopyDone, CopyJob, run_copies
from ....errors import Interrupted
from ....safety.invariant import NotProvenError
from ....store.base import join, parent_of, temp_name
from ....store.sides import WORK
from .run import FULL, StageRun

log = logging.getLogger(__name__)


def download(run: StageRun, plan: DeployPlan) -> None:
    tracker = run.opts.tracker
    todo = [e for e in plan.downloads if e.path not in run.unsafe]
    jobs = [CopyJob(e.path, e.size, temp_name(run.marker.token)) for e in todo]
    run.work.replaces = {p: e for p, e in plan.replaces.items() if p not in run.unsafe}
    tracker.start("deploy", files=len(jobs), nbytes=sum(e.size for e in todo))
    run.index.add_inflight(WORK, [(j.path, join(parent_of(j.path), j.tmp)) for j in jobs])
    # digests: a big plain file is hashed as its bytes pass by (no second read of the
    # primary), so its first growth after the deploy is saved as an append.
    copier = Copier(run.primary, run.work, tracker=tracker, task="deploy",
                    retry=run.opts.retry, stop=run.halt, stable_source=True, digests=True)

    def on_done(done: CopyDone) -> None:
        tmp = join(parent_of(done.job.path), done.job.tmp)
        error = done.error
        if isinstance(error, NotProvenError):  # the user's: kept, ours dropped
            run.recorder.done(tmp=tmp)
            return
        if error is not None:
            if getattr(error, "errno", None) in FULL:
                if run.full is None:
                    run.full = error
                    run.halt.set()  # stop at the first: no flood of the same error
                return
            if isinstance(error, Interrupted) and (run.full or run.stop.is_set()):
                return  # not started: the rerun copies it
            run.failed.append((done.job.path, error))
            if not isinstance(error, Interrupted):
                log.error("could not copy %s: %s", done.job.path, error)
            # The temporary's record stays: if its removal failed too (the storage
            # went away), the next run removes it.
            return
        run.report.copied += 1
        run.report.copied_bytes += done.src_st.st_size
        now = stat_as_landed(run, done)
        if now is None:  # changed the moment it landed: the next run compares it
            run.recorder.done(tmp=tmp)
            return
        row = file_known(done.src_st, now, done.job.path, work_is_src=False)
        row.digest = done.digest  # of the bytes written here: the append path's proof
        run.recorder.done(row, tmp=tmp)

    try:
        run_copies(copier, jobs, run.opts.jobs, on_done)
    finally:
        tracker.finish("deploy")
    for _, exc in run.failed:
        if isinstance(exc, BaseException) and not isinstance(exc, OSError):
            raise exc  # interrupted: stop here, the index has what landed


def stat_as_landed(run: StageRun, done: CopyDone) -> os.stat_result | None:
    """The copy's stat as it is now, under its real name: the rename gave it a new ctime,
    which the index must hold. None if it is not the file written (changed since)."""
    try:
        st = run.work.lstat(done.job.path)
    except FileNotFoundError:
        return None
    wrote = done.dst_st
    if (st.st_ino, st.st_size, st.st_mtime_ns) != (wrote.st_ino, wrote.st_size,
                                                   wrote.st_mtime_ns):
        return None
    return st
