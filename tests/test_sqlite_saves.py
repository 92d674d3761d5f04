"""Saves of live SQLite databases: every database a snapshot, nothing referenced before it
lands (issue 11). Writers here are real processes committing while real saves run; the
counts they reach are in docs/RELIABILITY.md."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import write
from sqlite_helpers import (counter_state, integrity, open_copy, start_counter_writer, stop,
                            wait_for_file)

import spaceport.engine.snapshot as snapshot_mod
from spaceport.commands.deploy import deploy
from spaceport.commands.save import save
from spaceport.engine.index import Index
from spaceport.engine.snapshot import HEADER, SnapshotError, Snapshotter, is_database
from spaceport.errors import PartialSaveError
from spaceport.formats.marker import index_path
from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.store import WORK_CAPABILITIES, PosixStore
from spaceport.store.posix import PosixStore as _Posix
from spaceport.testing.onedatafs import OneDataFS, fuse_available

ROUNDS = int(os.environ.get("SPACEPORT_SQLITE_ROUNDS", "40"))
FUSE_ROUNDS = int(os.environ.get("SPACEPORT_SQLITE_FUSE_ROUNDS", "15"))
PROJECT_SAVES = int(os.environ.get("SPACEPORT_SQLITE_PROJECT_SAVES", "8"))
FUSE_OK, FUSE_WHY = fuse_available()
S = DEFAULT_STATUS_DIR
TEMPS = ".spaceport-tmp-*"  # not under a real name (one may be removed while frozen)


def make_db(path: str, rows: int = 10, wal: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (x)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    db.close()


def rows_in(path: str, scratch) -> int:
    db = open_copy(path, str(scratch))
    try:
        assert integrity(db) == "ok"
        return db.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        db.close()


def state_of(paths: list[str]) -> dict:
    """Bytes and mtimes of files: a snapshot must not change any of them."""
    out = {}
    for path in paths:
        if os.path.exists(path):
            with open(path, "rb") as f:
                out[path] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def run_script(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], check=True)


# --------------------------------------------------------------------------- the module
def test_databases_are_recognised_by_header_not_by_name(tmp_path):
    make_db(str(tmp_path / "w/notes.txt"))
    write(tmp_path / "w", "fake.sqlite", b"not a database" * 100)
    write(tmp_path / "w", "short.db", HEADER)  # a header but no whole page
    store = PosixStore(str(tmp_path / "w"), WORK_CAPABILITIES, temp_token="11111111")
    sizes = {n: os.path.getsize(tmp_path / "w" / n) for n in os.listdir(tmp_path / "w")}
    assert {n for n in sizes if is_database(store, n, sizes[n])} == {"notes.txt"}


CRASHED_WAL = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE t (x)")
for i in range(50):
    db.execute("INSERT INTO t VALUES (?)", (i,))
os._exit(0)  # no checkpoint: the commits are only in the -wal
"""
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA wal_autocheckpoint=0")
db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(35)])
print("ready", flush=True)
sys.stdin.read()  # holds the database open until the test closes stdin
"""
CRASHED_ROLLBACK = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("CREATE TABLE t (x)")
db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(30)])
db.execute("PRAGMA cache_size=1"); db.execute("BEGIN")
for i in range(20000):  # spills pages into the file: the -journal is hot after the crash
    db.execute("INSERT INTO t VALUES (?)", (os.urandom(100),))
os._exit(0)
"""


@pytest.mark.parametrize("case", ["rollback", "clean-wal", "open-wal", "crashed-wal",
                                  "crashed-wal-no-shm", "hot-journal"])
