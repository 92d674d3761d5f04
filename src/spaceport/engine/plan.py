"""What a save or a deploy has to do, computed from scans and the state index.

A save compares the working copy with the index only (never the primary): new and changed
files are uploaded, entries the index knows that are gone from work are deleted — and only
those (safety rule 4: what spaceport never saw, it never deletes). A deploy compares the
primary with the working copy and the index, so a re-run copies only what is missing or
changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..formats.links import Link, capture
from ..wording import count, human_size, show_path
from .index import OURS, Index, Known, primary_state, proven
from .renames import Move, find_moves, moves_in_words
from .scan import Entry, Kind, ScanResult


def parents_first(paths) -> list:
    return sorted(paths, key=lambda e: (e.path.count("/"), e.path))


def children_first(paths) -> list:
    return sorted(paths, key=lambda e: (-e.path.count("/"), e.path))


def by_depth(items, path_of, *, deepest_first: bool = False) -> list[list]:
    """``items`` in groups of equal depth, shallowest first (or deepest): the members of a
    group can be created (or removed) at the same time."""
    levels: dict[int, list] = {}
    for item in items:
        levels.setdefault(path_of(item).count("/"), []).append(item)
    return [levels[d] for d in sorted(levels, reverse=deepest_first)]


@dataclass
class SavePlan:
    mkdirs: list[Entry] = field(default_factory=list)  # new directories
    chmods: list[Entry] = field(default_factory=list)  # directories whose mode changed
    uploads: list[Entry] = field(default_factory=list)  # new or changed files
    replaced: list[Known] = field(default_factory=list)  # known entries whose kind changed
    deletes: list[Known] = field(default_factory=list)  # known entries gone from work
    links: list[Entry] = field(default_factory=list)  # all links now in work
    links_changed: bool = False
    changed_links: list[str] = field(default_factory=list)  # new or retargeted links
    removed_links: list[Known] = field(default_factory=list)  # links gone from work
    # Links gone from work whose removal the deletion guard holds: they stay in the
    # manifest and in the index (safety.deletion_guard), as held files stay on the primary.
    held_links: list[Known] = field(default_factory=list)
    unchanged: int = 0
    kept_unknown: list[str] = field(default_factory=list)  # under unreadable dirs
    adopt: list[Known] = field(default_factory=list)  # format-1 rows given their ctime
    moves: list[Move] = field(default_factory=list)  # renames, in the order they are made
    # Uploads that may be appends (spaceport.engine.append): path -> the row saved before. The save
    # proves each (the saved bytes unchanged) before it writes only the new ones.
    appends: dict[str, Known] = field(default_factory=dict)
    # Index rows of excluded paths (--exclude): kept as they are on the primary, never
    # deleted; the deletion guard leaves them out of what it weighs.
    excluded_files: int = 0
    excluded_top: int = 0  # of them, top-level files and folders

    @property
    def upload_bytes(self) -> int:
        return sum(e.size for e in self.uploads)

    @property
    def deleted_files(self) -> int:
        return sum(1 for k in self.deletes + self.replaced if k.entry.kind is Kind.FILE)

    @property
    def pending(self) -> bool:
        return bool(self.mkdirs or self.chmods or self.uploads or self.replaced or self.deletes
                    or self.links_changed or self.moves)

    def summary(self) -> dict:
        recent = sorted(self.uploads, key=lambda e: -e.mtime_ns)[:5]
        return {"new_dirs": len(self.mkdirs), "files_to_upload": len(self.uploads),
                "bytes_to_upload": self.upload_bytes, "files_to_delete": self.deleted_files,
                "entries_to_delete": len(self.deletes) + len(self.replaced),
                "links": len(self.links), "links_changed": self.links_changed,
                "unchanged": self.unchanged, "moves": len(self.moves),
                # When the unsaved files last changed (their mtimes, ns since the epoch):
                # a database written a second after a save is news, not a failed save.
                "last_change_ns": recent[0].mtime_ns if recent else None,
                "recent": [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns}
                           for e in recent]}


def unsaved_summary(s: dict) -> str:
    """A plan's summary in words: "2 files to upload (1.2 MiB), 1 deletion, links changed"."""
    parts = [f"{count(s['files_to_upload'], 'file')} to upload ({human_size(s['bytes_to_upload'])})"]
    if s.get("moves"):
        parts.append(count(s["moves"], "move"))
    if s["new_dirs"]:
        parts.append(count(s["new_dirs"], "new folder"))
    if s["entries_to_delete"]:
        parts.append(count(s["entries_to_delete"], "deletion"))
    if s["links_changed"]:
        parts.append("links changed")
    return ", ".join(parts)


def may_be_append(entry: Entry, old: Known) -> bool:
    """A file that grew since it was saved, still the same file (same inode and mode), whose
    row keeps a digest of the bytes saved: the save may write only what was added, once it
    proved the saved bytes unchanged (:mod:`spaceport.engine.append`)."""
    return (old.digest is not None and old.entry.kind is Kind.FILE
            and entry.ino == old.entry.ino and entry.mode == old.entry.mode
            and entry.size > old.entry.size and old.psize == old.entry.size)


