"""Issue 21: everyday use as rclone, git and restic users expect.

Commands find their working copy from any folder inside it; ``--exclude`` filters are kept
by the working copy (uploaded, not uploaded, never deleted, ignored by the deletion guard,
used by the daemon); ``--json`` prints one object and nothing else on stdout; ``--bwlimit``
holds a measured rate; ``status`` names the daemon, an interrupted deploy and when unsaved
files changed; ``trash purge`` asks and dry-runs. Real processes on real folders.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli, write
from test_faults import Mount, needs_fuse

from spaceport.formats.marker import read_marker
from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR
TMP = "Runs/*/tmp/"  # the recommended filter for Scipion's scratch (README)


def deployed(tmp_path, files: dict[str, bytes], *args: str) -> tuple[str, str]:
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    for rel, data in files.items():
        write(primary, rel, data)
    r = run_cli("deploy", primary, work, *args)
    assert r.code == 0, r.err
    return primary, work


def one_json(r) -> dict:
    """stdout is one JSON object and nothing else."""
    lines = [line for line in r.out.splitlines() if line.strip()]
    assert len(lines) == 1, r.out
    return json.loads(lines[0])


# -- finding the working copy ------------------------------------------------------------
def test_every_command_finds_its_working_copy_from_a_subfolder(tmp_path):
    primary, work = deployed(tmp_path, {"Runs/001/extra/a.mrc": b"a", "project.sqlite": b"p"})
    inside = os.path.join(work, "Runs", "001", "extra")
    write(work, "Runs/001/extra/new.mrc", b"new")
    r = run_cli("save", cwd=inside)  # no WORK at all
    assert r.code == 0 and f"saved {work}" in r.out, r.err
    assert open(os.path.join(primary, "Runs/001/extra/new.mrc"), "rb").read() == b"new"
    write(work, "Runs/001/extra/newer.mrc", b"newer")
    assert run_cli("save", ".", cwd=inside).code == 0  # WORK given as a folder inside it
    assert os.path.exists(os.path.join(primary, "Runs/001/extra/newer.mrc"))
    assert "unsaved       nothing" in run_cli("status", cwd=inside).out
    assert run_cli("verify", cwd=inside).code == 0
    assert run_cli("trash", "list", cwd=inside).code == 0
    os.unlink(os.path.join(work, "Runs/001/extra/new.mrc"))
    assert run_cli("save", cwd=inside).code == 0
    batch = os.listdir(os.path.join(primary, S, "trash"))[0]
    assert run_cli("trash", "restore", batch, cwd=inside).code == 0  # BATCH, WORK found
    assert os.path.exists(os.path.join(work, "Runs/001/extra/new.mrc"))
    r = run_cli("undeploy", "--keep-work", cwd=inside)
    assert r.code == 0 and f"undeployed {work}" in r.out, r.err
    # Inside no working copy: the clear message of a folder without a marker.
    r = run_cli("save", cwd=str(tmp_path))
    assert r.code == 5 and "not a spaceport working copy" in r.err


@needs_fuse
def test_the_walk_up_stops_at_a_filesystem_boundary(tmp_path):
    """A volume mounted inside a working copy is not part of it: git's rule."""
    _, work = deployed(tmp_path, {"a.txt": b"a"})
    m = Mount(Path(work), name="mnt")  # another filesystem, mounted inside the copy
    try:
        os.makedirs(os.path.join(m.path, "sub"))
        r = run_cli("status", cwd=os.path.join(m.path, "sub"))
        assert r.code == 1 and "not a spaceport working copy" in r.out
        # The control: the same depth on the working copy's own filesystem is found.
        assert run_cli("status", cwd=m.backing).code == 0
    finally:
        m.stop()
        shutil.rmtree(m.path, ignore_errors=True)
        shutil.rmtree(m.backing, ignore_errors=True)


