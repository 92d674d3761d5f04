"""SQLite databases in a working copy: recognised by their header, saved as snapshots.

A database that is written while a save runs cannot be copied byte by byte: the copy mixes
pages of several transactions, and its ``-journal`` or ``-wal`` is read at another moment.
So a database is copied with SQLite's online backup API from a read-only connection that
holds one read transaction for the whole copy: the result is one committed state.

Nothing is written to the working copy and nothing is checkpointed there:

* a database with a ``-shm`` (a WAL database somebody has open) is opened with
  ``mode=ro&readonly_shm=1``: the ``-shm`` is mapped read-only and SQLite reads the WAL
  itself (its "unreliable shm" path), so neither the ``-shm`` nor the ``-wal`` changes;
* a rollback-journal database is opened with ``mode=ro``: a reader takes a shared lock and
  writes nothing;
* a WAL database nobody has open (no ``-wal``, no ``-shm``) cannot be opened read-only
  without SQLite creating them, so it is read with ``immutable=1`` and counts only if the
  file did not change during the read (a checkpoint is the only thing that writes it);
* what a crashed writer left (a hot ``-journal``, or a ``-wal`` without ``-shm``) is copied
  with the database into the scratch folder, where SQLite rolls it back or replays it.

The snapshot is written into a scratch file on the working volume (local, fast): writing it
through SQLite's pager straight onto a OneData mount would cost a round trip per page and
leave a journal beside the temporary. The caller copies the scratch file into the
temporary on the primary in large chunks and renames it into place.

A ``-journal``, ``-wal`` or ``-shm`` beside a database is part of that database: it is never
uploaded on its own (:func:`fold_companions`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat as stat_mod
import threading
import time
from urllib.parse import quote

from ..store.base import Store
from .scan import Entry, Kind, ScanResult

log = logging.getLogger(__name__)

HEADER = b"SQLite format 3\x00"
COMPANIONS = ("-journal", "-wal", "-shm")
# How long a snapshot waits for a read lock (a writer holding the database) before the
# save falls back to copying the file if it holds still.
BUSY_SECONDS = 10.0
RACY_SECONDS = 1.0  # see is_racy()
_IMMUTABLE_ATTEMPTS = 3
_STABLE_ATTEMPTS = 3
_WAL_FORMAT = 2  # bytes 18 and 19 of the header: 1 rollback journal, 2 WAL


class SnapshotError(Exception):
    """The database could not be read as a snapshot (locked too long, damaged, unreadable):
    the caller falls back to the stable-copy rule."""


def may_be_database(size: int) -> bool:
    """A database file is whole pages of at least 512 bytes: the cheap test before reading
    a header, so that most files of a project are never opened to be classified."""
    return size >= 512 and size % 512 == 0


def fd_is_database(fd: int, size: int) -> bool:
    return may_be_database(size) and os.pread(fd, len(HEADER), 0) == HEADER


def is_database(store: Store, path: str, size: int) -> bool:
    """True if the file at ``path`` starts with the SQLite header (not judged by name)."""
    if not may_be_database(size):
        return False
    try:
        fd = store.open_read(path)
    except OSError:
        return False
    try:
        return os.pread(fd, len(HEADER), 0) == HEADER
    except OSError:
        return False
    finally:
        os.close(fd)


def companion_base(path: str) -> tuple[str, str] | None:
    """(database path, suffix) if ``path`` is named like a companion file, else None."""
    for suffix in COMPANIONS:
        if path.endswith(suffix) and len(path) > len(suffix) and path[-len(suffix) - 1] != "/":
            return path[: -len(suffix)], suffix
    return None


def fold_companions(scan: ScanResult, store: Store) -> dict[str, list[str]]:
    """Take the companions of every database out of ``scan``; returns {database: companions}.

    A companion is never saved on its own: the database's snapshot holds what it means. A
    ``-wal`` holds commits the database file does not show yet, so its mtime is folded into
    the database's (the later of the two): a commit to a WAL database makes the database
    count as changed. A companion that an older version saved is in the index: taken out of
    the scan, it is deleted from the primary by the ordinary deletion path (to the trash).
    """
    entries = scan.entries
    found: dict[str, list[str]] = {}
    for path in [p for p in entries if companion_base(p)]:
        entry = entries[path]
        base, suffix = companion_base(path)  # type: ignore[misc]
        db = entries.get(base)
        if entry.kind is not Kind.FILE or db is None or db.kind is not Kind.FILE:
            continue
        if not (db.path in found or is_database(store, base, db.size)):
            continue
        found.setdefault(base, []).append(path)
        del entries[path]
        if suffix == "-wal":
            db.mtime_ns = max(db.mtime_ns, entry.mtime_ns)
    return found


def folded_mtime_ns(store: Store, path: str, st: os.stat_result) -> int:
    """The database's mtime as :func:`fold_companions` counts it, from ``st`` and its -wal."""
    try:
        wal = store.lstat(path + "-wal")
    except OSError:
        return st.st_mtime_ns
    return max(st.st_mtime_ns, wal.st_mtime_ns) if stat_mod.S_ISREG(wal.st_mode) \
        else st.st_mtime_ns


