"""The link manifest, written last: after every file of the save is in place, so a manifest
never names links whose data is not on the primary yet.

Links are project data. The manifest a save writes holds the links of the working copy and
the links whose removal the deletion guard holds (``plan.held_links``: an emptied volume
never empties the manifest). A manifest that would lose a link (removed, retargeted, or
one this copy never knew) is first kept, as it was, in this save's trash batch
(:meth:`~spaceport.formats.trash.TrashBin.manifest_place`): ``trash restore`` brings its
links back.

A manifest that cannot be read (no permission, a folder in its place) is never replaced:
what it holds cannot be compared or kept first, and it may be the only record of links this
copy never knew. The save names it and what to do (exit 1, as when it cannot be written);
every file of the save is on the primary by then, and the next save writes the manifest."""

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
from ...formats.statusfile import is_status_file_problem, status_file_error
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


UNREAD = ("this save left it as it is (what it holds could not be compared with the links "
          "of this working copy, nor kept in the trash first, and it may be the only record "
          "of some links), so the links of this working copy could not be recorded on the "
          "primary. Everything else of the save is there, and the links are kept in the "
          "working copy; the lock and the working copy are kept until they are recorded (an "
          "undeploy does not remove the copy before).")


def keep_previous(run: SaveRun, links: list[Link]) -> None:
    """The manifest on the primary goes to this save's trash batch first if the new one
    lacks any of its links (or if it is damaged). One that cannot be read is not replaced
    at all: StatusFileError (exit 1) naming it, and it stays as it is."""
    rel = join(run.marker.status_dir, MANIFEST_NAME)
    try:
        raw = run.retry(run.primary.read_bytes, rel, what=f"read {MANIFEST_NAME}")
    except FileNotFoundError:
        return
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        # A file it may not read (or a folder) in its place: nothing is written over it;
        # it stays as it is, named, until it can be read (or is moved away, for a folder).
        raise status_file_error(run.primary, rel, "the link manifest", exc,
                                meaning=UNREAD) from exc
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
