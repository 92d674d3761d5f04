"""``spaceport run`` as a real process with real signals: its life, and what must hold when
things go wrong (DESIGN.md, "The daemon"; issue 5)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import time
from pathlib import Path

import pytest
from conftest import run_cli, snapshot, write
from daemon_helpers import make_tree, read_heartbeat_file, read_lock_file

from spaceport.clock import iso, utcnow
from spaceport.formats.marker import read_marker
from spaceport.safety.lock import DEFAULT_STATUS_DIR, LockInfo
from spaceport.testing.onedatafs import OneDataFS, fuse_available

TOKEN = "tok-5f1d2c9e-daemon-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHART = Path(__file__).resolve().parents[1] / "deploy/helm/spaceport/templates/deployment.yaml"



@pytest.fixture
def tree(tmp_path):
    """A project primary and a source with some files; work paths not yet created."""
    paths = {name: str(tmp_path / name) for name in ("primary", "work", "source", "source_work")}
    make_tree(paths["primary"], 6, 20_000)
    write(paths["primary"], "notes.txt", b"v1")
    make_tree(paths["source"], 5, 10_000, prefix="raw")
    return paths


def contents(root: str) -> dict[str, str]:
    """Relative path -> sha256 of every file, outside spaceport's own folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in (".spaceport", DEFAULT_STATUS_DIR)]
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def copying(status: dict, task: str = "deploy") -> bool:
    return status["phase"] == "staging-in" and any(
        t["name"] == task and t["bytes_done"] > 0 for t in status["tasks"])


def wait_until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


# -- the ordinary life -------------------------------------------------------------------
@pytest.mark.parametrize("keep_work", [False, True], ids=["clean", "keep-work"])
def test_whole_life_stage_in_autosave_final_save_release(tree, daemons, tmp_path, keep_work):
    primary, work = tree["primary"], tree["work"]
    ready = tmp_path / "ready.json"
    d = daemons(primary, work, "--source", tree["source"], "--source-work",
                tree["source_work"], "--ready-file", str(ready),
                *(["--keep-work"] if keep_work else []))
    status = d.wait_phase("running")
    # Stage-in: both sides in place before ready; the ready file says so.
    assert json.loads(ready.read_text())["deployment_id"] == status["deployment_id"]
    assert contents(work) == contents(primary)
    assert contents(tree["source_work"]) == contents(tree["source"])
    lock = read_lock_file(primary)
    assert lock.deployment_id == status["deployment_id"] and lock.live and lock.pid == d.proc.pid
    # Running: what the application does reaches the primary by itself.
    write(work, "notes.txt", b"v2, edited")
    write(work, "run0/new.mrc", b"new result")
    os.unlink(os.path.join(work, "run1", "f1.mrc"))
    wait_until(lambda: read(f"{primary}/notes.txt") == b"v2, edited"
               and read(f"{primary}/run0/new.mrc") == b"new result"
               and not os.path.exists(f"{primary}/run1/f1.mrc"), 20, "the autosave")
    # SIGTERM: final save, lock released, work cleaned unless kept.
    write(work, "last-minute.txt", b"saved by the final save")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    assert read(f"{primary}/last-minute.txt") == b"saved by the final save"
    assert read_lock_file(primary) is None
    assert not ready.exists()
    assert "phase released" in d.log()
    if keep_work:
        assert contents(work) == contents(primary)
        assert read_marker(work).phase == "undeployed"
        assert contents(tree["source_work"]) == contents(tree["source"])
    else:
        assert os.listdir(work) == [] and os.listdir(tree["source_work"]) == []