# -- filters -----------------------------------------------------------------------------
def test_excluded_paths_are_neither_uploaded_nor_deleted_and_stay_remembered(tmp_path):
    files = {"Runs/001/extra/out.mrc": b"out", "Runs/001/tmp/old-scratch.dat": b"old",
             "Tmp/viewer.tmp": b"v", "project.sqlite": b"p"}
    primary, work = deployed(tmp_path, files)  # no filter yet: everything comes
    assert os.path.exists(os.path.join(work, "Runs/001/tmp/old-scratch.dat"))
    (tmp_path / "filters").write_text("# Scipion's scratch\n\n/Tmp/\n")
    write(work, "Runs/002/tmp/scratch.dat", b"s" * 1000)
    write(work, "Runs/002/extra/result.mrc", b"r")
    write(work, "Tmp/more.tmp", b"m")
    r = run_cli("save", work, "--exclude", TMP, "--exclude-from", str(tmp_path / "filters"))
    assert r.code == 0, r.err
    assert os.path.exists(os.path.join(primary, "Runs/002/extra/result.mrc"))  # uploaded
    assert not os.path.exists(os.path.join(primary, "Runs/002/tmp/scratch.dat"))  # not
    assert not os.path.exists(os.path.join(primary, "Tmp/more.tmp"))
    assert read_marker(work).exclude == [TMP, "/Tmp/"]  # remembered by the working copy
    # Deleted in the working copy, excluded: never deleted on the primary.
    shutil.rmtree(os.path.join(work, "Runs/001/tmp"))
    os.unlink(os.path.join(work, "Tmp/viewer.tmp"))
    write(work, "Runs/003/tmp/later.dat", b"later")
    r = run_cli("save", work)  # no --exclude: the remembered filter applies
    assert r.code == 0, r.err
    assert open(os.path.join(primary, "Runs/001/tmp/old-scratch.dat"), "rb").read() == b"old"
    assert os.path.exists(os.path.join(primary, "Tmp/viewer.tmp"))
    assert not os.path.exists(os.path.join(primary, "Runs/003/tmp/later.dat"))
    assert not os.listdir(os.path.join(primary, S, "trash")) if \
        os.path.exists(os.path.join(primary, S, "trash")) else True
    status = one_json(run_cli("status", work, "--json"))
    assert status["exclude"] == [TMP, "/Tmp/"] and status["pending"]["files_to_upload"] == 0
    assert "excluded      'Runs/*/tmp/' '/Tmp/'" in run_cli("status", work).out
    # The negative control: --no-exclude forgets it, and the scratch is saved again.
    assert run_cli("save", work, "--no-exclude").code == 0
    assert os.path.exists(os.path.join(primary, "Runs/003/tmp/later.dat"))
    assert read_marker(work).exclude == []


def test_an_excluded_folder_is_not_deployed_and_stays_on_the_primary(tmp_path):
    files = {"Runs/001/extra/out.mrc": b"out", "Runs/001/tmp/big.dat": b"b" * 5000}
    primary, work = deployed(tmp_path, files, "--exclude", TMP)
    assert not os.path.exists(os.path.join(work, "Runs/001/tmp"))
    assert run_cli("verify", work).code == 0  # compared on neither side
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert os.path.exists(os.path.join(primary, "Runs/001/tmp/big.dat"))


def test_the_deletion_guard_weighs_only_what_is_not_excluded(tmp_path):
    """The index knows 20 excluded scratch files and 3 others; the 3 others are deleted
    (an emptied project but for its scratch). Counted with the scratch, 3 of 23 files would
    look like normal work; without it, none of the project's files is left: held."""
    files = {f"Runs/001/tmp/t{i:02d}.dat": b"t" for i in range(20)}
    files.update({"project.sqlite": b"p", "Logs/project.log": b"l", "Runs/001/x.mrc": b"x"})
    primary, work = deployed(tmp_path, files)
    for rel in ("project.sqlite", "Logs/project.log", "Runs/001/x.mrc"):
        os.unlink(os.path.join(work, rel))
    shutil.rmtree(os.path.join(work, "Logs"))
    r = run_cli("save", work, "--exclude", TMP, "--json")
    result = one_json(r)
    assert r.code == 0 and result["held_deletions"]["count"] >= 3, r.err
    assert "none of the 3 files" in result["held_deletions"]["reason"]
    assert os.path.exists(os.path.join(primary, "project.sqlite"))
    assert any("deletions held" in w or "deletion" in w for w in result["warnings"])
    # Confirmed, they go; the excluded scratch stays on both sides.
    assert run_cli("save", work, "--allow-mass-delete").code == 0
    assert not os.path.exists(os.path.join(primary, "project.sqlite"))
    assert len(os.listdir(os.path.join(primary, "Runs/001/tmp"))) == 20


