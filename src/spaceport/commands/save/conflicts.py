"""A primary file that is not what this working copy last saved there is kept before the
working copy's version replaces it: both are kept, and said (rule zero).

What it is decides where it is kept (:func:`~spaceport.engine.index.primary_state`):
someone else's version (another size or mtime) beside it, as ``NAME.conflict-<host>-<time>``;
a version that may be ours but cannot be proven (the same size and mtime, another ctime:
changed in place with its times put back) in this save's trash batch."""

from __future__ import annotations

import logging
import stat as stat_mod

from ...engine.index import OTHER, OURS, Known, primary_state
from ...safety.invariant import conflict_name
from .run import SaveRun

log = logging.getLogger(__name__)


def keep_conflict(run: SaveRun, path: str, old: Known | None, *, other: bool = False) -> None:
    """Keep the primary's ``path`` unless it is the version ``old`` says this copy saved
    there (see the module docstring). ``other``: it was already found to be someone
    else's (its bytes differ from ours), whatever its times say."""
    try:
        st = run.primary.lstat(path)
    except FileNotFoundError:
        return
    if not stat_mod.S_ISREG(st.st_mode):
        return  # a folder or a link in the way: the upload reports it
    state = OTHER if other else primary_state(st.st_size, st.st_mtime_ns, st.st_ctime_ns, old)
    if state == OURS:
        return  # the version this copy saved: replacing it is an ordinary save
    if state != OTHER:
        keep_in_trash(run, path, "changed in place, its size and mtime put back: its change "
                                 "time moved")
        return
    name = conflict_name(path, run.primary.exists)
    run.check()
    run.fence.commit(f"{path} (kept as {name})", lambda: run.retry(
        run.primary.rename, path, name, what=f"keep {path} as {name}"))
    run.report.conflicts.append((path, name))
    log.warning("%s changed on the primary too; the primary's version is kept as %s",
                path, name)


def keep_in_trash(run: SaveRun, path: str, why: str) -> None:
    """Move the primary's ``path`` into this save's trash batch before ours replaces it: a
    version that cannot be proven to be the one this copy saved is never overwritten."""
    run.check()
    try:
        run.fence.commit(f"{path} (moved to the trash)", lambda: run.retry(
            run.trash.move, path, what=f"move {path} to trash"))
    except FileNotFoundError:
        return
    run.report.kept_unproven.append((path, run.trash.name))
    log.warning("%s on the primary could not be proven to be the version this copy saved "
                "(%s); it is kept in the trash batch %s, and this copy's version was uploaded "
                "whole", path, why, run.trash.name)
