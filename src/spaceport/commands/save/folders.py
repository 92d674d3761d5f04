"""New folders on the primary, and their modes: created before the files that go in them,
a level of the tree at a time (each mkdir is a round trip), owner-writable until the files
are in; their exact modes are set after the uploads."""

from __future__ import annotations

from ...engine.index import Known
from ...engine.plan import SavePlan, by_depth
from ...engine.pool import run_parallel
from ...engine.scan import Entry
from ...store.posix import mkdir_mode
from .run import SaveRun


def make_folders(run: SaveRun, plan: SavePlan) -> None:
    def make(entry: Entry) -> None:
        run.check()
        try:
            # Owner-writable until the files are in; the exact mode is set after.
            run.fence.commit(f"{entry.path}/ (created)", lambda: run.retry(
                run.primary.mkdir, entry.path, entry.mode | 0o700,
                what=f"create folder {entry.path}"))
        except FileExistsError:
            pass

    def made(entry: Entry, _, error: Exception | None) -> None:
        with run.entry_step(entry.path):
            if error is not None:
                raise error
            run.report.dirs_created += 1
            run.recorder.done(Known(entry, None, None))

    # A level of the tree at a time, its folders in parallel: each mkdir is a round trip.
    for level in by_depth(plan.mkdirs, lambda e: e.path):
        run_parallel(make, level, run.opts.jobs, made, name="mkdir")


def set_folder_modes(run: SaveRun, plan: SavePlan) -> None:
    """The modes of the folders created (where mkdir could not give them) and changed."""
    for entry in [e for e in plan.mkdirs if mkdir_mode(e.mode) != e.mode] + plan.chmods:
        run.check()
        with run.entry_step(entry.path):
            run.fence.commit(f"{entry.path}/ (mode set)", lambda: run.retry(
                run.primary.chmod, entry.path, entry.mode, what=f"chmod {entry.path}"))
            run.recorder.done(Known(entry, None, None))
