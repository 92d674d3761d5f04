"""The state index: what spaceport knows is on the primary, kept in the work marker folder.

A SQLite file (``<work>/.spaceport/index.sqlite``) with one row per path that is known to be
equal on both sides: the work file's size, mtime, mode, inode and ctime (to see what changed
in the working copy without touching the primary) and the primary's size and mtime as
written (to see what changed on the primary at the next deploy). A row is written only after
the file's rename into place succeeded, so a killed run never claims what did not land.

Format 2 added the ctime. A format-1 index is migrated in place: its rows get an unknown
ctime (NULL), which proves nothing (:mod:`spaceport.safety.invariant`); the first save takes the
file's ctime into a row whose other fields still match, which is exactly what format 1
would have decided, and from then on the row is whole.

Format 3 added the digest: the sha256 of the bytes a save put on the primary, kept for big
plain files only (:mod:`spaceport.engine.append`), so that a file that grew can be saved by writing
its new bytes alone once its first bytes are proven unchanged. Older rows have none (NULL):
such a file is uploaded whole once, as before, and has one from then on.

Format 4 added the primary's ctime (``pctime_ns``): the change time the primary reported for
the file as spaceport left it (a stage-in's source, an append's last write, a big file's
upload once renamed into place). Nothing can set a ctime back: a primary file edited in
place whose size and mtime were put back (``touch -r``, ``rsync -t``) shows another one, so
an append never lands on it and a final check does not take it for ours
(:func:`primary_state`). Unknown (NULL) in older rows and where it was not read (a small
file's upload: a stat more per file); size and mtime alone judge those, as before.

Temporaries being written are recorded first (``inflight``), so the next run removes the
leftovers of a killed one without listing the primary. So are appends being written
(``appending``): a primary file longer than its row says is then known to be this copy's own
unfinished append, finished by the next save, not someone else's change.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..errors import FormatError, VolumeFullError
from .scan import Entry, Kind, paused_gc, signature

INDEX_FORMAT = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS entries (
    path BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL, ino INTEGER NOT NULL, target BLOB,
    psize INTEGER, pmtime_ns INTEGER, ctime_ns INTEGER, digest BLOB, pctime_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inflight (
    side TEXT NOT NULL, path BLOB NOT NULL, tmp BLOB NOT NULL, PRIMARY KEY (side, tmp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS appending (path BLOB PRIMARY KEY, saved_size INTEGER NOT NULL)
    WITHOUT ROWID;
"""


class IndexDamagedError(FormatError):
    """The index file cannot be read (truncated, overwritten): it can be rebuilt."""


