"""``spaceport clone SOURCE DEST``: one way, incremental, read-only, parallel, with progress."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import run_cli, write
from daemon_helpers import make_tree

from spaceport.commands.clone import ClonePlan, clone, plan_clone, wipe_clone
from spaceport.commands.options import Options
from spaceport.engine.scan import Entry, Kind, ScanResult
from spaceport.errors import RefusedError, UsageError
from spaceport.store.base import temp_name
from spaceport.store.retry import RetryPolicy


def files(root: str) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, mtime_ns) of every file, outside .spaceport."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".spaceport"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (f.read(), os.lstat(path).st_mtime_ns)
    return out


def writable(root: str) -> list[str]:
    """Everything below ``root`` (outside .spaceport) that has a write bit."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".spaceport"]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_mode & 0o222:
                found.append(os.path.relpath(path, root))
    return found


@pytest.fixture
def opts() -> Options:
    return Options(jobs=4, retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.05))


@pytest.fixture
def src(tmp_path) -> str:
    root = str(tmp_path / "source")
    make_tree(root, 9, 3000, prefix="raw")
    write(root, "meta/params.json", b'{"voltage": 300}', mode=0o640)
    os.makedirs(os.path.join(root, "empty"))
    return root


def test_clone_is_an_exact_read_only_copy(src, tmp_path):
    dest = str(tmp_path / "dest")
    r = run_cli("clone", src, dest, "--jobs", "4")
    assert r.code == 0, r.err
    assert files(dest) == files(src)
    assert os.path.isdir(os.path.join(dest, "empty"))
    assert writable(dest) == []
    assert stat.S_IMODE(os.stat(f"{dest}/meta/params.json").st_mode) == 0o440
    with open(os.path.join(dest, ".spaceport", "clone.json")) as f:
        marker = json.load(f)
    assert marker["source"] == src and marker["last_clone"]
    assert "9 copied" not in r.out and "10 copied" in r.out


def test_rerun_copies_only_what_changed_and_removes_what_vanished(src, tmp_path, opts):
    dest = str(tmp_path / "dest")
    clone(src, dest, opts)
    write(src, "run0/raw0.mrc", b"re-processed")  # changed size and mtime
    write(src, "run1/raw1.mrc", b"x" * 3000, mtime_ns=1_600_000_000_000_000_000)  # mtime only
    write(src, "new/deep/file.tif", b"new")
    os.unlink(os.path.join(src, "run2", "raw2.mrc"))
    shutil.rmtree(os.path.join(src, "empty"))
    os.chmod(os.path.join(src, "meta", "params.json"), 0o600)  # mode only: no copy
    report = clone(src, dest, opts)
    assert (report.copied, report.removed, report.current) == (3, 2, 6)
    assert files(dest) == files(src)
    assert not os.path.exists(os.path.join(dest, "empty"))
    assert stat.S_IMODE(os.stat(f"{dest}/meta/params.json").st_mode) == 0o400
    assert writable(dest) == []
    again = clone(src, dest, opts)
    assert (again.copied, again.removed) == (0, 0)


def test_a_file_that_became_a_folder_and_back(src, tmp_path, opts):
    dest = str(tmp_path / "dest")
    clone(src, dest, opts)
    os.unlink(os.path.join(src, "run0", "raw0.mrc"))
    write(src, "run0/raw0.mrc/inside", b"now a folder")
    shutil.rmtree(os.path.join(src, "meta"))
    write(src, "meta", b"now a file")
    clone(src, dest, opts)
    assert files(dest) == files(src) and writable(dest) == []


def test_links_and_special_files_are_skipped_with_a_warning(src, tmp_path, caplog):
    os.symlink("run0/raw0.mrc", os.path.join(src, "link"))
    os.mkfifo(os.path.join(src, "fifo"))
    dest = str(tmp_path / "dest")
    r = run_cli("clone", src, dest)
    assert r.code == 0, r.err
    assert not os.path.lexists(os.path.join(dest, "link"))
    assert not os.path.lexists(os.path.join(dest, "fifo"))
    assert "link" in r.err and "fifo" in r.err


def test_refuses_a_folder_it_did_not_make(src, tmp_path, opts):
    dest = tmp_path / "home"
    write(str(dest), "thesis.tex", b"years of work")
    r = run_cli("clone", src, str(dest))
    assert r.code == 5 and "not empty" in r.err
    assert os.listdir(dest) == ["thesis.tex"]
    with pytest.raises(UsageError):
        clone(src, os.path.join(src, "inside"), opts)


def test_a_fresh_volume_with_lost_found_is_fine(src, tmp_path, opts):
    dest = tmp_path / "volume"
    (dest / "lost+found").mkdir(parents=True)
    clone(src, str(dest), opts)
    assert files(str(dest)) == files(src)
    assert os.path.isdir(dest / "lost+found")  # not ours to remove
    wipe_clone(str(dest))
    assert os.listdir(dest) == ["lost+found"]


