"""Files that only grew are saved by writing their new bytes alone
(:mod:`spaceport.engine.append`): a step of the save before the uploads, which then leave
those files out."""

from __future__ import annotations

import logging

from ...engine.append import Appender
from ...engine.plan import SavePlan
from ...store.retry import is_unavailable
from .conflicts import keep_conflict
from .run import SaveRun

log = logging.getLogger(__name__)


def append_grown(run: SaveRun, plan: SavePlan) -> set[str]:
    """Append to the files of ``plan.appends``, one after another in this thread (it records
    each in the index); returns their paths. The others are uploaded whole with the rest: a
    primary file that is not what this copy saved there is first kept as a conflict copy
    (and if that fails, the file waits: it is not uploaded over it)."""
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
            continue
        if result.appended:
            done.add(entry.path)
            run.report.uploaded += 1
            run.report.appended += 1
            run.report.uploaded_bytes += result.written
            continue
        log.info("%s is uploaded whole: %s", entry.path, result.whole)
        if result.foreign:
            failed = len(run.failed)
            with run.entry_step(entry.path):
                keep_conflict(run, entry.path, old)
            if len(run.failed) > failed:
                done.add(entry.path)  # never uploaded over a version not kept
    return done
