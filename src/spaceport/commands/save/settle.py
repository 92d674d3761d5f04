"""Before a save uploads anything: the databases it will upload, snapshotted, and the tree
scanned again, so that what the snapshots refer to is uploaded before them."""

from __future__ import annotations

from ...engine.index import Index
from ...engine.plan import SavePlan, plan_save
from ...engine.scan import ScanResult
from ...engine.snapshot import Snapshotter, landing_levels, split_databases
from ...formats.marker import Marker
from ...store.base import Store
from ..workcopy import scan_work

SETTLE_ROUNDS = 3


def settle_databases(work: Store, marker: Marker, index: Index, scan: ScanResult,
                     plan: SavePlan, snapshots: Snapshotter
                     ) -> tuple[ScanResult, SavePlan, list[str]]:
    """Snapshot the databases this save uploads, then scan again and plan from that scan;
    returns it, with the databases that still have no snapshot (they wait).

    What a snapshot refers to existed when it was taken (Scipion writes a run's files
    before it records them, and forgets a run before it deletes its files), so everything
    it refers to that still exists is in the later scan and is uploaded before the
    databases land. If that scan finds databases changed since the first one, all are
    taken again and the tree scanned again (a few rounds at most); those still without a
    snapshot then are not saved this time, nor anything above them. Deletions are only
    those every scan agrees on: a file deleted meanwhile may still be named in a snapshot.
    """
    _, databases = split_databases(plan.uploads, work)
    gone = {k.entry.path for k in plan.deletes}
    missing: list[str] = []
    for _ in range(SETTLE_ROUNDS):
        if not databases:
            break
        # In the reverse of the order they land in: a database that refers to others
        # (project.sqlite to run.db, run.db to its output sets) is taken before them, so
        # they are never older than what it says of them.
        snapshots.take_early(work, [e.path for level in reversed(landing_levels(databases))
                                    for e in level])
        scan = scan_work(work, marker)
        plan = plan_save(scan, index)
        gone &= {k.entry.path for k in plan.deletes}
        _, databases = split_databases(plan.uploads, work)
        missing = [e.path for e in databases if not snapshots.has_early(e.path)]
        if not missing:
            break
    plan.deletes = [k for k in plan.deletes if k.entry.path in gone]
    return scan, plan, missing
