"""The links of a stage-in, re-created from the manifest (or an old tool's list), by
walking from the working copy's descriptor, never through a link (safety rule 11)."""

from __future__ import annotations

import logging

from ....engine.index import Known, proven
from ....engine.scan import Entry, Kind
from ....formats.links import MANIFEST_NAME, Link, resolve_target, unrestored_from
from ....store.base import UnsafePathError, join
from .run import StageRun

log = logging.getLogger(__name__)


def restore_links(run: StageRun, links: list[Link], here: dict[str, Entry],
                   known: dict[str, Known], authoritative: bool) -> None:
    """Links of the manifest (or an old tool's list). A link of the working copy is
    replaced or removed only if it is proven saved and the manifest says otherwise;
    without a manifest (the status folder was deleted), none is ever removed. A link
    whose target ``--rebase`` rewrote is a change to save, not a link proven saved."""
    guard, manifest = run.work.guard, join(run.opts.status_dir, MANIFEST_NAME)
    for link in links:
        target = resolve_target(link, run.work.root, run.opts.rebase)
        current = here.get(link.path)
        if current is not None and current.kind is Kind.LINK and current.target == target:
            pass
        elif current is not None and current.kind is not Kind.LINK:
            run.report.unrestored.append(unrestored_from(
                link, f"a {current.kind.name.lower()} of that name is in the working copy "
                      "(it is kept)", manifest))
            continue
        else:
            if current is not None and not (proven(current, known.get(link.path))
                                            and guard.remove(link.path, current)):
                run.report.unrestored.append(unrestored_from(
                    link, f"the working copy's link to {current.target!r} was changed "
                          "and not saved yet (it is kept)", manifest))
                continue
            try:
                # Walks from WORK's descriptor; never through a link (safety rule 11).
                run.work.symlink(target, link.path, parents=True)
            except UnsafePathError as exc:
                run.report.unrestored.append(unrestored_from(link, exc.strerror, manifest))
                continue
            except FileExistsError:
                guard._keep(link.path, "it appeared while the deploy made the link")
                continue
        if target == resolve_target(link, run.work.root):
            run.recorder.done(Known(Entry(link.path, Kind.LINK, target=target), None, None))
        # else rebased (--rebase OLD=NEW): not what the manifest says, so not recorded as
        # saved; the first save records the new target (status and verify say so until).
        run.report.links += 1
    if not authoritative:
        return  # no manifest: every link of the working copy is kept, the next save
        # writes them into a new one
    wanted = {link.path for link in links}
    for path, entry in here.items():
        if entry.kind is Kind.LINK and path not in wanted and \
                proven(entry, known.get(path)) and guard.remove(path, entry):
            log.info("link %s -> %s removed: the primary's manifest no longer has it",
                     path, entry.target)
            run.recorder.forget(path)
