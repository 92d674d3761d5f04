"""``spaceport run --wait-for-lock``: a project held by someone else (CERIT's app, another
spaceport deployment) is waited for, with the page up and naming the holder, instead of a
refusal (exit 3) that in Kubernetes becomes a crash loop behind an error page (issue 20,
"the user never sees an error page"). Real processes, real signals.

The daemons run with --stale-after 4 (daemon_helpers.FAST), so they look at the lock again
every second (a quarter of it; 10 s by default)."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import pytest
from cerit_controller import LOCK, every_check
from conftest import run_cli, snapshot, write
from daemon_helpers import make_tree, read_lock_file

from spaceport.safety.lock import DEFAULT_STATUS_DIR

WAITING = "waiting-for-lock"


@pytest.fixture
def space(tmp_path) -> str:
    """A project folder with a few files: the primary."""
    primary = str(tmp_path / "space")
    make_tree(primary, 6, 20_000)
    write(primary, "notes.txt", b"v1")
    return primary


def project_files(root: str) -> dict[str, str]:
    """The project's own files (run*/, notes.txt, theirs.txt) -> sha256: spaceport's and
    CERIT's folders left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d.startswith("run")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def hold_for_cerit(primary: str, content: bytes) -> bytes:
    """CERIT's app holds the project: its lock, as test_cerit_app.py makes it."""
    os.makedirs(os.path.join(primary, "scipion-docker"), exist_ok=True)
    with open(os.path.join(primary, LOCK), "wb") as f:
        f.write(content)
    return content


def hold_elsewhere(primary: str, elsewhere: str) -> None:
    """Another spaceport deployment holds it: a command-line deploy elsewhere."""
    r = run_cli("deploy", primary, elsewhere)
    assert r.code == 0, r.err


def test_waits_while_cerits_app_holds_the_project_then_stages_in(space, tmp_path, daemons):
    work = str(tmp_path / "work")
    hold_for_cerit(space, str(int(time.time())).encode())  # CERIT's newer controller
    d = daemons(space, work, env={"SPACEPORT_WAIT_FOR_LOCK": "inf"})
    s = d.wait_phase(WAITING, timeout=20)
    # the refusal's own words, naming CERIT's app and its file, and what happens next
    assert "CERIT" in s["message"] and LOCK in s["message"], s["message"]
    assert "looked at again every 1 s" in s["message"] and "nothing is taken" in s["message"]
    assert s["health"] == "ok" and not s["ready"]
    time.sleep(2.5)  # a few looks later: still up, still waiting, nothing taken
    assert d.proc.poll() is None
    assert d.status()["phase"] == WAITING
    assert read_lock_file(space) is None
    assert every_check(space) == {"locked"}
    # the page says it in words and names the holder; the startup probe waits
    code, body, _ = d.request("/")
    assert code == 200 and WAITING.encode() in body and b"CERIT" in body
    assert b"It starts here by itself once they are done" in body
    assert d.request("/readyz")[0] == 503 and d.request("/healthz")[0] == 200
    assert d.log().count(f"phase {WAITING}") == 1  # said once, not at every look

    os.unlink(os.path.join(space, LOCK))  # CERIT's app ended
    s = d.wait_phase("running", timeout=20)
    assert project_files(work) == project_files(space) and len(project_files(work)) == 7
    assert read_lock_file(space).deployment_id == s["deployment_id"]
    assert every_check(space) == {"locked"}  # now spaceport's mirror of its own lock
    log = d.log()
    assert "is free after" in log
    assert log.index(f"phase {WAITING}") < log.index("phase staging-in")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert read_lock_file(space) is None and every_check(space) == {"free"}


def test_waits_for_another_spaceport_deployment_until_it_is_undeployed(space, tmp_path,
                                                                       daemons):
    work, elsewhere = str(tmp_path / "work"), str(tmp_path / "elsewhere")
    hold_elsewhere(space, elsewhere)
    theirs = read_lock_file(space)
    d = daemons(space, work, "--wait-for-lock", "inf")
    s = d.wait_phase(WAITING, timeout=20)
    assert "already deployed" in s["message"] and elsewhere in s["message"], s["message"]
    assert "deployed from the command line" in s["message"]
    # the other deployment works on meanwhile, and saves
    write(elsewhere, "theirs.txt", b"saved by the other deployment")
    assert run_cli("save", elsewhere).code == 0
    assert d.status()["phase"] == WAITING and read_lock_file(space) == theirs
    assert run_cli("undeploy", elsewhere).code == 0
    s = d.wait_phase("running", timeout=20)
    assert s["deployment_id"] != theirs.deployment_id
    assert read_lock_file(space).deployment_id == s["deployment_id"]
    with open(os.path.join(work, "theirs.txt"), "rb") as f:
        assert f.read() == b"saved by the other deployment"
    assert project_files(work) == project_files(space)
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert read_lock_file(space) is None