def plan_save(scan: ScanResult, known: Mapping[str, Known] | Index, *,
              renames: bool = True) -> SavePlan:
    """What a save must do. ``known`` is the index or what its ``load()`` returns; given the
    index, its rows are streamed and only those that differ from the scan become objects,
    so a save with nothing changed never holds a copy of the index (10^6 rows).

    Files and folders moved in the working copy are found first (:mod:`spaceport.engine.renames`):
    they become ``moves``, and the rest is planned against the rows as they will be once
    moved, so a moved folder is neither uploaded nor deleted. ``renames=False``: not."""
    same: set[str] = set()
    adopt: list[Known] = []
    if isinstance(known, Index):
        known, same, adopt = known.diff(scan.entries)
    excluded: dict[str, Known] = {}
    if scan.exclude:
        known, excluded = _split_excluded(scan, known)
    moves: list[Move] = []
    if renames:
        found = find_moves(scan, known, same)
        moves, known, adopt = found.moves, found.known, adopt + found.adopt
    plan = _plan_changes(scan, known, same, adopt)
    plan.moves = moves
    if scan.exclude:
        _keep_excluded(plan, scan, excluded)
    return plan


def _split_excluded(scan: ScanResult, known: Mapping[str, Known]
                    ) -> tuple[dict[str, Known], dict[str, Known]]:
    """The rows to plan with, and the rows of excluded paths (not in the scan on purpose:
    neither deleted nor taken for the source of a move)."""
    rest: dict[str, Known] = {}
    excluded: dict[str, Known] = {}
    for path, row in known.items():
        left_out = path not in scan.entries and scan.excluded(path, row.entry.kind)
        (excluded if left_out else rest)[path] = row
    return rest, excluded


def _keep_excluded(plan: SavePlan, scan: ScanResult, excluded: dict[str, Known]) -> None:
    """Excluded rows stay what they are on the primary: their links stay in the manifest
    (as the index knows them), and the guard is told how many files they are."""
    for path, row in excluded.items():
        kind = row.entry.kind
        if kind is Kind.LINK:
            plan.links.append(row.entry)
            continue
        plan.excluded_files += kind is Kind.FILE
        plan.excluded_top += "/" not in path


def _plan_changes(scan: ScanResult, known: Mapping[str, Known], same: set[str],
                  adopt: list[Known]) -> SavePlan:
    """The uploads, new folders and deletions that make the primary equal the scan, given
    the rows that differ from it (``known``) and the paths whose row equals it (``same``)."""
    plan = SavePlan(adopt=adopt)
    for path, entry in scan.entries.items():
        if path in same:
            plan.unchanged += 1
            if entry.kind is Kind.LINK:
                plan.links.append(entry)
            continue
        old = known.get(path)
        if entry.kind is Kind.LINK:
            plan.links.append(entry)
            if old is not None and old.entry.kind is not Kind.LINK:
                plan.replaced.append(old)  # a file or folder became a link
            if old is not None and old.entry.sig() == entry.sig():
                plan.unchanged += 1
            else:
                plan.links_changed = True
                plan.changed_links.append(path)
            continue
        if old is not None and old.entry.kind is not entry.kind:
            plan.replaced.append(old)  # e.g. a file became a directory: trash the old one
            # A link that became a file or a folder leaves the manifest too.
            plan.links_changed |= old.entry.kind is Kind.LINK
            old = None
        if old is not None and old.entry.sig() == entry.sig():
            plan.unchanged += 1
        elif entry.kind is Kind.FILE:
            plan.uploads.append(entry)
            if old is not None and may_be_append(entry, old):
                plan.appends[path] = old
        elif old is None:
            plan.mkdirs.append(entry)
        else:
            plan.chmods.append(entry)
    for path, old in known.items():
        if path in scan.entries:
            continue
        if scan.under_unreadable(path):
            plan.kept_unknown.append(path)  # cannot tell if it is gone: keep it
            continue
        if old.entry.kind is Kind.LINK:
            plan.links_changed = True
            plan.removed_links.append(old)
        else:
            plan.deletes.append(old)
    plan.mkdirs = parents_first(plan.mkdirs)
    plan.deletes = [known[e.path] for e in children_first([k.entry for k in plan.deletes])]
    return plan