def is_racy(mtime_ns: int, st: os.stat_result, at_ns: int) -> bool:
    """True if a database's mtime is too recent to be its signature.

    File times come from a coarse kernel clock (a tick of up to 10 ms): a commit in the same
    tick as the stat, rewriting pages in place, leaves size and mtime as they were, and a
    save that recorded them would never see that commit. A database stat'ed (at ``at_ns``,
    before its snapshot) within RACY_SECONDS of its last change is saved but not recorded,
    so the next save takes it again (git's "racily clean" entries, for the same reason).
    ``st.st_ctime_ns`` is as recent as any change to the file, from the same clock."""
    return at_ns - max(mtime_ns, st.st_ctime_ns) < RACY_SECONDS * 1e9


RUN_LOGS = "logs"  # Scipion keeps a run's own databases (run.db, steps.sqlite) here


def landing_levels(databases: list) -> list[list]:
    """Databases (anything with ``.path``) in the groups they land in, one after another.

    Deepest folder first, so that a database lands after the deeper ones it refers to and
    ``project.sqlite`` lands last. One exception, for Scipion's layout: a database in a
    folder named ``logs`` (a run's ``run.db``) names the output sets beside that folder, so
    it counts as being in the parent folder and lands right after that folder's others.
    """
    def key(path: str) -> tuple[int, int]:
        folder = path.rpartition("/")[0]
        parent, _, name = folder.rpartition("/")
        if name == RUN_LOGS:
            return (folder.count("/"), 0)  # the parent's depth, after the parent's others
        return (path.count("/"), 1)

    groups: dict[tuple[int, int], list] = {}
    for db in databases:
        groups.setdefault(key(db.path), []).append(db)
    return [groups[k] for k in sorted(groups, reverse=True)]


def split_databases(entries: list[Entry], store: Store) -> tuple[list[Entry], list[Entry]]:
    """(files that are not databases, databases), each in the order given."""
    plain, dbs = [], []
    for entry in entries:
        (dbs if is_database(store, entry.path, entry.size) else plain).append(entry)
    return plain, dbs


def _uri(path: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(os.fsencode(path), safe='/')}?{query}"