def test_a_source_that_looks_empty_is_refused(src, tmp_path, opts):
    dest = str(tmp_path / "dest")
    clone(src, dest, opts)
    empty = tmp_path / "unmounted"
    empty.mkdir()
    with pytest.raises(RefusedError, match="remove"):
        clone(str(empty), dest, opts)
    assert files(dest) == files(src)
    r = run_cli("clone", str(empty), dest, "--allow-mass-delete")
    assert r.code == 0 and files(dest) == {}


def test_leftovers_of_a_killed_clone_are_removed(src, tmp_path, opts):
    dest = str(tmp_path / "dest")
    clone(src, dest, opts)
    with open(os.path.join(dest, ".spaceport", "clone.json")) as f:
        token = json.load(f)["token"]
    run0 = os.path.join(dest, "run0")
    os.chmod(run0, 0o755)
    leftover = os.path.join(run0, temp_name(token))
    write(dest, os.path.relpath(leftover, dest), b"half a file")
    os.chmod(run0, 0o555)
    clone(src, dest, opts)
    assert not os.path.exists(leftover) and writable(dest) == []


def test_interrupted_clone_exits_130_and_a_rerun_completes(tmp_path):
    source, dest = str(tmp_path / "source"), str(tmp_path / "dest")
    make_tree(source, 12, 1_000_000)
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", "clone", source, dest,
                             "--bwlimit", "1M", "--jobs", "2"], stderr=subprocess.PIPE)
    end = time.monotonic() + 30
    while time.monotonic() < end and not any(files(dest).values() if os.path.isdir(dest)
                                             else ()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 130
    assert files(dest) != files(source)
    assert writable(dest) == []  # folders went back to read-only
    assert run_cli("clone", source, dest).code == 0
    assert files(dest) == files(source)


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user every test already runs "
                    "without root's power to write into read-only folders")
def test_rerun_as_an_ordinary_user_opens_and_closes_read_only_folders(opts):
    """Root ignores write bits; the real users of a clone do not. The clone runs in this
    process with the effective uid of nobody (pytest's own folders are private to root)."""
    nobody = 65534
    base = tempfile.mkdtemp(prefix="spaceport-clone-")
    try:
        os.chmod(base, 0o755)
        src, dest = os.path.join(base, "source"), os.path.join(base, "dest")
        make_tree(src, 6, 1000)
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), nobody, nobody)
        os.makedirs(dest)
        os.chown(dest, nobody, nobody)

        def as_nobody(fn, *args):
            os.seteuid(nobody)
            try:
                return fn(*args)
            finally:
                os.seteuid(0)

        as_nobody(clone, src, dest, opts)
        assert writable(dest) == []
        as_nobody(write, src, "run0/f0.mrc", b"changed")
        as_nobody(os.unlink, os.path.join(src, "run1", "f1.mrc"))
        as_nobody(write, src, "run2/sub/new", b"new")
        report = as_nobody(clone, src, dest, opts)
        assert (report.copied, report.removed) == (2, 1)
        assert files(dest) == files(src) and writable(dest) == []
        with pytest.raises(PermissionError):  # the copy really is read-only for its owner
            as_nobody(write, dest, "run0/f0.mrc", b"edited by hand")
        as_nobody(wipe_clone, dest)
        assert os.listdir(dest) == []
    finally:
        shutil.rmtree(base)


def test_plan_compares_size_and_mtime_then_mode():
    def scan(*entries):
        result = ScanResult()
        for e in entries:
            result.entries[e.path] = e
        return result

    src = scan(Entry("a", Kind.FILE, 1, 10, 0o644), Entry("b", Kind.FILE, 1, 10, 0o644),
               Entry("c", Kind.FILE, 1, 10, 0o644), Entry("d", Kind.DIR, mode=0o755),
               Entry("l", Kind.LINK, target="a"))
    dst = scan(Entry("a", Kind.FILE, 1, 10, 0o444), Entry("b", Kind.FILE, 1, 11, 0o444),
               Entry("c", Kind.FILE, 1, 10, 0o400), Entry("gone", Kind.FILE, 1, 1, 0o444),
               Entry("l", Kind.FILE, 1, 1, 0o444))
    plan: ClonePlan = plan_clone(src, dst)
    assert [e.path for e in plan.copies] == ["b"]
    assert [e.path for e in plan.chmods] == ["c"]
    assert [e.path for e in plan.mkdirs] == ["d"]
    assert sorted(e.path for e in plan.removals) == ["gone", "l"]
    assert plan.current == 1 and plan.links == ["l"]


def test_progress_is_reported(src, tmp_path, opts):
    dest = str(tmp_path / "dest")
    clone(src, dest, opts)
    (task,) = opts.tracker.snapshot()
    assert task["name"] == "clone" and task["files_done"] == task["files_total"] == 10
    assert task["bytes_done"] == task["bytes_total"] > 0 and task["finished"]