def test_snapshot_is_committed_state_and_leaves_the_working_copy_untouched(tmp_path, case):
    db = str(tmp_path / "work" / "x.db")
    os.makedirs(os.path.dirname(db))
    holder = None
    if case in ("rollback", "clean-wal"):
        make_db(db, 40, wal=case == "clean-wal")
        expected = 40
    elif case == "open-wal":  # another process holds it open, commits only in the -wal
        make_db(db, 5, wal=True)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        assert holder.stdout.readline() == b"ready\n"
        expected = 40
    elif case.startswith("crashed-wal"):
        run_script(CRASHED_WAL, db)
        if case.endswith("no-shm"):
            os.unlink(db + "-shm")
        expected = 50
    else:
        run_script(CRASHED_ROLLBACK, db)
        assert os.path.getsize(db + "-journal") > 0
        expected = 30
    files = [db + s for s in ("", "-wal", "-shm", "-journal")]
    before, names = state_of(files), sorted(os.listdir(tmp_path / "work"))
    fd = Snapshotter(str(tmp_path / "scratch")).take(db)
    with os.fdopen(fd, "rb") as f, open(tmp_path / "out.db", "wb") as out:
        out.write(f.read())
    assert state_of(files) == before, "the snapshot changed the working copy"
    assert sorted(os.listdir(tmp_path / "work")) == names
    assert os.listdir(tmp_path / "scratch") == []
    assert rows_in(str(tmp_path / "out.db"), tmp_path) == expected
    if holder:
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0


def test_a_damaged_database_cannot_be_snapshotted(tmp_path):
    make_db(str(tmp_path / "x.db"), 2000)
    with open(tmp_path / "x.db", "r+b") as f:  # the schema page, after the header
        f.seek(100)
        f.write(b"\xff" * 1000)
    with pytest.raises(SnapshotError):
        Snapshotter(str(tmp_path / "scratch")).take(str(tmp_path / "x.db"))


# --------------------------------------------------------------------------- saves
@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch):
    monkeypatch.setattr(snapshot_mod, "RACY_SECONDS", 0.3)


def test_wal_commits_are_saved_and_companions_never_uploaded(dirs, opts, tmp_path):
    primary, work = dirs
    deploy(primary, work, opts)
    db_path = os.path.join(work, "Runs/r1/run.db")
    make_db(db_path, 3, wal=True)
    holder = sqlite3.connect(db_path, isolation_level=None)  # keeps -wal and -shm alive
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("INSERT INTO t VALUES (100)")
    report = save(work, opts)
    assert report.snapshots == 1
    on_primary = os.path.join(primary, "Runs/r1/run.db")
    assert rows_in(on_primary, tmp_path) == 4
    assert sorted(os.listdir(os.path.dirname(on_primary))) == ["run.db"]
    # A commit that only reaches the -wal still counts as a change of the database.
    db_mtime = os.stat(db_path).st_mtime_ns
    time.sleep(0.01)
    holder.execute("INSERT INTO t VALUES (101)")
    assert os.stat(db_path).st_mtime_ns == db_mtime
    assert save(work, opts).snapshots == 1
    assert rows_in(on_primary, tmp_path) == 5
    # Changed less than RACY_SECONDS before it was taken: its mtime is not trusted yet, so
    # it is saved once more; after that, a save with nothing changed uploads nothing.
    assert save(work, opts).snapshots == 1
    time.sleep(snapshot_mod.RACY_SECONDS)
    assert save(work, opts).snapshots == 1
    assert save(work, opts).uploaded == 0
    holder.close()


