"""End to end through the command line, as real processes: the story, exit codes, options."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli, snapshot, write

from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR
ODD = ['a "quoted" name', "new\nline", "tab\there", "back\\slash", " leading space",
       "ünïcödé", os.fsdecode(b"caf\xe9-latin1"), "-starts-with-dash", "*glob?[x]"]
COMMANDS = ["deploy", "save", "undeploy", "status", "unlock", "verify", "trash", "demo"]


def odd_project(primary):
    for i, name in enumerate(ODD):
        write(primary, f"odd/{name}", name.encode("utf-8", "surrogateescape"),
              mtime_ns=1_650_000_000_000_000_000 + i)
        write(primary, f"dir {i}/{name}/inner", b"x" * i, mode=0o600)
    write(primary, "data/mic.mrc", os.urandom(300_000))
    os.makedirs(os.path.join(primary, "empty"))


def add_links(work):
    os.symlink("../data/mic.mrc", os.path.join(work, "odd", "rel link"))
    os.symlink(os.path.join(work, "data", "mic.mrc"), os.path.join(work, "abs-inside"))
    os.symlink(work, os.path.join(work, "to-root"))
    os.symlink("/opt/elsewhere/data", os.path.join(work, "abs-outside"))
    os.symlink("dangling/target", os.path.join(work, "dangling"))
    os.symlink("loop", os.path.join(work, "loop"))
    for name in ODD:
        os.symlink(name, os.path.join(work, "odd", "link to " + name))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = run_cli(command, "--help")
    assert result.code == 0 and "Usage" in result.out and len(result.out) > 300


def test_full_round_trip_with_odd_names_and_all_link_kinds(tmp_path):
    primary, work1, work2 = (str(tmp_path / n) for n in ("primary", "w1", "w2"))
    os.makedirs(primary)
    odd_project(primary)
    assert run_cli("deploy", primary, work1).code == 0
    add_links(work1)
    write(work1, "odd/new\nfile", b"edited")
    os.unlink(os.path.join(work1, "odd", "tab\there"))
    r = run_cli("save", work1)
    assert r.code == 0, r.err
    before = snapshot(work1)
    assert run_cli("undeploy", work1).code == 0
    assert not os.path.exists(os.path.join(work1, "data"))
    for root, _, files in os.walk(primary):  # the primary never holds a symlink
        for f in files:
            assert not os.path.islink(os.path.join(root, f))
    r = run_cli("deploy", primary, work2)
    assert r.code == 0, r.err
    after = snapshot(work2)
    assert after == before  # content, modes, mtimes, names, empty dirs, links
    assert os.readlink(os.path.join(work2, "abs-inside")) == os.path.join(work2, "data", "mic.mrc")
    assert os.readlink(os.path.join(work2, "to-root")) == work2
    assert run_cli("verify", work2, "--checksum").code == 0


def test_exit_codes(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    write(primary, "a", b"1")
    write(primary, "b", b"2")
    write(primary, "c", b"3")
    # overlap? no: usage
    assert run_cli("deploy", primary, str(tmp_path / "nope" / "..", ), ).code == 2
    assert run_cli("deploy", str(tmp_path / "missing"), work).code == 6
    assert run_cli("deploy", primary, work).code == 0
    other = run_cli("deploy", primary, str(tmp_path / "w2"))
    assert other.code == 3 and "instance" in other.err and "heartbeat" in other.err
    os.unlink(os.path.join(work, "a"))
    os.unlink(os.path.join(work, "b"))
    mass = run_cli("save", work)  # held by the deletion guard: exit 0, with a warning
    assert mass.code == 0 and "--allow-mass-delete" in mass.err and "2 deletions held" in mass.err
    assert os.path.exists(os.path.join(primary, "a")) and os.path.exists(os.path.join(primary, "b"))
    assert run_cli("save", work, "--allow-mass-delete").code == 0
    assert not os.path.exists(os.path.join(primary, "a"))
    lock = os.path.join(primary, S, "lock")
    data = json.load(open(lock))
    json.dump({**data, "deployment_id": "e" * 32}, open(lock, "w"))
    lost = run_cli("save", work)
    assert lost.code == 4 and "lock" in lost.err
    json.dump(data, open(lock, "w"))
    os.rename(os.path.join(work, ".spaceport"), str(tmp_path / "marker-away"))
    assert run_cli("save", work).code == 5
    # No WORK, and the current folder is inside no working copy: the missing-marker refusal.
    outside = run_cli("save", cwd=str(tmp_path))
    assert outside.code == 5 and "not a spaceport working copy" in outside.err
    assert run_cli("deploy", primary, cwd=str(tmp_path)).code == 2  # deploy PRIMARY: WORK?
    assert run_cli("frobnicate").code == 2


def test_environment_variables_set_options(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    write(primary, "f", b"1")
    env = {"SPACEPORT_STATUS_DIR": "custom_status", "SPACEPORT_INSTANCE": "pod-xyz",
           "SPACEPORT_PRIMARY": primary, "SPACEPORT_WORK": work}
    assert run_cli("deploy", env=env).code == 0
    data = json.load(open(os.path.join(primary, "custom_status", "lock")))
    assert data["instance"] == "pod-xyz"
    assert run_cli("save", env={"SPACEPORT_JOBS": "not-a-number"}, ).code == 2
    assert "SPACEPORT_JOBS" in run_cli("save", "--help").out


def test_status_text_and_json(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    write(primary, "f", b"1")
    run_cli("deploy", primary, work)
    write(work, "new", b"12345")
    text = run_cli("status", work)
    assert text.code == 0 and "held by this working copy" in text.out
    assert "1 file to upload (5 B)" in text.out
    facts = json.loads(run_cli("status", work, "--json").out)
    assert facts["lock_is_ours"] and facts["pending"]["files_to_upload"] == 1
    assert facts["pending"]["bytes_to_upload"] == 5 and facts["last_save"] is None
    run_cli("save", work)
    facts = json.loads(run_cli("status", work, "--json").out)
    assert facts["last_save"] and facts["pending"]["files_to_upload"] == 0
    assert facts["lock"]["heartbeat"] and facts["lock"]["live"] is False
    prim = json.loads(run_cli("status", "--primary", primary, "--json").out)
    assert prim["lock"]["deployment_id"] == facts["deployment_id"]
    assert prim["recent_saves"][-1]["uploaded"] == 1
    # From inside the working copy (a subfolder), no WORK: found by walking up to its marker.
    os.makedirs(os.path.join(work, "deep", "er"), exist_ok=True)
    inside = run_cli("status", "--json", cwd=os.path.join(work, "deep", "er"))
    assert inside.code == 0 and json.loads(inside.out)["work"] == os.path.abspath(work)
    assert run_cli("status", cwd=str(tmp_path)).code == 1  # inside none: "not a working copy"
    assert run_cli("status", work, "--primary", primary).code == 2


def test_unlock_needs_force_and_confirmation(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    run_cli("deploy", primary, work)
    live = run_cli("unlock", primary)
    assert live.code == 3 and "--force" in live.err
    assert run_cli("unlock", primary, "--force").code == 2  # no tty, no --yes
    assert os.path.exists(os.path.join(primary, S, "lock"))
    assert run_cli("unlock", primary, "--force", "--yes").code == 0
    assert not os.path.exists(os.path.join(primary, S, "lock"))
    assert run_cli("save", work).code == 4  # the unlocked deployment is fenced off


def test_stale_daemon_lock_is_unlocked_without_force(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    run_cli("deploy", primary, work)
    lock = os.path.join(primary, S, "lock")
    data = json.load(open(lock))
    json.dump({**data, "heartbeat": "2020-01-01T00:00:00+00:00", "live": True}, open(lock, "w"))
    assert "STALE" in run_cli("status", "--primary", primary).out
    assert run_cli("unlock", primary, "--yes").code == 0


def test_rebase_rewrites_outside_targets(tmp_path):
    primary, work, work2 = (str(tmp_path / n) for n in ("p", "w", "w2"))
    os.makedirs(primary)
    run_cli("deploy", primary, work)
    os.symlink("/mnt/old-data/set1", os.path.join(work, "data"))
    run_cli("undeploy", work)
    assert run_cli("deploy", primary, work2, "--rebase", "/mnt/old-data=/mnt/new-data").code == 0
    assert os.readlink(os.path.join(work2, "data")) == "/mnt/new-data/set1"


def test_after_a_rebased_deploy_status_save_verify_and_undeploy_agree(tmp_path):
    """Issue 18: the links point to NEW, the manifest said OLD; save said 'nothing to save',
    verify 'link differs', undeploy 'entries not proven saved ()'. The rebased links are a
    change to save: status says so, the first save records them, the rest agrees."""
    from spaceport.formats.links import read_manifest
    from spaceport.store import PRIMARY_CAPABILITIES, PosixStore

    primary, work, work2 = (str(tmp_path / n) for n in ("p", "w", "w2"))
    os.makedirs(primary)
    run_cli("deploy", primary, work)
    os.symlink("/mnt/old-data/set1", os.path.join(work, "data"))
    os.symlink("/elsewhere/x", os.path.join(work, "other"))  # not rebased
    os.symlink("data", os.path.join(work, "inside"))
    assert run_cli("undeploy", work).code == 0
    assert run_cli("deploy", primary, work2, "--rebase", "/mnt/old-data=/mnt/new-data").code == 0
    st = run_cli("status", work2)
    assert "links changed" in st.out, st.out
    dry = run_cli("save", "--dry-run", work2)
    assert "record link:   1 link" in dry.out and "data -> /mnt/new-data/set1" in dry.out, dry.out
    # Not saved yet, as status says: verify names it so (a difference, exit 1, as any
    # change not saved yet is), never the bare "link differs" of a damaged link.
    v = run_cli("verify", work2)
    assert v.code == 1, v
    assert "link rebased by the deploy, not saved yet (the next save records it): data " \
           "(work: -> '/mnt/new-data/set1', manifest: -> '/mnt/old-data/set1')" in v.out, v.out
    assert "link differs" not in v.out and "1 difference" in v.out, v.out
    r = run_cli("save", work2)
    assert r.code == 0 and "link manifest written" in r.out, r.out
    with PosixStore(primary, PRIMARY_CAPABILITIES, temp_token="x") as store:
        targets = {link.path: link.target for link in read_manifest(store, S)}
    assert targets == {"data": "/mnt/new-data/set1", "other": "/elsewhere/x", "inside": "data"}
    assert "nothing: the primary is up to date" in run_cli("status", work2).out
    assert "nothing to save" in run_cli("save", "--dry-run", work2).out
    v = run_cli("verify", work2)
    assert v.code == 0 and "identical" in v.out, v.out
    # A link the person changed after a save is no rebase: the index knows its saved target.
    os.remove(os.path.join(work2, "other"))
    os.symlink("/elsewhere/y", os.path.join(work2, "other"))
    v = run_cli("verify", work2)
    assert v.code == 1 and "link differs: other" in v.out and "rebased" not in v.out, v.out
    u = run_cli("undeploy", work2)
    assert u.code == 0 and u.err == "", u.err


def test_trash_list_restore_purge(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    for i in range(4):
        write(primary, f"keep/f{i}", b"k")
    write(primary, "gone/precious.txt", b"precious")
    run_cli("deploy", primary, work)
    os.unlink(os.path.join(work, "gone/precious.txt"))
    assert run_cli("save", work).code == 0
    listing = run_cli("trash", "list", work)
    assert listing.code == 0 and "1" in listing.out
    batch = os.listdir(os.path.join(primary, S, "trash"))[0]
    files = run_cli("trash", "list", work, "--batch", batch)
    assert "gone/precious.txt" in files.out
    restored = run_cli("trash", "restore", work, batch, "gone")
    assert restored.code == 0, restored.err
    assert open(os.path.join(work, "gone/precious.txt"), "rb").read() == b"precious"
    run_cli("save", work)
    assert open(os.path.join(primary, "gone/precious.txt"), "rb").read() == b"precious"
    assert run_cli("trash", "restore", "--primary", primary, batch).code == 3  # deployed
    assert run_cli("trash", "purge", "--primary", primary, "--all").code == 2  # no --yes
    assert run_cli("trash", "purge", "--primary", primary, "--all", "--yes").code == 0
    assert os.listdir(os.path.join(primary, S, "trash")) == []


def test_verify_finds_differences(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    write(primary, "f", b"12345")
    run_cli("deploy", primary, work)
    assert run_cli("verify", work).code == 0
    write(primary, "f", b"12345678")
    result = run_cli("verify", work)
    assert result.code == 1 and "size differs: f" in result.out


def wait_for_copy_in_flight(primary, proc, timeout=20):
    """Block until a spaceport temporary exists on the primary (a copy is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for _, _, files in os.walk(primary):
            if any("spaceport-tmp" in f for f in files):
                return True
        time.sleep(0.002)
    return False


def test_killed_save_resumes_and_never_shows_half_files(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    run_cli("deploy", primary, work)
    for i in range(200):
        write(work, f"many/f{i:03d}", os.urandom(20_000))
    write(work, "huge.bin", os.urandom(150 << 20))
    killed_mid_copy = 0
    for delay in (0.0, 0.05, 0.2):
        proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", work, "-j", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed_mid_copy += wait_for_copy_in_flight(primary, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for root, _, files in os.walk(primary):
            for f in files:
                path = os.path.join(root, f)
                rel = os.path.relpath(path, primary)
                if rel.startswith(S) or "spaceport-tmp" in f:
                    continue
                assert open(path, "rb").read() == open(os.path.join(work, rel), "rb").read(), rel
    assert killed_mid_copy >= 1  # the kills really landed in the middle of copies
    result = run_cli("save", work)
    assert result.code == 0, result.err
    assert snapshot(primary) == snapshot(work)
    leftovers = [f for _, _, fs in os.walk(primary) for f in fs if "spaceport-tmp" in f]
    assert leftovers == []


def test_interrupted_save_exits_130_and_resumes(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    os.makedirs(primary)
    run_cli("deploy", primary, work)
    write(work, "huge.bin", os.urandom(200 << 20))
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", work],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_copy_in_flight(primary, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the save finished before the signal arrived on this machine")
    assert proc.returncode == 130 and b"interrupted" in err
    assert run_cli("save", work).code == 0
    assert snapshot(primary) == snapshot(work)


def tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


def test_failed_final_save_keeps_the_lock_and_the_work(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    tmpfs(primary, "2m")
    try:
        write(primary, "existing", b"old content")
        assert run_cli("deploy", primary, work).code == 0
        write(work, "too-big.bin", os.urandom(3 << 20))
        write(work, "existing", b"new content")
        result = run_cli("undeploy", work)
        assert result.code == 1 and "full" in result.err
        assert os.path.exists(os.path.join(primary, S, "lock"))
        assert open(os.path.join(work, "too-big.bin"), "rb").read()
        assert not [f for f in os.listdir(primary) if "spaceport-tmp" in f]
        subprocess.run(["mount", "-o", "remount,size=16m", primary], check=True)
        result = run_cli("undeploy", work)
        assert result.code == 0, result.err
        assert open(os.path.join(primary, "existing"), "rb").read() == b"new content"
        assert not os.path.exists(os.path.join(primary, S, "lock"))
    finally:
        subprocess.run(["umount", "-l", primary])


def test_demo_runs(tmp_path):
    result = run_cli("demo", "--dir", str(tmp_path / "demo"))
    assert result.code == 0, result.err
    assert "identical" in result.out and "refused as it should be" in result.out
