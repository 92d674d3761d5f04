"""The link manifest, written last: after every file of the save is in place, so a manifest
never names links whose data is not on the primary yet."""

from __future__ import annotations

import os

from ...engine.index import Known
from ...engine.plan import SavePlan, links_for_manifest
from ...formats.links import (
    MANIFEST_NAME,
    MANIFEST_STATE,
    manifest_notes,
    write_manifest,
)
from .run import SaveRun


def write_links(run: SaveRun, plan: SavePlan) -> None:
    """Write ``links.jsonl`` when the links changed, or when the manifest on the primary is
    not known to be the one this copy wrote (see MANIFEST_STATE)."""
    if not plan.links_changed and run.index.get_meta(MANIFEST_STATE) == "ok":
        return
    run.recorder.flush()
    roots = [run.work.root, os.path.realpath(run.work.root)]
    run.fence.commit(MANIFEST_NAME, lambda: run.retry(
        write_manifest, run.primary, run.marker.status_dir,
        links_for_manifest(plan.links, roots), run.work.root,
        manifest_notes(run.index), what=f"write {MANIFEST_NAME}"))
    for entry in plan.links:
        run.recorder.done(Known(entry, None, None))
    for path in plan.removed_links:  # else the manifest is written at every save again
        run.recorder.forget(path)
    run.recorder.flush()
    run.index.set_meta(MANIFEST_STATE, "ok")
    run.report.manifest_written = True