def test_companions_an_older_version_saved_go_to_the_trash(dirs, opts, tmp_path):
    primary, work = dirs
    make_db(os.path.join(primary, "a.sqlite"), 3)
    make_db(os.path.join(primary, "b.sqlite"), 3)
    # What an older spaceport saved: journals beside the databases (here: all zeros, as a
    # journal in PERSIST mode looks; a non-empty one would be rolled into the snapshot).
    write(primary, "a.sqlite-journal", b"\0" * 512)
    write(primary, "b.sqlite-journal", b"\0" * 512)
    deploy(primary, work, opts)
    make_db(os.path.join(work, "a.sqlite"), 2)  # changed: its snapshot replaces it
    write(work, "a.sqlite-journal", b"\0" * 512)  # (SQLite removed it; a stale one again)
    os.unlink(os.path.join(work, "b.sqlite-journal"))  # gone from work: an ordinary delete
    report = save(work, opts)
    assert report.snapshots == 1 and report.deleted == 2
    assert sorted(n for n in os.listdir(primary) if n != S) == ["a.sqlite", "b.sqlite"]
    trash = os.path.join(primary, S, "trash", report.trash_batch)
    assert sorted(os.listdir(trash)) == ["a.sqlite-journal", "b.sqlite-journal"]
    assert rows_in(os.path.join(primary, "a.sqlite"), tmp_path) == 5
    assert os.path.exists(os.path.join(work, "a.sqlite-journal"))  # work is never touched
    index = Index(index_path(work))
    try:
        assert index.get("a.sqlite-journal") is None and index.get("b.sqlite-journal") is None
    finally:
        index.close()
    time.sleep(snapshot_mod.RACY_SECONDS)
    save(work, opts)
    assert save(work, opts).uploaded == 0


def test_files_land_first_then_databases_runs_before_the_project(dirs, opts, monkeypatch):
    primary, work = dirs
    deploy(primary, work, opts)
    for run in ("000002_Import", "000010_Crop"):
        write(work, f"Runs/{run}/extra/vol.mrc", os.urandom(5000))
        write(work, f"Runs/{run}/logs/run.stdout", b"log")
        make_db(os.path.join(work, f"Runs/{run}/logs/run.db"))
        make_db(os.path.join(work, f"Runs/{run}/volumes.sqlite"))
    write(work, "Logs/project.log", b"log")
    make_db(os.path.join(work, "project.sqlite"))
    landed = []
    commit = _Posix.commit_temp

    def recording(self, fd, tmp, rel, **kw):
        st = commit(self, fd, tmp, rel, **kw)
        if self.root == primary and not rel.startswith(S):  # not the lock's heartbeat
            landed.append(rel)
        return st

    monkeypatch.setattr(_Posix, "commit_temp", recording)
    assert save(work, opts).snapshots == 5
    dbs = [p for p in landed if p.endswith((".db", ".sqlite"))]
    assert landed[-len(dbs):] == dbs and len(landed) == 10  # every plain file came first
    assert dbs[-1] == "project.sqlite"  # last: it names the runs
    for run in ("000002_Import", "000010_Crop"):  # a run's run.db names its output sets
        assert dbs.index(f"Runs/{run}/volumes.sqlite") < dbs.index(f"Runs/{run}/logs/run.db")


def test_a_failed_file_holds_the_databases_above_it(dirs, opts, monkeypatch):
    primary, work = dirs
    deploy(primary, work, opts)
    write(work, "Runs/1/extra/bad.mrc", b"x")
    make_db(os.path.join(work, "Runs/1/run.db"))
    make_db(os.path.join(work, "Runs/2/run.db"))
    make_db(os.path.join(work, "project.sqlite"))
    commit = _Posix.commit_temp

    def failing(self, fd, tmp, rel, **kw):
        if rel == "Runs/1/extra/bad.mrc":
            self.discard_temp(fd, tmp)
            raise PermissionError(errno.EACCES, "refused", rel)
        return commit(self, fd, tmp, rel, **kw)

    monkeypatch.setattr(_Posix, "commit_temp", failing)
    with pytest.raises(PartialSaveError) as info:
        save(work, opts)
    assert "Runs/1/extra/bad.mrc" in str(info.value)
    assert os.path.exists(os.path.join(primary, "Runs/2/run.db"))  # its folder is whole
    assert not os.path.exists(os.path.join(primary, "Runs/1/run.db"))
    assert not os.path.exists(os.path.join(primary, "project.sqlite"))
    monkeypatch.setattr(_Posix, "commit_temp", commit)
    save(work, opts)  # the held ones land once the file is in
    assert os.path.exists(os.path.join(primary, "Runs/1/run.db"))
    assert os.path.exists(os.path.join(primary, "project.sqlite"))


