"""Appends are appends (issue 12): a file that only grew is saved by writing its new bytes.

Everything runs on the project's OneData-like FUSE mount, with real ``spaceport``
processes; the bytes written on the primary are counted by the mount itself
(``OneDataFS.io_bytes``), never timed, and every file is compared byte for byte afterwards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import run_cli, write
from test_faults import Mount, needs_fuse, spaceport_proc

from spaceport.engine.append import TAIL
from spaceport.engine.digest import DIGEST_MIN_SIZE
from spaceport.engine.index import Index
from spaceport.formats.marker import index_path
from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR
LOG = "Logs/project.log"
# What a save writes on the primary besides file data: the heartbeat, a journal line.
OVERHEAD = 64 << 10

pytestmark = needs_fuse


def content(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def append_to(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def lines(n_bytes: int, seed: int) -> bytes:
    """Log-like text: numbered lines with random words, ``n_bytes`` long."""
    out, i = bytearray(), 0
    rnd = hashlib.sha256(b"%d" % seed).hexdigest().encode()
    while len(out) < n_bytes:
        out += b"%08d %d INFO run %s step %d\n" % (seed, i, rnd[: 8 + i % 40], i)
        i += 1
    return bytes(out[:n_bytes])


@pytest.fixture
def project(tmp_path):
    """A mounted primary, deployed; the working copy holds a 3 MiB log and a few small
    files, saved. Yields (mount, work)."""
    m = Mount(tmp_path, meta_delay_ms=0.5)
    work = str(tmp_path / "work")
    try:
        assert run_cli("deploy", m.path, work).code == 0
        write(work, LOG, lines(3 << 20, 0))
        for i in range(5):
            write(work, f"Runs/000{i}/extra/f{i}.xmd", os.urandom(2000 + i))
        saved = run_cli("save", work)
        assert saved.code == 0, saved.err
        yield m, work
    finally:
        m.stop()


def counted_save(m, work) -> tuple[int, dict]:
    """Run ``spaceport save``; returns (bytes written on the mount, calls by op)."""
    m.fs.reset_counts()
    res = run_cli("save", work)
    assert res.code == 0, res.out + res.err
    return m.fs.io_bytes()["write"], m.fs.counts()


def row(work: str, path: str):
    index = Index(index_path(work))
    try:
        return index.get(path), index.appends_in_flight()
    finally:
        index.close()


def conflicts(backing: str, path: str) -> list[str]:
    folder, name = os.path.split(os.path.join(backing, path))
    return [n for n in os.listdir(folder) if n.startswith(name + ".conflict-")]


def test_an_append_writes_only_the_new_bytes(project):
    m, work = project
    local = os.path.join(work, LOG)
    known, _ = row(work, LOG)
    assert known.digest == hashlib.sha256(content(local)).digest()  # of what was saved
    tail = lines(1 << 20, 1)
    append_to(local, tail)
    written, calls = counted_save(m, work)
    read = m.fs.io_bytes()["read"]
    print(f"append of {len(tail)} bytes to a {3 << 20}-byte log: {written} bytes written, "
          f"{read} bytes read, calls {sum(calls.values())} "
          f"({ {k: v for k, v in calls.items() if v} })")
    assert len(tail) <= written <= len(tail) + OVERHEAD
    # The proof reads back the last TAIL bytes saved, and nothing more of the log (the
    # rest read is the lock and the heartbeat).
    assert TAIL <= read <= TAIL + 8192
    assert calls["rename"] <= 1 and calls["create"] <= 1  # no temporary for the log
    assert content(os.path.join(m.backing, LOG)) == content(local)
    known, inflight = row(work, LOG)
    assert known.digest == hashlib.sha256(content(local)).digest() and not inflight
    assert (known.entry.size, known.psize) == (os.path.getsize(local),) * 2
    assert os.stat(os.path.join(m.backing, LOG)).st_mtime_ns == os.stat(local).st_mtime_ns
    written, _ = counted_save(m, work)  # nothing changed: nothing written but the beat
    assert written <= OVERHEAD


def test_repeated_appends_over_several_saves(project):
    m, work = project
    local = os.path.join(work, LOG)
    for r in range(6):
        tail = lines(200_000 + 50_000 * r, r + 10)
        append_to(local, tail)
        written, _ = counted_save(m, work)
        assert len(tail) <= written <= len(tail) + OVERHEAD, (r, written)
        assert content(os.path.join(m.backing, LOG)) == content(local), r


def test_a_small_file_that_grew_is_uploaded_whole_and_gets_no_digest(project):
    m, work = project
    small = os.path.join(work, "Runs/0000/extra/f0.xmd")
    append_to(small, b"more")
    written, _ = counted_save(m, work)
    assert written >= os.path.getsize(small)
    assert content(os.path.join(m.backing, "Runs/0000/extra/f0.xmd")) == content(small)
    assert row(work, "Runs/0000/extra/f0.xmd")[0].digest is None
    assert os.path.getsize(small) < DIGEST_MIN_SIZE


def test_a_changed_prefix_is_uploaded_whole(project):
    m, work = project
    local = os.path.join(work, LOG)
    ino = os.stat(local).st_ino
    with open(local, "r+b") as f:  # the same size rewritten in place, then grown
        f.seek(1000)
        f.write(b"X" * 10)
    append_to(local, lines(300_000, 2))
    assert os.stat(local).st_ino == ino
    written, calls = counted_save(m, work)
    assert written >= os.path.getsize(local)  # whole
    assert calls["rename"] >= 1  # through a temporary, atomically
    assert content(os.path.join(m.backing, LOG)) == content(local)
    assert conflicts(m.backing, LOG) == []
    append_to(local, lines(100_000, 3))  # and appends again from there
    written, _ = counted_save(m, work)
    assert written <= 100_000 + OVERHEAD
    assert content(os.path.join(m.backing, LOG)) == content(local)


def test_a_truncated_then_regrown_file_is_uploaded_whole(project):
    m, work = project
    local = os.path.join(work, LOG)
    saved = os.path.getsize(local)
    with open(local, "r+b") as f:
        f.truncate(1000)
        f.seek(1000)
        f.write(lines(saved + 500_000, 4))  # longer than saved, other bytes after 1000
    written, _ = counted_save(m, work)
    assert written >= os.path.getsize(local)
    assert content(os.path.join(m.backing, LOG)) == content(local)


def test_a_file_replaced_by_another_is_uploaded_whole(project):
    m, work = project
    local = os.path.join(work, LOG)
    old = content(local)
    write(work, LOG + ".new", old + lines(200_000, 5))  # the same prefix, but a new file
    os.replace(local + ".new", local)
    written, _ = counted_save(m, work)
    assert written >= os.path.getsize(local)
    assert content(os.path.join(m.backing, LOG)) == content(local)


def test_a_primary_file_changed_by_someone_else_is_kept_as_a_conflict_copy(project):
    m, work = project
    local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
    append_to(there, b"someone else's line\n")  # on the primary, behind spaceport's back
    theirs = content(there)
    append_to(local, lines(100_000, 6))
    res = run_cli("save", work)
    assert res.code == 0, res.err
    assert content(there) == content(local)  # ours, whole
    kept = conflicts(m.backing, LOG)
    assert len(kept) == 1 and content(os.path.join(os.path.dirname(there), kept[0])) == theirs
    assert "changed on the primary too" in res.err


def edit_in_place_times_put_back(path: str, offset: int, data: bytes, tmp_path) -> bytes:
    """Edit the primary's file in place and put its size and mtime back with ``touch -r``,
    as rsync -t or a careful script leaves it; returns its new content."""
    ref = str(tmp_path / "times-of-the-saved-version")
    open(ref, "w").close()
    subprocess.run(["touch", "-r", path, ref], check=True)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    subprocess.run(["touch", "-r", ref, path], check=True)
    assert os.path.getsize(path) == size
    return content(path)


def trashed(backing: str, path: str) -> list[bytes]:
    root = os.path.join(backing, S, "trash")
    return [content(os.path.join(root, b, path)) for b in sorted(os.listdir(root))
            if os.path.exists(os.path.join(root, b, path))] if os.path.isdir(root) else []


def test_a_primary_file_edited_in_place_with_its_times_put_back_is_never_appended_to(
        project, tmp_path):
    m, work = project
    local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
    saved = content(there)
    theirs = edit_in_place_times_put_back(there, 1000, b"THEIR EDIT", tmp_path)
    assert os.stat(there).st_mtime_ns == os.stat(local).st_mtime_ns
    append_to(local, lines(200_000, 40))
    res = run_cli("save", work)
    assert res.code == 0, res.err
    assert "1 file appended to" not in res.out
    assert "could not be proven to be the version this copy saved" in res.err, res.err
    # Ours whole on the primary, theirs whole in the trash: never a mix.
    assert content(there) == content(local) and content(there).startswith(saved)
    assert trashed(m.backing, LOG) == [theirs] and conflicts(m.backing, LOG) == []
    append_to(local, lines(50_000, 41))  # and appends again from there
    written, _ = counted_save(m, work)
    assert written <= 50_000 + OVERHEAD and content(there) == content(local)
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert content(there).startswith(saved) and trashed(m.backing, LOG) == [theirs]


def test_an_edit_near_the_end_is_caught_by_the_bytes_read_back(project, tmp_path):
    """A row that does not know the primary's ctime (written before index format 4, as a
    migrated index has it) still proves an append by the saved bytes read back."""
    import sqlite3

    m, work = project
    db = sqlite3.connect(index_path(work))
    db.execute("UPDATE entries SET pctime_ns = NULL")
    db.commit()
    db.close()
    assert row(work, LOG)[0].pctime_ns is None
    local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
    theirs = edit_in_place_times_put_back(there, os.path.getsize(there) - 100, b"THEIRS",
                                          tmp_path)
    append_to(local, lines(100_000, 42))
    res = run_cli("save", work)
    assert res.code == 0 and "1 file appended to" not in res.out, res.out
    assert content(there) == content(local)
    kept = conflicts(m.backing, LOG)
    assert len(kept) == 1 and content(os.path.join(os.path.dirname(there), kept[0])) == theirs


def test_undeploy_never_removes_a_copy_whose_version_the_primary_lost_in_place(
        project, tmp_path):
    m, work = project
    local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
    ours = content(local)
    theirs = edit_in_place_times_put_back(there, 2000, b"THEIRS", tmp_path)
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert "not proven saved" in r.err  # the final check saw it and saved ours again
    assert content(there) == ours and trashed(m.backing, LOG) == [theirs]


WRITER = textwrap.dedent("""
    import os, random, sys, time
    path, stop = sys.argv[1], sys.argv[2]
    rnd = random.Random(7)
    i = 0
    with open(path, "ab", buffering=0) as f:
        while not os.path.exists(stop):
            i += 1
            f.write(b"%08d " % i + bytes(rnd.choice(b"abcdefgh") for _ in range(rnd.randrange(20, 3000))) + b"\\n")
            time.sleep(0.005 + rnd.random() * 0.075)
