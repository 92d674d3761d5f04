"""New and changed files uploaded: each atomically (a temporary, fsync, one rename), the
plain files first, then the SQLite databases as snapshots, deepest folder first
(project.sqlite last), so that a database never lands before the files and runs it refers
to (docs/RELIABILITY.md). A database whose folder holds a file that failed waits for the
next save, and so does everything above it."""

from __future__ import annotations

import logging

from ...engine.plan import SavePlan
from ...engine.recorder import file_known
from ...engine.snapshot import landing_levels, split_databases
from ...engine.transfer import Copier, CopyDone, CopyJob, run_copies
from ...errors import Interrupted
from ...store.base import join, parent_of, temp_name
from ...store.sides import PRIMARY
from .appends import append_grown
from .conflicts import keep_conflict
from .run import SaveRun

log = logging.getLogger(__name__)


def upload(run: SaveRun, plan: SavePlan, keep_conflicts: bool) -> None:
    """Upload ``plan.uploads`` (files that only grew: appended, see :mod:`.appends`).

    ``keep_conflicts``: every primary file that is not what this copy saved there is kept
    as a conflict copy first (such a save compares every primary file first: no appends)."""
    if not plan.uploads:
        return
    uploads = plan.uploads
    if not keep_conflicts:
        appended = append_grown(run, plan)
        uploads = [e for e in plan.uploads if e.path not in appended]
    jobs = [CopyJob(e.path, e.size, temp_name(run.marker.token)) for e in uploads]
    run.index.add_inflight(PRIMARY, [(j.path, join(parent_of(j.path), j.tmp)) for j in jobs])
    known = run.index.load() if keep_conflicts else {}
    tracker = run.opts.tracker
    tracker.start(run.task, files=len(jobs), nbytes=sum(e.size for e in uploads))
    copier = Copier(run.work, run.primary, tracker=tracker, task=run.task,
                    retry=run.opts.retry, stop=run.stop, check=run.check,
                    fence=run.fence, snapshots=run.snapshots, early_only=True,
                    digests=True)
    try:
        if keep_conflicts:
            for job in jobs:
                with run.entry_step(job.path):
                    keep_conflict(run, job.path, known.get(job.path))
        # Files first, then databases, deepest folder first (project.sqlite last): a
        # database never lands before the files and runs it refers to.
        by_path = {job.path: job for job in jobs}
        plain, databases = split_databases(uploads, run.work)
        landed = lambda done: _landed(run, done)  # noqa: E731
        run_copies(copier, [by_path[e.path] for e in plain], run.opts.jobs, landed)
        for level in landing_levels(databases):
            held = [e.path for e in level if e.path in run.unsettled
                    or failed_below(run, parent_of(e.path))]
            if held:
                hold(run, held)
            ready = [by_path[e.path] for e in level if e.path not in set(held)]
            run_copies(copier, ready, run.opts.jobs, landed)
    finally:
        tracker.finish(run.task)
    run.raise_if_fatal()


def _landed(run: SaveRun, done: CopyDone) -> None:
    """One upload's outcome, recorded (in the coordinating thread)."""
    tmp = join(parent_of(done.job.path), done.job.tmp)
    if done.unsettled:  # a database only now: it waits, and all above it
        run.unsettled.add(done.job.path)
        hold(run, [done.job.path])
        run.recorder.done(tmp=tmp)
        return
    if done.vanished:  # removed since the scan: deleted by the next save
        run.vanished.append(done.job.path)
        if run.index.get(done.job.path) is None:  # the primary never had it
            run.vanished_new.append(done.job.path)
        run.recorder.done(tmp=tmp)
        return
    if done.error is not None:
        run.failed.append((done.job.path, done.error))
        if not isinstance(done.error, Interrupted):
            log.error("could not save %s: %s", done.job.path, done.error)
        # The temporary's record stays: if its removal failed too (the storage went away),
        # the next run removes it.
        return
    run.report.uploaded += 1
    run.report.uploaded_bytes += done.src_st.st_size
    run.report.snapshots += done.snapshot
    row = file_known(done.src_st, done.dst_st, done.job.path, work_is_src=True)
    row.digest = done.digest  # a big plain file's: its next append is proven
    row.pctime_ns = done.dst_ctime_ns  # and the primary's file is still the one saved
    if done.sig_mtime_ns is not None:  # a WAL database: its -wal counts too
        row.entry.mtime_ns = done.sig_mtime_ns
    if done.racy:
        # Changed too recently to trust its mtime: saved again next time. The row proves
        # nothing of the working copy (as Index.invalidate), but says what the primary now
        # holds: this very upload, never to be taken for someone else's version.
        run.report.racy.append(done.job.path)
        row.entry.ctime_ns, row.digest = -1, None
    run.recorder.done(row, tmp=tmp)


def failed_below(run: SaveRun, folder: str) -> bool:
    """A file in ``folder`` or below failed, or a folder there could not be listed, or a
    file new since the last save vanished before it could be copied (a snapshot taken
    before it vanished may name it, and the primary never had it)."""
    prefix = folder + "/" if folder else ""
    return any(path.startswith(prefix) for path, _ in run.failed) or \
        any(path == folder or path.startswith(prefix) for path in run.unreadable) or \
        any(path.startswith(prefix) for path in run.vanished_new) or \
        any(path.startswith(prefix) for path in run.unsettled)


def hold(run: SaveRun, paths: list[str]) -> None:
    """Databases whose folder holds a file that failed (or vanished new) wait for the next
    save: a database never lands before what it may refer to."""
    run.report.databases_held.extend(paths)
    for path in paths:
        log.warning("%s is left for the next save: %s", path,
                    "a file in its folder failed" if run.failed else
                    "it changed too often during this save to be snapshotted before the "
                    "files it may name" if path in run.unsettled else
                    "its folder changed too much during this save")


def report_vanished(run: SaveRun) -> None:
    """A file removed between the scan and its upload is a deletion, not a failure.

    Its old version stays on the primary until the next save, which deletes it like any
    other (to the trash, under the deletion guard): that save also uploads the databases
    changed with the deletion (Scipion forgets a run before it deletes its files), and
    deletions come after them. Deleting it now could take a run's files away from under the
    project.sqlite still on the primary."""
    run.report.vanished = len(run.vanished)
    if run.vanished:
        log.info("%d file(s) were removed while this save ran; the next save deletes "
                 "them on the primary", len(run.vanished))