def test_a_file_that_vanishes_before_its_upload_is_a_deletion(dirs, opts, monkeypatch):
    primary, work = dirs
    write(primary, "Runs/1/tmp/scratch.dat", b"old")
    for i in range(4):  # so that one deletion is no mass deletion
        write(primary, f"Runs/1/extra/f{i}", b"kept")
    deploy(primary, work, opts)
    write(work, "Runs/1/tmp/scratch.dat", b"newer")
    write(work, "Runs/1/tmp/other.dat", b"new")
    from spaceport.engine.transfer import Copier
    copy_once = Copier._copy_once

    def cleantmp(self, job):  # Scipion's cleanTmp, between the scan and the uploads
        shutil.rmtree(os.path.join(work, "Runs/1/tmp"), ignore_errors=True)
        return copy_once(self, job)

    monkeypatch.setattr(Copier, "_copy_once", cleantmp)
    report = save(work, opts)  # no error
    assert report.vanished == 2 and report.uploaded == 0 and report.deleted == 0
    monkeypatch.setattr(Copier, "_copy_once", copy_once)
    # The next save deletes it, after the databases changed with it would have landed.
    report = save(work, opts)
    assert report.deleted == 1
    assert not os.path.exists(os.path.join(primary, "Runs/1/tmp/scratch.dat"))
    trash = os.path.join(primary, S, "trash", report.trash_batch, "Runs/1/tmp/scratch.dat")
    assert open(trash, "rb").read() == b"old"  # the old version is kept in the trash


def test_a_database_that_keeps_changing_and_cannot_be_snapshotted_is_not_saved(
        dirs, opts, tmp_path):
    primary, work = dirs
    deploy(primary, work, opts)
    path = os.path.join(work, "Runs/1/broken.sqlite")
    # Big enough that a copy takes longer than the filesystem's timestamp tick.
    write(work, "Runs/1/broken.sqlite", HEADER + os.urandom((48 << 20) - len(HEADER)))
    write(work, "Runs/1/still.sqlite", HEADER + b"\xff" * (4096 - len(HEADER)))
    done = threading.Event()

    def scribble():  # a damaged database that something keeps writing to
        while not done.is_set():
            with open(path, "r+b") as f:
                f.seek(random.randrange(1, 12000) * 4096)
                f.write(os.urandom(4096))
            time.sleep(0.0005)

    thread = threading.Thread(target=scribble)
    thread.start()
    try:
        with pytest.raises(PartialSaveError) as info:
            save(work, opts)
    finally:
        done.set()
        thread.join()
    assert "Runs/1/broken.sqlite" in str(info.value) and "still" not in str(info.value)
    assert not os.path.exists(os.path.join(primary, "Runs/1/broken.sqlite"))  # nothing torn
    # A damaged database that holds still is saved as it is.
    assert open(os.path.join(primary, "Runs/1/still.sqlite"), "rb").read()[:16] == HEADER
    assert not [n for n in os.listdir(os.path.join(primary, "Runs/1")) if "tmp" in n]
    save(work, opts)  # now it holds still: saved as it is
    assert os.path.exists(os.path.join(primary, "Runs/1/broken.sqlite"))


# --------------------------------------------------------------------------- live writers
def live_database_rounds(primary_path, backing, work, opts, mode, rounds, scratch):
    deploy(primary_path, work, opts)
    db_path = os.path.join(work, "Runs/000002/logs/run.db")
    os.makedirs(os.path.dirname(db_path))
    writer = start_counter_writer(db_path, mode)
    seen, changed = [], 0
    try:
        for _ in range(rounds):
            time.sleep(random.uniform(0, 0.05))
            report = save(work, opts)
            on_primary = os.path.join(backing, "Runs/000002/logs/run.db")
            seen.append(counter_state(on_primary, scratch))  # integrity and a committed state
            changed += report.snapshots
            assert sorted(os.listdir(os.path.dirname(on_primary))) == ["run.db"]
        assert writer.poll() is None, "the writer stopped"
    finally:
        stop(writer)
    assert seen == sorted(seen)  # never older than a previous save
    return seen, changed