def test_the_daemon_uses_the_filter_the_working_copy_remembers(tmp_path, daemons):
    primary, work = deployed(tmp_path, {"Runs/001/extra/out.mrc": b"out"}, "--exclude", TMP)
    assert run_cli("undeploy", work, "--keep-work").code == 0
    d = daemons(primary, work)  # no --exclude: a new deployment of the kept copy
    d.wait_phase("running")
    write(work, "Runs/001/tmp/scratch.dat", b"s")
    write(work, "Runs/001/extra/new.mrc", b"n")
    d.wait_for(lambda: os.path.exists(os.path.join(primary, "Runs/001/extra/new.mrc")), 30,
               "the autosave of new.mrc")
    saves = d.status()["saves"]["ok"]
    d.wait_status(lambda s: s["saves"]["ok"] >= saves + 2, 30, "two more autosaves")
    assert not os.path.exists(os.path.join(primary, "Runs/001/tmp/scratch.dat"))
    assert read_marker(work).exclude == [TMP]
    d.signal(signal.SIGTERM)
    assert d.wait_exit(60) == 0, d.log()
    # The final save left the scratch out too; the clean-up left it in WORK (never saved).
    assert not os.path.exists(os.path.join(primary, "Runs/001/tmp/scratch.dat"))
    assert os.path.exists(os.path.join(work, "Runs/001/tmp/scratch.dat"))


def test_a_pattern_that_would_mean_something_else_is_refused(tmp_path):
    primary, work = deployed(tmp_path, {"a": b"a"})
    for bad in ("!keep.me", "+ include", ""):
        r = run_cli("save", work, "--exclude", bad)
        assert r.code == 2 and "--exclude" in r.err, (bad, r.err)
    assert read_marker(work).exclude == []


# -- --json ------------------------------------------------------------------------------
def test_json_is_one_object_on_stdout_for_each_command(tmp_path):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    write(primary, "a/one.dat", b"1" * 1000)
    write(primary, "b/two.dat", b"2" * 2000)
    d = one_json(run_cli("deploy", primary, work, "--json", "--progress"))
    assert (d["command"], d["exit_code"], d["ok"]) == ("deploy", 0, True)
    assert d["files"] == 2 and d["copied"] == 2 and d["copied_bytes"] == 3000
    write(work, "a/three.dat", b"3" * 300)
    os.unlink(os.path.join(work, "b/two.dat"))
    r = run_cli("save", work, "--json", "--progress")
    s = one_json(r)
    assert (s["uploaded"], s["uploaded_bytes"], s["deleted"], s["exit_code"]) == (1, 300, 1, 0)
    assert "save" in r.err  # the progress bar went to stderr
    st = one_json(run_cli("status", work, "--json"))
    assert st["command"] == "status" and st["exit_code"] == 0 and st["work"] == work
    v = one_json(run_cli("verify", work, "--json"))
    assert v["identical"] is True and v["checked_files"] == 2
    os.unlink(os.path.join(primary, "a/one.dat"))
    r = run_cli("verify", work, "--json")
    v = one_json(r)
    assert r.code == 1 and v["exit_code"] == 1 and v["identical"] is False
    write(primary, "a/one.dat", b"1" * 1000)
    u = one_json(run_cli("undeploy", work, "--json", "--checksum"))
    assert u["command"] == "undeploy" and u["work_removed"] is True and u["exit_code"] == 0
    # A refusal is an outcome too: the exit code and the message, in the one object.
    r = run_cli("save", work, "--json")
    e = one_json(r)
    assert r.code == 5 and e["exit_code"] == 5 and e["ok"] is False
    assert "undeployed" in e["error"]
    assert one_json(run_cli("status", str(tmp_path), "--json"))["exit_code"] == 1