def test_source_clone_is_read_only_and_post_clone_reruns_it(tree, daemons):
    d = daemons(tree["primary"], tree["work"], "--source", tree["source"], "--source-work",
                tree["source_work"], "--token", TOKEN, "--interval", "3600")
    d.wait_phase("running")
    for dirpath, dirnames, filenames in os.walk(tree["source_work"]):
        dirnames[:] = [n for n in dirnames if n != ".spaceport"]
        for name in dirnames + filenames:
            assert not os.lstat(os.path.join(dirpath, name)).st_mode & 0o222, name
    write(tree["source"], "late/arrival.tif", b"scanned after the start")
    os.unlink(os.path.join(tree["source"], "run0", "raw0.mrc"))
    assert d.request("/clone", "POST")[0] == 401
    code, body, _ = d.request("/clone", "POST", AUTH)
    assert code == 202, body
    status = d.wait_status(lambda s: s["last_clone"] and s["last_clone"]["time"]
                           > s["phase_since"] and s["last_clone"]["ok"], 20, "the clone")
    assert status["last_clone"]["copied"] == 1 and status["last_clone"]["removed"] == 1
    assert contents(tree["source_work"]) == contents(tree["source"])
    assert not os.stat(f"{tree['source_work']}/late/arrival.tif").st_mode & 0o222


def test_refuses_a_primary_deployed_elsewhere_exit_3(tree, daemons, tmp_path):
    assert run_cli("deploy", tree["primary"], str(tmp_path / "elsewhere")).code == 0
    before = read_lock_file(tree["primary"])
    d = daemons(tree["primary"], tree["work"])
    assert d.wait_exit() == 3
    log = d.log()
    assert "already deployed" in log and before.host in log and "elsewhere" in log
    assert read_lock_file(tree["primary"]) == before
    assert not os.path.exists(tree["work"]) or contents(tree["work"]) == {}


# -- SIGTERM during stage-in ---------------------------------------------------------------
def test_sigterm_during_staging_in_stops_within_seconds_and_releases_the_lock(tree, daemons,
                                                                              tmp_path):
    make_tree(tree["primary"], 12, 1_000_000, prefix="big")
    make_tree(tree["source"], 12, 1_000_000, prefix="bigraw")
    before = snapshot(tree["primary"])
    ready = tmp_path / "ready.json"
    d = daemons(tree["primary"], tree["work"], "--source", tree["source"], "--source-work",
                tree["source_work"], "--bwlimit", "1M", "--ready-file", str(ready))
    d.wait_status(lambda s: copying(s, "deploy") and copying(s, "clone"), 30, "both copies")
    assert read_lock_file(tree["primary"]) is not None  # held while staging in
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=10) == 0, d.log()
    assert read_lock_file(tree["primary"]) is None
    assert snapshot(tree["primary"]) == before  # nothing was saved
    assert not os.path.exists(os.path.join(tree["primary"], DEFAULT_STATUS_DIR, "journal.jsonl"))
    assert not ready.exists()
    log = d.log()
    assert "phase stopped" in log and "final save" not in log


def test_restart_after_sigterm_during_staging_in_resumes_the_copy(tree, daemons):
    make_tree(tree["primary"], 12, 1_000_000, prefix="big")
    d1 = daemons(tree["primary"], tree["work"], "--bwlimit", "1M")
    d1.wait_status(copying, 30, "the copy")
    d1.signal(signal.SIGTERM)
    assert d1.wait_exit(timeout=10) == 0
    d2 = daemons(tree["primary"], tree["work"])
    d2.wait_phase("running")
    assert contents(tree["work"]) == contents(tree["primary"])


# -- SIGKILL and restart -------------------------------------------------------------------
def test_sigkill_while_running_then_restart_resumes_its_own_deployment(tree, daemons):
    primary, work = tree["primary"], tree["work"]
    d1 = daemons(primary, work, "--interval", "3600")
    first = d1.wait_phase("running")
    write(work, "unsaved.txt", b"work done just before the crash")
    d1.signal(signal.SIGKILL)
    d1.wait_exit()
    assert read_lock_file(primary).deployment_id == first["deployment_id"]  # left behind
    d2 = daemons(primary, work, "--interval", "3600")
    second = d2.wait_phase("running")
    assert second["deployment_id"] == first["deployment_id"] and second["resumed"]
    # The working copy is the newest truth: kept, and saved at once.
    wait_until(lambda: read(f"{primary}/unsaved.txt") == b"work done just before the crash",
               20, "the first save after the restart")
    assert read_heartbeat_file(primary)["pid"] == d2.proc.pid  # the new process beats
    d2.signal(signal.SIGTERM)
    assert d2.wait_exit() == 0
    assert read_lock_file(primary) is None