@pytest.mark.parametrize("mode", ["rollback", "wal"])
def test_live_database_every_save_is_a_committed_state(dirs, opts, tmp_path, mode):
    primary, work = dirs
    seen, changed = live_database_rounds(primary, primary, work, opts, mode, ROUNDS, tmp_path)
    print(f"{mode}: {ROUNDS} saves under a live writer, {changed} snapshots landed, "
          f"counter {seen[0]}..{seen[-1]}, every one intact")
    assert changed >= ROUNDS * 3 // 4 and len(set(seen)) >= ROUNDS * 3 // 4


@pytest.mark.fuse
@pytest.mark.skipif(not FUSE_OK, reason=f"FUSE unavailable: {FUSE_WHY}")
@pytest.mark.parametrize("mode", ["rollback", "wal"])
def test_live_database_over_the_onedata_like_mount(tmp_path, opts, mode):
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    with OneDataFS(backing, mnt, meta_delay_ms=5.0, attr_timeout=0.0) as fs:
        fs.start()
        seen, changed = live_database_rounds(str(mnt), str(backing), str(tmp_path / "work"),
                                             opts, mode, FUSE_ROUNDS, tmp_path)
    print(f"{mode} over FUSE: {FUSE_ROUNDS} saves, {changed} snapshots, every one intact")
    assert changed >= FUSE_ROUNDS * 3 // 4


# A project like Scipion's: runs, each with files and a run.db, listed in project.sqlite.
# A run's files are written before the run is listed; a run is unlisted before its folder
# is deleted; a run.db grows before its listed count does (the order Scipion keeps).
PROJECT_WRITER = textwrap.dedent("""
    import hashlib, os, random, shutil, sqlite3, sys, time
    root = sys.argv[1]
    top = sqlite3.connect(os.path.join(root, "project.sqlite"), isolation_level=None, timeout=60)
    top.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, folder TEXT, "
                "nrows INTEGER, sha TEXT, status TEXT)")
    open(os.path.join(root, ".ready"), "w").close()
    k = 0
    def run_db(folder):
        return sqlite3.connect(os.path.join(root, folder, "logs", "run.db"),
                               isolation_level=None, timeout=60)
    while True:
        k += 1
        folder = f"Runs/{k:06d}_Protocol"
        os.makedirs(os.path.join(root, folder, "extra"))
        os.makedirs(os.path.join(root, folder, "logs"))
        data = os.urandom(random.randint(1000, 60000))
        with open(os.path.join(root, folder, "extra", "output.mrc"), "wb") as f:
            f.write(data)
        db = run_db(folder)
        db.execute("CREATE TABLE rows (i INTEGER PRIMARY KEY, v BLOB)")
        n = random.randint(1, 50)
        db.executemany("INSERT INTO rows (v) VALUES (randomblob(200))", [()] * n)
        db.close()
        top.execute("INSERT INTO runs VALUES (?, ?, ?, ?, 'finished')",
                    (k, folder, n, hashlib.sha256(data).hexdigest()))
        live = [r for r in top.execute("SELECT id, folder, nrows FROM runs")]
        if len(live) > 3 and random.random() < 0.3:  # a run grows: its db first
            rid, f, nrows = random.choice(live)
            db = run_db(f)
            db.executemany("INSERT INTO rows (v) VALUES (randomblob(200))", [()] * 5)
            db.close()
            top.execute("UPDATE runs SET nrows = ? WHERE id = ?", (nrows + 5, rid))
        if len(live) > 25 or len(live) > 6 and random.random() < 0.25:  # deleteProtocol:
            rid, f, _ = random.choice(live[:-2])  # unlisted first, then deleted
            top.execute("DELETE FROM runs WHERE id = ?", (rid,))
            shutil.rmtree(os.path.join(root, f))
        time.sleep(random.uniform(0.01, 0.05))
""")