""")


def test_a_writer_appending_while_saves_run_never_leaves_a_wrong_byte(project, tmp_path):
    m, work = project
    local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
    stop = str(tmp_path / "stop-writer")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, local, stop])
    outcomes, appended = [], 0
    m.fs.reset_counts()
    try:
        for r in range(8):
            time.sleep(0.2)
            res = run_cli("save", work)
            assert res.code in (0, 1) and "Traceback" not in res.err, res
            outcomes.append(res.code)
            appended += "1 file appended to" in res.out
            # The writer only appends: whatever landed must be a prefix of the file now.
            landed, now = content(there), content(local)
            assert now.startswith(landed), f"round {r}: the primary holds a wrong byte"
            assert not [n for n in os.listdir(os.path.dirname(there)) if "conflict" in n]
    finally:
        open(stop, "w").close()
        assert writer.wait(timeout=20) == 0
    during = m.fs.io_bytes()["write"]
    written, _ = counted_save(m, work)  # the quiet save
    assert content(there) == content(local)
    grown = len(content(local)) - (3 << 20)
    print(f"8 saves beside a writer (exit codes {outcomes}, {appended} appended): "
          f"{during} bytes written while the log grew by {grown}; the quiet save wrote "
          f"{written}")
    assert appended >= 2  # the writer leaves gaps: saves append between its lines



# -- a save killed during an append ----------------------------------------------------
def hold_points(tail: int) -> list[dict]:
    """Where the killed save is held: at the first write of the tail, in its middle, at its
    last write (the mount takes writes of 1 MiB), at the mtime, at the fsync, at the close
    (its flush: the release that follows is not waited for)."""
    writes = tail // (1 << 20)
    return [dict(op="write", after=0), dict(op="write", after=writes // 2),
            dict(op="write", after=max(writes - 1, 0)), dict(op="utimens"),
            dict(op="fsync"), dict(op="flush")]


@pytest.mark.parametrize("point", range(6))
def test_a_save_killed_during_an_append_leaves_the_prefix_and_the_next_save_finishes(
        tmp_path, point):
    m = Mount(tmp_path, meta_delay_ms=0.5)
    work = str(tmp_path / "work")
    try:
        assert run_cli("deploy", m.path, work).code == 0
        write(work, LOG, lines(3 << 20, 20))
        assert run_cli("save", work).code == 0
        local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
        saved = content(local)
        tail = lines(6 << 20, 21)
        append_to(local, tail)
        where = hold_points(len(tail))[point]
        gate = m.fs.hold(path="/" + LOG, timeout=60, **where)
        proc = spaceport_proc("save", work)
        try:
            m.fs.wait_held(gate, timeout=60)
            proc.send_signal(signal.SIGKILL)  # it dies as the held call returns
        finally:
            m.fs.clear_stalls()
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # The crash rule: the saved prefix, byte for byte, then part of the tail at most.
        after_kill = content(there)
        assert after_kill[:len(saved)] == saved, where
        assert (saved + tail).startswith(after_kill), where
        print(f"killed at {where}: {len(after_kill) - len(saved)} of {len(tail)} new bytes "
              "had landed")
        known, inflight = row(work, LOG)
        assert known.entry.size == len(saved)  # the index records no unfinished append
        assert inflight == {LOG: len(saved)}
        written, _ = counted_save(m, work)
        assert content(there) == content(local), where
        assert written <= len(tail) + OVERHEAD, (where, written)  # redone, not whole
        assert conflicts(m.backing, LOG) == []
        known, inflight = row(work, LOG)
        assert known.entry.size == len(saved) + len(tail) and not inflight
    finally:
        m.stop()


# -- the daemon -------------------------------------------------------------------------
def test_a_daemon_autosaving_a_growing_log_writes_only_what_grew(tmp_path, daemons):
    m = Mount(tmp_path, meta_delay_ms=0.5)
    work = str(tmp_path / "work")
    try:
        d = daemons(m.path, work)
        d.wait_phase("running")
        local, there = os.path.join(work, LOG), os.path.join(m.backing, LOG)
        write(work, LOG, lines(4 << 20, 30))
        d.wait_for(lambda: os.path.exists(there) and content(there) == content(local), 60,
                   "the first autosave of the log")
        m.fs.reset_counts()
        grown, saves = 0, d.status()["saves"]["ok"]
        for r in range(6):
            tail = lines(300_000, 31 + r)
            append_to(local, tail)
            grown += len(tail)
            d.wait_for(lambda: os.path.getsize(there) == os.path.getsize(local), 60,
                       f"autosave {r}")
        saves = d.status()["saves"]["ok"] - saves
        written = m.fs.io_bytes()["write"]
        print(f"daemon: the log grew by {grown} bytes over {saves} autosaves; "
              f"{written} bytes written on the mount")
        assert content(there) == content(local)
        assert written <= grown + OVERHEAD * max(saves, 1), written
        d.signal(signal.SIGTERM)
        assert d.wait_exit(60) == 0, d.log()
    finally:
        m.stop()


def test_the_first_growth_after_a_deploy_writes_only_the_new_bytes(tmp_path):
    """Issue 21: a 200 MB file that came from the deploy and grew by 5 MB cost 205 MB at the
    next save (no digest for staged-in files). The stage-in hashes the bytes as they pass
    by: the primary is read once, and the save writes the 5 MB alone."""
    m = Mount(tmp_path, meta_delay_ms=0.2)
    work = str(tmp_path / "work")
    big, grown = 200 * 10**6, 5 * 10**6
    try:
        path = os.path.join(m.backing, LOG)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:  # 200 MB of log lines, written beside the mount
            block = lines(1 << 20, 7)
            for _ in range(big // len(block)):
                f.write(block)
            f.write(block[: big % len(block)])
        m.fs.reset_counts()
        deployed = run_cli("deploy", m.path, work, timeout=300)
        assert deployed.code == 0, deployed.err
        read_at_deploy = m.fs.io_bytes()["read"]
        known, _ = row(work, LOG)
        local = os.path.join(work, LOG)
        with open(local, "rb") as f:
            assert known.digest == hashlib.file_digest(f, "sha256").digest()
        append_to(local, lines(grown, 8))
        written, calls = counted_save(m, work)
        print(f"stage-in of a {big}-byte file read {read_at_deploy} bytes of the primary; "
              f"the save after it grew by {grown} bytes wrote {written} bytes "
              f"({calls['create']} create, {calls['rename']} rename)")
        assert read_at_deploy <= big + OVERHEAD  # read once: hashed on the way
        assert grown <= written <= grown + OVERHEAD
        assert os.path.getsize(path) == big + grown
        with open(path, "rb") as a, open(local, "rb") as b:
            assert hashlib.file_digest(a, "sha256").digest() == \
                hashlib.file_digest(b, "sha256").digest()
    finally:
        m.stop()


def test_without_the_stage_in_digest_the_same_growth_uploads_the_whole_file(tmp_path):
    """The negative control of the test above: the same growth of a staged-in file whose
    row has no digest (as before issue 21) is uploaded whole, and the count shows it."""
    m = Mount(tmp_path, meta_delay_ms=0.2)
    work = str(tmp_path / "work")
    size = 8 << 20
    try:
        write(m.backing, LOG, lines(size, 3))
        assert run_cli("deploy", m.path, work).code == 0
        index = Index(index_path(work))
        try:
            known = index.get(LOG)
            assert known.digest is not None
            known.digest = None
            index.record([known])
        finally:
            index.close()
        append_to(os.path.join(work, LOG), lines(1 << 20, 4))
        written, _ = counted_save(m, work)
        assert written >= size + (1 << 20)
    finally:
        m.stop()