def test_sigterm_while_a_resumed_deployment_stages_in_saves_its_work(tree, daemons):
    """After a restart the working copy may hold unsaved work: stopping before ready must
    save it, not merely let the lock go."""
    primary, work = tree["primary"], tree["work"]
    args = ("--source", tree["source"], "--source-work", tree["source_work"],
            "--interval", "3600")
    d1 = daemons(primary, work, *args)
    d1.wait_phase("running")
    write(work, "unsaved.txt", b"made before the crash")
    d1.signal(signal.SIGKILL)
    d1.wait_exit()
    make_tree(tree["source"], 12, 1_000_000, prefix="new-raw")  # a slow clone this time
    d2 = daemons(primary, work, *args, "--bwlimit", "1M")
    d2.wait_status(lambda s: copying(s, "clone") and s["resumed"], 30, "the clone")
    d2.signal(signal.SIGTERM)
    assert d2.wait_exit() == 0, d2.log()
    assert read(f"{primary}/unsaved.txt") == b"made before the crash"
    assert read_lock_file(primary) is None
    assert "final save done" in d2.log()


def test_sigkill_during_staging_in_then_restart_resumes_the_copy(tree, daemons):
    make_tree(tree["primary"], 12, 1_000_000, prefix="big")
    d1 = daemons(tree["primary"], tree["work"], "--bwlimit", "1M")
    d1.wait_status(copying, 30, "the copy")
    d1.signal(signal.SIGKILL)
    d1.wait_exit()
    held = read_lock_file(tree["primary"])
    d2 = daemons(tree["primary"], tree["work"])
    status = d2.wait_phase("running")
    assert status["deployment_id"] == held.deployment_id
    assert contents(tree["work"]) == contents(tree["primary"])


# -- failures ------------------------------------------------------------------------------
def test_failed_final_save_keeps_lock_and_work_and_exits_nonzero(tree, daemons):
    primary, work = tree["primary"], tree["work"]
    d = daemons(primary, work, "--interval", "3600", "--final-save-deadline", "3")
    status = d.wait_phase("running")
    write(work, "precious.txt", b"not saved yet")
    os.rename(primary, primary + ".gone")  # the mount vanished
    try:
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 6
    finally:
        os.rename(primary + ".gone", primary)
    log = d.log()
    assert "final save failed" in log and "are kept" in log and "does not exist" in log
    assert read_lock_file(primary).deployment_id == status["deployment_id"]
    assert read(f"{work}/precious.txt") == b"not saved yet"
    assert read_marker(work).phase == "deployed"
    # Nothing is lost: a person finishes the job by hand.
    assert run_cli("save", work).code == 0
    assert read(f"{primary}/precious.txt") == b"not saved yet"
    assert run_cli("undeploy", work).code == 0


def test_lock_heartbeat_keeps_a_running_deployment_from_looking_stale(tree, daemons, tmp_path):
    d = daemons(tree["primary"], tree["work"], "--interval", "3600", "--stale-after", "2")
    d.wait_phase("running")
    beats = set()
    end = time.monotonic() + 5  # more than twice the stale-after time
    lock = read_lock_file(tree["primary"])
    while time.monotonic() < end:
        assert read_lock_file(tree["primary"]) == lock and lock.live  # never rewritten
        beats.add(read_heartbeat_file(tree["primary"])["beat"])
        time.sleep(0.1)
    assert len(beats) >= 3
    r = run_cli("deploy", tree["primary"], str(tmp_path / "other"), "--take-over-stale")
    assert r.code == 3, r.err


