"""CERIT's link list, ``<primary>/symlink-dump``, kept by a save of a deployment that keeps
CERIT's lock (``--cerit``, or a primary CERIT's app has used): the way back, so that
CERIT's own app, opened on the project later, re-creates every link it can express.

It is rewritten when the links change, like the manifest (whose header records its digest,
so the next deploy knows it as spaceport's own: :mod:`spaceport.commands.deploy.linksource`),
and after it: the manifest stays the record, the dump is a copy in CERIT's words. Written
under a temporary name and renamed into place, fenced like every commit. A link the format
cannot hold (a space or a line break in its name or target...) is left out and named in the
save's warnings: CERIT's app would restore it wrongly (formats/cerit.py says why).

Like CERIT's lock (:func:`spaceport.safety.lock.mirror.keep_mirror`), the file itself is
checked at every save, not only the index's memory of it: one stat, compared with the size
and modification time the index recorded when this copy wrote it. Missing (removed by hand),
or another file: written again, so the final save leaves the dump CERIT's app needs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ...engine.plan import SavePlan, links_for_manifest
from ...formats.cerit import SYMLINK_DUMP_NAME, Unexpressed, dump_digest, render_dump
from ...formats.statusfile import is_status_file_problem
from ...wording import count
from .run import SaveRun

log = logging.getLogger(__name__)

# Index meta: the digest of the dump this working copy last wrote, with the manifest that
# records it; anything else (None after a deploy) and the next save writes both again.
CERIT_DUMP_STATE = "cerit_dump_state"
# Index meta: "SIZE:MTIME_NS" of the file that write left on the primary (None: not known,
# the next save reads the file once to tell). Not the inode: a mount made anew (a restarted
# pod's oneclient) may number files afresh, and the dump would be read again after every
# restart. Nor the ctime: a rename sets it on some filesystems, not on others.
CERIT_DUMP_SEEN = "cerit_dump_seen"


@dataclass
class Dump:
    data: bytes
    digest: str
    left_out: list[Unexpressed]
    stale: bool  # not yet on the primary, with a manifest that records it
    # The file on the primary is not the one this copy wrote last: "missing", "foreign"
    # (kept in the trash before it is replaced), or None (it is, or nothing was written yet).
    replace: str | None = None


def plan_dump(run: SaveRun, plan: SavePlan) -> Dump | None:
    """The dump this save keeps, or None when its deployment keeps none."""
    if not run.lock.info.cerit_lock:
        return None
    roots = [run.work.root, os.path.realpath(run.work.root)]
    data, left_out = render_dump(links_for_manifest(plan.links, roots))
    digest = dump_digest(data)
    written = run.index.get_meta(CERIT_DUMP_STATE)
    # None: the first save of this deployment, which writes the dump whatever is there (a
    # dump CERIT's app wrote before was read by the deploy: linksource).
    found = None if written is None else _found(run, written)
    return Dump(data, digest, left_out, stale=written != digest, replace=found)


def _found(run: SaveRun, written: str) -> str | None:
    """Is the dump on the primary the one this copy wrote last (digest ``written``)? One
    stat when it is; a read only when the stat differs or was never recorded (the same bytes
    all the same, touched or copied back: the stat is recorded anew, nothing written).

    A dump that is not ours cannot be CERIT's app's newer work that the next deploy should
    read (linksource: a dump newer than the manifest, not the one it records): that app
    refuses the project while our mirror of its lock is there, and this save's keep_mirror
    just found the mirror ours (CERIT's own lock there stops the save, exit 4, before this).
    What CERIT's app wrote before this deployment was read by its deploy, into the working
    copy's links. So it is a dump put there by hand or by a tool that ignores both locks,
    listing links this project does not hold: it is replaced, or the final save would leave
    CERIT's app a list that is not the project's; but first it is moved into this save's
    trash batch (``<status>/trash/<batch>/symlink-dump``, to read or put back by hand:
    spaceport does not destroy a file it did not write) and named in the warnings."""
    seen = run.index.get_meta(CERIT_DUMP_SEEN)
    try:
        st = run.retry(run.primary.lstat, SYMLINK_DUMP_NAME, what=f"stat {SYMLINK_DUMP_NAME}")
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if _identity(st) == seen:
        return None
    try:
        raw = run.retry(run.primary.read_bytes, SYMLINK_DUMP_NAME,
                        what=f"read {SYMLINK_DUMP_NAME}")
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        if not is_status_file_problem(exc):  # the storage's, not the file's: the save fails
            raise
        return "foreign"  # a folder in its place, a file we may not read: not ours
    if dump_digest(raw) == written:
        run.index.set_meta(CERIT_DUMP_SEEN, _identity(st))
        return None
    return "foreign"


def _identity(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def write_dump(run: SaveRun, dump: Dump | None) -> None:
    """Write ``symlink-dump`` if it is not the one on the primary (after the manifest that
    records its digest)."""
    if dump is None or not (dump.stale or dump.replace):
        return
    if dump.replace == "foreign":
        run.check()
        run.fence.commit(f"{SYMLINK_DUMP_NAME} (not this deployment's, kept in the trash)",
                         lambda: run.retry(run.trash.move, SYMLINK_DUMP_NAME,
                                           what=f"keep {SYMLINK_DUMP_NAME} in the trash"))
        log.warning("%s on %s is not the one this deployment wrote (changed by hand, or by an "
                    "app that ignored the locks): it is kept in trash batch %s and replaced "
                    "by the working copy's links", SYMLINK_DUMP_NAME, run.primary.root,
                    run.trash.name)
    elif dump.replace == "missing" and not dump.stale:
        log.info("%s was not on %s (removed?): it is written again", SYMLINK_DUMP_NAME,
                 run.primary.root)
    run.fence.commit(SYMLINK_DUMP_NAME, lambda: run.retry(
        run.primary.write_bytes_atomic, SYMLINK_DUMP_NAME, dump.data,
        what=f"write {SYMLINK_DUMP_NAME}"))
    run.index.set_meta(CERIT_DUMP_STATE, dump.digest)
    run.index.set_meta(CERIT_DUMP_SEEN, _seen_now(run))
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


def _seen_now(run: SaveRun) -> str | None:
    """The identity of the dump just written (a stat that fails: None, and the next save
    reads the file rather than trust one it never saw)."""
    try:
        return _identity(run.retry(run.primary.lstat, SYMLINK_DUMP_NAME,
                                   what=f"stat {SYMLINK_DUMP_NAME}"))
    except OSError as exc:
        log.debug("cannot stat the %s just written: %s", SYMLINK_DUMP_NAME, exc)
        return None