def only_json(r) -> dict:
    """stdout is exactly one JSON object: json.loads takes all of it, no other text."""
    result = json.loads(r.out)
    assert isinstance(result, dict), r.out
    assert result["exit_code"] == r.code and result["ok"] is (r.code == 0), (result, r.err)
    return result


def test_json_dry_runs_print_the_plan_as_one_object(tmp_path):
    primary, work = deployed(tmp_path, {"a/one.dat": b"1" * 1000, "b/two.dat": b"2" * 2000,
                                        "c/three.dat": b"3" * 30}, "--exclude", "/c/")
    write(work, "a/new.dat", b"n" * 500)
    write(work, "d/more.dat", b"m" * 70)
    os.unlink(os.path.join(work, "b/two.dat"))
    r = run_cli("save", work, "--dry-run", "--json")
    plan = only_json(r)
    assert r.code == 0 and (plan["command"], plan["dry_run"]) == ("save", True), r.err
    assert (plan["to_upload"], plan["to_upload_bytes"], plan["to_create"]) == (2, 570, 1)
    assert plan["to_trash"] == 1 and plan["paths"]["trash"] == ["b/two.dat"]
    assert plan["paths"]["upload"] == ["a/new.dat", "d/more.dat"]
    assert plan["held_deletions"] is None and plan["work"] == work
    assert not os.path.exists(os.path.join(primary, "a/new.dat"))  # a dry run
    # A dry run the real save would refuse: exit 5, the reason, still the one object.
    os.mkdir(tmp_path / "empty")
    r = run_cli("save", str(tmp_path / "empty"), "--dry-run", "--json")
    refused = only_json(r)
    assert r.code == 5 and refused["dry_run"] is True
    assert "would be refused" in refused["error"] and refused["hint"]
    # deploy --dry-run: the files and bytes it would bring, the lock, the filter it uses.
    r = run_cli("deploy", primary, work, "--dry-run", "--json")
    d = only_json(r)
    assert r.code == 0 and (d["command"], d["dry_run"]) == ("deploy", True), r.err
    assert (d["files"], d["bytes"], d["exclude"]) == (2, 3000, ["/c/"])
    assert "already deployed here" in d["working_copy"] and d["lock_holder"]
    r = run_cli("deploy", primary, str(tmp_path / "elsewhere"), "--dry-run", "--json")
    locked = only_json(r)
    assert r.code == 3 and locked["dry_run"] is True and "already deployed" in locked["error"]
    assert not os.path.exists(tmp_path / "elsewhere")


def test_json_every_failure_is_one_object_with_its_error(tmp_path):
    primary, work = deployed(tmp_path, {"a/one.dat": b"1"})
    usage = [("status", work, "--primary", primary, "--json"),
             ("deploy", "--resume", "--discard-local", "--json", primary, work),
             ("save", "--json", "--jobs", "0", work),
             ("save", work, "--jobs", "0", "--json")]  # --json after the bad value
    for args in usage:
        r = run_cli(*args)
        e = only_json(r)
        assert r.code == 2 and e["ok"] is False and e["command"] == args[0], (args, r.out)
        assert e["error"] and "Usage:" in r.err, (args, e)  # click's usage stays on stderr
    assert "exclude each other" in only_json(run_cli(*usage[1]))["error"]
    r = run_cli("save", "--jobs", "0", work, env={"SPACEPORT_JSON": "1"})
    assert only_json(r)["error"].startswith("Invalid value for '--jobs'")
    # Outside any working copy: deploy without WORK, status of a plain folder.
    r = run_cli("deploy", "--json", primary, cwd=str(tmp_path))
    e = only_json(r)
    assert r.code == 2 and "not inside a working copy" in e["error"] and e["hint"]
    r = run_cli("status", "--json", primary)
    e = only_json(r)
    assert r.code == 1 and "is not a spaceport working copy" in e["error"]
    assert e["message"] in e["error"]  # the key scripts read before stays
    # An error of spaceport's own: the one-line message in error, what to do in hint.
    r = run_cli("save", work, "--bwlimit", "fast", "--json")
    e = only_json(r)
    assert r.code == 2 and e["error"].startswith("--bwlimit") and "|" not in e["error"]
    # Without --json, stdout stays as it was: no object appears.
    assert run_cli("save", "--jobs", "0", work).out == ""


