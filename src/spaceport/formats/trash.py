"""The trash on the primary: deleted files are moved, not removed.

A save that deletes files renames them into ``<status>/trash/<save-time>/<path>`` (a rename
is cheap, even over OneData). A folder it removes is made again in the batch (empty ones
included: a Scipion run's ``extra/`` and ``tmp/``), so a batch restores a tree as it was.
When a save takes links out of the link manifest, the manifest as it was before goes into
the batch too, at ``<batch>/<status>/links.jsonl`` (where it was, relative to the primary;
the status folder's name is reserved at the top of a tree, so no project file is ever
there). Batches older than the retention period are purged by later saves
(:mod:`spaceport.safety.retention` says when); ``spaceport trash`` lists, restores and
purges them by hand.
"""

from __future__ import annotations

import stat as stat_mod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..store.base import Store, join, parent_of
from .links import MANIFEST_NAME

TRASH_DIR = "trash"
BATCH_FORMAT = "%Y%m%dT%H%M%SZ"
DEFAULT_RETENTION_DAYS = 7.0


def batch_time(name: str) -> datetime | None:
    try:
        return datetime.strptime(name[:16], BATCH_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


@dataclass
class Batch:
    name: str
    time: datetime | None
    files: int = 0
    bytes: int = 0
    folders: int = 0
    manifest: bool = False  # holds the link manifest as it was before that save


class TrashBin:
    """One save's trash batch; parent folders are created once and remembered."""

    def __init__(self, store: Store, status_dir: str, now: datetime):
        self.store, self.status_dir = store, status_dir
        base = join(status_dir, TRASH_DIR)
        name = now.strftime(BATCH_FORMAT)
        existing = {item.name for item in _listdir_or_empty(store, base)}
        suffix = 1
        while (name if suffix == 1 else f"{name}-{suffix}") in existing:
            suffix += 1
        self.name = name if suffix == 1 else f"{name}-{suffix}"
        self.root = join(base, self.name)
        self._made: set[str] = set()
        self.moved = 0

    def move(self, rel: str) -> None:
        """Move ``rel`` from the tree into this batch, keeping its relative path."""
        self._ensure_dir(join(self.root, parent_of(rel)) if parent_of(rel) else self.root)
        self.store.rename(rel, join(self.root, rel))
        self.moved += 1

    def place_for(self, rel: str) -> str:
        """Where ``rel`` goes in this batch, its folder made: for a copy put there (a
        working copy's version the primary no longer has, kept by a deploy)."""
        self._ensure_dir(join(self.root, parent_of(rel)) if parent_of(rel) else self.root)
        return join(self.root, rel)

    def keep_folder(self, rel: str, mode: int | None = None) -> None:
        """Make the folder ``rel`` (removed from the tree) in this batch, if its files did
        not make it already: an empty folder is part of what was deleted."""
        self._ensure_dir(join(self.root, rel), mode)

    def manifest_place(self) -> str:
        """Where the link manifest as it was before this save goes (see the docstring)."""
        return self.place_for(join(self.status_dir, MANIFEST_NAME))

    def _ensure_dir(self, rel: str, mode: int | None = None) -> None:
        if rel in self._made:
            return
        if mode is None:
            self.store.makedirs(rel)
        else:
            self.store.makedirs(parent_of(rel))
            try:
                self.store.mkdir(rel, mode)
            except FileExistsError:
                pass
        # Every ancestor now exists too; remember them to save round trips.
        while rel and rel not in self._made:
            self._made.add(rel)
            rel = parent_of(rel)


def _listdir_or_empty(store: Store, rel: str):
    try:
        return store.listdir(rel)
    except FileNotFoundError:
        return []


def list_batches(store: Store, status_dir: str, *, sizes: bool = True) -> list[Batch]:
    batches = []
    for item in sorted(_listdir_or_empty(store, join(status_dir, TRASH_DIR)), key=lambda i: i.name):
        if not item.is_dir:
            continue
        batch = Batch(item.name, batch_time(item.name))
        if sizes:
            content = batch_content(store, status_dir, item.name)
            batch.files = len(content.files)
            batch.bytes = sum(size for _, size in content.files)
            batch.folders = len(content.folders)
            batch.manifest = content.manifest
        batches.append(batch)
    return batches


@dataclass
class BatchContent:
    """What one batch holds, paths relative to the tree: the files (with their sizes), the
    folders (with their modes), and whether it kept a link manifest."""

    files: list[tuple[str, int]]
    folders: list[tuple[str, int]]
    manifest: bool


def batch_content(store: Store, status_dir: str, name: str) -> BatchContent:
    """What batch ``name`` holds (FileNotFoundError if there is no such batch)."""
    root = join(status_dir, TRASH_DIR, name)
    if not store.exists(root):
        raise FileNotFoundError(root)
    found = BatchContent([], [], False)
    kept = status_dir + "/"  # the manifest's place in the batch: not a project path
    for path, st in store.iter_tree(root):
        rel = path[len(root) + 1:]
        if rel == status_dir or rel.startswith(kept):
            found.manifest |= rel == join(status_dir, MANIFEST_NAME)
        elif stat_mod.S_ISREG(st.st_mode):
            found.files.append((rel, st.st_size))
        elif stat_mod.S_ISDIR(st.st_mode):
            found.folders.append((rel, stat_mod.S_IMODE(st.st_mode)))
    return found


def batch_files(store: Store, status_dir: str, name: str) -> list[tuple[str, int]]:
    """(path relative to the tree, size) of every file in batch ``name``."""
    return batch_content(store, status_dir, name).files


def batch_manifest(store: Store, status_dir: str, name: str) -> bytes | None:
    """The link manifest batch ``name`` kept (as it was before that save), or None."""
    try:
        return store.read_bytes(join(status_dir, TRASH_DIR, name, status_dir, MANIFEST_NAME))
    except FileNotFoundError:
        return None


def select_batches(store: Store, status_dir: str, *, older_than: timedelta | None,
                   now: datetime | None = None, names: list[str] | None = None,
                   sizes: bool = False) -> list[Batch]:
    """The batches a purge with these arguments removes (``spaceport trash purge`` shows
    them, and asks, before it removes anything)."""
    now = now or datetime.now(timezone.utc)
    chosen = []
    for batch in list_batches(store, status_dir, sizes=sizes):
        if names is not None:
            wanted = batch.name in names
        else:
            wanted = batch.time is not None and older_than is not None \
                and now - batch.time > older_than
        if wanted:
            chosen.append(batch)
    return chosen


def purge(store: Store, status_dir: str, *, older_than: timedelta | None,
          now: datetime | None = None, names: list[str] | None = None) -> list[str]:
    """Remove batches older than ``older_than`` (or the ones named); returns their names."""
    removed = []
    for batch in select_batches(store, status_dir, older_than=older_than, now=now,
                                names=names):
        store.walk_remove(join(status_dir, TRASH_DIR, batch.name))
        removed.append(batch.name)
    return removed
