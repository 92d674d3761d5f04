"""The eight ways two deployments could write one primary (issue 9), each with real processes.

Each test reproduces one failure as a user or an attacker would meet it: real `spaceport`
processes, a real daemon, the OneData-like FUSE filesystem with its per-call delays (a slow
mount keeps the race windows open), faked clocks (libfaketime) and a second pid namespace
(`unshare`). Every test checks the primary's files afterwards, not only exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli, snapshot, write
from daemon_helpers import make_tree, read_lock_file

from spaceport.safety.lock import DEFAULT_STATUS_DIR, DeploymentLock, WorkCopy, force_unlock
from spaceport.store import PRIMARY_CAPABILITIES, PosixStore
from spaceport.testing.onedatafs import OneDataFS, fuse_available

S = DEFAULT_STATUS_DIR


def lock_id(primary: str) -> str | None:
    info = read_lock_file(primary)
    return info.deployment_id if info else None


def marker_id(work: str) -> str:
    with open(os.path.join(work, ".spaceport", "deployment.json")) as f:
        return json.load(f)["deployment_id"]


@pytest.fixture
def onedata(tmp_path):
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    fs = OneDataFS(str(backing), str(mnt), attr_timeout=0.0)
    fs.start()
    yield fs
    fs.stop()


def project(root, files=20):
    make_tree(str(root), files, 2000)


# -- failure 5: a manual save on a daemon's working copy ---------------------------------
def test_a_command_beside_the_daemon_is_refused_and_touches_nothing(tmp_path, daemons):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    d = daemons(primary, work)
    d.wait_phase("running")
    lock_before = open(os.path.join(primary, S, "lock"), "rb").read()
    write(work, "run0/new.txt", b"edit")
    for command in (["save", work], ["undeploy", work]):
        res = run_cli(*command)
        assert res.code == 4, res
        assert "daemon" in res.err and "POST /save" in res.err
    assert open(os.path.join(primary, S, "lock"), "rb").read() == lock_before
    beat = json.loads(open(os.path.join(primary, S, f"heartbeat.{lock_id(primary)}")).read())
    assert beat["pid"] == d.proc.pid  # still the daemon's heartbeat
    assert os.path.exists(os.path.join(work, "run0", "new.txt"))  # undeploy wiped nothing
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert open(os.path.join(primary, "run0", "new.txt"), "rb").read() == b"edit"


# -- failure 6: a copied working copy ----------------------------------------------------
def test_a_copied_working_copy_never_becomes_a_second_writer(tmp_path):
    primary, work, copy = str(tmp_path / "p"), str(tmp_path / "w"), str(tmp_path / "w2")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    shutil.copytree(work, copy, symlinks=True)
    os.unlink(os.path.join(copy, "run0", "f0.mrc"))
    write(copy, "from-copy.txt", b"copy")
    for command in (["save", copy], ["undeploy", copy], ["deploy", "--resume", primary, copy]):
        res = run_cli(*command)
        assert res.code == 4, (command, res)
        assert work in res.err and copy in res.err
    assert os.path.exists(os.path.join(primary, "run0", "f0.mrc"))
    assert not os.path.exists(os.path.join(primary, "from-copy.txt"))
    write(work, "from-original.txt", b"orig")
    assert run_cli("save", work).code == 0
    assert os.path.exists(os.path.join(primary, "from-original.txt"))


# -- failure 7: two deploys into one folder at once --------------------------------------
def test_two_deploys_into_one_folder_at_once_run_one_after_the_other(tmp_path, onedata):
    backing, primary, work = onedata.backing, str(onedata.mountpoint), str(tmp_path / "w")
    project(backing, files=150)
    onedata.set_delays(meta_delay_ms=3)
    cmd = [sys.executable, "-m", "spaceport", "deploy", primary, work]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    onedata.set_delays(meta_delay_ms=0)
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 1]), results
    for code, err in results:
        if code == 1:
            assert "busy" in err and "deploy" in err and "pid" in err
    assert lock_id(str(backing)) == marker_id(work)
    assert snapshot(work, mtimes=False) == snapshot(str(backing), mtimes=False)
    leftovers = [n for _, _, names in os.walk(work) for n in names if "spaceport-tmp" in n]
    assert leftovers == []
    assert run_cli("save", work).code == 0


# -- failure 8: a full primary ------------------------------------------------------------
def test_a_deploy_onto_a_full_primary_leaves_no_lock_and_no_folder(tmp_path, onedata):
    backing, primary, work = onedata.backing, str(onedata.mountpoint), str(tmp_path / "w")
    project(backing)
    onedata.inject(op="write", path=f"/{S}/*", errno="ENOSPC")
    res = run_cli("deploy", primary, work)
    assert res.code == 1 and "No space left" in res.err and "no lock was left" in res.err
    assert [n for n in os.listdir(os.path.join(backing, S)) if n.startswith("lock")] == []
    assert not os.path.exists(work)  # a refused deploy leaves no folder it created
    onedata.clear_faults()
    assert run_cli("deploy", primary, work).code == 0
    assert lock_id(str(backing)) == marker_id(work)


def test_a_refused_deploy_leaves_no_folder_and_no_marker(tmp_path):
    primary, work, other = str(tmp_path / "p"), str(tmp_path / "w"), str(tmp_path / "o")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    res = run_cli("deploy", primary, other)
    assert res.code == 3 and not os.path.exists(other)
    os.makedirs(other)
    write(other, "thesis.tex", b"mine")
    res = run_cli("deploy", primary, other)
    assert res.code in (3, 5)
    assert os.listdir(other) == ["thesis.tex"]  # no .spaceport left in someone's folder


# -- failure 1: the heartbeat brings back a lock that was taken over ---------------------
def test_takeovers_of_a_beating_daemon_on_a_slow_mount_are_never_undone(tmp_path, onedata,
                                                                        daemons):
    backing, primary = str(onedata.backing), str(onedata.mountpoint)
    project(backing, files=6)
    d = daemons(primary, str(tmp_path / "a"), "--stale-after", "2")  # beats every 0.5 s
    d.wait_phase("running")
    onedata.set_delays(meta_delay_ms=150)  # the mount of the issue: 150 ms per call
    for round_ in range(3):
        assert run_cli("unlock", "--force", "--yes", primary).code == 0
        work_b = str(tmp_path / f"b{round_}")
        res = run_cli("deploy", primary, work_b, timeout=300)
        assert res.code == 0, res
        taken = marker_id(work_b)
        time.sleep(2.5)  # several of A's beats
        assert lock_id(backing) == taken
    onedata.set_delays(meta_delay_ms=0)
    d.wait_phase("lock-lost", timeout=30)
    assert lock_id(backing) == taken


# -- failure 2: release deletes another deployment's lock --------------------------------
@pytest.mark.parametrize("round_", range(4))
def test_a_release_racing_a_takeover_never_deletes_the_new_lock(tmp_path, onedata, round_):
    backing, primary = str(onedata.backing), str(onedata.mountpoint)
    project(backing, files=4)
    work_a = str(tmp_path / "a")
    assert run_cli("deploy", primary, work_a).code == 0
    onedata.set_delays(meta_delay_ms=40 + 30 * round_)
    undeploy = subprocess.Popen([sys.executable, "-m", "spaceport", "undeploy", work_a],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3 * round_)
    run_cli("unlock", "--force", "--yes", primary, timeout=120)
    work_b = str(tmp_path / "b")
    res_b = run_cli("deploy", primary, work_b, timeout=300)
    code_a = undeploy.wait(timeout=300)
    onedata.set_delays(meta_delay_ms=0)
    status = os.path.join(backing, S)
    if res_b.code == 0:
        # B deployed. A's release never deleted B's lock: it is in place (and a third
        # deploy is refused), or, if A's release moved it in the instant after A's last
        # check, kept aside as broken, and B is fenced.
        b_id = marker_id(work_b)
        if lock_id(backing) == b_id:
            assert run_cli("deploy", primary, str(tmp_path / "c")).code == 3
        else:
            kept = [json.load(open(os.path.join(status, n)))["deployment_id"]
                    for n in os.listdir(status) if n.startswith("lock.broken-")]
            assert b_id in kept, (code_a, undeploy.stderr.read())
            assert run_cli("save", work_b).code == 4
    else:
        assert res_b.code == 3  # A still held it at that moment
    assert not [n for n in os.listdir(os.path.join(backing, S)) if n.startswith("lock.release")]


# -- failure 3: a save in flight is not fenced --------------------------------------------
@pytest.mark.parametrize("round_", range(3))
def test_a_save_in_flight_stops_within_one_file_per_worker_after_a_takeover(tmp_path,
                                                                           onedata, round_):
    """The takeover is made by "another node" straight on the storage (the backing folder),
    between two of the save's calls, so the save cannot notice a gap without a lock: only
    fencing stops it. What landed after the takeover is counted on the primary itself."""
    backing, primary = str(onedata.backing), str(onedata.mountpoint)
    project(backing, files=4)
    work_a = str(tmp_path / "a")
    assert run_cli("deploy", primary, work_a).code == 0
    for i in range(400):
        write(work_a, f"new/{i % 5}/a{i:04}", b"A" * 100)
    onedata.set_delays(meta_delay_ms=2 + 3 * round_)
    jobs = 4
    save_a = subprocess.Popen([sys.executable, "-m", "spaceport", "save", "--jobs", str(jobs),
                               work_a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    new = os.path.join(backing, "new")

    def landed() -> set[str]:
        return {os.path.relpath(os.path.join(d, n), backing) for d, _, names in os.walk(new)
                for n in names if not n.startswith(".spaceport-tmp")}
    deadline = time.monotonic() + 60
    while len(landed()) < 30 + 40 * round_:
        assert time.monotonic() < deadline and save_a.poll() is None
        time.sleep(0.005)
    with PosixStore(backing, PRIMARY_CAPABILITIES, temp_token="bbbbbbbb") as store:
        force_unlock(store, S)
        DeploymentLock.acquire(store, S, deployment_id="b" * 32,
                               work=WorkCopy("node-b", "/elsewhere", None))
        at_takeover = landed()
    err_a = save_a.communicate(timeout=300)[1]
    onedata.set_delays(meta_delay_ms=0)
    assert save_a.returncode == 4, err_a
    after = landed() - at_takeover
    assert len(after) <= jobs, sorted(after)
    for path in after:
        assert path in err_a, (path, err_a)
    assert "lock lost" in err_a and lock_id(backing) == "b" * 32


# -- failure 4: clocks and pid namespaces -------------------------------------------------
def faketime(offset: str) -> list[str]:
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (apt-get install faketime)")
    return ["faketime", "-f", offset]


@pytest.mark.parametrize("reader_clock", ["+11m", "-3h"])
def test_clock_skew_never_makes_a_live_lock_stale(tmp_path, daemons, reader_clock):
    primary = str(tmp_path / "p")
    project(primary, files=4)
    d = daemons(primary, str(tmp_path / "w"), "--stale-after", "3")
    d.wait_phase("running")
    held = lock_id(primary)
    proc = subprocess.run(faketime(reader_clock) + [sys.executable, "-m", "spaceport", "unlock",
                                                    "--yes", primary],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "not stale" in proc.stderr and "watching" in proc.stderr
    assert lock_id(primary) == held
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def unshare_pid() -> list[str]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a second pid namespace")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid does not work here: {probe.stderr.decode().strip()}")
    return ["unshare", "--pid", "--fork", "--mount-proc"]


def test_a_second_pid_namespace_on_the_same_host_must_watch_not_guess(tmp_path, daemons):
    """A second container of one pod: same host name and boot, another pid namespace, where
    the daemon's pid does not exist. It must watch the heartbeat, and find it beating."""
    primary = str(tmp_path / "p")
    project(primary, files=4)
    d = daemons(primary, str(tmp_path / "w"), "--stale-after", "3")
    d.wait_phase("running")
    held = lock_id(primary)
    proc = subprocess.run(unshare_pid() + [sys.executable, "-m", "spaceport", "unlock", "--yes",
                                           primary], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert lock_id(primary) == held
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_a_killed_daemon_is_stale_at_once_here_and_after_watching_elsewhere(tmp_path,
                                                                             daemons):
    primary = str(tmp_path / "p")
    project(primary, files=4)
    d = daemons(primary, str(tmp_path / "w"), "--stale-after", "3")
    d.wait_phase("running")
    d.proc.kill()
    d.proc.wait()
    # In another pid namespace nothing is provable: it watches 3 s, then finds it stale.
    started = time.monotonic()
    proc = subprocess.run(unshare_pid() + [sys.executable, "-m", "spaceport", "unlock", "--yes",
                                           primary], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 3 and "did not change" in proc.stdout + proc.stderr
    assert lock_id(primary) is None
    # Here (same boot, same pid namespace) a dead process is known at once.
    d2 = daemons(primary, str(tmp_path / "w"), "--stale-after", "600")
    d2.wait_phase("running")
    d2.proc.kill()
    d2.proc.wait()
    started = time.monotonic()
    res = run_cli("unlock", "--yes", primary)
    assert res.code == 0 and "gone" in res.out + res.err
    assert time.monotonic() - started < 30
    assert lock_id(primary) is None


def test_take_over_stale_watches_a_beating_daemon_and_takes_a_dead_one(tmp_path, daemons):
    primary = str(tmp_path / "p")
    project(primary, files=4)
    d = daemons(primary, str(tmp_path / "w"), "--stale-after", "2")
    d.wait_phase("running")
    held = lock_id(primary)
    res = run_cli("deploy", "--take-over-stale", primary, str(tmp_path / "b"))
    # It watched, saw the heartbeat change (so it stopped watching early), and refused.
    assert res.code == 3 and "watching the holder's heartbeat for up to 2 s" in res.err
    assert lock_id(primary) == held
    assert not os.path.exists(tmp_path / "b")
    d.proc.kill()
    d.proc.wait()
    res = run_cli("deploy", "--take-over-stale", primary, str(tmp_path / "b"))
    assert res.code == 0, res.err
    assert lock_id(primary) == marker_id(str(tmp_path / "b"))
    assert [n for n in os.listdir(os.path.join(primary, S)) if n.startswith("lock.stale-")]


# -- the race windows held open at a gate, acting from a second "node" ----------------------
@pytest.fixture
def two_nodes(tmp_path, onedata):
    """A second mount of the same space: another node. (A call held on one mount keeps the
    kernel's locks of its folder on that mount; a second mount shares none of them.)"""
    node2 = OneDataFS(onedata.backing, str(tmp_path / "node2"), attr_timeout=0.0)
    os.mkdir(node2.mountpoint)
    node2.start()
    yield onedata, node2
    node2.stop()


def test_a_heartbeat_held_across_a_takeover_cannot_bring_the_lock_back(tmp_path, two_nodes,
                                                                       daemons):
    """Failure 1 with the window held open: the daemon's heartbeat is stopped inside its
    write while another node unlocks and deploys; then it goes on."""
    node1, node2 = two_nodes
    backing = str(node1.backing)
    project(backing, files=4)
    d = daemons(str(node1.mountpoint), str(tmp_path / "a"), "--stale-after", "2")
    d.wait_phase("running")
    gate = node1.hold(op="rename", path=f"/{S}/heartbeat.*", when="before", timeout=60)
    node1.wait_held(gate, timeout=20)  # the daemon is inside its heartbeat's rename
    assert run_cli("unlock", "--force", "--yes", str(node2.mountpoint)).code == 0
    work_b = str(tmp_path / "b")
    assert run_cli("deploy", str(node2.mountpoint), work_b).code == 0
    node1.release(gate)
    d.wait_phase("lock-lost", timeout=30)
    assert lock_id(backing) == marker_id(work_b)
    write(work_b, "b.txt", b"B's work")
    assert run_cli("save", work_b).code == 0
    assert open(os.path.join(backing, "b.txt"), "rb").read() == b"B's work"


def test_a_release_held_across_a_takeover_never_deletes_the_new_lock(tmp_path, two_nodes):
    """Failure 2 with the window held open: A's release has checked the lock is its own and
    is stopped inside its rename while another node unlocks and deploys; then it goes on."""
    node1, node2 = two_nodes
    backing = str(node1.backing)
    project(backing, files=4)
    work_a, work_b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli("deploy", str(node1.mountpoint), work_a).code == 0
    gate = node1.hold(op="rename", path=f"/{S}/lock.release.*", when="before", timeout=60)
    undeploy = subprocess.Popen([sys.executable, "-m", "spaceport", "undeploy", work_a],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node1.wait_held(gate, timeout=30)
    assert run_cli("unlock", "--force", "--yes", str(node2.mountpoint)).code == 0
    assert run_cli("deploy", str(node2.mountpoint), work_b).code == 0
    b_id = marker_id(work_b)
    node1.release(gate)
    err_a = undeploy.communicate(timeout=60)[1]
    assert undeploy.returncode == 4, err_a
    assert "took it just before this release" in err_a
    status = os.path.join(backing, S)
    kept = [json.load(open(os.path.join(status, n)))["deployment_id"]
            for n in os.listdir(status) if n.startswith("lock.broken-")]
    assert b_id in kept  # B's record was set aside, never deleted and never put back
    assert not [n for n in os.listdir(status) if n.startswith("lock.release")]
    assert os.path.isdir(work_a)  # the failed undeploy kept A's working copy
    assert run_cli("save", work_b).code == 4  # B is fenced: it must deploy again