def _full(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def full_error(path: str) -> VolumeFullError:
    return VolumeFullError(
        f"the working volume is full: the state index {path} could not be written.",
        hint="What was copied before is complete (the next run compares it instead of copying "
             "it again). Make room on the working volume, then run the same command again.")


@dataclass(slots=True)
class Known:
    """An index row: the work entry as saved, plus the primary's size and mtime (and ctime,
    where it was read), and for a big plain file the sha256 of the bytes saved
    (:mod:`spaceport.engine.append`)."""

    entry: Entry
    psize: int | None
    pmtime_ns: int | None
    digest: bytes | None = None
    pctime_ns: int | None = None


OURS, UNPROVEN, OTHER = "ours", "unproven", "other"  # what a primary file is to a row


def primary_state(size: int, mtime_ns: int, ctime_ns: int | None, row: Known | None) -> str:
    """What the primary's file (its size, mtime and ctime as the primary reports them) is to
    the version ``row`` says this copy left there: OURS (all that was recorded matches),
    OTHER (another size or mtime: someone else's version), or UNPROVEN (the same size and
    mtime but another ctime: changed in place with its times put back, or touched; its
    bytes may be ours or not, so it is kept, never overwritten unseen)."""
    if row is None or (size, mtime_ns) != (row.psize, row.pmtime_ns):
        return OTHER
    if row.pctime_ns is not None and ctime_ns is not None and ctime_ns != row.pctime_ns:
        return UNPROVEN
    return OURS


def proven(now: Entry | None, row: Known | None) -> bool:
    """Is ``now`` (a working-copy entry as found) proven to be on the primary by ``row``?"""
    if now is None or row is None or now.kind is not row.entry.kind:
        return False
    if now.kind is Kind.FILE:
        # A row of a format-1 index has no ctime: it proves nothing until a save completes it.
        return (row.psize is not None and row.entry.ctime_ns is not None
                and now.sig() == row.entry.sig())
    if now.kind is Kind.LINK:
        return now.target == row.entry.target  # in the manifest (or old list) it came from
    return True  # a folder holds nothing itself: what is inside is judged one by one


def _b(path: str) -> bytes:
    return os.fsencode(path)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_KINDS = {int(kind): kind for kind in Kind}


def _s(blob: bytes) -> str:
    # os.fsdecode(), without its Python-level checks: it runs once per row of the index.
    return blob.decode(_FS_ENCODING, _FS_ERRORS)


def _t(target: bytes | None) -> str | None:
    return None if target is None else _s(target)


def _kind(value: int) -> Kind:
    return _KINDS.get(value) or Kind(value)  # Kind(): the error for a value it does not know


def row_known(row: tuple) -> Known:
    """The :class:`Known` for a tuple of :meth:`Index.rows`."""
    path, kind, size, mtime_ns, mode, ino, target, psize, pmtime_ns, ctime_ns, digest, \
        pctime_ns = row
    return Known(Entry(path, kind, size, mtime_ns, mode, ino, target, ctime_ns), psize,
                 pmtime_ns, digest, pctime_ns)


_COLUMNS = ("path, kind, size, mtime_ns, mode, ino, target, psize, pmtime_ns, ctime_ns, "
            "digest, pctime_ns")
_PLACEHOLDERS = ",".join("?" * len(_COLUMNS.split(",")))


class Index:
    """One SQLite file. Used from one thread (the engine's coordinator)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            version = self.get_meta("index_format")
        except sqlite3.DatabaseError as exc:
            if _full(exc):
                raise full_error(path) from None
            raise IndexDamagedError(
                f"the state index {path} is damaged ({exc}).",
                hint="Nothing was changed. A save rebuilds it safely by comparing the working "
                     "copy with the primary (spaceport save WORK); a deploy onto this copy "
                     "needs --resume for that.") from exc
        if version is None:
            self.set_meta("index_format", str(INDEX_FORMAT))
        elif int(version) > INDEX_FORMAT:
            raise FormatError(f"the state index {path} was written by a newer spaceport "
                              f"(format {version}).", hint="Upgrade spaceport.")
        elif int(version) < INDEX_FORMAT:
            self._migrate(int(version))

    def _migrate(self, version: int) -> None:
        """Format 1 -> 2: the ctime column; 2 -> 3: the digest column; 3 -> 4: the
        primary's ctime; unknown (NULL) in every old row."""
        with self._tx():
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(entries)")}
            if "ctime_ns" not in columns:
                self.db.execute("ALTER TABLE entries ADD COLUMN ctime_ns INTEGER")
            if "digest" not in columns:
                self.db.execute("ALTER TABLE entries ADD COLUMN digest BLOB")
            if "pctime_ns" not in columns:
                self.db.execute("ALTER TABLE entries ADD COLUMN pctime_ns INTEGER")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('index_format', ?)",
                            (str(INDEX_FORMAT),))

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def set_aside(path: str, stamp: str) -> str:
        """Move a damaged index (and its WAL files) out of the way; returns the new name."""
        aside = f"{path}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        return aside

    # -- meta ------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx():
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- entries ---------------------------------------------------------------------
    def load(self) -> dict[str, Known]:
        with paused_gc():
            return {row[0]: row_known(row) for row in self.rows()}

    def rows(self) -> Iterator[tuple]:
        """Every row as a tuple (path, kind, size, mtime_ns, mode, ino, target, psize,
        pmtime_ns, ctime_ns, digest, pctime_ns), streamed: a caller that compares them one
        by one (a save) never holds the whole index in memory. :func:`row_known` makes one
        a :class:`Known`."""
        for path, kind, size, mtime_ns, mode, ino, target, psize, pmtime_ns, ctime_ns, \
                digest, pctime_ns in self.db.execute(f"SELECT {_COLUMNS} FROM entries"):
            yield (_s(path), _kind(kind), size, mtime_ns, mode, ino,
                   None if target is None else _s(target), psize, pmtime_ns, ctime_ns, digest,
                   pctime_ns)

    def get(self, path: str) -> Known | None:
        """The row of one path, if the index has it."""
        row = self.db.execute(f"SELECT {_COLUMNS} FROM entries WHERE path=?",
                              (_b(path),)).fetchone()
        if row is None:
            return None
        path_b, kind, size, mtime_ns, mode, ino, target, psize, pmtime_ns, ctime_ns, digest, \
            pctime_ns = row
        return row_known((_s(path_b), _kind(kind), size, mtime_ns, mode, ino, _t(target),
                          psize, pmtime_ns, ctime_ns, digest, pctime_ns))

    def diff(self, entries: dict[str, Entry]) -> tuple[dict[str, Known], set[str], list[Known]]:
        """Compare the index with a scan: (the rows that differ from ``entries`` or are not
        in it, as Known; the paths whose entry equals its row, as ``Entry.sig`` compares;
        the rows of format 1, without a ctime, whose entry equals them in every other field,
        as Known holding the scan's entry, for the caller to record: counted the same).

        One pass over the table without an object per row: a save with nothing changed of
        10^6 files holds no copy of the index. Files, nearly every row, are compared field
        by field here; other kinds through :func:`~spaceport.engine.scan.signature`. A folder row
        also names its inode (which tells a moved folder): one without it (written before
        renames were detected) is adopted like a format-1 row; one with another inode
        differs, though its signature is equal.
        """
        differ: dict[str, Known] = {}
        same: set[str] = set()
        adopt: list[Known] = []
        get, add, file, folder = entries.get, same.add, int(Kind.FILE), int(Kind.DIR)
        with paused_gc():
            for path, kind, size, mtime_ns, mode, ino, target, psize, pmtime_ns, ctime_ns, \
                    digest, pctime_ns in self.db.execute(f"SELECT {_COLUMNS} FROM entries"):
                path = path.decode(_FS_ENCODING, _FS_ERRORS)
                entry = get(path)
                if entry is not None and entry.kind == kind:
                    if kind == file:
                        if (entry.size == size and entry.mtime_ns == mtime_ns
                                and entry.mode == mode and entry.ino == ino):
                            if entry.ctime_ns == ctime_ns:
                                add(entry.path)  # the scan's string: the row's is let go
                                continue
                            if ctime_ns is None:  # format 1: what it would have decided
                                add(entry.path)
                                adopt.append(Known(entry, psize, pmtime_ns, digest, pctime_ns))
                                continue
                    elif entry.sig() == signature(_kind(kind), size, mtime_ns, mode, ino,
                                                  _t(target), ctime_ns):
                        if kind != folder or ino == entry.ino:
                            add(entry.path)
                            continue
                        if not ino:  # a folder row without its inode (before renames)
                            add(entry.path)
                            adopt.append(Known(entry, psize, pmtime_ns))
                            continue
                        # Another folder under this name: spaceport.engine.renames decides.
                differ[path] = Known(Entry(path, _kind(kind), size, mtime_ns, mode, ino,
                                           _t(target), ctime_ns), psize, pmtime_ns, digest,
                                     pctime_ns)
        return differ, same, adopt

    def count(self, kind: Kind | None = None) -> int:
        """How many rows (of one kind, if given)."""
        if kind is None:
            return self.db.execute("SELECT count(*) FROM entries").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM entries WHERE kind=?",
                               (int(kind),)).fetchone()[0]

    def count_top_level(self) -> int:
        """How many files and folders the index knows at the top of the tree (the deletion
        guard weighs how many of them a save would delete)."""
        return self.db.execute("SELECT count(*) FROM entries WHERE instr(path, X'2F') = 0 "
                               "AND kind IN (?, ?)",
                               (int(Kind.FILE), int(Kind.DIR))).fetchone()[0]

    def record(self, done: Iterable[Known], *, forget: Iterable[str] = (),
               finished_tmps: Iterable[tuple[str, str]] = ()) -> None:
        """In one transaction: store rows, forget paths, drop finished temporaries."""
        with self._tx():
            self._store(done)
            self.db.executemany("DELETE FROM entries WHERE path=?", [(_b(p),) for p in forget])
            self.db.executemany("DELETE FROM inflight WHERE side=? AND tmp=?",
                                [(side, _b(tmp)) for side, tmp in finished_tmps])

    def rekey(self, old: str, new: str) -> int:
        """Move the row of ``old`` and every row under it to ``new``, in one transaction,
        each row otherwise kept as it is (what the primary holds did not change: it was
        renamed). Rows that were at ``new`` or under it are dropped first: the rename on
        the primary only succeeds where nothing was. Link rows stay: links are not on the
        primary, and the save writes the manifest again. Returns how many rows moved."""
        old_b, new_b = _b(old), _b(new)
        low, high = old_b + b"/", old_b + b"0"  # "0" follows "/": every path under old
        under = "(path=? OR (path>=? AND path<?)) AND kind!=?"
        with self._tx():
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM entries WHERE {under}",
                                   (old_b, low, high, int(Kind.LINK))).fetchall()
            self.db.execute(f"DELETE FROM entries WHERE {under}",
                            (old_b, low, high, int(Kind.LINK)))
            self.db.execute("DELETE FROM entries WHERE path=? OR (path>=? AND path<?)",
                            (new_b, new_b + b"/", new_b + b"0"))
            # A file renamed itself gets a new ctime on the primary (rename changes it);
            # files inside a renamed folder keep theirs.
            self.db.executemany(
                f"INSERT INTO entries ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                [(new_b + row[0][len(old_b):], *row[1:-1],
                  None if row[0] == old_b else row[-1]) for row in rows])
        return len(rows)

    def _store(self, done: Iterable[Known]) -> None:
        self.db.executemany(
            f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",
            [(_b(k.entry.path), int(k.entry.kind), k.entry.size, k.entry.mtime_ns,
              k.entry.mode, k.entry.ino,
              _b(k.entry.target) if k.entry.target is not None else None,
              k.psize, k.pmtime_ns,
              k.entry.ctime_ns if k.entry.kind is Kind.FILE else None,
              k.digest if k.entry.kind is Kind.FILE else None,
              k.pctime_ns if k.entry.kind is Kind.FILE else None) for k in done])

    def invalidate(self, paths: Iterable[str]) -> None:
        """Make rows prove nothing (the next save uploads those files), keeping what they
        say about the primary: a final check found them not saved after all. Their digest
        goes too: no append is ever made onto what may not be there."""
        with self._tx():
            self.db.executemany("UPDATE entries SET ctime_ns=-1, digest=NULL WHERE path=?",
                                [(_b(p),) for p in paths])

    def clear(self) -> None:
        with self._tx():
            self.db.execute("DELETE FROM entries")
            self.db.execute("DELETE FROM inflight")
            self.db.execute("DELETE FROM appending")

    # -- temporaries in flight ---------------------------------------------------------
    def add_inflight(self, side: str, pairs: Iterable[tuple[str, str]]) -> None:
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO inflight VALUES (?,?,?)",
                                [(side, _b(path), _b(tmp)) for path, tmp in pairs])

    def inflight(self, side: str) -> list[str]:
        rows = self.db.execute("SELECT tmp FROM inflight WHERE side=?", (side,))
        return [_s(r[0]) for r in rows]

    def drop_inflight(self, side: str, tmps: Iterable[str]) -> None:
        with self._tx():
            self.db.executemany("DELETE FROM inflight WHERE side=? AND tmp=?",
                                [(side, _b(t)) for t in tmps])

    # -- appends in flight (spaceport.engine.append) ----------------------------------------------
    def start_append(self, path: str, saved_size: int) -> None:
        """Before the first byte of an append is written: the primary file may from now on
        be longer than its row says, and that is this copy's own doing."""
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO appending VALUES (?, ?)",
                            (_b(path), saved_size))

    def appends_in_flight(self) -> dict[str, int]:
        """Every unfinished append: path -> the saved size it started from."""
        return {_s(path): size for path, size in
                self.db.execute("SELECT path, saved_size FROM appending")}

    def appending(self, path: str) -> int | None:
        """The saved size an unfinished append of ``path`` started from, if one is."""
        row = self.db.execute("SELECT saved_size FROM appending WHERE path=?",
                              (_b(path),)).fetchone()
        return None if row is None else row[0]

    def end_append(self, path: str, row: Known | None = None) -> None:
        """The append is complete (its row is stored, in the same transaction) or the
        primary file is back at its saved size (no row). One transaction: a row never
        stands beside a stale "in flight", which would let a later save take someone
        else's longer file for its own unfinished append."""
        with self._tx():
            if row is not None:
                self._store([row])
            self.db.execute("DELETE FROM appending WHERE path=?", (_b(path),))

    def _tx(self):
        return _Transaction(self.db, self.path)


class _Transaction:
    """BEGIN ... COMMIT; a full disk becomes VolumeFullError (one line, no traceback)."""

    def __init__(self, db: sqlite3.Connection, path: str):
        self.db, self.path = db, path

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, _tb):
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.OperationalError as failed:
            if not _full(failed):
                raise
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise full_error(self.path) from None
        if exc_type is not None and isinstance(exc, sqlite3.Error) and _full(exc):
            raise full_error(self.path) from None
