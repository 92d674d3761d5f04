"""Words that are true (issue 18): each message names the right thing and the right next step.

* a fifo under ``proj/Tmp/`` left by undeploy is named, not the whole project;
* ``deploy -n --resume`` does not tell the user to use ``--resume``;
* ``status --primary`` shows held deletions as the newest record says, not the last record
  that held some;
* ``status`` with its primary unreachable says so and exits 6.

Real processes, the files checked on both sides.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

from conftest import run_cli, write
from test_deletion_guard import AUTH, TOKEN, gut, project
from test_faults import Mount, needs_fuse

FAST = ["--retries", "2", "--retry-delay", "0.01"]


def test_undeploy_names_the_fifo_it_leaves_not_the_project(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    write(primary, "proj/Runs/000001_Import/out.mrc", b"data")
    write(primary, "proj/Tmp/scratch.txt", b"scratch")
    assert run_cli("deploy", primary, work).code == 0
    os.mkfifo(os.path.join(work, "proj/Tmp/fifo"))
    res = run_cli("undeploy", work)
    assert res.code == 0, res
    flat = " ".join(res.err.split())
    assert f"{work}/proj/Tmp/fifo is left in the working copy: it was never saved (a fifo" in flat
    assert f"{work}/proj is left" not in flat
    assert "1 entry never saved (named above)" in " ".join(res.out.split())
    # Everything else is gone; the fifo and the folders holding it stay.
    assert sorted(os.listdir(work)) == [".spaceport", "proj"]
    assert os.listdir(os.path.join(work, "proj")) == ["Tmp"]
    assert os.listdir(os.path.join(work, "proj/Tmp")) == ["fifo"]
    assert open(os.path.join(primary, "proj/Tmp/scratch.txt"), "rb").read() == b"scratch"


def test_a_dry_run_with_resume_says_what_resume_does(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    write(primary, "a.txt", b"a")
    assert run_cli("deploy", primary, work).code == 0
    assert run_cli("undeploy", work, "--keep-work").code == 0
    write(work, "edited-after.txt", b"never saved")
    res = run_cli("deploy", "-n", "--resume", primary, work)
    assert res.code == 0, res
    assert "Use --resume" not in res.out + res.err
    assert "--resume saves them first" in res.out
    res = run_cli("deploy", "-n", "--discard-local", primary, work)
    assert res.code == 0 and "--discard-local sets them aside" in res.out, res
    res = run_cli("deploy", "-n", primary, work)  # without: refused, and says the two ways
    assert res.code == 5 and "Use --resume" in res.err, res
    assert not os.path.exists(os.path.join(primary, "edited-after.txt"))  # a dry run


def held_state(primary: str) -> tuple[int, str]:
    res = run_cli("status", "--primary", primary)
    assert res.code == 0, res
    facts = json.loads(run_cli("status", "--primary", primary, "--json").out)
    return facts["held_on_primary"], res.out


def test_status_of_the_primary_shows_held_deletions_as_they_are_now(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    gut(work)
    res = run_cli("save", work)
    assert res.code == 0 and "held" in res.err, res
    held, text = held_state(primary)
    assert held["count"] == 27 and "27 deletions held (still on the primary)" in text
    assert run_cli("save", work, "--allow-mass-delete").code == 0
    held, text = held_state(primary)
    assert held is None
    assert "none held any more (27 deletions held before" in text
    assert "27 deletions held then; a later save settled them" in text
    assert "(still on the primary)" not in text
    assert not os.path.exists(os.path.join(primary, "Runs"))


def test_the_daemons_settled_deletions_leave_status_of_the_primary(tmp_path, daemons):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    d = daemons(primary, work, "--token", TOKEN)
    d.wait_phase("running")
    gut(work)
    d.wait_status(lambda s: s.get("held_deletions"), 20, "held deletions")
    held, _ = held_state(primary)
    assert held and held["count"] == 27
    assert d.request("/confirm-deletions", "POST", AUTH)[0] == 202
    d.wait_status(lambda s: not s["held_deletions"] and s["last_save"]["deleted"], 20,
                  "the confirmed deletions")
    assert "no deletions are held any more" in d.log()
    held, text = held_state(primary)
    assert held is None and "none held any more" in text, text
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    held, _ = held_state(primary)
    assert held is None  # the final save held nothing: still none


@needs_fuse
def test_status_with_its_primary_unreachable_says_so_and_exits_6(tmp_path):
    fuse = Mount(tmp_path)
    try:
        write(fuse.backing, "Runs/a.mrc", b"a")
        work = str(tmp_path / "w")
        assert run_cli("deploy", fuse.path, work).code == 0
        write(work, "Runs/b.mrc", b"unsaved")
        fuse.fs.crash()  # the mount's server dies: ENOTCONN
        res = run_cli("status", work, *FAST)
        assert res.code == 6, res
        assert "Errno" not in res.out and "not reachable (ENOTCONN" in res.out
        assert "Check the mount" in res.out
        assert "unsaved       1 file to upload" in res.out  # what the copy alone shows
        res = run_cli("status", "--primary", fuse.path, *FAST)
        assert res.code == 6 and "not reachable" in res.err, res
    finally:
        fuse.stop()
    assert not os.path.exists(os.path.join(fuse.backing, "Runs/b.mrc"))
    shutil.rmtree(work)
