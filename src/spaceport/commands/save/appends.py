"""Files that only grew are saved by writing their new bytes alone
(:mod:`spaceport.engine.append`): a step of the save before the uploads, which then leave
those files out."""

from __future__ import annotations

import logging

from ...engine.append import Appender, AppendResult
from ...engine.plan import SavePlan
from ...store.retry import is_unavailable
from .conflicts import keep_conflict, keep_in_trash
from .run import SaveRun

log = logging.getLogger(__name__)


def append_grown(run: SaveRun, plan: SavePlan) -> set[str]:
    """Append to the files of ``plan.appends``, one after another in this thread (it records
    each in the index); returns their paths and those that wait. The others are uploaded
    whole with the rest: a primary file that is someone else's is first kept as a conflict
    copy, one that cannot be proven ours (or whose append failed) in the trash (and if that
    fails, the file waits: it is not uploaded over it)."""
    appender = Appender(run.work, run.primary, run.index, fence=run.fence,
                        check=run.check, stop=run.stop)
    appender.forget_stale(set(plan.appends))
    done: set[str] = set()
    for entry in plan.uploads:
        old = plan.appends.get(entry.path)
        if old is None:
            continue
        run.stopped()
        try:
            result = appender.append(entry, old)
        except OSError as exc:
            if is_unavailable(exc):
                raise
            log.warning("%s could not be appended to (%s); it is uploaded whole",
                        entry.path, exc)
            result = AppendResult(entry.path, whole=str(exc), unproven=True)
        if result.appended:
            done.add(entry.path)
            run.report.uploaded += 1
            run.report.appended += 1
            run.report.uploaded_bytes += result.written
            continue
        log.info("%s is uploaded whole: %s", entry.path, result.whole)
        if result.foreign or result.unproven:
            failed = len(run.failed)
            with run.entry_step(entry.path):
                if result.foreign:
                    keep_conflict(run, entry.path, old, other=True)
                else:
                    keep_in_trash(run, entry.path, result.whole)
            if len(run.failed) > failed:
                done.add(entry.path)  # never uploaded over a version not kept
    return done
