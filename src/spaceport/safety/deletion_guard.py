"""The deletion guard: a save's deletions wait when the working copy *looks wrong*.

The guard exists because an emptied, unmounted or wrong working volume must never wipe the
primary (DESIGN.md, safety rule 4). It must not fire on normal work: Scipion deletes a run's
whole ``tmp/`` (20,000 files of 20,032) when the run ends, a user deletes a run folder, a
script cleans many files in one place. What tells them apart is not how many files go, but
whether the *shape* of the project the index knows is still there. The working copy looks
wrong when, of what the index knows (``threshold`` is ``--mass-delete-threshold``, 0.5):

- nothing is left: every file the index knows is gone (an emptied volume, or ``rm -rf *``
  that kept the work marker), whatever the threshold; or
- its top level is gutted: more than ``threshold`` of the top-level files and folders the
  index knows are gone (``Runs/``, ``Logs/``, ``project.sqlite``...), and with them more than
  ``threshold`` of its files.

Anything else is normal work and is deleted (to the trash) as always: a cleaned ``tmp/``, a
deleted run, many files deleted in one place while the top level stands.

A guard that fires never blocks the rest of a save: it *holds* the deletions (the files stay
on the primary, their index rows stay; they stay held until confirmed or back in the working
copy, whatever is written meanwhile), everything else is saved, and the held deletions are
recorded in the index (:data:`HELD_META`, :data:`HELD_PATHS_META`) for ``status``, the
daemon's page and the final check before a working copy is removed: held deletions are an
accepted, recorded state, not unsaved work (:func:`held_paths`). They are carried out by
``spaceport save --allow-mass-delete`` (every deletion) or by the daemon's ``POST
/confirm-deletions`` (exactly the paths held when it was confirmed: the guard judges the rest
as if those were already gone from the index).

Special files (fifos, sockets, devices) cannot be saved; a save warns about each once per
deployment (:func:`warn_special_once`), not at every autosave.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..engine.index import Index, Known
from ..engine.scan import Kind
from ..errors import RefusedError
from ..wording import count, show_path

if TYPE_CHECKING:
    from ..engine.plan import SavePlan

log = logging.getLogger(__name__)

HELD_META = "held_deletions"  # index meta: the summary (JSON) of the deletions held
HELD_PATHS_META = "held_deletion_paths"  # index meta: every held path (JSON list)
SPECIAL_META = "special_warned"  # index meta: the special files warned about, per deployment
UNTIL_CONFIRMED = " (held until confirmed)"
SAMPLE = 20  # paths shown in a summary (status, the page, the journal)


@dataclass
class Held:
    """Deletions the guard holds, and why: files and folders that stay on the primary, and
    links that stay in the manifest (links are project data: a save that holds deletions
    holds link removals with them)."""

    deletes: list[Known]
    reason: str
    links: list[Known] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return sorted(k.entry.path for k in self.deletes + self.links)

    @property
    def files(self) -> int:
        return sum(1 for k in self.deletes if k.entry.kind is Kind.FILE)

    def summary(self, since: str | None = None) -> dict:
        """What status, the daemon's /status and the journal show: counts, the reason, the
        files and links held per top-level entry, and the first paths."""
        paths = self.paths
        top = Counter(p.split("/", 1)[0] for p in paths)
        return {"count": len(paths), "files": self.files, "links": len(self.links),
                "reason": self.reason, "since": since, "top_level": dict(top.most_common(10)),
                "sample": paths[:SAMPLE]}


@dataclass
class Census:
    """What the guard weighs: what the index knows, and what of it the save would delete."""

    known_files: int
    known_top: int
    gone_files: int = 0
    gone_top: list[str] = field(default_factory=list)


def census(plan: "SavePlan", index: Index, skip: frozenset[str] = frozenset()) -> Census:
    """Counts for :func:`looks_wrong`, leaving out the paths in ``skip`` (confirmed
    deletions: as if the index had already forgotten them) and the excluded paths the index
    knows (--exclude: neither deleted nor saved, so no part of the project's shape)."""
    c = Census(index.count(Kind.FILE) - plan.excluded_files,
               index.count_top_level() - plan.excluded_top)
    for known in plan.deletes:
        path, kind = known.entry.path, known.entry.kind
        top = "/" not in path and kind in (Kind.FILE, Kind.DIR)
        if path in skip:
            c.known_files -= kind is Kind.FILE
            c.known_top -= top
            continue
        c.gone_files += kind is Kind.FILE
        if top:
            c.gone_top.append(path)
    return c


def looks_wrong(c: Census, threshold: float) -> str | None:
    """Why the working copy looks wrong (see the module docstring), or None if it does not."""
    if not c.gone_files:
        return None  # only empty folders go: rmdir on the primary never removes a file
    if c.gone_files >= c.known_files:
        return (f"none of the {count(c.known_files, 'file')} the index knows is left in the "
                "working copy (an emptied or unmounted volume looks like this)")
    top_share, file_share = len(c.gone_top) / max(c.known_top, 1), c.gone_files / c.known_files
    if top_share > threshold and file_share > threshold:
        names = ", ".join(show_path(p) for p in sorted(c.gone_top)[:5])
        more = f" and {len(c.gone_top) - 5} more" if len(c.gone_top) > 5 else ""
        return (f"{len(c.gone_top)} of the {count(c.known_top, 'top-level entry')} the "
                f"index knows are gone ({names}{more}), with {c.gone_files} of its "
                f"{count(c.known_files, 'file')} ({file_share:.0%}; the threshold is "
                f"{threshold:.0%})")
    return None


def judge(plan: "SavePlan", index: Index, threshold: float, *, allow: bool = False,
          confirmed: frozenset[str] = frozenset()) -> Held | None:
    """Take the deletions to hold out of ``plan.deletes`` and return them, or None.

    Held deletions stay held (the index records them) until they are confirmed or the
    files come back: new files written meanwhile (a new top-level folder, an application
    filling an emptied volume again) must not make a gutted copy look right and release
    the wipe. ``allow`` (``--allow-mass-delete``): nothing is held. ``confirmed``: these
    paths are deleted whatever the guard says, and the guard judges the rest without them.
    Entries inside a folder that became a file go with it (the upload needs the name).

    Links gone from the working copy are held with the files (``plan.held_links``): the
    manifest keeps them, so an emptied volume never empties the manifest. They do not
    count in the verdict (a project may be all links, or none)."""
    if allow or not (plan.deletes or plan.removed_links):
        return None
    reason = looks_wrong(census(plan, index, confirmed), threshold)
    before = held_paths(index) - confirmed
    if reason is None and not before:
        return None
    replaced = tuple(k.entry.path + "/" for k in plan.replaced if k.entry.kind is Kind.DIR)

    def hold(path: str) -> bool:
        return (reason is not None or path in before) and path not in confirmed \
            and not path.startswith(replaced)

    held, go = _split(plan.deletes, hold)
    links, gone_links = _split(plan.removed_links, hold)
    if not (held or links):
        return None
    plan.deletes, plan.removed_links, plan.held_links = go, gone_links, links
    plan.links_changed = bool(plan.changed_links or gone_links) or any(
        k.entry.kind is Kind.LINK for k in plan.replaced)
    if reason is None:
        reason = (held_summary(index) or {}).get("reason") or "held by an earlier save"
        if not reason.endswith(UNTIL_CONFIRMED):
            reason += UNTIL_CONFIRMED
    return Held(held, reason, links)


def _split(items: list[Known], keep) -> tuple[list[Known], list[Known]]:
    """(the items whose path ``keep`` says to hold, the others)."""
    held, go = [], []
    for known in items:
        (held if keep(known.entry.path) else go).append(known)
    return held, go


# -- the record in the index -------------------------------------------------------------
def record_held(index: Index, held: Held | None, now: str) -> bool:
    """Write (or clear) the record of held deletions; True if it holds paths it did not
    hold before (news to tell someone: the daemon says it then, not at every autosave)."""
    before = index.get_meta(HELD_PATHS_META)
    if held is None:
        if before is not None:
            index.set_meta(HELD_META, None)
            index.set_meta(HELD_PATHS_META, None)
            log.info("no deletions are held any more")
        return False
    paths = json.dumps(held.paths)
    if paths == before:
        return False
    previous = held_summary(index) or {}
    index.set_meta(HELD_PATHS_META, paths)
    index.set_meta(HELD_META, json.dumps(held.summary(previous.get("since") or now)))
    return not set(held.paths) <= set(json.loads(before) if before else ())


def held_summary(index: Index) -> dict | None:
    """The summary of the deletions held, as the last save recorded it (None: none)."""
    text = index.get_meta(HELD_META)
    return json.loads(text) if text else None


def held_paths(index: Index) -> set[str]:
    """Every path whose deletion the last save held."""
    text = index.get_meta(HELD_PATHS_META)
    return set(json.loads(text)) if text else set()


def held_links(index: Index) -> list[Known]:
    """The links whose removal the last save held: the manifest keeps them (their rows
    say what they pointed to)."""
    rows = (index.get(path) for path in sorted(held_paths(index)))
    return [row for row in rows if row is not None and row.entry.kind is Kind.LINK]


def held_what(summary: dict) -> str:
    """What a held summary keeps, in words: "5 files and 11 folders stay on the primary, 6
    links stay in the link manifest"."""
    files, links = summary["files"], summary.get("links") or 0
    folders = summary["count"] - files - links if "links" in summary else 0
    kept = count(files, "file") + (f" and {count(folders, 'folder')}" if folders > 0 else "")
    what = f"{kept} {'stays' if files + folders == 1 else 'stay'} on the primary"
    if links:
        what += f", {count(links, 'link')} {'stays' if links == 1 else 'stay'} in the link " \
                "manifest"
    return what


def held_warning(summary: dict, how_to_confirm: str) -> str:
    """The warning a person reads: what is held, why, that nothing else waited, what to do."""
    return (f"{count(summary['count'], 'deletion')} held ({held_what(summary)}): the "
            f"working copy looks wrong: {summary['reason']}. Everything else was saved. If "
            f"you deleted them on purpose, {how_to_confirm}; if the working copy is wrong (an "
            "emptied or unmounted volume), fix it: nothing on the primary was deleted, and "
            "no link was taken out of the manifest.")


def held_refusal(held: dict, command: str, again: str) -> RefusedError:
    """A command a person runs (undeploy, deploy --resume) whose save held deletions:
    everything else is saved, and the command stops there (exit 5) keeping the lock and the
    working copy, rather than give up (or deploy over) a working copy whose deletions were
    never carried out: a later deploy would bring those files back unasked."""
    return RefusedError(
        f"the save held {count(held['count'], 'deletion')} ({held_what(held)}): the working "
        f"copy looks wrong: {held['reason']}. Everything else was saved; the {command} stops "
        "here.",
        hint="The working copy is kept, and nothing was deleted on the primary. If you "
             f"deleted them on purpose: {again}. If the working copy is wrong (an emptied or "
             "unmounted volume), fix it, then run the same command again.")


# -- special files ---------------------------------------------------------------------------
def warn_special_once(index: Index, deployment_id: str, special: list[str]) -> list[str]:
    """Warn about each special file once per deployment; returns those warned about now."""
    text = index.get_meta(SPECIAL_META)
    seen = json.loads(text) if text else {}
    warned = set(seen.get("paths", ())) if seen.get("deployment") == deployment_id else set()
    new = sorted(set(special) - warned)
    for path in new:
        log.warning("skipping %s: special files (fifo, socket, device) cannot be saved; "
                    "'spaceport status' lists them (said once per deployment)", show_path(path))
    if new or seen.get("deployment") != deployment_id:
        index.set_meta(SPECIAL_META, json.dumps({"deployment": deployment_id,
                                                 "paths": sorted(warned | set(new))}))
    return new
