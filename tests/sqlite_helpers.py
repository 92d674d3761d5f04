"""Live SQLite writers for tests (real processes), and checks of what landed on a primary."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap

# One transaction per step: a row i and the counter set to i. A committed state has
# count(rows) == n == max(i); a torn copy fails integrity_check or breaks that equation.
COUNTER_WRITER = textwrap.dedent("""
    import os, sqlite3, sys, time
    path, mode = sys.argv[1], sys.argv[2]
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    if mode == "wal":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS rows (i INTEGER PRIMARY KEY, payload BLOB)")
    db.execute("CREATE TABLE IF NOT EXISTS counter (n INTEGER)")
    if db.execute("SELECT count(*) FROM counter").fetchone()[0] == 0:
        db.execute("INSERT INTO counter VALUES (0)")
    n = db.execute("SELECT n FROM counter").fetchone()[0]
    open(path + ".ready", "w").close()
    while True:
        n += 1
        db.execute("BEGIN IMMEDIATE")
        # Pages all over the file change in each transaction: a torn copy shows.
        db.execute("INSERT INTO rows VALUES (?, randomblob(300))", (n,))
        db.execute("UPDATE rows SET payload = randomblob(300) WHERE i = ?", (n // 2 + 1,))
        db.execute("UPDATE counter SET n = ?", (n,))
        db.execute("COMMIT")
        time.sleep(0.0005)  # still hundreds of commits a second, without taking a core
""")


def start_counter_writer(path: str, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", COUNTER_WRITER, path, mode])
    wait_for_file(path + ".ready", proc)
    os.unlink(path + ".ready")
    return proc


def wait_for_file(path: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import time
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"the writer exited with {proc.returncode}"
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def open_copy(path: str, scratch: str) -> sqlite3.Connection:
    """A connection to a private copy of the database file at ``path`` (alone, as a
    restore would find it): checking it never changes what is checked."""
    fd, copy = tempfile.mkstemp(suffix=".db", dir=scratch)
    os.close(fd)
    shutil.copyfile(path, copy)
    return sqlite3.connect(copy)


def integrity(db: sqlite3.Connection) -> str:
    return db.execute("PRAGMA integrity_check").fetchone()[0]


def counter_state(path: str, scratch: str) -> int:
    """The counter of a database made by COUNTER_WRITER; asserts it is a committed state."""
    db = open_copy(path, scratch)
    try:
        assert integrity(db) == "ok", f"{path}: {integrity(db)}"
        n = db.execute("SELECT n FROM counter").fetchone()[0]
        count, top = db.execute("SELECT count(*), coalesce(max(i), 0) FROM rows").fetchone()
    except sqlite3.DatabaseError as exc:
        raise AssertionError(f"{path} is not a committed state: {exc}") from exc
    finally:
        db.close()
    assert count == n == top, f"{path}: counter {n}, {count} rows, last row {top}"
    return n
