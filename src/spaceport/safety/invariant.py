"""Rule zero, in one place: nothing in a working copy is removed or replaced unless its
content is proven to be on the primary.

The proof is the state index: it holds the signature (size, mtime, mode, inode, ctime) a file
had when spaceport copied it from the primary or saved it there, and the file still has that
signature now (:func:`proven`). The ctime makes the proof hold against a rewrite that keeps
the size and puts the mtime back; nothing sets a ctime back. Whatever is not proven is the
user's: it is kept, and saved (``deploy --resume``, the next save); where the primary's
version changed too, both are kept.

Every removal or replacement that spaceport makes in a working copy goes through
:class:`WorkGuard` (a deploy replacing or removing files, links and folders, undeploy and
the daemon removing the working copy, ``trash restore --work --overwrite``). The guard looks
at the name at the last moment: the entry is first moved aside under a name of its own (an
atomic rename, so what is moved is exactly one inode), the moved inode is compared with what
was proven, and only then is it removed; anything else (rewritten or replaced meanwhile) is
put back, or, if the name was taken again meanwhile, kept beside it as
``NAME.conflict-<host>-<time>``. The name it is moved to carries its inode: if the process
dies between the move and the removal, the next command finds the entry's index row by that
inode and settles it (:func:`settle_asides`); an aside is never taken for a temporary.

What no stat can see: a write through a long-lived ``mmap`` changes the content without
always changing the times. ``undeploy --checksum`` compares the content with the primary
before the working copy is removed (:func:`find_unsaved` with ``checksum``; a database as a
snapshot of it, never by its header bytes).

The one exception is the user's explicit word: ``deploy --discard-local``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
from dataclasses import dataclass, field, replace
from typing import Callable

from ..clock import stamp
from ..engine.content import same_content
from ..engine.index import OURS, Index, Known, primary_state, proven
from ..engine.plan import plan_save
from ..engine.pool import run_parallel
from ..engine.scan import Entry, Kind, ScanResult
from ..engine.snapshot import Snapshotter
from ..hostinfo import hostname
from ..store.base import Store, aside_name, join, our_aside, parent_of
from ..store.posix import PosixStore
from .deletion_guard import held_paths

log = logging.getLogger(__name__)


def entry_at(store: Store, rel: str, st: os.stat_result) -> Entry | None:
    """The entry of ``rel`` as :mod:`spaceport.engine.scan` would make it from ``st``."""
    mode = st.st_mode
    if stat_mod.S_ISREG(mode):
        return Entry(rel, Kind.FILE, st.st_size, st.st_mtime_ns, stat_mod.S_IMODE(mode),
                     st.st_ino, None, st.st_ctime_ns)
    if stat_mod.S_ISDIR(mode):
        return Entry(rel, Kind.DIR, mode=stat_mod.S_IMODE(mode))
    if stat_mod.S_ISLNK(mode):
        return Entry(rel, Kind.LINK, target=store.readlink(rel))
    return None


def conflict_name(rel: str, exists: Callable[[str], bool], host: str | None = None) -> str:
    """``NAME.conflict-<host>-<time>`` beside ``rel``, not taken yet."""
    base = f"{rel}.conflict-{host or hostname()}-{stamp()}"
    name, n = base, 1
    while exists(name):
        n += 1
        name = f"{base}-{n}"
    return name


class NotProvenError(FileExistsError):
    """The entry at a name is not the one proven saved: it was left in place (the user's)."""

    def __init__(self, rel: str, why: str):
        super().__init__(errno.EEXIST, why, rel)


class WorkGuard:
    """The only way spaceport removes or replaces anything in a working copy."""

    def __init__(self, store: PosixStore, token: str):
        self.store, self.token = store, token
        self.kept: list[tuple[str, str]] = []  # (path, why): left alone as the user's
        # Inodes with several names (hard links) that lost one name here: their ctime
        # right after that removal. Removing a name changes the shared inode's ctime; the
        # other names are judged against this, not taken for a change (see _take).
        self._unlinked: dict[int, int] = {}

    def _keep(self, rel: str, why: str) -> None:
        self.kept.append((rel, why))
        log.warning("%s is kept in the working copy: %s", rel, why)

    # -- the three acts --------------------------------------------------------------
    def place(self, tmp: str, rel: str, expect: Entry | None) -> None:
        """Put the finished temporary ``tmp`` at ``rel``. With ``expect`` None the name must
        be free; otherwise what is there must be ``expect``, proven saved, and is replaced.
        Raises NotProvenError (``tmp`` is then the caller's to discard) if not."""
        aside = self._take(rel, expect) if expect is not None else ""
        if aside is None:
            raise NotProvenError(rel, "it changed since it was saved; it was not replaced")
        try:
            self.store.rename_or_refuse(tmp, rel)
        except FileExistsError:
            self._drop(aside)  # proven saved: nothing is lost with it
            self._keep(rel, "it appeared while the deploy copied it; ours was dropped")
            raise NotProvenError(rel, "it appeared meanwhile; it was not replaced") from None
        self._drop(aside)

    def remove(self, rel: str, expect: Entry) -> bool:
        """Remove ``rel`` if it is ``expect`` (proven saved); True if it is gone."""
        if expect.kind is Kind.DIR:
            return self.remove_dir(rel)
        aside = self._take(rel, expect)
        if aside is None:
            return False
        self._drop(aside)
        return True

    def remove_dir(self, rel: str) -> bool:
        """Remove the folder ``rel`` if it is empty (never a tree at once); True if gone."""
        try:
            self.store.rmdir(rel)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            return False
        return True

    # -- the check at the name ---------------------------------------------------------
    def _take(self, rel: str, expect: Entry) -> str | None:
        """Move ``rel`` aside if it is ``expect``: the aside name ("" if nothing is at
        ``rel``), or None if it is something else (left in place, noted as kept)."""
        try:
            st = self.store.lstat(rel)
        except FileNotFoundError:
            return ""
        now = entry_at(self.store, rel, st)
        if now is None or now.sig() != self._expected(now, expect):
            self._keep(rel, "it changed since it was saved")
            return None
        aside = join(parent_of(rel), aside_name(self.token, st.st_ino))
        try:
            self.store.rename_or_refuse(rel, aside)
        except FileNotFoundError:
            return ""
        except FileExistsError:  # a hard link of it is being removed too: not now
            self._keep(rel, "another name of the same file is being removed")
            return None
        moved = self.store.lstat(aside)
        # The rename gives the inode a new ctime; the rest is what was checked, or the name
        # was rewritten or replaced between the look and the move.
        if (moved.st_ino, moved.st_size, moved.st_mtime_ns, moved.st_mode) != \
                (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode) or \
                (now.kind is Kind.LINK and self.store.readlink(aside) != now.target):
            self._put_back(aside, rel)
            return None
        return aside

    def _expected(self, now: Entry, expect: Entry):
        """The signature ``now`` must have: ``expect``'s, except for a hard link whose other
        name this guard just removed: its ctime is then the one that removal left (any
        change since would have moved it again)."""
        ctime = self._unlinked.get(now.ino) if now.kind is Kind.FILE else None
        if ctime is None or now.ino != expect.ino:
            return expect.sig()
        return replace(expect, ctime_ns=ctime).sig()

    def _put_back(self, aside: str, rel: str) -> None:
        try:
            self.store.rename_or_refuse(aside, rel)
            self._keep(rel, "it changed while it was being removed")
        except FileExistsError:
            other = conflict_name(rel, self.store.exists)
            self.store.rename(aside, other)
            self._keep(other, f"it changed while it was being removed, and {rel} was "
                              "written again meanwhile")

    def _drop(self, aside: str) -> None:
        if not aside:
            return
        try:
            st = self.store.lstat(aside)
            if stat_mod.S_ISDIR(st.st_mode):
                self.store.rmdir(aside)
            elif stat_mod.S_ISREG(st.st_mode) and st.st_nlink > 1:
                self._unlink_one_name(aside)
            else:
                self.store.unlink(aside)
        except FileNotFoundError:
            pass

    def _unlink_one_name(self, aside: str) -> None:
        """Remove one name of a file that has others, noting the ctime the removal gives
        the inode, read through a descriptor opened before it: exactly ours."""
        fd = self.store.open_read(aside)
        try:
            self.store.unlink(aside)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._unlinked[st.st_ino] = st.st_ctime_ns



class GuardedWork(PosixStore):
    """A working copy whose commits of finished temporaries go through a :class:`WorkGuard`:
    a copy lands on a free name, or replaces only the entry registered as proven saved."""

    def __init__(self, root: str, capabilities, *, temp_token: str):
        super().__init__(root, capabilities, temp_token=temp_token)
        self.guard = WorkGuard(self, temp_token)
        self.replaces: dict[str, Entry] = {}  # path -> the proven entry a copy may replace

    def _place(self, tmp: str, rel: str) -> None:
        self.guard.place(tmp, rel, self.replaces.get(rel))


# -- the final check before a working copy is given up --------------------------------
@dataclass
class Unsaved:
    """What keeps a working copy from being removed: not proven on the primary."""

    in_work: list[str] = field(default_factory=list)  # changed, new, or deleted since saved
    on_primary: list[str] = field(default_factory=list)  # the primary no longer has it
    content: list[str] = field(default_factory=list)  # --checksum: the bytes differ
    links: bool = False  # the manifest on the primary is not the working copy's links

    def __bool__(self) -> bool:
        return bool(self.in_work or self.on_primary or self.content or self.links)

    def paths(self) -> list[str]:
        return self.in_work + self.on_primary + self.content


def find_unsaved(scan: ScanResult, index: Index, primary_scan: ScanResult,
                 primary: Store, work: Store, *, manifest_ok: bool,
                 checksum: bool = False, snapshots: Snapshotter | None = None) -> Unsaved:
    """Every entry of the working copy against its proof, and every proof against the
    primary: a file counts as saved when its row proves it and the primary still holds
    what the row says was written there (its size and mtime, and its ctime where the row
    has it: :func:`~spaceport.engine.index.primary_state`; with ``checksum``, the same
    content: :func:`~spaceport.engine.content.same_content`, a database as a snapshot of
    it, taken in ``snapshots``)."""
    found = Unsaved(links=not manifest_ok)
    known = index.load()
    for path, entry in scan.entries.items():
        row = known.get(path)
        if not proven(entry, row):
            found.in_work.append(path)
            continue
        if entry.kind is not Kind.FILE:
            continue
        there = primary_scan.entries.get(path)
        if there is None or there.kind is not Kind.FILE or primary_state(
                there.size, there.mtime_ns, there.ctime_ns, row) != OURS:
            found.on_primary.append(path)  # gone, someone else's, or not proven ours
        elif checksum and not same_content(work, primary, path, snapshots):
            found.content.append(path)
    # A deletion the deletion guard held is not unsaved work: the primary keeps the file on
    # purpose and the save recorded it (status, the journal). Without this, a working copy
    # with held deletions could never be given up.
    # An excluded path (--exclude) is not unsaved work either: the user said not to save it;
    # it stays in the working copy (spaceport removes only what is proven saved).
    held = held_paths(index)
    found.in_work += [p for p, row in known.items() if p not in scan.entries and p not in held
                      and not scan.under_unreadable(p)
                      and not scan.excluded(p, row.entry.kind)]
    return found


def same_bytes(a: Store, b: Store, rel: str, chunk: int = 1 << 20) -> bool:
    """Whether ``rel`` holds the same bytes in both stores. Each read goes through its
    store's ``read_at``: a read of the primary is a call on the storage like any other,
    retried by a retrying store (``deploy --resume`` comparing a working copy with it)."""
    fa = a.open_read(rel)
    try:
        fb = b.open_read(rel)
    except BaseException:
        os.close(fa)
        raise
    try:
        offset = 0
        while True:
            x, y = a.read_at(rel, fa, chunk, offset), b.read_at(rel, fb, chunk, offset)
            if x != y:
                return False
            if not x:
                return True
            offset += len(x)
    finally:
        os.close(fa)
        os.close(fb)


def remove_saved(scan: ScanResult, known: dict[str, Known], guard: WorkGuard) -> list[str]:
    """Remove every entry of ``scan`` that its row proves saved, deepest first, through the
    guard; returns what was removed. Anything else stays, noted in ``guard.kept``."""
    removed = []
    for path in sorted(scan.entries, key=lambda p: (-p.count("/"), p)):
        entry = scan.entries[path]
        if not proven(entry, known.get(path)):
            guard._keep(path, "it is not proven saved")
            continue
        if guard.remove(path, entry):
            removed.append(path)
        elif entry.kind is Kind.DIR:
            pass  # it holds something kept: noted for that entry already
    return removed


# -- proofs by content ------------------------------------------------------------------
def prove_by_content(scan: ScanResult, index: Index, primary: Store, work: Store, *,
                     links: dict[str, str] | None = None, jobs: int = 8) -> int:
    """Record as saved what a save would upload but that provably holds what the primary
    holds: copies a killed deploy made but could not record yet, or a working copy whose
    index or marker was lost. A file is compared byte for byte with the primary's (same size
    first) and recorded only if it did not change meanwhile; a folder the primary has with
    the same mode is recorded; a link, if ``links`` (the manifest's, path -> target) has it.
    Rows of entries gone from both sides are dropped. Returns how many rows changed.

    What is left to save is then really the user's: a partial copy is never taken for
    edits, and nothing is uploaded again that is already there."""
    plan = plan_save(scan, index)
    rows: list[Known] = []
    forget: list[str] = []

    def compare(entry: Entry) -> Known | None:
        try:
            st = primary.lstat(entry.path)
        except FileNotFoundError:
            return None
        if not stat_mod.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return None
        if not same_bytes(work, primary, entry.path):
            return None
        now = entry_at(work, entry.path, work.lstat(entry.path))
        if now is None or now.sig() != entry.sig():
            return None  # written while compared: it is the user's
        return Known(entry, st.st_size, st.st_mtime_ns)

    def done(entry: Entry, row: Known | None, error: Exception | None) -> None:
        if row is not None:
            rows.append(row)
        elif error is not None and not isinstance(error, (FileNotFoundError, PermissionError)):
            raise error

    run_parallel(compare, plan.uploads, jobs, done, name="compare")
    for entry in plan.mkdirs + plan.chmods:
        try:
            st = primary.lstat(entry.path)
        except FileNotFoundError:
            continue
        if stat_mod.S_ISDIR(st.st_mode) and stat_mod.S_IMODE(st.st_mode) == entry.mode:
            rows.append(Known(entry, None, None))
    for old in plan.deletes + plan.replaced:
        if old.entry.path not in scan.entries and not primary.exists(old.entry.path):
            forget.append(old.entry.path)
    if links is not None:
        for entry in plan.links:
            row = index.get(entry.path)
            if not proven(entry, row) and links.get(entry.path) == entry.target:
                rows.append(Known(entry, None, None))
        forget += [path for path, row in index.load().items()
                   if row.entry.kind is Kind.LINK and path not in scan.entries
                   and path not in links]
    if rows or forget:
        index.record(rows, forget=forget)
        log.info("%d entries found equal on both sides were recorded as saved", len(rows))
    return len(rows) + len(forget)


def may_write(work: GuardedWork, index: Index, paths: list[str], *,
              overwrite: bool) -> tuple[list[str], list[str], list[str]]:
    """Which of ``paths`` a copy into the working copy may write (``trash restore``): free
    names, and with ``overwrite`` also names holding an entry proven saved (registered in
    ``work.replaces``). Returns (to write, skipped as existing, refused as unsaved)."""
    todo, skipped, refused = [], [], []
    for path in paths:
        try:
            st = work.lstat(path)
        except FileNotFoundError:
            todo.append(path)
            continue
        now = entry_at(work, path, st)
        if not overwrite:
            skipped.append(path)
        elif now is not None and now.kind is Kind.FILE and proven(now, index.get(path)):
            work.replaces[path] = now
            todo.append(path)
        else:
            refused.append(path)
    return todo, skipped, refused


def settle_asides(work: Store, index: Index, asides: list[str], token: str) -> int:
    """Entries a killed removal had moved aside (their name carries their inode). Put back
    under the name whose index row has that inode (or, for a link, that target), if it is
    free, with the row brought up to date if the entry is the one it proves; dropped if it is
    that proven entry and the name holds something newer; otherwise kept under a conflict
    name. Returns how many were settled."""
    if not asides:
        return 0
    rows = index.load()
    record = []
    for aside in asides:
        folder, name = parent_of(aside), aside.rpartition("/")[2]
        ino = our_aside(name, token)
        try:
            st = work.lstat(aside)
        except FileNotFoundError:
            continue
        now = entry_at(work, aside, st)
        row = next((k for p, k in rows.items() if parent_of(p) == folder and now is not None
                    and k.entry.kind is now.kind and (
                        k.entry.ino == ino if now.kind is Kind.FILE
                        else k.entry.target == now.target)), None)
        same = row is not None and now is not None and (
            now.kind is Kind.LINK or (now.size, now.mtime_ns, now.mode) ==
            (row.entry.size, row.entry.mtime_ns, row.entry.mode))
        home = row.entry.path if row is not None else join(folder, f"recovered-{ino}")
        if not work.exists(home):
            work.rename(aside, home)
            if same and now.kind is Kind.FILE:
                back = entry_at(work, home, work.lstat(home))  # the renames changed its ctime
                record.append(Known(back, row.psize, row.pmtime_ns))
            log.warning("%s was moved aside by a removal that was interrupted; put back",
                        home)
        elif same:
            work.unlink(aside)  # proven saved, and the name holds something newer
        else:
            other = conflict_name(home, work.exists)
            work.rename(aside, other)
            log.warning("%s was moved aside by a removal that was interrupted, and its name "
                        "was taken since; it is kept as %s", home, other)
    if record:
        index.record(record)
    return len(asides)