def save_listing(plan: SavePlan, limit: int | None = 20) -> list[str]:
    """What a save would do, path by path, as lines a person reads: each kind of change
    with its count and its paths (the first ``limit`` of each; None: all of them)."""
    trashed = [k for k in plan.deletes if k.entry.kind is not Kind.DIR] + plan.replaced
    moved = [k.entry.path for k in trashed]  # (replaced: a file or folder whose kind changed)
    noun = "file" if all(k.entry.kind is Kind.FILE for k in trashed) else "entry"
    removed = [k.entry.path for k in plan.deletes if k.entry.kind is Kind.DIR]
    targets = {e.path: e.target or "" for e in plan.links}

    def shown(paths):
        return [show_path(p) for p in sorted(paths)]

    kinds = [
        ("move", moves_in_words(plan.moves),
         [f"{show_path(m.old)}{'/' * (m.kind is Kind.DIR)} -> "
          f"{show_path(m.new)}{'/' * (m.kind is Kind.DIR)}"
          for m in plan.moves]),
        ("upload", f"{count(len(plan.uploads), 'file')} ({human_size(plan.upload_bytes)})",
         shown(e.path for e in plan.uploads)),
        ("create", count(len(plan.mkdirs), "folder"), shown(e.path for e in plan.mkdirs)),
        ("change mode", count(len(plan.chmods), "folder"), shown(e.path for e in plan.chmods)),
        ("move to trash", count(len(moved), noun), shown(moved)),
        ("remove", count(len(removed), "empty folder"), shown(removed)),
        ("record link", count(len(plan.changed_links), "link"),
         [f"{show_path(p)} -> {show_path(targets.get(p, ''))}"
          for p in sorted(plan.changed_links)]),
        ("forget link", count(len(plan.removed_links), "link"),
         shown(k.entry.path for k in plan.removed_links)),
    ]
    lines = []
    for name, what, items in kinds:
        if not items:
            continue
        lines.append(f"{name + ':':<15}{what}")
        first = items if limit is None else items[:limit]
        lines += [f"  {item}" for item in first]
        if len(items) > len(first):
            lines.append(f"  ... and {len(items) - len(first)} more (-v lists them all)")
    if not lines:
        lines.append("nothing to save: the primary is up to date")
    lines.append(f"{'unchanged:':<15}{count(plan.unchanged, 'entry')}")
    return lines


def links_for_manifest(entries: list[Entry], roots: list[str]) -> list[Link]:
    return [capture(e.path, e.target or "", roots) for e in entries]


@dataclass
class DeployPlan:
    """What a deploy does to a working copy. Only entries the index proves saved
    (:func:`~spaceport.engine.index.proven`) are ever replaced or removed; a proven file whose
    version the primary no longer holds (changed or deleted there meanwhile) is first kept in
    the primary's trash. Anything else in the way is the user's and stays (``kept``)."""

    mkdirs: list[Entry] = field(default_factory=list)  # directories to create in work
    downloads: list[Entry] = field(default_factory=list)  # primary files to copy to work
    replaces: dict[str, Entry] = field(default_factory=dict)  # path -> proven work file
    current: list[tuple[Entry, Known]] = field(default_factory=list)  # already in place
    to_trash: list[Entry] = field(default_factory=list)  # proven work files the primary lost
    removals: list[Entry] = field(default_factory=list)  # work entries gone from primary
    kept: list[Entry] = field(default_factory=list)  # not proven saved: the user's, left alone
    dirs: list[Entry] = field(default_factory=list)  # every primary directory

    @property
    def download_bytes(self) -> int:
        return sum(e.size for e in self.downloads)


def plan_deploy(primary: ScanResult, work: ScanResult, known: Mapping[str, Known]) -> DeployPlan:
    plan = DeployPlan()

    def retire(here: Entry) -> bool:
        """A work entry the primary does not have (or not as this kind): removed if proven
        saved (a file kept in the trash first), else kept. True if it goes."""
        if here.kind is Kind.DIR:
            plan.removals.append(here)  # removed only if empty by then: never a tree
            return True
        if here.kind is Kind.FILE and proven(here, known.get(here.path)):
            plan.to_trash.append(here)
            plan.removals.append(here)
            return True
        plan.kept.append(here)
        return False

    for path, entry in primary.entries.items():
        here = work.entries.get(path)
        if entry.kind is Kind.DIR:
            plan.dirs.append(entry)
            if here is None or (here.kind is Kind.FILE and retire(here)):
                plan.mkdirs.append(entry)
            elif here.kind is not Kind.DIR:
                plan.kept.append(here)  # a link or the user's file: the folder is not made
            continue
        if entry.kind is not Kind.FILE:
            continue  # a primary cannot hold links; never copy one from there
        old = known.get(path)
        if here is None:
            plan.downloads.append(entry)
        elif here.kind is Kind.FILE and proven(here, old):
            if primary_state(entry.size, entry.mtime_ns, entry.ctime_ns, old) == OURS:
                plan.current.append((entry, old))
            else:  # changed on the primary meanwhile: ours goes to the trash, theirs here
                plan.to_trash.append(here)
                plan.replaces[path] = here
                plan.downloads.append(entry)
        elif here.kind is not Kind.LINK:
            plan.kept.append(here)  # the user's file, or a folder: the primary's is not copied
    for path, here in work.entries.items():
        if here.kind is Kind.LINK or path in primary.entries:
            continue  # links come from the manifest, handled by the caller
        retire(here)
    plan.mkdirs = parents_first(plan.mkdirs)
    plan.removals = children_first(plan.removals)
    return plan
