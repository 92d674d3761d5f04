"""The save's first step: renames and moves found in the working copy, made renames on the
primary (:mod:`spaceport.engine.renames` finds them from the index).

Moves come first: what a move carries is neither uploaded nor sent to the trash.
"""

from __future__ import annotations

import logging
import stat as stat_mod

from ...engine.plan import SavePlan
from ...engine.renames import Move, ancestors, depends_on, plan_without
from ...engine.scan import Entry, Kind
from ...store.base import join
from ...store.retry import is_unavailable
from .run import SaveRun

log = logging.getLogger(__name__)


def make_moves(run: SaveRun, plan: SavePlan) -> None:
    """The moves of ``plan``, one rename each on the primary, in order.

    Each rename is fenced and never replaces an entry; the index rows follow only once it
    is made (a save killed in between finds the move made and only rekeys: see
    :func:`made_already`). A move that cannot be made (its new name taken on the primary by
    something spaceport does not know) is saved as before renames: what is at its new path
    is uploaded; its old files stay known where they were, and the next save deletes them
    (through the deletion guard). So do the moves after it that depend on it; ``plan`` is
    changed to say so."""
    new_dirs = {e.path: e for e in plan.mkdirs}
    not_made: list[Move] = []
    for move in list(plan.moves):
        run.stopped()
        if any(depends_on(move, other) for other in not_made):
            not_made.append(move)
            continue
        reason = _move(run, move, new_dirs)
        if reason is None:
            run.report.moved += 1
            continue
        not_made.append(move)
        log.warning("%s could not be moved to %s on the primary (%s): it is uploaded there "
                    "instead, and the next save deletes the old copy", move.old, move.new,
                    reason)
    for move in not_made:
        plan_without(plan, move, run.entries)


def _move(run: SaveRun, move: Move, new_dirs: dict[str, Entry]) -> str | None:
    """One move; None once made and recorded, else why it was not made."""
    old, new = move.old, move.new
    for parent in [p for p in ancestors(new) if p in new_dirs]:  # a new folder first
        run.check()
        try:
            run.fence.commit(f"{parent}/ (created)", lambda: run.retry(
                run.primary.mkdir, parent, new_dirs[parent].mode | 0o700,
                what=f"create folder {parent}"))
        except FileExistsError:
            pass
    run.check()
    try:
        run.fence.commit(f"{old} -> {new} (moved)", lambda: run.retry(
            run.primary.rename_or_refuse, old, new, what=f"move {old} to {new}"))
    except (FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        if not made_already(run, move):
            return "its new name is taken there" if isinstance(exc, FileExistsError) \
                else f"{exc.strerror or exc}"
    except OSError as exc:
        if is_unavailable(exc):
            raise
        return f"{exc.strerror or exc}"
    run.recorder.flush()
    run.index.rekey(old, new)
    return None


def made_already(run: SaveRun, move: Move) -> bool:
    """A rename that did not happen now: was it made before (a killed save, or a retried
    call whose first try landed)? Yes if the old path is gone and the new one holds what the
    rows say (a file: the size and mtime it was saved with)."""
    if run.primary.exists(move.old):
        return False
    try:
        st = run.primary.lstat(move.new)
    except FileNotFoundError:
        return False
    if stat_mod.S_ISDIR(st.st_mode) != (move.kind is Kind.DIR):
        return False
    if move.expect is None:
        return True  # a folder that carried no file: its name is what is left to check
    rel, psize, pmtime_ns = move.expect
    if rel:
        try:
            st = run.primary.lstat(join(move.new, rel))
        except FileNotFoundError:
            return False
    return (st.st_size, st.st_mtime_ns) == (psize, pmtime_ns)