def test_json_undeploy_that_held_deletions_says_them(tmp_path):
    files = {"a/one.dat": b"1", "b/two.dat": b"2", "c.dat": b"3"}
    primary, work = deployed(tmp_path, files, "--exclude", "/scratch/")
    # The filter the copy remembers, given or not, is the one deploy --json reports.
    again = only_json(run_cli("deploy", primary, work, "--json"))
    assert again["exclude"] == ["/scratch/"]
    for name in ("a", "b"):
        shutil.rmtree(os.path.join(work, name))
    os.unlink(os.path.join(work, "c.dat"))
    saved = only_json(run_cli("save", work, "--json"))
    assert saved["held_deletions"]["count"] == 5
    r = run_cli("undeploy", work, "--json")
    u = only_json(r)
    assert r.code == 5 and u["command"] == "undeploy" and u["work_removed"] is False, r.err
    assert set(u["held_deletions"]) == set(saved["held_deletions"])  # the same shape
    assert u["held_deletions"]["count"] == 5 and u["held_deletions"]["files"] == 3
    assert "the undeploy stops here" in u["error"] and "--allow-mass-delete" in u["hint"]
    assert os.path.exists(os.path.join(primary, "a/one.dat"))
    # deploy --resume whose save of the unsaved work held deletions says them too.
    assert run_cli("undeploy", work, "--keep-work", "--allow-mass-delete").code == 0
    for rel in ("x.dat", "y.dat", "z.dat"):
        write(primary, rel, b"p")
    assert run_cli("deploy", primary, work).code == 0
    assert run_cli("undeploy", work, "--keep-work").code == 0
    for rel in ("x.dat", "y.dat", "z.dat"):
        os.unlink(os.path.join(work, rel))
    write(work, "new.dat", b"n")
    r = run_cli("deploy", "--resume", primary, work, "--json")
    d = only_json(r)
    assert r.code == 5 and d["saved_first"] is True and d["uploaded"] == 1, r.err
    assert d["held_deletions"]["count"] == 3


# -- --bwlimit ---------------------------------------------------------------------------
def timed(*args: str) -> tuple[float, dict]:
    start = time.monotonic()
    r = run_cli(*args, "--json")
    took = time.monotonic() - start
    assert r.code == 0, r.err
    return took, one_json(r)


def test_bwlimit_holds_the_rate_of_a_deploy_and_a_save(tmp_path):
    """Bytes over time, measured: never faster than the limit (load only slows it), and
    not far below it. The same deploy without a limit is the negative control."""
    limit = 2 << 20  # "2M": 2 MiB/s
    primary = str(tmp_path / "primary")
    for i in range(12):
        write(primary, f"d{i % 3}/f{i:02d}.dat", os.urandom(512 << 10))  # 6 MiB
    took, d = timed("deploy", primary, str(tmp_path / "w"), "--bwlimit", "2M")
    rate = d["copied_bytes"] / took
    print(f"deploy --bwlimit 2M: {d['copied_bytes']} bytes in {took:.2f} s = "
          f"{rate / (1 << 20):.2f} MiB/s")
    assert d["copied_bytes"] == 6 << 20
    assert rate <= limit * 1.05  # the process's start-up time only lowers the rate
    assert rate >= limit * 0.4
    shutil.copytree(primary, str(tmp_path / "primary2"),
                    ignore=shutil.ignore_patterns(S))  # the same bytes, not deployed yet
    took_free, _ = timed("deploy", str(tmp_path / "primary2"), str(tmp_path / "w2"))
    assert took_free < took / 2, (took_free, took)
    for i in range(6):
        write(str(tmp_path / "w"), f"new/n{i}.dat", os.urandom(512 << 10))  # 3 MiB
    took, s = timed("save", str(tmp_path / "w"), "--bwlimit", "1.5M")
    rate = s["uploaded_bytes"] / took
    print(f"save --bwlimit 1.5M: {s['uploaded_bytes']} bytes in {took:.2f} s = "
          f"{rate / (1 << 20):.2f} MiB/s")
    assert s["uploaded_bytes"] == 3 << 20
    assert 1.5 * (1 << 20) * 0.4 <= rate <= 1.5 * (1 << 20) * 1.05


