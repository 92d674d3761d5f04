"""One command at a time per working copy, really (issue 18, safety rule 9).

The OS lock of a working copy must hold whatever a user deletes under it: ``.spaceport/busy``
deleted while a save holds it, the whole ``.spaceport/`` deleted under a running daemon.
Real ``spaceport`` processes and a real daemon, over the OneData-like FUSE filesystem where a
save must be held open (a gate in the middle of its commits); the files on both sides are
checked afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import run_cli, write
from daemon_helpers import read_lock_file
from test_faults import Mount, needs_fuse

from spaceport.commands.deploy import local_work
from spaceport.commands.options import Options
from spaceport.errors import EXIT_LOCK_LOST
from spaceport.safety import worklock
from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.safety.worklock import DaemonOwnsWorkError, busy_path, hold_work

S = DEFAULT_STATUS_DIR


def remove_under_a_writer(path: str) -> None:
    """rm -rf of a folder a live process writes in, as a person's would go: an entry the
    process removed meanwhile (SQLite's -wal at a checkpoint) is gone already, and a file
    it wrote meanwhile is removed on a second pass."""
    def gone_already(function, name, exc_info):
        if getattr(exc_info[1], "errno", None) not in (errno.ENOENT, errno.ENOTEMPTY):
            raise exc_info[1]

    for _ in range(20):
        shutil.rmtree(path, onerror=gone_already)
        if not os.path.lexists(path):
            return
    raise AssertionError(f"{path} kept coming back")


def project(root, files=6):
    for i in range(files):
        write(root, f"Runs/{i % 2:03d}/f{i:03d}.xmd", os.urandom(1000 + i))
    write(root, "Held/first.bin", os.urandom(500))


def spaceport(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spaceport", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def fuse(tmp_path):
    m = Mount(tmp_path)
    yield m
    m.stop()


@needs_fuse
def test_a_busy_file_deleted_under_a_held_save_keeps_the_second_save_out(tmp_path, fuse):
    """The reported failure: busy deleted while a save holds it let a second save run at
    once; the first then failed ("Stale file handle"). Now the second waits, says for
    whom it cannot tell, and gives up; the first completes; nothing is lost."""
    primary, work = fuse.path, str(tmp_path / "w")
    project(fuse.backing)
    assert run_cli("deploy", primary, work).code == 0
    write(work, "Held/new-by-first.bin", b"first save's file")
    # The first save stops inside the rename of its upload into Held/ (the kernel then
    # holds Held/ locked: the second save writes elsewhere).
    gate = fuse.fs.hold(op="rename", path="/Held/*", times=1, timeout=60)
    first = spaceport("save", work, "--jobs", "1")
    try:
        fuse.fs.wait_held(gate, timeout=30)
        os.unlink(busy_path(work))
        write(work, "Runs/000/new-by-second.xmd", b"second save's file")
        started = time.monotonic()
        second = run_cli("save", work, "--wait", "2")
        assert second.code == 1, second
        assert time.monotonic() - started >= 2
        assert "busy" in second.err and "waiting for" in second.err
        # What kept it out is the working copy's folder: it never got as far as making a
        # busy file of its own (busy alone would have let it in: the test below).
        assert not os.path.exists(busy_path(work))
        assert not os.path.exists(os.path.join(fuse.backing, "Runs/000/new-by-second.xmd"))
    finally:
        fuse.fs.release(gate)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "Stale file handle" not in err
    assert open(os.path.join(fuse.backing, "Held/new-by-first.bin"), "rb").read() == \
        b"first save's file"
    leftovers = [n for _, _, names in os.walk(fuse.backing) for n in names
                 if "spaceport-tmp" in n]
    assert leftovers == []
    # The second save, run again, saves its file; both sides agree.
    assert run_cli("save", work).code == 0
    assert open(os.path.join(fuse.backing, "Runs/000/new-by-second.xmd"), "rb").read() == \
        b"second save's file"


def holder_process(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_folder_lock_holds_when_busy_is_deleted_and_busy_alone_would_not(tmp_path):
    """The negative control of the test above, without FUSE: a holder of busy alone (as
    spaceport locked before) loses its exclusion when busy is deleted; a holder of the
    working copy does not."""
    work = str(tmp_path / "w")
    os.makedirs(os.path.join(work, ".spaceport"))
    busy_only = holder_process(f"""
        import fcntl, os, time
        fd = os.open({busy_path(work)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(600)
    """)
    try:
        with pytest.raises(worklock.WorkBusyError):  # busy held: kept out
            with hold_work(work, "save", wait=0.3):
                pass
        os.unlink(busy_path(work))
        with hold_work(work, "save", wait=0):  # busy alone no longer keeps anyone out
            pass
    finally:
        busy_only.kill()
        busy_only.wait()
    whole = holder_process(f"""
        import time
        from spaceport.safety.worklock import hold_work
        with hold_work({work!r}, "save", wait=0):
            print("held", flush=True)
            time.sleep(600)
    """)
    try:
        os.unlink(busy_path(work))
        remove_under_a_writer(os.path.join(work, ".spaceport"))
        with pytest.raises(worklock.WorkBusyError):
            with hold_work(work, "deploy", wait=0.5):
                pass
    finally:
        whole.kill()
        whole.wait()
    with hold_work(work, "deploy", wait=0):  # and it ends with its process
        pass


def test_a_busy_file_replaced_between_open_and_flock_is_taken_again(tmp_path, monkeypatch):
    """After its flock, a command checks that the file at the path is the one it locked
    (same inode); one replaced in between is not the working copy's lock any more."""
    work = str(tmp_path / "w")
    os.makedirs(os.path.join(work, ".spaceport"))
    real_flock = worklock.fcntl.flock
    swapped = []

    def flock_then_replace(fd, op):
        real_flock(fd, op)
        if not swapped and os.path.exists(busy_path(work)) and \
                os.fstat(fd).st_ino == os.stat(busy_path(work)).st_ino:
            os.unlink(busy_path(work))  # another command's cleanup, a user: a new file
            with open(busy_path(work), "w"):
                pass
            swapped.append(os.stat(busy_path(work)).st_ino)

    monkeypatch.setattr(worklock.fcntl, "flock", flock_then_replace)
    with hold_work(work, "save", wait=0) as held:
        assert swapped
        assert os.fstat(held.busy_fd).st_ino == os.stat(busy_path(work)).st_ino == swapped[0]
        assert json.loads(open(busy_path(work)).read())["command"] == "save"


# -- under a running daemon --------------------------------------------------------------
def test_a_marker_deleted_under_the_daemon_lets_nothing_reattach_or_save(tmp_path, daemons):
    """``rm -rf WORK/.spaceport`` under a live daemon, and the commands run in the window
    before the daemon writes its marker again: every one is refused with exit 4 and the
    daemon's hint (``deploy --resume`` too), never "not a working copy" (exit 5). The
    window is held open by stopping the daemon (SIGSTOP): it is alive, holds its folder's
    lock and its heartbeat names it, but cannot write its marker again meanwhile."""
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    d = daemons(primary, work)
    d.wait_phase("running")
    deployment = read_lock_file(primary).deployment_id
    d.signal(signal.SIGSTOP)
    try:
        remove_under_a_writer(os.path.join(work, ".spaceport"))
        write(work, "Runs/000/after-the-deletion.xmd", b"made while the marker was gone")
        for command in (["deploy", "--resume", primary, work, "--wait", "3"],
                        ["save", work, "--wait", "3"], ["undeploy", work, "--wait", "3"],
                        ["deploy", primary, work], ["verify", work], ["status", work],
                        ["trash", "list", work]):
            res = run_cli(*command)
            assert res.code == EXIT_LOCK_LOST, (command, res)
            assert "daemon" in res.err and f"pid {d.proc.pid}" in res.err, (command, res)
            assert "POST /save" in res.err and "not a spaceport working copy" not in res.err
        assert not os.path.exists(os.path.join(primary, "Runs/000/after-the-deletion.xmd"))
        assert read_lock_file(primary).deployment_id == deployment
    finally:
        d.signal(signal.SIGCONT)
    d.wait_for(lambda: os.path.exists(os.path.join(work, ".spaceport", "deployment.json")),
               10, "the marker written again")
    res = run_cli("deploy", "--resume", primary, work, "--wait", "3")
    assert res.code == EXIT_LOCK_LOST and "POST /save" in res.err, res
    # The daemon put its marker back and goes on saving under its own deployment.
    marker = json.load(open(os.path.join(work, ".spaceport", "deployment.json")))
    assert marker["deployment_id"] == deployment
    d.wait_for(lambda: os.path.exists(os.path.join(primary, "Runs/000/after-the-deletion.xmd")),
               20, "the autosave of the file made after the deletion")
    assert "the work marker of" in d.log() and "written again" in d.log()
    assert read_lock_file(primary).deployment_id == deployment
    beat = json.load(open(os.path.join(primary, S, f"heartbeat.{deployment}")))
    assert beat["pid"] == d.proc.pid
    write(work, "Runs/001/late.xmd", b"late")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert open(os.path.join(primary, "Runs/001/late.xmd"), "rb").read() == b"late"
    assert read_lock_file(primary) is None
    conflicts = [n for _, _, names in os.walk(primary) for n in names if "conflict" in n]
    assert conflicts == []


def test_resume_finds_a_live_daemon_by_its_heartbeat(tmp_path, daemons):
    """The second proof, beside the busy lock: a re-attach asks the lock's heartbeat, and a
    daemon that provably runs on this machine is a live holder (exit 4); once its process
    is gone, the same re-attach goes ahead."""
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    d = daemons(primary, work)
    d.wait_phase("running")
    deployment = read_lock_file(primary).deployment_id
    opts = Options(status_dir=S)
    with pytest.raises(DaemonOwnsWorkError) as refused:
        local_work.reattach(primary, os.path.abspath(work), opts, resume=True)
    assert refused.value.exit_code == EXIT_LOCK_LOST
    assert f"pid {d.proc.pid}" in refused.value.message and "POST /save" in refused.value.hint
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    remove_under_a_writer(os.path.join(work, ".spaceport"))
    marker = local_work.reattach(primary, os.path.abspath(work), opts, resume=True)
    assert marker.deployment_id == deployment


@needs_fuse
def test_a_marker_deleted_while_the_daemon_is_held_inside_an_autosave(tmp_path, daemons,
                                                                       fuse):
    """The same over the OneData-like mount, with the daemon's autosave held open at a gate
    inside its commit while ``.spaceport/`` is deleted: nothing re-attaches or saves beside
    it, the held autosave completes, and the index lost with the marker is rebuilt."""
    primary, work = fuse.path, str(tmp_path / "w")
    project(fuse.backing)
    d = daemons(primary, work)
    d.wait_phase("running")
    deployment = read_lock_file(fuse.backing).deployment_id
    gate = fuse.fs.hold(op="rename", path="/Held/*", times=1, timeout=60)
    write(work, "Held/by-the-held-autosave.bin", b"held at the gate")
    try:
        fuse.fs.wait_held(gate, timeout=30)
        remove_under_a_writer(os.path.join(work, ".spaceport"))
        write(work, "Runs/001/made-meanwhile.xmd", b"made while the marker was gone")
        d.wait_for(lambda: os.path.exists(os.path.join(work, ".spaceport", "deployment.json")),
                   10, "the marker written again")
        for command in (["deploy", "--resume", primary, work, "--wait", "2"],
                        ["save", work, "--wait", "2"]):
            res = run_cli(*command)
            assert res.code == EXIT_LOCK_LOST and "POST /save" in res.err, (command, res)
        assert not os.path.exists(os.path.join(fuse.backing, "Runs/001/made-meanwhile.xmd"))
    finally:
        fuse.fs.release(gate)
    for rel, data in (("Held/by-the-held-autosave.bin", b"held at the gate"),
                      ("Runs/001/made-meanwhile.xmd", b"made while the marker was gone")):
        d.wait_for(lambda rel=rel: os.path.exists(os.path.join(fuse.backing, rel)), 30,
                   f"{rel} on the primary")
        assert open(os.path.join(fuse.backing, rel), "rb").read() == data
    assert "rebuilt from the working copy and the primary" in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    assert read_lock_file(fuse.backing) is None
    assert not os.path.exists(os.path.join(work, "Runs"))  # cleaned: all was proven saved
    assert f"deployment {deployment[:8]}" in d.log()  # the marker it put back was its own
    leftovers = [n for _, _, names in os.walk(fuse.backing) for n in names
                 if "spaceport-tmp" in n or "conflict" in n]
    assert leftovers == []


def test_where_a_folder_cannot_be_locked_busy_alone_holds_and_it_is_said(
        tmp_path, monkeypatch, caplog):
    """A filesystem that refuses to flock a folder (EBADF, as NFS does for a file open
    read-only): busy alone keeps a second command out, with a warning; never an error."""
    work = str(tmp_path / "w")
    os.makedirs(os.path.join(work, ".spaceport"))
    real_flock = worklock.fcntl.flock

    def no_folder_locks(fd, op):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(9, "Bad file descriptor")
        real_flock(fd, op)

    monkeypatch.setattr(worklock.fcntl, "flock", no_folder_locks)
    other = holder_process(f"""
        import fcntl, os, time
        fd = os.open({busy_path(work)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(600)
    """)
    try:
        with pytest.raises(worklock.WorkBusyError):
            with hold_work(work, "save", wait=0.2):
                pass
    finally:
        other.kill()
        other.wait()
    with caplog.at_level("WARNING"):
        with hold_work(work, "save", wait=0) as held:
            assert held.root_fd == -1 and held.folder_intact()
            assert json.loads(open(busy_path(work)).read())["pid"] == os.getpid()
    assert "cannot lock a folder" in caplog.text
