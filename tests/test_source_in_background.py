"""``spaceport run --source-in-background`` as a real process (issue 22): ready once the
project is in while the source still arrives over the OneData-like mount; autosaves
meanwhile; the files the project links to first; a notice at the source copy's root;
``spaceport wait --source``; SIGTERM mid-clone saves the project and the next start resumes
the clone without copying again what is there (counted calls)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import write
from daemon_helpers import read_lock_file

from spaceport.commands.clone_notice import NOTICE_NAME
from spaceport.commands.deploy import deploy
from spaceport.commands.options import Options
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.testing.onedatafs import OneDataFS, fuse_available

pytestmark = pytest.mark.fuse


def tree_files(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".spaceport"]
        for name in names:
            if name == NOTICE_NAME or name.startswith(".spaceport-tmp-"):
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


@pytest.fixture
def sides(tmp_path):
    """A small project on a plain folder, and a source of 20 files on the FUSE mount."""
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    for i in range(20):
        write(str(backing), f"movies/m{i:02d}.mrc", os.urandom(200_000 + i))
    write(str(backing), "z-imports/linked.mrc", os.urandom(50_000))
    primary = tmp_path / "primary"
    write(str(primary), "project.sqlite", b"runs")
    write(str(primary), "Runs/000002_Import/logs/run.log", b"imported")
    with OneDataFS(backing, mnt) as fs:
        yield {"fs": fs, "backing": str(backing), "source": str(mnt),
               "primary": str(primary), "work": str(tmp_path / "work"),
               "source_work": str(tmp_path / "source-work")}


def start(daemons, s, *extra):
    return daemons(s["primary"], s["work"], "--source", s["source"], "--source-work",
                   s["source_work"], "--source-in-background", *extra)


def test_ready_while_the_source_arrives_autosaves_meanwhile_and_wait_source(sides, daemons):
    s, fs = sides, sides["fs"]
    gate = fs.hold(op="open", path="/movies/m19.mrc", times=1, timeout=60)  # the last file
    d = start(daemons, s)
    status = d.wait_phase("running")
    assert status["ready"] and not status["source_progress"]["complete"]
    assert status["source_progress"]["in_background"]
    notice = os.path.join(s["source_work"], NOTICE_NAME)
    assert "NOT COMPLETE" in open(notice).read() and d.url in open(notice).read()
    assert "Source data:" in d.request("/")[1].decode()
    waiter = subprocess.Popen([sys.executable, "-m", "spaceport", "wait", "--source", "--url",
                               d.url, "--poll", "0.1", "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # The project is saved while the source still arrives.
    write(s["work"], "Runs/000003_New/logs/run.log", b"new work")
    d.wait_for(lambda: os.path.exists(os.path.join(s["primary"], "Runs/000003_New/logs/run.log")),
               30, "an autosave during the clone")
    assert waiter.poll() is None  # still waiting for the source
    assert fs.waiting(gate) == 1
    fs.release(gate)
    assert waiter.wait(60) == 0, waiter.stdout.read()
    assert b"source data complete" in waiter.stdout.read()
    final = d.status()
    assert final["source_progress"]["complete"] and final["source_progress"]["files_missing"] == 0
    assert not os.path.exists(notice)
    assert tree_files(s["source_work"]) == tree_files(s["backing"])
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


def test_the_notices_own_wait_command_works_behind_a_desktop(sides, daemons):
    """In a pod the daemon fronts the desktop: its page is under /spaceport/, and the notice
    names that URL. The command the notice gives, run as written, waits and then exits 0."""
    s, fs = sides, sides["fs"]
    with socket.socket() as sock:  # a desktop that never answers: the page stays in front
        sock.bind(("127.0.0.1", 0))
        desktop = f"http://127.0.0.1:{sock.getsockname()[1]}"
    gate = fs.hold(op="open", path="/movies/m19.mrc", times=1, timeout=60)
    d = start(daemons, s, "--desktop-url", desktop)
    d.wait_phase("running")
    text = open(os.path.join(s["source_work"], NOTICE_NAME)).read()
    command = re.search(r"'(spaceport wait --source --url \S+)'", text).group(1).split()
    assert command[-1] == d.url + "/spaceport/"
    waiter = subprocess.Popen([sys.executable, "-m", *command, "--poll", "0.1",
                               "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    assert waiter.poll() is None  # the source is not in yet
    fs.release(gate)
    assert waiter.wait(60) == 0, waiter.stdout.read()
    assert b"source data complete" in waiter.stdout.read()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


def test_without_the_option_ready_only_when_the_source_is_in(sides, daemons):
    s, fs = sides, sides["fs"]
    gate = fs.hold(op="open", path="/movies/m19.mrc", times=1, timeout=60)
    d = daemons(s["primary"], s["work"], "--source", s["source"], "--source-work",
                s["source_work"])
    fs.wait_held(gate, timeout=30)
    time.sleep(1.0)  # the project (two files) is long in by now
    assert d.status()["phase"] == "staging-in"
    fs.release(gate)
    d.wait_phase("running")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


def test_the_files_the_project_links_to_come_before_the_source_is_listed(sides, daemons,
                                                                         tmp_path):
    s, fs = sides, sides["fs"]
    # An existing project whose import links into the source's working copy.
    opts = Options(jobs=2)
    primary = str(tmp_path / "linked-project")
    os.mkdir(primary)
    first_work = str(tmp_path / "first-work")
    deploy(primary, first_work, opts)
    write(first_work, "project.sqlite", b"runs")
    os.makedirs(os.path.join(first_work, "Runs/000002_Import/extra"))
    os.symlink(os.path.join(s["source_work"], "z-imports/linked.mrc"),
               os.path.join(first_work, "Runs/000002_Import/extra/linked.mrc"))
    save(first_work, opts)
    undeploy(first_work, opts)
    gate = fs.hold(op="readdir", path="/", times=None, timeout=60)  # the source's listing
    s = {**s, "primary": primary}
    d = start(daemons, s)
    d.wait_phase("running")
    fs.wait_held(gate, timeout=30)
    link = os.path.join(s["work"], "Runs/000002_Import/extra/linked.mrc")
    with open(link, "rb") as f:  # the project's import resolves: its file is in, whole
        assert f.read() == open(os.path.join(s["backing"], "z-imports/linked.mrc"), "rb").read()
    progress = d.status()["source_progress"]
    assert progress["first_done"] == progress["first_files"] == 1
    assert not os.path.exists(os.path.join(s["source_work"], "movies"))
    fs.release(gate)
    d.wait_status(lambda st: st["source_progress"]["complete"], 60, "the whole source")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


def test_sigterm_mid_clone_saves_the_project_and_the_next_start_resumes_the_clone(sides,
                                                                                   daemons):
    s, fs = sides, sides["fs"]
    # The clone stops after eight files: the ninth and later opens wait at the gate.
    gate = fs.hold(op="open", path="/movies/*", after=8, times=None, timeout=60)
    d = start(daemons, s, "--keep-work")
    d.wait_phase("running")
    fs.wait_held(gate, timeout=30)
    write(s["work"], "Runs/000009_Late/notes.txt", b"written during the clone")
    stopped = time.monotonic()
    d.signal(signal.SIGTERM)
    d.wait_phase("staging-out")
    fs.release(gate)  # the held copies go on, see the stop, and leave nothing half-done
    assert d.wait_exit(timeout=30) == 0, d.log()
    assert time.monotonic() - stopped < 20  # FAST's --final-save-deadline
    assert open(os.path.join(s["primary"], "Runs/000009_Late/notes.txt"), "rb").read() == \
        b"written during the clone"
    assert read_lock_file(s["primary"]) is None
    there = tree_files(s["source_work"])
    source = tree_files(s["backing"])
    assert 0 < len(there) < len(source)
    assert all(source[p] == data for p, data in there.items())  # whole files only
    assert "stopped" in open(os.path.join(s["source_work"], NOTICE_NAME)).read()
    # The next start: only what is missing is opened and read on the source.
    fs.clear_stalls()
    fs.reset_counts()
    d = start(daemons, s, "--keep-work")
    d.wait_status(lambda st: st["source_progress"]["complete"], 60, "the whole source")
    counts, read = fs.counts(), fs.io_bytes()["read"]
    missing = set(source) - set(there)
    assert counts["open"] == len(missing)
    assert read == sum(len(source[p]) for p in missing)
    assert tree_files(s["source_work"]) == source
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


def test_a_failed_background_clone_leaves_the_project_running_and_wait_source_says_so(
        tmp_path, daemons):
    """The project is fine and stays served; the clone's failure is on the page and in
    /status, and a script waiting for the source hears it (exit 1) instead of waiting on."""
    primary, work = tmp_path / "primary", tmp_path / "work"
    write(str(primary), "project.sqlite", b"runs")
    d = daemons(str(primary), str(work), "--source", str(tmp_path / "not-mounted"),
                "--source-work", str(tmp_path / "source-work"), "--source-in-background")
    status = d.wait_status(lambda s: (s.get("source_progress") or {}).get("stage") == "failed"
                           and s["phase"] == "running", 30, "the failed clone, running on")
    assert status["ready"] and status["health"] == "degraded"
    assert "clone" in status["health_reason"]
    wait = [sys.executable, "-m", "spaceport", "wait", "--url", d.url, "--timeout", "20"]
    assert subprocess.run(wait, capture_output=True).returncode == 0  # the desktop starts
    waited = subprocess.run(wait + ["--source"], capture_output=True, text=True)
    assert waited.returncode == 1 and "failed" in waited.stdout + waited.stderr
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
