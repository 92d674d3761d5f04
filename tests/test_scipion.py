"""A real Scipion project (scipion-pyworkflow 3.11.7, scipion-em 3.11.1 from PyPI) saved
by the daemon while it runs: snapshots of the primary taken during autosaves all load in
pyworkflow, every run with its status, every finished run with its outputs (issue 11).

The Scipion venv is built on first use and cached outside the repository
(tests/scipion/env.py); where it cannot be built, the test is skipped with the reason.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from scipion.env import scipion_python

from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.testing.onedatafs import OneDataFS, fuse_available

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "scipion", "driver.py")
ROUNDS = int(os.environ.get("SPACEPORT_SCIPION_ROUNDS", "8"))  # 3 protocols a round
NAME = "proj"
S = DEFAULT_STATUS_DIR


def scipion_env(tmp_path, python: str) -> dict:
    home, data = tmp_path / "scipion-home", tmp_path / "scipion-data"
    home.mkdir()
    data.mkdir()
    return {**os.environ, "SCIPION_HOME": str(home), "SCIPION_USER_DATA": str(data),
            "SCIPION_PYTHON": python, "SCIPION_DOMAIN": "pwem", "SCIPION_NOTIFY": "False"}


def scipion_project(tmp_path, rounds: int, meta_delay_ms: float):
    """Scipion's Python and environment, input data for ``rounds`` rounds, and a primary:
    the OneData-like FUSE mount where FUSE works (``fs``, to stop), else a plain folder.
    Returns (python, env, source, work, backing, primary, fs); skips without Scipion."""
    python, why = scipion_python()
    if python is None:
        pytest.skip(why)
    env = scipion_env(tmp_path, python)
    source, work = str(tmp_path / "source"), str(tmp_path / "work")
    subprocess.run([python, DRIVER, "make-data", source, str(rounds)], env=env, check=True,
                   timeout=300)
    fuse_ok, _ = fuse_available()
    backing, mnt = str(tmp_path / "backing"), str(tmp_path / "mnt")
    os.makedirs(backing)
    os.makedirs(mnt)
    fs = OneDataFS(backing, mnt, meta_delay_ms=meta_delay_ms, attr_timeout=0.0).start() \
        if fuse_ok else None
    return python, env, source, work, backing, mnt if fs else backing, fs


def copy_primary(backing: str, dest: str) -> None:
    """The primary as a crash would leave it: files under real names, and the manifest."""
    shutil.copytree(backing, dest, ignore=shutil.ignore_patterns(S, ".spaceport-tmp-*"))


def check(python: str, env: dict, tmp_path, projects: list[str], items: bool = False) -> list:
    report = tmp_path / f"check-{len(projects)}-{items}.json"
    args = [python, DRIVER, "check", str(report)] + (["--items"] if items else []) + projects
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.timeout(1800)  # building the Scipion venv on first use takes minutes
def test_real_scipion_project_saved_by_the_daemon(tmp_path, daemons):
    python, env, source, work, backing, primary, fs = scipion_project(tmp_path, ROUNDS, 5.0)
    try:
        d = daemons(primary, work, "--interval", "2")
        d.wait_phase("running", timeout=60)
        scipion = subprocess.Popen([python, DRIVER, "run", work, NAME, source, str(ROUNDS)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        snaps, taken = [], 0
        while scipion.poll() is None:
            time.sleep(random.uniform(0.3, 1.2))
            d.proc.send_signal(signal.SIGSTOP)  # the daemon frozen wherever its save is
            try:
                taken += 1
                dest = str(tmp_path / "snaps" / f"{taken:03d}")
                copy_primary(backing, dest)
                if os.path.exists(os.path.join(dest, NAME, "project.sqlite")):
                    snaps.append(dest)
            finally:
                d.proc.send_signal(signal.SIGCONT)
        out = scipion.stdout.read().decode(errors="replace")
        assert scipion.returncode == 0, out[-3000:]
        # One more autosave after Scipion is done, snapshotted; then the final save.
        done = time.time()
        def saved_after_scipion(s: dict) -> bool:  # an autosave that started after it
            last = s.get("last_save") or {}
            return bool(last.get("ok")) and last["time"] - last["seconds"] > done + 0.2

        d.wait_status(saved_after_scipion, 60, "an autosave after the last run")
        last_autosave = str(tmp_path / "snaps" / "last-autosave")
        d.proc.send_signal(signal.SIGSTOP)
        try:
            copy_primary(backing, last_autosave)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        status = d.status()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(60) == 0, d.log()
        log = d.log()
        # Every snapshot loads; every run has a status; finished runs' outputs resolve.
        results = check(python, env, tmp_path,
                        [os.path.join(s, NAME) for s in snaps + [last_autosave]])
        errors = {r["path"]: r["errors"] for r in results if r["errors"]}
        assert not errors, json.dumps(errors, indent=1)[:5000]
        runs = sum(len(r["runs"]) for r in results)
        # The end: a fresh deployment of the primary (links restored from the manifest)
        # holds every run finished, with every output and every item file.
        again = str(tmp_path / "again")
        restore = subprocess.run([sys.executable, "-m", "spaceport", "deploy", primary, again],
                                 capture_output=True, text=True, timeout=300)
        assert restore.returncode == 0, restore.stderr
        final = check(python, env, tmp_path, [os.path.join(again, NAME)], items=True)[0]
        assert final["errors"] == [], final["errors"]
        expected = 3 * ROUNDS - ROUNDS // 3  # every third round deletes a crop run
        assert len(final["runs"]) == expected
        assert all(r["status"] == "finished" and r["outputs"] for r in final["runs"].values())
        last = check(python, env, tmp_path, [os.path.join(last_autosave, NAME)])[0]
        assert set(last["runs"]) == set(final["runs"])
        assert all(r["status"] == "finished" for r in last["runs"].values())
        held = log.count("is left for the next save")
        print(f"real Scipion: {expected} runs over {ROUNDS} rounds, {status['saves']['ok']} "
              f"autosaves ok, {status['saves']['failed']} failed, {len(snaps)} snapshots of "
              f"the primary during the run + the last autosave, {runs} runs checked in them, "
              f"all loaded; databases held for a later save {held} times; "
              f"{'FUSE' if fs else 'plain folder'} primary")
        assert len(snaps) >= 10 and status["saves"]["failed"] == 0
    finally:
        if fs:
            fs.stop()


# 1,500 files keep CI near 1 min; Scipion's own runs reach 20,000 (SPACEPORT_SCIPION_TMP_FILES).
TMP_FILES = int(os.environ.get("SPACEPORT_SCIPION_TMP_FILES", "1500"))


def files_in(folder: str) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


@pytest.mark.timeout(1800)
def test_scipion_clean_tmp_under_the_daemon_never_blocks_later_saves(tmp_path, daemons):
    """Issue 12: a run's tmp/ of thousands of files, saved, then deleted by Scipion's own
    cleanTmp. The deletion guard does not fire: the files go to the trash, a later run
    reaches the primary, and SIGTERM ends the daemon with exit 0, the lock released."""
    python, env, source, work, backing, primary, fs = scipion_project(tmp_path, 2, 1.0)
    gate = str(tmp_path / "gate")
    try:
        d = daemons(primary, work, "--interval", "2")
        d.wait_phase("running", timeout=60)
        scipion = subprocess.Popen([python, DRIVER, "cleantmp", work, NAME, source,
                                    str(TMP_FILES), gate], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # The run's tmp/ reaches the primary whole before Scipion cleans it.
        d.wait_for(lambda: any(files_in(tmp) >= TMP_FILES for tmp in
                               glob.glob(os.path.join(backing, NAME, "Runs", "*", "tmp"))),
                   600, f"the {TMP_FILES} tmp files on the primary")
        open(gate, "w").close()
        out, _ = scipion.communicate(timeout=600)
        assert scipion.returncode == 0, out[-3000:]
        later = out.split("later run ")[1].split()[0]
        done = time.time()

        def saved_after(s: dict) -> bool:
            last = s.get("last_save") or {}
            return bool(last.get("ok")) and last["time"] - last["seconds"] > done + 0.2

        status = d.wait_status(saved_after, 120, "an autosave after the later run")
        assert status["held_deletions"] is None and status["saves"]["failed"] == 0, status
        assert os.path.isfile(os.path.join(backing, NAME, later, "logs", "run.db"))
        assert files_in(os.path.join(backing, S, "trash")) >= TMP_FILES  # cleanTmp's files
        assert not any(files_in(tmp) for tmp in
                       glob.glob(os.path.join(backing, NAME, "Runs", "*", "tmp")))
        d.signal(signal.SIGTERM)
        assert d.wait_exit(120) == 0, d.log()[-5000:]
        assert not os.path.exists(os.path.join(backing, S, "lock"))
        assert "refus" not in d.log() and "deletions held" not in d.log()
        # The primary holds the project with both rounds' runs finished.
        again = str(tmp_path / "again")
        restore = subprocess.run([sys.executable, "-m", "spaceport", "deploy", primary, again],
                                 capture_output=True, text=True, timeout=300)
        assert restore.returncode == 0, restore.stderr
        final = check(python, env, tmp_path, [os.path.join(again, NAME)], items=True)[0]
        assert final["errors"] == [], final["errors"]
        assert len(final["runs"]) == 4 and later in final["runs"]
        assert all(r["status"] == "finished" for r in final["runs"].values())
        print(f"real Scipion cleanTmp: {TMP_FILES} tmp files saved then cleaned, "
              f"{status['saves']['ok']} autosaves ok, none failed, none held; "
              f"{'FUSE' if fs else 'plain folder'} primary")
    finally:
        if fs:
            fs.stop()


@pytest.mark.timeout(1800)
def test_checksum_passes_on_a_saved_scipion_project_and_finds_a_changed_database(tmp_path):
    """Issue 18: every database of a Scipion project is saved as a snapshot, whose header
    differs from the working copy's; --checksum compares them as snapshots."""
    import sqlite3

    python, env, source, work, backing, primary, fs = scipion_project(tmp_path, 2, 1.0)
    spaceport = [sys.executable, "-m", "spaceport"]
    try:
        def cli(*args):
            return subprocess.run(spaceport + list(args), capture_output=True, text=True,
                                  timeout=600)

        assert cli("deploy", primary, work).returncode == 0
        out = subprocess.run([python, DRIVER, "run", work, NAME, source, "2"], env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert cli("save", work).returncode == 0
        time.sleep(1.1)  # databases written in the last second are recorded next time
        assert cli("save", work).returncode == 0
        databases = [p for p in glob.glob(os.path.join(backing, "**", "*"), recursive=True)
                     if os.path.isfile(p) and open(p, "rb").read(16) == b"SQLite format 3\0"]
        assert len(databases) >= 8, databases  # project.sqlite, each run's run.db and sets
        v = cli("verify", "--checksum", work)
        assert v.returncode == 0 and "identical" in v.stdout, v.stdout
        # A run's database really different on the primary is reported.
        run_db = sorted(glob.glob(os.path.join(backing, NAME, "Runs", "*", "logs", "run.db")))[0]
        db = sqlite3.connect(run_db, isolation_level=None)
        table = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchone()[0]
        db.execute(f'DELETE FROM "{table}" WHERE rowid = (SELECT max(rowid) FROM "{table}")')
        db.close()
        v = cli("verify", "--checksum", work)
        assert v.returncode == 1 and "content differs" in v.stdout and "run.db" in v.stdout, \
            v.stdout
        r = cli("undeploy", "--checksum", work)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("not proven saved") == 1, r.stderr  # that one, saved again
        again = str(tmp_path / "again")
        assert cli("deploy", primary, again).returncode == 0
        final = check(python, env, tmp_path, [os.path.join(again, NAME)], items=True)[0]
        assert final["errors"] == [] and len(final["runs"]) == 6, final
        print(f"real Scipion: {len(databases)} databases, verify --checksum identical, "
              f"a changed run.db found, undeploy --checksum passed")
    finally:
        if fs:
            fs.stop()
