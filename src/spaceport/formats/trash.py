"""The trash on the primary: deleted files are moved, not removed.

A save that deletes files renames them into ``<status>/trash/<save-time>/<path>`` (a rename
is cheap, even over OneData). Batches older than the retention period are purged by later
saves; ``spaceport trash`` lists, restores and purges them by hand.
"""

from __future__ import annotations

import stat as stat_mod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..store.base import Store, join, parent_of

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


class TrashBin:
    """One save's trash batch; parent folders are created once and remembered."""

    def __init__(self, store: Store, status_dir: str, now: datetime):
        self.store = store
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

    def _ensure_dir(self, rel: str) -> None:
        if rel in self._made:
            return
        self.store.makedirs(rel)
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
            for _, st in store.iter_tree(join(status_dir, TRASH_DIR, item.name)):
                if stat_mod.S_ISREG(st.st_mode):
                    batch.files += 1
                    batch.bytes += st.st_size
        batches.append(batch)
    return batches


def batch_files(store: Store, status_dir: str, name: str) -> list[tuple[str, int]]:
    """(path relative to the tree, size) of every file in batch ``name``."""
    root = join(status_dir, TRASH_DIR, name)
    if not store.exists(root):
        raise FileNotFoundError(root)
    return [(path[len(root) + 1:], st.st_size) for path, st in store.iter_tree(root)
            if stat_mod.S_ISREG(st.st_mode)]


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
