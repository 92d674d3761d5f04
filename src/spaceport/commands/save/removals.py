"""Taking entries off the primary: files into this save's trash batch (a rename), folders
removed once empty. Only what the index knows and the working copy lost is removed (safety
rule 4); a folder that holds files spaceport never saw stays where it is.

Two steps of a save use it: :func:`clear_replaced` first (an entry whose kind changed, a
folder that became a file or back, makes way before the uploads), and :func:`remove_deleted`
last of the data (after every upload, and only when none failed).
"""

from __future__ import annotations

import errno
import logging

from ...engine.index import Known
from ...engine.plan import SavePlan, by_depth
from ...engine.pool import run_parallel
from ...engine.scan import Kind
from ...engine.transfer import interleave_folders
from .run import SaveRun

TRASHED_SHOWN = 20  # paths a save's report keeps of what it moved to the trash (the page)

log = logging.getLogger(__name__)

MOVED, REMOVED, KEPT = "moved", "removed", "kept"  # what happened to one entry


def clear_replaced(run: SaveRun, plan: SavePlan) -> None:
    """Make way for entries whose kind changed (a folder became a file, or back)."""
    for old in plan.replaced:
        if old.entry.kind is Kind.DIR:
            prefix = old.entry.path + "/"
            inside = [k for k in plan.deletes if k.entry.path.startswith(prefix)]
            plan.deletes = [k for k in plan.deletes if not k.entry.path.startswith(prefix)]
            for child in inside:
                with run.entry_step(child.entry.path):
                    _remove(run, child)
            # What is left inside was never seen by spaceport: keep it, in the trash.
            with run.entry_step(old.entry.path):
                _remove(run, old, stuck_dir_to_trash=True)
        else:
            with run.entry_step(old.entry.path):
                _remove(run, old)


def remove_deleted(run: SaveRun, deletes: list[Known]) -> None:
    """Deletions, several at a time (each rename or rmdir is a round trip on OneData):
    first the files to the trash, then the folders, deepest first, a level at a time."""
    files = [k for k in deletes if k.entry.kind is not Kind.DIR]
    if deletes:
        run.trash  # noqa: B018 - the batch is named once, before the workers start

    def done(old: Known, outcome: str | None, error: Exception | None) -> None:
        with run.entry_step(old.entry.path):
            if error is not None:
                raise error
            _removed(run, old, outcome)

    dirs = [k for k in deletes if k.entry.kind is Kind.DIR]
    path_of = lambda k: k.entry.path  # noqa: E731
    for group in [interleave_folders(files, path_of)] + by_depth(dirs, path_of,
                                                                 deepest_first=True):
        run_parallel(lambda old: take_off(run, old), group, run.opts.jobs, done, name="trash")


def _remove(run: SaveRun, old: Known, stuck_dir_to_trash: bool = False) -> None:
    """Take a known entry off the primary: files to the trash, empty dirs removed."""
    _removed(run, old, take_off(run, old, stuck_dir_to_trash))


def take_off(run: SaveRun, old: Known, stuck_dir_to_trash: bool = False) -> str:
    """The storage part of a removal, safe in a worker thread; says what happened."""
    run.stopped()
    run.check()
    path, kind = old.entry.path, old.entry.kind
    try:
        if kind is Kind.FILE:
            run.fence.commit(f"{path} (moved to the trash)", lambda: run.retry(
                run.trash.move, path, what=f"move {path} to trash"))
            return MOVED
        if kind is Kind.DIR:
            run.fence.commit(f"{path}/ (removed)", lambda: run.retry(
                run.primary.rmdir, path, what=f"remove folder {path}"))
            # Made again in the trash batch (once, if its files did not make it): a batch
            # restores a tree as it was, its empty folders included.
            run.fence.commit(f"{path}/ (kept in the trash)", lambda: run.retry(
                run.trash.keep_folder, path, old.entry.mode, what=f"keep folder {path}"))
    except FileNotFoundError:
        pass  # already gone (a parent moved with it, or someone removed it)
    except OSError as exc:
        if kind is not Kind.DIR or exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if stuck_dir_to_trash:
            log.warning("folder %s holds files spaceport never saw; it is replaced, so it "
                        "is kept in the trash (%s)", path, run.trash.name)
            run.fence.commit(f"{path}/ (moved to the trash)", lambda: run.retry(
                run.trash.move, path, what=f"move {path} to trash"))
        else:
            return KEPT  # it holds files spaceport never saw (safety rule 4)
    return REMOVED


def _removed(run: SaveRun, old: Known, outcome: str) -> None:
    """The bookkeeping part of a removal, in the coordinating thread."""
    if outcome == MOVED:
        run.report.deleted += 1
        if len(run.report.trashed) < TRASHED_SHOWN:
            run.report.trashed.append(old.entry.path)
    elif outcome == KEPT:
        run.report.kept_dirs.append(old.entry.path)  # left where it is
    run.recorder.forget(old.entry.path)
