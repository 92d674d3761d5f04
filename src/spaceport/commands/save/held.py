"""The deletion guard's part in a save (:mod:`spaceport.safety.deletion_guard`): the
deletions it holds leave the plan and go into the report; everything else is saved."""

from __future__ import annotations

from ...clock import iso, utcnow
from ...engine.index import Index
from ...engine.plan import SavePlan
from ...safety.deletion_guard import Held, held_summary, judge, record_held
from ..options import Options
from .report import SaveReport


def hold_deletions(plan: SavePlan, index: Index, opts: Options, report: SaveReport, *,
                   allow: bool, confirmed: frozenset[str], record: bool) -> Held | None:
    """Judge ``plan``'s deletions; those held leave it. With ``record``, the index keeps
    what is held (status, the final check); the caller says it (the command line at every
    save, the daemon when ``report.held_new``)."""
    held = judge(plan, index, opts.mass_delete_threshold, allow=allow, confirmed=confirmed)
    if held is not None:
        report.held_paths = held.paths
    if record:
        was = held_summary(index)
        report.held_new = record_held(index, held, iso(utcnow()))
        if held is None and was:  # settled: the journal says so (status --primary)
            report.held_settled = was.get("count") or 0
        report.held = held_summary(index) if held else None
    elif held is not None:
        report.held = held.summary()
    return held
