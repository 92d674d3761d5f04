"""Renames and moves in the working copy: found from the index, made renames on the primary.

Without this, a folder renamed in the working copy reads as "every file deleted at the old
path, every file new at the new one": the save uploads them all again, moves the old ones
to the trash (the primary holds two copies for a week) and trips the deletion guard.

What proves a move, from the index rows whose path is gone and the scan entries the index
does not know (never from the primary):

* a folder was moved when a new folder has the inode of a gone folder row, and at least one
  file it held is found at its place under the new folder as the same file (inode, size,
  mtime and ctime, as below). An inode number alone proves nothing: a folder deleted and
  another created get the same number back at once on most filesystems, and so do the files
  in them (Scipion deletes a run and starts the next one; taking that for a move renamed the
  old run's folder on the primary while the project.sqlite there still listed it). A folder
  that held no file is never taken for moved: creating the new one costs no more. One rename
  carries the whole subtree.
* a file was moved when a new file has the inode, size, mtime and ctime of a gone file row:
  the same file, not written since it was saved. Linux changes a file's ctime when the file
  itself is renamed, so a file renamed directly is not proven unchanged and is uploaded as
  before; files inside a renamed folder keep their ctime, and ride with the folder. This
  rule is not weakened to let a direct rename through: a file rewritten with its old size
  and mtime (tests/test_model.py does it on purpose) differs only in its ctime.

A hard link (one inode at two paths) moves only from a path that is really gone, to one of
its new paths; the others are uploaded. Moves are made parent folder first; a move into a
folder that is itself moved waits for it, a move onto a name another move frees waits for
that one (rename chains), and moves that wait on each other (two folders that swapped
names) are not made: their content is saved as before. Everything else under a moved folder
is planned against the rows as they will be once moved (edits uploaded, files gone deleted,
nested moves made as well).

The save makes each move with one rename on the primary, never over an existing entry; only
then is the index rekeyed (docs/RELIABILITY.md, "Renames").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..wording import count
from .index import Known
from .scan import Entry, Kind, ScanResult


@dataclass(frozen=True)
class Move:
    """One rename on the primary. ``old`` is where the entry is when this move is made (the
    moves before it already made), ``new`` where it goes. ``expect``: a file it carries,
    as (path below ``new``, "" for a moved file itself; its size and mtime on the primary),
    to recognise a rename that a killed save made but did not record."""

    old: str
    new: str
    kind: Kind
    expect: tuple[str, int | None, int | None] | None = None

    def carries(self, path: str) -> bool:
        return path == self.old or path.startswith(self.old + "/")

    def lands(self, path: str) -> bool:
        return path == self.new or path.startswith(self.new + "/")


@dataclass
class FoundMoves:
    moves: list[Move] = field(default_factory=list)  # in the order they are made
    known: Mapping[str, Known] = field(default_factory=dict)  # rows as they will be, moved
    adopt: list[Known] = field(default_factory=list)  # folder rows given their new inode


def moves_in_words(moves: list[Move]) -> str:
    """"2 folders, 1 file"."""
    dirs = sum(1 for m in moves if m.kind is Kind.DIR)
    parts = [count(dirs, "folder")] if dirs else []
    if len(moves) - dirs:
        parts.append(count(len(moves) - dirs, "file"))
    return ", ".join(parts) or count(0, "file")


def _file_key(e: Entry) -> tuple:
    return (e.ino, e.size, e.mtime_ns, e.ctime_ns)


def _proves(row: Known) -> bool:
    """A file row that can prove a move: saved (psize) with a real ctime (not a format-1
    row, nor one a final check invalidated)."""
    return row.psize is not None and row.entry.ctime_ns is not None and row.entry.ctime_ns >= 0


def _translate(path: str, moves: list[Move]) -> str:
    """Where ``path`` (a path of the index as it is) is once ``moves`` are made."""
    for m in moves:
        if m.carries(path):
            path = m.new + path[len(m.old):]
    return path


def _origin(path: str, moves: list[Move]) -> str | None:
    """Which path of the index as it is sits at ``path`` once ``moves`` are made; None if
    a move took it away (the name is free)."""
    for m in reversed(moves):
        if m.lands(path):
            path = m.old + path[len(m.new):]
        elif m.carries(path):
            return None
    return path


class _Rows:
    """The rows that differ from the scan, sorted once, to list those under a folder."""

    def __init__(self, known: Mapping[str, Known]):
        self.known = known
        self.paths = sorted(known)

    def under(self, folder: str) -> list[str]:
        lo = bisect_left(self.paths, folder + "/")
        hi = bisect_left(self.paths, folder + "0", lo)  # "0" follows "/"
        return self.paths[lo:hi]


def find_moves(scan: ScanResult, known: Mapping[str, Known], same: set[str]) -> FoundMoves:
    """The moves that explain the rows gone from ``scan`` (``known``: rows that differ
    from it; ``same``: paths whose row equals it), and the rows as they will be once
    moved. Nothing is found (and nothing costs more than one look at the rows that
    differ) when no folder or file is gone."""
    entries = scan.entries
    gone_dirs: dict[int, list[str]] = {}
    gone_files: dict[tuple, list[str]] = {}
    for path, row in known.items():
        e = row.entry
        if e.kind is Kind.LINK or (scan.unreadable and scan.under_unreadable(path)):
            continue
        now = entries.get(path)
        if e.kind is Kind.DIR:
            if e.ino and (now is None or now.kind is not Kind.DIR or now.ino != e.ino):
                gone_dirs.setdefault(e.ino, []).append(path)
        elif (now is None or now.kind is not Kind.FILE) and _proves(row):
            gone_files.setdefault(_file_key(e), []).append(path)
    if not gone_dirs and not gone_files:
        return FoundMoves([], known, _adopt_folders(known, entries))

    # What could have arrived there: entries the index does not know (a folder also where
    # the index knows another folder, its name taken by a move: a chain).
    new_dirs: dict[int, list[str]] = {}
    new_files: dict[tuple, list[str]] = {}
    for path, e in entries.items():
        if path in same:
            continue
        row = known.get(path)
        if e.kind is Kind.DIR:
            if e.ino in gone_dirs and (row is None or (row.entry.kind is Kind.DIR
                                                       and row.entry.ino not in (0, e.ino))):
                new_dirs.setdefault(e.ino, []).append(path)
        elif e.kind is Kind.FILE and row is None:
            key = _file_key(e)
            if key in gone_files:
                new_files.setdefault(key, []).append(path)

    rows = _Rows(known)
    moves = _folder_moves(gone_dirs, new_dirs, rows, entries, same)
    moved = _rekeyed(known, moves)
    moves += _file_moves(gone_files, new_files, moved, moves, entries)
    return FoundMoves(moves, moved, _adopt_folders(moved, entries, moves))


def _folder_moves(gone: dict[int, list[str]], new: dict[int, list[str]], rows: _Rows,
                  entries: Mapping[str, Entry], same: set[str]) -> list[Move]:
    pairs = []
    for ino, dsts in new.items():
        srcs = gone[ino]
        # A folder has one path; two rows with one inode are a stale row: prove nothing.
        if len(srcs) == 1 and len(dsts) == 1 and _same_folder(srcs[0], dsts[0], rows,
                                                              entries, same):
            pairs.append((srcs[0], dsts[0]))
    # Made parents first (a move into a moved folder waits for it); a move onto a name
    # that another move frees waits for that one. What still waits when nothing more can
    # go (a swap, a cycle) is not made.
    pending = sorted(pairs, key=lambda p: (p[1].count("/"), p[1]))
    done: list[Move] = []
    progress = True
    while pending and progress:
        progress = False
        for pair in list(pending):
            src, dst = pair
            old = _translate(src, done)
            if old == dst:  # its parent's move already took it there
                pending.remove(pair)
                progress = True
                continue
            if dst.startswith(old + "/"):  # into itself: not a rename
                pending.remove(pair)
                continue
            others = [p for p in pending if p is not pair]
            if any(dst.startswith(d + "/") for _, d in others):
                continue  # its new parent is itself still to move there
            there = _origin(dst, done)
            if there is not None and (there in same or there in rows.known):
                if any(there == s or there.startswith(s + "/") for s, _ in others):
                    continue  # the name is freed by a move still to come
                pending.remove(pair)  # the name is taken, for good: not a move
                continue
            done.append(Move(old, dst, Kind.DIR))
            pending.remove(pair)
            progress = True
    return [replace(m, expect=_probe(m, i, done, rows)) for i, m in enumerate(done)]


def _same_folder(src: str, dst: str, rows: _Rows, entries: Mapping[str, Entry],
                 same: set[str]) -> bool:
    """Is the new folder ``dst`` the old ``src`` (not another folder that got its inode
    number back)? Yes if one of the files it held is at its place under ``dst``, the same
    file by inode, size, mtime and ctime (an inode number alone is reused at once). A
    folder whose name still exists (a chain) must have all its rows among those that
    differ (else the index knows more below it)."""
    if src in entries and any(p.startswith(src + "/") for p in same):
        return False
    for path in rows.under(src):
        row = rows.known[path]
        if row.entry.kind is not Kind.FILE or not _proves(row):
            continue
        there = entries.get(dst + path[len(src):])
        if there is not None and there.kind is Kind.FILE and \
                _file_key(there) == _file_key(row.entry):
            return True
    return False


def _probe(move: Move, at: int, moves: list[Move], rows: _Rows):
    """A file the folder move carries and no later move takes elsewhere."""
    src = _origin(move.old, moves[:at])
    for path in rows.under(src) if src is not None else ():
        row = rows.known[path]
        if row.entry.kind is not Kind.FILE or row.psize is None:
            continue
        before = _translate(path, moves[:at])
        if not move.carries(before):
            continue
        after = move.new + before[len(move.old):]
        if _translate(path, moves) == after:
            return (after[len(move.new) + 1:], row.psize, row.pmtime_ns)
    return None


def _rekeyed(known: Mapping[str, Known], moves: list[Move]) -> dict[str, Known]:
    """The rows as they will be once the folder ``moves`` are made (a copy: the caller's
    rows are left as they are)."""
    moved = dict(known)
    for m in moves:
        prefix = m.old + "/"
        # Links are not on the primary (they are in the manifest): their rows stay, so the
        # manifest is written again with them at their new path.
        carried = [p for p, row in moved.items() if (p == m.old or p.startswith(prefix))
                   and row.entry.kind is not Kind.LINK]
        taken = {p: moved.pop(p) for p in carried}
        for p, row in taken.items():
            path = m.new + p[len(m.old):]
            moved[path] = Known(replace(row.entry, path=path), row.psize, row.pmtime_ns)
    return moved


def _file_moves(gone: dict[tuple, list[str]], new: dict[tuple, list[str]],
                moved: dict[str, Known], folder_moves: list[Move],
                entries: Mapping[str, Entry]) -> list[Move]:
    """File moves, made after the folder moves; ``moved`` (the rows) is updated."""
    found: list[Move] = []
    for key in sorted(new, key=lambda k: min(new[k])):
        srcs = sorted(_translate(s, folder_moves) for s in gone[key])
        srcs = [s for s in srcs if s not in entries and s in moved]  # still gone once moved
        dsts = [d for d in sorted(new[key]) if d not in moved]  # no row lands there
        if not srcs or not dsts:
            continue
        src, dst = srcs[0], dsts[0]  # a hard link: one of its paths moves, the rest upload
        row = moved.pop(src)
        moved[dst] = Known(replace(row.entry, path=dst), row.psize, row.pmtime_ns)
        found.append(Move(src, dst, Kind.FILE, ("", row.psize, row.pmtime_ns)))
    return found


def _adopt_folders(known: Mapping[str, Known], entries: Mapping[str, Entry],
                   moves: list[Move] = ()) -> list[Known]:
    """Folder rows whose folder is another one now (deleted and made again, or swapped
    with another) or whose inode was never recorded: given the inode they have now. Not
    under a moved folder: those rows are written by the move, once it is made."""
    adopt = []
    landed = [m for m in moves if m.kind is Kind.DIR]
    for path, row in known.items():
        if row.entry.kind is not Kind.DIR or any(m.lands(path) for m in landed):
            continue
        now = entries.get(path)
        if now is not None and now.kind is Kind.DIR and now.ino != row.entry.ino and \
                now.sig() == row.entry.sig():
            adopt.append(Known(now, None, None))
    return adopt


# -- making them (spaceport.commands.save) -------------------------------------------------------
def ancestors(path: str) -> list[str]:
    """The folders above ``path``, the topmost first: "a/b/c" -> ["a", "a/b"]."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def depends_on(move: Move, other: Move) -> bool:
    """Does ``move`` need ``other`` made first (it moves what ``other`` moved or moves
    into, or goes where ``other`` took something from or put something)?"""
    return any(m(p) for p in (move.old, move.new) for m in (other.carries, other.lands))


def plan_without(plan, move: Move, entries: Mapping[str, Entry]) -> None:
    """Change ``plan`` (a :class:`~spaceport.engine.plan.SavePlan`) for a move that was not made:
    what is under its new path is uploaded and its folders created, as if it were new (its
    rows were never moved: they stay at the old path, whose files the next save deletes).
    What the plan did there against the moved rows is dropped."""
    def under(path: str) -> bool:
        return move.lands(path)

    plan.moves = [m for m in plan.moves if m is not move]
    plan.deletes = [k for k in plan.deletes if not under(k.entry.path)]
    plan.replaced = [k for k in plan.replaced if not under(k.entry.path)]
    plan.chmods = [e for e in plan.chmods if not under(e.path)]
    have = {e.path for e in plan.uploads} | {e.path for e in plan.mkdirs}
    for path, entry in entries.items():
        if path in have or not under(path):
            continue
        if entry.kind is Kind.FILE:
            plan.uploads.append(entry)
        elif entry.kind is Kind.DIR:
            plan.mkdirs.append(entry)
    plan.mkdirs.sort(key=lambda e: (e.path.count("/"), e.path))
