"""The link manifest, written last: after every file of the save is in place, so a manifest
never names links whose data is not on the primary yet.

Links are project data. The manifest a save writes holds the links of the working copy and
the links whose removal the deletion guard holds (``plan.held_links``: an emptied volume
never empties the manifest). A manifest that would lose a link (removed, retargeted, or
one this copy never knew) is first kept, as it was, in this save's trash batch
(:meth:`~spaceport.formats.trash.TrashBin.manifest_place`): ``trash restore`` brings its
links back."""

from __future__ import annotations

import os

from ...engine.index import Known
from ...engine.plan import SavePlan, links_for_manifest
from ...errors import FormatError
from ...formats.cerit import DUMP_NOTE
from ...formats.links import (
    MANIFEST_NAME,
    MANIFEST_STATE,
    Link,
    manifest_notes,
    parse_manifest,
    write_manifest,
)
from ...formats.statusfile import is_status_file_problem
from ...store.base import join
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
    links = links_for_manifest(plan.links + [k.entry for k in plan.held_links], roots)
    keep_previous(run, links)
    notes = manifest_notes(run.index)
    if dump is not None:
        notes[DUMP_NOTE] = dump.digest
    run.fence.commit(MANIFEST_NAME, lambda: run.retry(
        write_manifest, run.primary, run.marker.status_dir, links, run.work.root,
        notes, what=f"write {MANIFEST_NAME}"))
    for entry in plan.links:
        run.recorder.done(Known(entry, None, None))
    for known in plan.removed_links:  # else the manifest is written at every save again
        run.recorder.forget(known.entry.path)
    run.recorder.flush()
    run.index.set_meta(MANIFEST_STATE, "ok")
    run.report.manifest_written = True


def keep_previous(run: SaveRun, links: list[Link]) -> None:
    """The manifest on the primary goes to this save's trash batch first if the new one
    lacks any of its links (or if it cannot be read: it is replaced all the same)."""
    rel = join(run.marker.status_dir, MANIFEST_NAME)
    try:
        raw = run.retry(run.primary.read_bytes, rel, what=f"read {MANIFEST_NAME}")
    except FileNotFoundError:
        return
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        # A folder (or a file it may not read) in its place: nothing of a manifest to keep;
        # the write below names it, and whatever is there stays as it is.
        return
    try:
        lost = set(parse_manifest(raw, rel).links) - set(links)
    except FormatError:
        lost = None  # damaged: kept as it is, whatever it held
    if lost is not None and not lost:
        return
    run.check()
    place = run.trash.manifest_place()
    run.fence.commit(f"{MANIFEST_NAME} (the previous one, kept in the trash)", lambda: run.retry(
        run.primary.write_bytes_atomic, place, raw, what=f"keep {MANIFEST_NAME} in the trash"))
    run.report.links_dropped = -1 if lost is None else len(lost)
