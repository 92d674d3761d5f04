"""The end of a save: failures said (the lock and the copy kept), the save recorded in the
index, the heartbeat and the journal, and trash older than the retention purged (older by
this host's clock and by the time spaceport watched it: :mod:`spaceport.safety.retention`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from ...clock import iso
from ...formats.journal import JOURNAL_NAME, append_entry
from ...formats.statusfile import StatusFileError, say_once
from ...safety.retention import purge_old_trash
from ..failures import partial_error
from .run import SaveRun

log = logging.getLogger(__name__)


def finish(run: SaveRun) -> None:
    """Record the save (index, lock, journal), purge old trash, report failures."""
    if run.failed:
        raise partial_error("save", run.failed,
                            "Everything else was saved. The lock and the working copy "
                            "are kept.")
    stamp = iso(run.now)
    run.index.set_meta("last_save", stamp)
    try:
        run.lock.heartbeat(last_save=stamp)
    except StatusFileError as exc:  # the files are saved: a heartbeat is no reason to fail
        say_once(f"{exc.message} {exc.hint}")
    _journal(run, stamp)
    try:
        retention = timedelta(days=run.opts.trash_retention_days)
        run.report.purged = purge_old_trash(
            run.primary, run.marker.status_dir, run.index, retention,
            final=run.task == "final save", commit=run.fence.commit).purge
    except OSError as exc:
        log.warning("could not purge old trash: %s", exc)


def _journal(run: SaveRun, stamp: str) -> None:
    r = run.report
    line = {"time": stamp, "deployment_id": run.marker.deployment_id,
            "host": run.lock.info.host, "instance": run.lock.info.instance,
            "uploaded": r.uploaded, "bytes": r.uploaded_bytes, "deleted": r.deleted,
            "moved": r.moved,
            "trash": r.trash_batch, "seconds": round(r.seconds, 3)}
    if r.links_dropped:
        line["links_dropped"] = r.links_dropped  # the manifest before is in that batch
    # Held deletions are on the record when they change, and at a final save: the working
    # copy that knew them may be gone after it (status --primary shows them).
    held = r.held is not None and (r.held_new or run.task == "final save")
    if held:
        line["held_deletions"] = {k: r.held[k] for k in
                                  ("count", "files", "links", "reason", "top_level", "sample")
                                  if k in r.held}
    if r.held_settled:  # else status --primary would show the last held ones for ever
        line["held_deletions_settled"] = {"count": r.held_settled}
    if not (r.uploaded or r.deleted or r.dirs_created or r.manifest_written or r.moved
            or held or r.held_settled):
        return  # keep the journal to saves that changed something
    try:
        run.fence.commit(JOURNAL_NAME, lambda: append_entry(
            run.primary, run.marker.status_dir, line))
    except OSError as exc:
        if isinstance(exc, StatusFileError):
            say_once(f"{exc.message} {exc.hint}")
        else:
            log.warning("could not append to the save journal: %s", exc)
