"""Real Scipion on a source still arriving (issue 22): the daemon started with
``--source-in-background`` is ready before the raw data is in, and

* a streaming import (pwem's ProtImportMicrographs with ``dataStreaming``) started as soon as
  the daemon is ready ends with every source file imported, none truncated;
* an existing project whose imports link into the source opens and loads its runs, every
  output file there, while the rest of the source has not even been listed.

The source is on the OneData-like FUSE mount, slowed down and held at gates so that the
data really is incomplete when Scipion starts. The Scipion venv as in tests/test_scipion.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write
from scipion.env import scipion_python
from test_scipion import DRIVER, NAME, check, scipion_env

from spaceport.commands.clone import wipe_clone
from spaceport.commands.clone_notice import NOTICE_NAME
from spaceport.testing.onedatafs import OneDataFS, fuse_available

pytestmark = pytest.mark.fuse
MICS = 24


def scipion_and_fuse(tmp_path):
    python, why = scipion_python()
    if python is None:
        pytest.skip(why)
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    env = scipion_env(tmp_path, python)
    env["SCIPION_EM_NEW_FILE_CHECK_SEC"] = "1"  # a streaming import looks every second
    paths = {k: str(tmp_path / k) for k in ("backing", "mnt", "primary", "work", "source-work")}
    for k in ("backing", "mnt", "primary"):
        os.makedirs(paths[k])
    return python, env, paths


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def daemon_args(p: dict) -> list:
    return [p["primary"], p["work"], "--source", p["mnt"], "--source-work", p["source-work"],
            "--source-in-background", "--interval", "2"]


@pytest.mark.timeout(1800)
def test_a_streaming_import_on_arriving_data_imports_every_file_whole(tmp_path, daemons):
    python, env, p = scipion_and_fuse(tmp_path)
    subprocess.run([python, DRIVER, "make-data", p["backing"], str(MICS), "512"], env=env,
                   check=True, timeout=300)  # 1 MiB micrographs: several reads each
    with OneDataFS(p["backing"], p["mnt"], io_delay_ms=20) as fs:
        # The second ten micrographs wait at a gate: the data is incomplete for sure when
        # the import starts, and stays so for a while after.
        gate = fs.hold(op="open", path="/mics/mic_01*", times=None, timeout=300)
        d = daemons(*daemon_args(p))
        status = d.wait_phase("running", timeout=120)
        assert not status["source_progress"]["complete"]
        report = tmp_path / "stream.json"
        scipion = subprocess.Popen([python, DRIVER, "stream", p["work"], NAME,
                                    os.path.join(p["source-work"], "mics"), str(report)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        fs.wait_held(gate, timeout=120)
        time.sleep(8)  # Scipion starts and imports what is there, several looks
        assert os.path.exists(os.path.join(p["source-work"], NOTICE_NAME))
        assert not d.status()["source_progress"]["complete"]
        fs.release(gate)
        out, _ = scipion.communicate(timeout=900)
        assert scipion.returncode == 0, out.decode(errors="replace")[-3000:]
        d.wait_status(lambda s: s["source_progress"]["complete"], 120, "the whole source")
        result = json.loads(report.read_text())
        assert result["status"] == "finished"
        mics = os.path.join(p["backing"], "mics")
        wanted = sorted(n for n in os.listdir(mics) if n.endswith(".mrc"))
        assert len(wanted) == MICS
        imported = sorted(os.path.basename(i) for i in result["items"])
        assert imported == wanted  # every file imported, once
        for item in result["items"]:  # none truncated: each is the source's, byte for byte
            assert item.startswith(os.path.realpath(p["source-work"]) + "/")
            assert read(item) == read(os.path.join(mics, os.path.basename(item)))
        time.sleep(3)  # Scipion's last write to project.sqlite: see the test below
        d.signal(signal.SIGTERM)
        assert d.wait_exit(120) == 0, d.log()[-5000:]
    # The import really ran on incomplete data: it held part of the set before the rest came.
    partial = [n for _, n in result["sizes"] if 0 < n < MICS]
    assert partial, result["sizes"]
    print(f"streaming import: {MICS} micrographs, set size over time {result['sizes']}")


@pytest.mark.timeout(1800)
def test_an_existing_project_loads_its_runs_before_the_rest_of_the_source(tmp_path, daemons):
    python, env, p = scipion_and_fuse(tmp_path)
    subprocess.run([python, DRIVER, "make-data", p["backing"], "2"], env=env, check=True,
                   timeout=300)
    for i in range(20):  # raw data no run of the project uses
        write(p["backing"], f"movies/movie_{i:03d}.tif", os.urandom(1 << 20))
    # Yesterday's project: made on a copy of the source at the path the daemon clones to,
    # its imports linked into it, saved to the primary; then the pod and its volumes went.
    cli = [sys.executable, "-m", "spaceport"]
    first = str(tmp_path / "first-work")
    for args in (["clone", p["backing"], p["source-work"]], ["deploy", p["primary"], first]):
        subprocess.run(cli + args, check=True, capture_output=True, timeout=300)
    subprocess.run([python, DRIVER, "run", first, NAME, p["source-work"], "1"], env=env,
                   check=True, capture_output=True, timeout=900)
    # An undeploy within about a second of Scipion's last write to project.sqlite cannot
    # prove it saved ("kept changing"; the same on branch layout): leave it that second.
    time.sleep(3)
    done = subprocess.run(cli + ["undeploy", first], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    wipe_clone(p["source-work"])
    with OneDataFS(p["backing"], p["mnt"]) as fs:
        gate = fs.hold(op="readdir", path="/", times=None, timeout=300)  # the source's listing
        d = daemons(*daemon_args(p))
        d.wait_phase("running", timeout=120)
        fs.wait_held(gate, timeout=60)
        # The project opens, and every run's outputs resolve, their links into the source too.
        found = check(python, env, tmp_path, [os.path.join(p["work"], NAME)], items=True)[0]
        assert found["errors"] == [], found["errors"]
        assert len(found["runs"]) == 3
        assert all(r["status"] == "finished" and r["outputs"] for r in found["runs"].values())
        assert not os.path.exists(os.path.join(p["source-work"], "movies"))  # not there yet
        progress = d.status()["source_progress"]
        assert progress["first_done"] == progress["first_files"] == 3  # vol_000, mic_000/001
        fs.release(gate)
        d.wait_status(lambda s: s["source_progress"]["complete"], 120, "the whole source")
        assert len(os.listdir(os.path.join(p["source-work"], "movies"))) == 20
        d.signal(signal.SIGTERM)
        assert d.wait_exit(120) == 0, d.log()[-5000:]
