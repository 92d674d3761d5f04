"""CERIT's link list, ``<primary>/symlink-dump``, kept by a save of a deployment that keeps
CERIT's lock (``--cerit``, or a primary CERIT's app has used): the way back, so that
CERIT's own app, opened on the project later, re-creates every link it can express.

It is rewritten when the links change, like the manifest (whose header records its digest,
so the next deploy knows it as spaceport's own: :mod:`spaceport.commands.deploy.linksource`),
and after it: the manifest stays the record, the dump is a copy in CERIT's words. Written
under a temporary name and renamed into place, fenced like every commit. A link the format
cannot hold (a space or a line break in its name or target...) is left out and named in the
save's warnings: CERIT's app would restore it wrongly (formats/cerit.py says why).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ...engine.plan import SavePlan, links_for_manifest
from ...formats.cerit import SYMLINK_DUMP_NAME, Unexpressed, dump_digest, render_dump
from ...wording import count
from .run import SaveRun

log = logging.getLogger(__name__)

# Index meta: the digest of the dump this working copy last wrote, with the manifest that
# records it; anything else (None after a deploy) and the next save writes both again.
CERIT_DUMP_STATE = "cerit_dump_state"


@dataclass
class Dump:
    data: bytes
    digest: str
    left_out: list[Unexpressed]
    stale: bool  # not yet on the primary, with a manifest that records it


def plan_dump(run: SaveRun, plan: SavePlan) -> Dump | None:
    """The dump this save keeps, or None when its deployment keeps none."""
    if not run.lock.info.cerit_lock:
        return None
    roots = [run.work.root, os.path.realpath(run.work.root)]
    data, left_out = render_dump(links_for_manifest(plan.links, roots))
    digest = dump_digest(data)
    return Dump(data, digest, left_out, run.index.get_meta(CERIT_DUMP_STATE) != digest)


def write_dump(run: SaveRun, dump: Dump | None) -> None:
    """Write ``symlink-dump`` if it is not the one on the primary (after the manifest that
    records its digest)."""
    if dump is None or not dump.stale:
        return
    run.fence.commit(SYMLINK_DUMP_NAME, lambda: run.retry(
        run.primary.write_bytes_atomic, SYMLINK_DUMP_NAME, dump.data,
        what=f"write {SYMLINK_DUMP_NAME}"))
    run.index.set_meta(CERIT_DUMP_STATE, dump.digest)
    run.report.cerit_dump_written = True
    run.report.cerit_left_out = [str(u) for u in dump.left_out]
    if dump.left_out:
        shown = "; ".join(str(u) for u in dump.left_out[:10])
        more = f"; … and {len(dump.left_out) - 10} more" if len(dump.left_out) > 10 else ""
        log.warning("%s cannot be written into %s for CERIT's app (its format splits lines on "
                    "spaces): %s%s. spaceport's own manifest keeps %s; after a move back to "
                    "CERIT's app, re-create %s by hand there.",
                    count(len(dump.left_out), "link"), SYMLINK_DUMP_NAME, shown, more,
                    "it" if len(dump.left_out) == 1 else "them",
                    "it" if len(dump.left_out) == 1 else "them")