def _listing(root: str, folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs
                  in os.walk(os.path.join(root, folder)) for f in fs)


def check_project_snapshot(root: str, scratch: str) -> int:
    """Every run project.sqlite lists is there, whole; returns how many it lists."""
    top_path = os.path.join(root, "project.sqlite")
    if not os.path.exists(top_path):
        return 0
    top = open_copy(top_path, scratch)
    try:
        assert integrity(top) == "ok"
        runs = top.execute("SELECT folder, nrows, sha FROM runs").fetchall()
    finally:
        top.close()
    for folder, nrows, sha in runs:
        data = os.path.join(root, folder, "extra", "output.mrc")
        assert os.path.exists(data), (f"project.sqlite lists {folder}, its output is missing; "
                                      f"the folder holds {_listing(root, folder)}")
        with open(data, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha, f"{data} is not as listed"
        run = os.path.join(root, folder, "logs", "run.db")
        assert os.path.exists(run), f"project.sqlite lists {folder}, its run.db is missing"
        db = open_copy(run, scratch)
        try:
            assert integrity(db) == "ok"
            have = db.execute("SELECT count(*) FROM rows").fetchone()[0]
            assert have >= nrows, f"{run} has {have} rows, project.sqlite says {nrows}"
        finally:
            db.close()
    return len(runs)


@pytest.mark.fuse
@pytest.mark.skipif(not FUSE_OK, reason=f"FUSE unavailable: {FUSE_WHY}")
def test_multi_file_project_snapshots_of_the_primary_never_miss_a_reference(tmp_path, opts):
    """Saves run as real processes over the OneData-like mount while a writer works; each is
    frozen (SIGSTOP) at random moments and the primary is copied as a crash would leave it."""
    backing, mnt, work = tmp_path / "backing", tmp_path / "mnt", str(tmp_path / "work")
    backing.mkdir()
    mnt.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    frozen = checked = listed = held = 0
    saves: list[subprocess.Popen] = []
    with OneDataFS(backing, mnt, meta_delay_ms=2.0, attr_timeout=0.0) as fs:
        fs.start()
        deploy(str(mnt), work, opts)
        writer = subprocess.Popen([sys.executable, "-c", PROJECT_WRITER, work])
        wait_for_file(os.path.join(work, ".ready"), writer)
        try:
            for n in range(PROJECT_SAVES):
                proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", work,
                                         "--jobs", "4", "--allow-mass-delete"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                saves.append(proc)
                while proc.poll() is None:
                    time.sleep(random.uniform(0.05, 0.4))
                    try:
                        proc.send_signal(signal.SIGSTOP)
                    except ProcessLookupError:
                        break
                    if proc.poll() is None:
                        frozen += 1
                    copy = tmp_path / f"snap{checked}"
                    shutil.copytree(backing, copy, ignore=shutil.ignore_patterns(S, TEMPS))
                    listed += check_project_snapshot(str(copy), str(scratch))
                    checked += 1
                    shutil.rmtree(copy)
                    proc.send_signal(signal.SIGCONT)
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err.decode()
                held += b"wait for the next save" in err
                listed += check_project_snapshot(str(backing), str(scratch))
                checked += 1
            assert writer.poll() is None, "the writer stopped"
            # Under heavy churn every save may hold its databases (a run vanished under
            # it); once the writer is gone, the next save lands them all, and the primary
            # must then list its runs, each complete.
            stop(writer)
            last = subprocess.run([sys.executable, "-m", "spaceport", "save", work, "--jobs",
                                   "4", "--allow-mass-delete"], capture_output=True, timeout=120)
            assert last.returncode == 0, last.stderr.decode()
            listed += check_project_snapshot(str(backing), str(scratch))
            checked += 1
        finally:
            stop(writer)
            for proc in saves:  # one stopped mid-run by a failed check
                proc.send_signal(signal.SIGCONT)
                stop(proc)
    print(f"multi-file project: {PROJECT_SAVES} saves, {checked} snapshots of the primary "
          f"({frozen} with a save frozen mid-run), {listed} run references checked, "
          f"{held} saves left databases for the next")
    assert frozen >= PROJECT_SAVES and listed > 0


# -- checksums that understand snapshots (issue 18) -------------------------------------------
def change_in_place(path: str, sql: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(sql)
    db.close()


@pytest.mark.skipif(not fuse_available()[0], reason="FUSE unavailable")
def test_checksum_compares_databases_as_snapshots_and_finds_a_real_difference(tmp_path):
    from conftest import run_cli
    from spaceport.engine.content import SQLITE_OWN
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    with OneDataFS(str(backing), str(mnt), attr_timeout=0.0) as _:
        primary, work = str(mnt / "p"), str(tmp_path / "w")
        os.mkdir(primary)
        assert run_cli("deploy", primary, work).code == 0
        make_db(os.path.join(work, "project.sqlite"), rows=200)
        make_db(os.path.join(work, "Runs/1/logs/run.db"), rows=50)
        # A WAL database with commits only in its -wal, its writer still connected.
        os.makedirs(os.path.join(work, "Runs/1/extra"))
        live = sqlite3.connect(os.path.join(work, "Runs/1/extra/set.sqlite"),
                               isolation_level=None)
        live.execute("PRAGMA journal_mode=WAL")
        live.execute("PRAGMA wal_autocheckpoint=0")
        live.execute("CREATE TABLE items (i INTEGER PRIMARY KEY, v TEXT)")
        live.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in
                                                             range(300)])
        write(work, "Runs/1/extra/plain.txt", b"plain")
        try:
            assert run_cli("save", work).code == 0
            time.sleep(1.1)  # past the racy second: the next save records them
            assert run_cli("save", work).code == 0
            there = os.path.join(str(backing), "p", "project.sqlite")
            with open(there, "rb") as a, open(os.path.join(work, "project.sqlite"), "rb") as b:
                ours, theirs = b.read(), a.read()
            differ = [i for i in range(100) if ours[i] != theirs[i]]
            assert differ and all(any(s <= i < e for s, e in SQLITE_OWN) for i in differ)
            v = run_cli("verify", "--checksum", work)
            assert v.code == 0 and "identical" in v.out, v.out
            # A database really different on the primary: one value changed in place.
            change_in_place(there, "UPDATE t SET x = 'changed' WHERE rowid = 7")
            v = run_cli("verify", "--checksum", work)
            assert v.code == 1 and "content differs: project.sqlite" in v.out, v.out
            # And a byte of a page changed, the header left as it is (not a SQLite write).
            run_db = os.path.join(str(backing), "p", "Runs/1/logs/run.db")
            with open(run_db, "r+b") as f:
                f.seek(os.path.getsize(run_db) - 100)
                f.write(b"X")
            v = run_cli("verify", "--checksum", work)
            assert "content differs: Runs/1/logs/run.db" in v.out, v.out
        finally:
            live.close()
        # undeploy --checksum saves ours again and then passes (the live database closed).
        r = run_cli("undeploy", "--checksum", work)
        assert r.code == 0, r.err
        assert "project.sqlite" in r.err and "not proven saved" in r.err
        assert rows_in(there, tmp_path) == 200 and rows_in(run_db, tmp_path) == 50
        # The primary's two changed databases are kept; ours, saved just before, is not
        # taken for someone else's.
        kept = sorted(os.path.relpath(os.path.join(d, n), os.path.join(str(backing), "p"))
                      .split(".conflict-")[0] for d, _, names in os.walk(backing)
                      for n in names if ".conflict-" in n)
        assert kept == ["Runs/1/logs/run.db", "project.sqlite"]
