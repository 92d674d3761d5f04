"""Nothing in a working copy is ever lost (issue 10), each failure with real processes.

Every test here reproduces one way a user lost work (Ctrl-C, a dropped ssh session, a
second terminal, a full disk, a file that keeps changing, a restored mtime, a deleted status
folder or marker) and checks the files afterwards, not only the exit codes. The model-based
test of the whole engine is in test_model.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from spaceport.lock import DEFAULT_STATUS_DIR

from conftest import run_cli, snapshot, write

S = DEFAULT_STATUS_DIR


def project(root, files=12, size=3000):
    for i in range(files):
        write(root, f"Runs/{i % 3:03d}/f{i:03d}.xmd", os.urandom(size + i),
              mtime_ns=1_600_000_000_000_000_000 + i)
    write(root, "project.sqlite", os.urandom(20_000))


def holding_work(work: str, command: str = "save") -> subprocess.Popen:
    """Another process that holds the working copy's OS lock until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from spaceport.worklock import hold_work
        with hold_work({work!r}, {command!r}, wait=0):
            print("held", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- one command at a time: --wait / --no-wait, trash restore --------------------------
def test_a_second_command_waits_says_so_and_names_the_first(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    os.unlink(os.path.join(work, "Runs/001/f001.xmd"))
    assert run_cli("save", work).code == 0
    batch = os.listdir(os.path.join(primary, S, "trash"))[0]
    write(work, "Runs/000/new.txt", b"edit")
    holder = holding_work(work, "save")
    try:
        started = time.monotonic()
        res = run_cli("save", work, "--no-wait")
        assert res.code == 1 and time.monotonic() - started < 8
        assert "busy" in res.err and "'spaceport save'" in res.err and f"pid {holder.pid}" in res.err
        started = time.monotonic()
        res = run_cli("save", work, "--wait", "1.5")
        assert res.code == 1 and time.monotonic() - started >= 1.5
        assert "waiting for 'spaceport save'" in res.err and "busy" in res.err
        for command in (["undeploy", work, "--no-wait"],
                        ["deploy", "--resume", primary, work, "--no-wait"]):
            res = run_cli(*command)
            assert res.code == 1 and "busy" in res.err, (command, res)
        # trash restore writes into WORK: it takes the lock too.
        res = run_cli("trash", "restore", "--work", work, batch, "--no-wait")
        assert res.code == 1 and "busy" in res.err, res
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(os.path.join(primary, "Runs/000/new.txt"))  # nothing ran
    assert not os.path.exists(os.path.join(work, "Runs/001/f001.xmd"))
    res = run_cli("trash", "restore", "--work", work, batch)
    assert res.code == 0 and os.path.exists(os.path.join(work, "Runs/001/f001.xmd")), res
    res = run_cli("save", work)
    assert res.code == 0, res.err
    assert snapshot(primary) == snapshot(work)


def test_a_waiting_command_runs_when_the_first_one_ends(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    write(work, "late.txt", b"saved after the wait")
    holder = holding_work(work, "deploy")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", work, "--wait", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None  # waiting
    finally:
        holder.kill()
        holder.wait()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "waiting for 'spaceport deploy'" in err
    assert open(os.path.join(primary, "late.txt"), "rb").read() == b"saved after the wait"