@pytest.mark.parametrize("holder", ["cerit-empty", "cerit-time", "spaceport"])
def test_sigterm_while_waiting_exits_0_having_taken_nothing(space, tmp_path, daemons, holder):
    work, elsewhere = str(tmp_path / "work"), str(tmp_path / "elsewhere")
    if holder == "spaceport":
        hold_elsewhere(space, elsewhere)
    else:
        hold_for_cerit(space, b"" if holder == "cerit-empty" else b"1700000000")
    before = snapshot(space)
    theirs = read_lock_file(space)
    d = daemons(space, work, "--wait-for-lock", "inf")
    d.wait_phase(WAITING, timeout=20)
    time.sleep(1.2)  # at least one more look
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=10) == 0
    assert snapshot(space) == before  # the other holder's lock untouched, nothing of ours
    assert read_lock_file(space) == theirs
    log = d.log()
    assert "phase stopped" in log and "phase staging-in" not in log, log
    assert "exit 0" in log


@pytest.mark.parametrize("holder,args", [("cerit-empty", []), ("spaceport", []),
                                         ("cerit-empty", ["--wait-for-lock", "0"])],
                         ids=["cerit", "spaceport", "cerit-wait-0"])
def test_without_waiting_a_held_project_is_refused_with_exit_3(space, tmp_path, daemons,
                                                               holder, args):
    work, elsewhere = str(tmp_path / "work"), str(tmp_path / "elsewhere")
    if holder == "spaceport":
        hold_elsewhere(space, elsewhere)
    else:
        hold_for_cerit(space, b"")
    before = snapshot(space)
    d = daemons(space, work, *args)
    assert d.wait_exit(timeout=20) == 3
    log = d.log()
    assert "already deployed" in log and WAITING not in log
    assert snapshot(space) == before


def test_the_wait_is_bounded_then_refused_with_exit_3(space, tmp_path, daemons):
    work = str(tmp_path / "work")
    hold_for_cerit(space, b"")
    before = snapshot(space)
    started = time.monotonic()
    d = daemons(space, work, "--wait-for-lock", "2")
    assert d.wait_exit(timeout=20) == 3
    assert time.monotonic() - started >= 2
    log = d.log()
    assert f"phase {WAITING}" in log and "for up to 2 s in all" in log
    assert "gave up waiting for the lock" in log and "already deployed" in log
    assert snapshot(space) == before and not os.path.exists(
        os.path.join(space, DEFAULT_STATUS_DIR, "lock"))


def test_a_live_holder_watched_by_take_over_stale_is_waited_for(space, tmp_path, daemons):
    # --take-over-stale: the look lets deploy() judge the holder (its heartbeat, watched for
    # its stale-after time); a live one refuses the deploy, and that refusal is waited for
    # too. The holder is never taken over.
    first = daemons(space, str(tmp_path / "first"), "--stale-after", "2")
    held = first.wait_phase("running", timeout=20)
    second = daemons(space, str(tmp_path / "second"), "--take-over-stale",
                     "--wait-for-lock", "inf")
    s = second.wait_phase(WAITING, timeout=20)
    assert "already deployed" in s["message"] and str(tmp_path / "first") in s["message"]
    assert read_lock_file(space).deployment_id == held["deployment_id"]
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0  # its lock was never lost (that would be exit 4)
    s = second.wait_phase("running", timeout=20)
    assert read_lock_file(space).deployment_id == s["deployment_id"] != held["deployment_id"]
    log = second.log()
    # refused by deploy() itself, after its watch (the look let it through)
    assert log.index("phase staging-in") < log.index(f"phase {WAITING}"), log
    assert project_files(str(tmp_path / "second")) == project_files(space)
    second.signal(signal.SIGTERM)
    assert second.wait_exit() == 0