def test_lock_replaced_by_another_deployment_stops_all_writing(tree, daemons):
    primary, work = tree["primary"], tree["work"]
    d = daemons(primary, work, "--token", TOKEN)
    d.wait_phase("running")
    now = iso(utcnow())
    foreign = LockInfo(deployment_id="f" * 32, host="elsewhere", instance="other-pod", pid=1,
                       user="someone", primary=primary, work="/elsewhere", created=now,
                       heartbeat=now, live=True)
    lock_path = os.path.join(primary, DEFAULT_STATUS_DIR, "lock")
    with open(lock_path + ".tmp", "wb") as f:
        f.write(foreign.to_json())
    os.replace(lock_path + ".tmp", lock_path)
    write(work, "after-takeover.txt", b"must never reach the primary")
    status = d.wait_phase("lock-lost", timeout=20)
    assert "other-pod" in status["lock_lost"] and status["health"] == "lock-lost"
    code, body, _ = d.request("/healthz")  # open to anyone: the holder is not named there
    assert code == 200 and json.loads(body) == {"health": "lock-lost", "phase": "lock-lost"}
    assert d.request("/save", "POST", AUTH)[0] == 409
    _, metrics, _ = d.request("/metrics")
    assert b'spaceport_phase{phase="lock-lost"} 1.0' in metrics
    time.sleep(1.5)  # three autosave intervals: none of them may write
    assert not os.path.exists(f"{primary}/after-takeover.txt")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 4
    assert read_lock_file(primary).deployment_id == "f" * 32
    assert read(f"{work}/after-takeover.txt") == b"must never reach the primary"
    assert "lock lost" in d.log()


# -- the primary on a OneData-like FUSE mount ------------------------------------------------
@pytest.fixture
def onedata(tmp_path):
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mount = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mount.mkdir()
    make_tree(str(backing), 6, 20_000)
    with OneDataFS(backing, mount) as fs:
        yield fs, str(backing), str(mount)


@pytest.mark.fuse
@pytest.mark.parametrize("errno_name", ["ENOTCONN", "EIO"])
def test_primary_unavailable_while_running_degrades_retries_and_recovers(onedata, daemons,
                                                                         tmp_path, errno_name):
    fs, backing, mount = onedata
    work = str(tmp_path / "work")
    d = daemons(mount, work)
    status = d.wait_phase("running")
    fs.inject(op="*", path="*", errno=errno_name)
    write(work, "during-outage.txt", b"written while OneData is down")
    down = d.wait_status(lambda s: s["health"] == "degraded" and s["saves"]["failed"] >= 2,
                         30, "a degraded health after failed autosaves")
    assert down["phase"] == "running" and down["ready"] and down["errors"]
    code, body, _ = d.request("/healthz")
    # The open probe says a word and the phase; why (errors naming paths, a lock's holder)
    # only /status says, which the password guards.
    assert code == 200 and json.loads(body) == {"health": "degraded", "phase": "running"}
    assert down["health_reason"] and mount not in body.decode()
    assert d.request("/readyz")[0] == 200
    assert read_lock_file(backing).deployment_id == status["deployment_id"]  # never given up
    fs.clear_faults()
    d.wait_status(lambda s: s["health"] == "ok"
                  and read(f"{backing}/during-outage.txt") is not None, 30, "the recovery")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    assert read_lock_file(backing) is None


@pytest.mark.fuse
def test_final_save_failing_with_io_errors_exits_1_keeping_lock_and_work(onedata, daemons,
                                                                         tmp_path):
    fs, backing, mount = onedata
    work = str(tmp_path / "work")
    d = daemons(mount, work, "--interval", "3600", "--final-save-deadline", "3")
    status = d.wait_phase("running")
    write(work, "result.mrc", b"x" * 1000)
    fs.inject(op="create", path="*", errno="EIO")  # every new file fails; reads still work
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 1
    assert "final save failed" in d.log()
    fs.clear_faults()
    assert read_lock_file(backing).deployment_id == status["deployment_id"]
    assert read(f"{work}/result.mrc") == b"x" * 1000 and read_marker(work).phase == "deployed"
    # Starting the daemon again is enough to bring the work home.
    again = daemons(mount, work)
    assert again.wait_phase("running")["resumed"]
    again.signal(signal.SIGTERM)
    assert again.wait_exit() == 0
    assert read(f"{backing}/result.mrc") == b"x" * 1000 and read_lock_file(backing) is None


