"""The link manifest, written last: after every file of the save is in place, so a manifest
never names links whose data is not on the primary yet."""

from __future__ import annotations

import os

from ...engine.index import Known
from ...engine.plan import SavePlan, links_for_manifest
from ...formats.cerit import DUMP_NOTE
from ...formats.links import (
    MANIFEST_NAME,
    MANIFEST_STATE,
    manifest_notes,
    write_manifest,
)
from .cerit_dump import Dump
from .run import SaveRun


def write_links(run: SaveRun, plan: SavePlan, dump: Dump | None = None) -> None:
    """Write ``links.jsonl`` when the links changed, or when the manifest on the primary is
    not known to be the one this copy wrote (see MANIFEST_STATE), or when CERIT's dump
    (``dump``, written right after it) changes: the header records the dump's digest."""
    if not plan.links_changed and run.index.get_meta(MANIFEST_STATE) == "ok" \
            and not (dump and dump.stale):
        return
    run.recorder.flush()
    roots = [run.work.root, os.path.realpath(run.work.root)]
    notes = manifest_notes(run.index)
    if dump is not None:
        notes[DUMP_NOTE] = dump.digest
    run.fence.commit(MANIFEST_NAME, lambda: run.retry(
        write_manifest, run.primary, run.marker.status_dir,
        links_for_manifest(plan.links, roots), run.work.root,
        notes, what=f"write {MANIFEST_NAME}"))
    for entry in plan.links:
        run.recorder.done(Known(entry, None, None))
    for path in plan.removed_links:  # else the manifest is written at every save again
        run.recorder.forget(path)
    run.recorder.flush()
    run.index.set_meta(MANIFEST_STATE, "ok")
    run.report.manifest_written = True