# -- status ------------------------------------------------------------------------------
def test_status_names_the_daemon_that_keeps_the_copy(tmp_path, daemons):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    write(primary, "a.dat", b"a")
    d = daemons(primary, work)
    d.wait_phase("running")
    r = run_cli("status", work)
    assert r.code == 0 and "kept by       a running spaceport daemon" in r.out, r.out
    assert f"pid {d.proc.pid}" in r.out
    assert one_json(run_cli("status", work, "--json"))["kept_by"]["command"] == "run"
    d.signal(signal.SIGTERM)
    assert d.wait_exit(60) == 0


def test_status_tells_an_interrupted_deploy_and_when_unsaved_files_changed(tmp_path):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    for i in range(8):
        write(primary, f"d/f{i}.dat", os.urandom(512 << 10))
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", "deploy", primary, work,
                             "--bwlimit", "1M", "--jobs", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            os.path.isdir(os.path.join(work, "d")) and os.listdir(os.path.join(work, "d"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    r = run_cli("status", work)
    assert "INTERRUPTED" in r.out and "INCOMPLETE" in r.out, r.out
    assert "up to date" not in r.out
    assert one_json(run_cli("status", work, "--json"))["deploy_interrupted"] is True
    assert run_cli("deploy", primary, work).code == 0  # finished by running it again
    st = run_cli("status", work)
    assert "INTERRUPTED" not in st.out and "unsaved       nothing" in st.out
    write(work, "Runs/001/logs/run.db", b"changed after the save")
    os.utime(os.path.join(work, "Runs/001/logs/run.db"), (time.time() - 125,) * 2)
    st = run_cli("status", work)
    assert "Runs/001/logs/run.db  22 B, changed 2 min ago" in st.out, st.out


# -- trash purge -------------------------------------------------------------------------
def trash_batches(primary: str) -> list[str]:
    return os.listdir(os.path.join(primary, S, "trash"))


def in_terminal(args: list[str], answer: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Run spaceport with a terminal as its stdin (so it may ask), answering ``answer``."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", *args], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    os.write(master, answer)
    out, err = proc.communicate(timeout=timeout)
    os.close(master)
    return proc.returncode, out + err


def test_purge_lists_asks_and_dry_runs(tmp_path):
    primary, work = deployed(tmp_path, {"a.dat": b"a" * 100, "b.dat": b"b"})
    os.unlink(os.path.join(work, "a.dat"))
    assert run_cli("save", work).code == 0
    assert len(trash_batches(primary)) == 1
    dry = run_cli("trash", "purge", work, "--older-than", "0", "--dry-run")
    assert dry.code == 0 and "would purge: 1 batch, 1 file, 100 B" in dry.out
    assert len(trash_batches(primary)) == 1
    refused = run_cli("trash", "purge", work, "--older-than", "0")  # no terminal, no --yes
    assert refused.code == 2 and "--yes" in refused.err and "Nothing was deleted" in refused.err
    assert len(trash_batches(primary)) == 1
    code, said = in_terminal(["trash", "purge", work, "--older-than", "0"], b"n\n")
    assert code == 1 and b"Delete 1 batch for good?" in said
    assert len(trash_batches(primary)) == 1
    code, said = in_terminal(["trash", "purge", work, "--older-than", "0"], b"y\n")
    assert code == 0 and b"purged 1 batch" in said, said
    assert trash_batches(primary) == []
