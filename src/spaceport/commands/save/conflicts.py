"""A primary file that is not what this working copy last saved there is kept beside it,
under a conflict name, before the working copy's version replaces it: both are kept, and
said (rule zero)."""

from __future__ import annotations

import logging
import stat as stat_mod

from ...engine.index import Known
from ...safety.invariant import conflict_name
from .run import SaveRun

log = logging.getLogger(__name__)


def keep_conflict(run: SaveRun, path: str, old: Known | None) -> None:
    """Keep the primary's ``path`` as ``NAME.conflict-<host>-<time>`` unless it is the
    version ``old`` says this copy saved there (changed by someone else meanwhile, or never
    known to this copy)."""
    try:
        st = run.primary.lstat(path)
    except FileNotFoundError:
        return
    if not stat_mod.S_ISREG(st.st_mode):
        return  # a folder or a link in the way: the upload reports it
    if old is not None and (st.st_size, st.st_mtime_ns) == (old.psize, old.pmtime_ns):
        return  # the version this copy saved: replacing it is an ordinary save
    name = conflict_name(path, run.primary.exists)
    run.check()
    run.fence.commit(f"{path} (kept as {name})", lambda: run.retry(
        run.primary.rename, path, name, what=f"keep {path} as {name}"))
    run.report.conflicts.append((path, name))
    log.warning("%s changed on the primary too; the primary's version is kept as %s",
                path, name)