@pytest.mark.fuse
def test_second_signal_aborts_the_final_save_keeping_lock_and_work(onedata, daemons,
                                                                    tmp_path):
    fs, backing, mount = onedata
    work = str(tmp_path / "work")
    d = daemons(mount, work, "--interval", "3600")
    status = d.wait_phase("running")
    make_tree(work, 12, 1_000_000, prefix="result")
    fs.set_delays(io_delay_ms=20)  # a slow provider: the final save takes a while
    d.signal(signal.SIGTERM)
    d.wait_status(lambda s: s["phase"] == "staging-out" and any(
        t["name"] == "final save" and t["bytes_done"] for t in s["tasks"]), 30,
        "the final save under way")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=20) == 130
    fs.set_delays(io_delay_ms=0)
    assert read_lock_file(backing).deployment_id == status["deployment_id"]
    assert read_marker(work).phase == "deployed" and len(contents(work)) > 12


# -- configuration the way containers give it ------------------------------------------------
def test_every_environment_variable_of_the_helm_chart_is_an_option_of_run():
    names = set(re.findall(r"name: (SPACEPORT_[A-Z_]+)", CHART.read_text()))
    assert {"SPACEPORT_PRIMARY", "SPACEPORT_TOKEN_FILE", "SPACEPORT_LISTEN"} <= names
    help_text = run_cli("run", "--help").out
    for name in names:
        assert name in help_text, name


def test_configured_by_environment_like_the_chart_with_json_logs(tree, daemons, tmp_path):
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    env = {"SPACEPORT_PRIMARY": tree["primary"], "SPACEPORT_WORK": tree["work"],
           "SPACEPORT_SOURCE": tree["source"], "SPACEPORT_SOURCE_WORK": tree["source_work"],
           "SPACEPORT_INTERVAL": "0.5", "SPACEPORT_FINAL_SAVE_DEADLINE": "20",
           "SPACEPORT_TOKEN_FILE": str(token_file), "SPACEPORT_LOG_FORMAT": "json",
           "SPACEPORT_INSTANCE": "scipion-7d9f-x2", "SPACEPORT_STATUS_DIR": ".status",
           "SPACEPORT_KEEP_WORK": "true"}
    d = daemons(None, None, env=env, fast=False)
    d.wait_phase("running")
    with open(os.path.join(tree["primary"], ".status", "lock"), "rb") as f:
        assert LockInfo.from_json(f.read()).instance == "scipion-7d9f-x2"
    code, body, _ = d.request("/save", "POST", AUTH)
    assert code == 202, body
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert read_marker(tree["work"]).phase == "undeployed"  # kept
    lines = d.log().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "message"} <= e.keys() for e in events)
    assert all(e["time"].endswith("+00:00") for e in events)  # ISO, UTC, never overridden
    phases = [e["phase"] for e in events if e.get("event") == "phase"]
    assert phases == ["locking", "staging-in", "ready", "running", "staging-out", "released"]
    assert TOKEN not in d.log()


def test_usage_errors_exit_2_before_anything_happens(tree, daemons):
    d = daemons(tree["primary"], tree["work"], "--source", tree["source"])
    assert d.wait_exit() == 2 and "--source-work" in d.log()
    d = daemons(tree["primary"], tree["work"], "--token", "a", "--token-file", "/nonexistent")
    assert d.wait_exit() == 2
    d = daemons(tree["primary"], tree["work"], "--source", tree["source"], "--source-work",
                os.path.join(tree["work"], "raw"))
    assert d.wait_exit() == 2 and "overlap" in d.log()


def test_sigint_works_like_sigterm_and_modes_are_restored(tree, daemons):
    os.chmod(os.path.join(tree["primary"], "notes.txt"), 0o600)
    d = daemons(tree["primary"], tree["work"], "--keep-work")
    d.wait_phase("running")
    assert stat.S_IMODE(os.stat(os.path.join(tree["work"], "notes.txt")).st_mode) == 0o600
    d.signal(signal.SIGINT)  # Ctrl-C on a VM: the same as SIGTERM
    assert d.wait_exit() == 0 and read_lock_file(tree["primary"]) is None