class Snapshotter:
    """Takes snapshots into a scratch folder on the working volume; thread-safe."""

    def __init__(self, scratch: str, busy_seconds: float = BUSY_SECONDS):
        self.scratch = scratch
        self.busy_seconds = busy_seconds
        self._count = 0
        self._lock = threading.Lock()
        self._early: dict[str, tuple[str, os.stat_result, int, int]] = {}
        self.unreadable: set[str] = set()  # no snapshot possible: the stable-copy rule
        os.makedirs(scratch, exist_ok=True)
        for name in os.listdir(scratch):  # leftovers of a killed run
            try:
                os.unlink(os.path.join(scratch, name))
            except OSError:
                pass

    def _scratch_name(self) -> str:
        with self._lock:
            self._count += 1
            return os.path.join(self.scratch, f"snap-{os.getpid()}-{self._count}.db")

    def take(self, path: str) -> int:
        """A consistent snapshot of the database at ``path``, as a read-only descriptor of
        an already unlinked scratch file. Raises SnapshotError (or FileNotFoundError if the
        database is gone)."""
        out = self._scratch_name()
        try:
            self._snapshot(path, out)
            fd = os.open(out, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            _remove_db(out)
        return fd

    def take_early(self, store: Store, paths: list[str]) -> None:
        """Snapshot these databases now (and forget earlier ones), before the rest of the
        save; :meth:`early` hands each one to its copy later. One that cannot be taken now
        is left out (see :meth:`has_early`)."""
        self.close()
        self.unreadable.clear()
        for path in paths:
            out = self._scratch_name()
            try:
                st = store.lstat(path)
                at = time.time_ns()
                sig = folded_mtime_ns(store, path, st)
                self._snapshot(store.abspath(path), out)
            except (OSError, SnapshotError) as exc:
                _remove_db(out)
                if isinstance(exc, SnapshotError):  # copied if it holds still (Copier)
                    self.unreadable.add(path)
                log.info("%s: no early snapshot (%s)", path, exc)
                continue
            self._early[path] = (out, st, sig, at)

    def has_early(self, path: str) -> bool:
        """Snapshotted early, or tried and found unreadable as a database."""
        return path in self._early or path in self.unreadable

    def early(self, path: str) -> tuple[int, os.stat_result, int, int] | None:
        """(descriptor, stat before, folded mtime, time of the stat) of the early snapshot
        of ``path``; the same one each time asked (a retried copy sends the same one)."""
        with self._lock:
            taken = self._early.get(path)
        if taken is None:
            return None
        out, st, sig, at = taken
        return os.open(out, os.O_RDONLY | os.O_CLOEXEC), st, sig, at

    def close(self) -> None:
        """Remove the early snapshots nobody used."""
        for out, *_ in self._early.values():
            _remove_db(out)
        self._early.clear()

    def _snapshot(self, path: str, out: str) -> None:
        with open(path, "rb") as f:  # FileNotFoundError: the database vanished
            header = f.read(100)
        if header[:16] != HEADER:
            raise SnapshotError("it is no longer a SQLite database")
        wal_format = header[18] == _WAL_FORMAT
        has_shm = os.path.exists(path + "-shm")
        has_wal = os.path.exists(path + "-wal")
        if has_shm:
            self._backup(_uri(path, mode="ro", readonly_shm="1"), out)
        elif wal_format and has_wal:
            log.info("%s: a -wal without -shm (left by a writer that stopped); the snapshot "
                     "replays it in a scratch copy", path)
            self._recover(path, "-wal", out)
        elif wal_format:
            self._immutable(path, out)
        else:
            try:
                self._backup(_uri(path, mode="ro"), out)
            except SnapshotError as exc:
                if getattr(exc.__cause__, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
                    raise
                log.info("%s: a hot -journal (left by a writer that stopped); the snapshot "
                         "rolls it back in a scratch copy", path)
                self._recover(path, "-journal", out)

    def _backup(self, uri: str, out: str) -> None:
        """The backup API inside one read transaction: one committed state, whole."""
        try:
            src = sqlite3.connect(uri, uri=True, timeout=self.busy_seconds,
                                  isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot open it read-only ({exc})") from exc
        try:
            src.execute("BEGIN")
            # The first read takes the read lock (waiting up to busy_seconds for a writer);
            # the backup then runs in this transaction, so no commit can come between pages.
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            dst = sqlite3.connect(out, isolation_level=None, check_same_thread=False)
            try:
                src.backup(dst)
            finally:
                dst.close()
            src.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SnapshotError(str(exc)) from exc
        finally:
            src.close()

    def _immutable(self, path: str, out: str) -> None:
        """A WAL database nobody has open: read without locks, valid if it held still."""
        for _ in range(_IMMUTABLE_ATTEMPTS):
            before = os.stat(path)
            self._backup(_uri(path, mode="ro", immutable="1"), out)
            after = os.stat(path)
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
                return
            _remove_db(out)
            if os.path.exists(path + "-shm"):  # a writer opened it meanwhile
                self._backup(_uri(path, mode="ro", readonly_shm="1"), out)
                return
        raise SnapshotError("it kept changing while read")

    def _recover(self, path: str, suffix: str, out: str) -> None:
        """Copy the database and what a stopped writer left into scratch, and let SQLite
        roll back or replay it there: the working copy is not touched."""
        for _ in range(_STABLE_ATTEMPTS):
            sigs = [_sig(path), _sig(path + suffix)]
            shutil.copyfile(path, out)
            shutil.copyfile(path + suffix, out + suffix)
            if sigs == [_sig(path), _sig(path + suffix)]:
                break
            _remove_db(out)
        else:
            raise SnapshotError("it kept changing while copied")
        try:
            db = sqlite3.connect(out, isolation_level=None)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if suffix == "-wal":
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise SnapshotError(str(exc)) from exc
        for extra in COMPANIONS:
            try:
                os.unlink(out + extra)
            except FileNotFoundError:
                pass


def _sig(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _remove_db(path: str) -> None:
    for suffix in ("",) + COMPANIONS:
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass



def companions_before_databases(plan) -> None:
    """A companion an older version saved, beside a database this save uploads, is moved to
    the trash before the database lands: a stale -journal or -wal beside a fresh snapshot
    would be rolled back or replayed into it by the next SQLite that opens it."""
    uploading = {e.path for e in plan.uploads}
    early = [k for k in plan.deletes if k.entry.kind is Kind.FILE
             and (base := companion_base(k.entry.path)) and base[0] in uploading]
    if early:
        gone = {id(k) for k in early}
        plan.deletes = [k for k in plan.deletes if id(k) not in gone]
        plan.replaced.extend(early)
