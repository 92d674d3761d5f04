"""After the copies: folders given their modes, and index rows dropped for what the
primary no longer has, so the index describes exactly what both sides hold."""

from __future__ import annotations

import logging

from ....engine.index import Known
from ....engine.plan import DeployPlan
from ....engine.scan import Entry, Kind
from ....formats.links import Link
from ....store.posix import mkdir_mode
from .run import StageRun

log = logging.getLogger(__name__)


def set_dir_modes(run: StageRun, plan: DeployPlan, here: dict[str, Entry]) -> None:
    created = {e.path for e in plan.mkdirs}
    for entry in sorted(plan.dirs, key=lambda e: -e.path.count("/")):
        now = here.get(entry.path)
        if entry.path not in created and (now is None or now.kind is not Kind.DIR):
            continue  # the user's file or link holds the name: kept, no folder made
        mode_now = mkdir_mode(entry.mode) if entry.path in created else now.mode
        if mode_now != entry.mode:
            run.work.chmod(entry.path, entry.mode)
        run.recorder.done(Known(work_folder(run, entry), None, None))


def work_folder(run: StageRun, entry: Entry) -> Entry:
    """A primary folder's row, with the inode of the working copy's folder (the
    primary's inode means nothing here; the work one tells a folder moved later)."""
    try:
        ino = run.work.lstat(entry.path).st_ino
    except OSError:
        ino = 0  # unknown: the next save adopts it
    return Entry(entry.path, Kind.DIR, mode=entry.mode, ino=ino)


def forget_others(run: StageRun, plan: DeployPlan, links: list[Link],
                  known: dict[str, Known]) -> None:
    """Index rows for anything not on the primary now are dropped: the index must
    describe exactly what both sides hold after a deploy (what the working copy keeps
    of its own is then new to the next save, which uploads it)."""
    present = {e.path for e in plan.dirs} | {e.path for e in plan.downloads} \
        | {e.path for e, _ in plan.current} | {link.path for link in links}
    for path in known:
        if path not in present:
            run.recorder.forget(path)
