"""Every call on the primary is retried (issue 18): one family of calls at a time, faults
injected by the OneData-like FUSE filesystem, calls counted by it.

For each family (the lock's open, read, stat, publication, heartbeat and release; the
manifest's write and its read by a deploy; the journal's write and its read by ``status
--primary``; trash moves and purge; folders made, moved and their modes; opens; uploads and
their mtimes; listings; the data read by a stage-in, an append's read-back, ``verify
--checksum`` and ``deploy --resume``'s comparison; an append's write in place; the daemon's
heartbeat) a real ``spaceport`` command runs four times over one mount:

* with a rule that only counts the family's calls (the baseline, ``b``);
* with one, then two transient faults (EIO then ETIMEDOUT; for some families ESTALE and
  ENOTCONN, which OneData answers too): the command succeeds, and the family saw exactly
  ``b + 1`` and ``b + 2`` calls: each failed call was made once more;
* with a permanent fault (EACCES, for ever): the failing call is made once, never again.

Then the files on both sides are checked. A second table holds calls that *landed* and
answered EIO all the same (the answer held back at a gate, then failed): the retry must
see that and not do it twice (no second journal line, no "No such file" for a rename).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import pytest
from conftest import run_cli, write
from daemon_helpers import read_lock_file
from test_faults import Mount, needs_fuse

from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR
FAST = ["--retries", "4", "--retry-delay", "0.01"]


@dataclass
class Ctx:
    backing: str
    primary: str
    work: str
    tmp: str

    def deployment(self) -> str:
        return json.load(open(os.path.join(self.work, ".spaceport", "deployment.json")))[
            "deployment_id"]


@dataclass
class Family:
    name: str
    op: str
    path: str  # a glob in the mount's own namespace ("/<status>/lock")
    act: Callable[[Ctx, int], list[str]]  # round n: prepare, then the command to run
    check: Callable[[Ctx, int], None] = lambda ctx, n: None  # after a successful round
    code_when_permanent: tuple[int, ...] = (1, 4, 6)  # exit codes a permanent fault gives
    # FUSE calls one failing call of ours makes: the kernel tries a failed read once more
    # itself (readahead, then the page), so one read error reaching us takes two faults.
    per_fault: int = 1
    # The kernel stats on its own (lookups, the lock read every second while a save runs):
    # the count of getattr calls is not the same from one run to the next.
    exact: bool = True
    # Each failing call of ours said once ("retrying"). Not where one open file is read
    # again: after a failed read the kernel drops its readahead, so a fault can reach us
    # alone or paired (then between one and two warnings a fault).
    said_exactly: bool = True
    # The errnos of the rounds with one and with two faults.
    transient: tuple[str, str] = ("EIO", "ETIMEDOUT")


def save_new_file(ctx: Ctx, n: int) -> list[str]:
    write(ctx.work, f"Runs/000/new{n}.xmd", b"round %d" % n)
    return ["save", ctx.work]


def saved_new_file(ctx: Ctx, n: int) -> None:
    assert open(os.path.join(ctx.backing, f"Runs/000/new{n}.xmd"), "rb").read() == \
        b"round %d" % n


def odd(n: int) -> str:
    """The n-th file of Runs/001 (the odd ones)."""
    return f"Runs/001/f{2 * n + 1:03d}.xmd"


def save_a_deletion(ctx: Ctx, n: int) -> list[str]:
    os.unlink(os.path.join(ctx.work, odd(n)))
    return ["save", ctx.work]


def deleted_into_the_trash(ctx: Ctx, n: int) -> None:
    assert not os.path.exists(os.path.join(ctx.backing, odd(n)))
    found = [f for _, _, fs in os.walk(os.path.join(ctx.backing, S, "trash")) for f in fs
             if f == os.path.basename(odd(n))]
    assert found


def save_a_link(ctx: Ctx, n: int) -> list[str]:
    os.symlink(f"Runs/000/f{n:03d}.xmd", os.path.join(ctx.work, f"link{n}"))
    return ["save", ctx.work]


def link_in_the_manifest(ctx: Ctx, n: int) -> None:
    text = open(os.path.join(ctx.backing, S, "links.jsonl")).read()
    assert f'"link{n}"' in text


def save_a_folder(ctx: Ctx, n: int) -> list[str]:
    write(ctx.work, f"Runs/newdir{n}/inside.xmd", b"x")
    return ["save", ctx.work]


def save_a_move(ctx: Ctx, n: int) -> list[str]:
    write(ctx.work, f"Runs/tomove{n}/a.xmd", b"a")
    assert run_cli("save", ctx.work, *FAST).code == 0
    os.rename(os.path.join(ctx.work, f"Runs/tomove{n}"), os.path.join(ctx.work, f"Runs/moved{n}"))
    return ["save", ctx.work]


def moved(ctx: Ctx, n: int) -> None:
    assert os.path.exists(os.path.join(ctx.backing, f"Runs/moved{n}/a.xmd"))
    assert not os.path.exists(os.path.join(ctx.backing, f"Runs/tomove{n}"))


def deploy_again(ctx: Ctx, n: int) -> list[str]:
    """Undeploy what is deployed (no faults yet), then deploy into a new folder."""
    if os.path.exists(os.path.join(ctx.work, ".spaceport", "deployment.json")):
        assert run_cli("undeploy", ctx.work, *FAST).code == 0
    ctx.work = os.path.join(ctx.tmp, f"w{n}")
    return ["deploy", ctx.primary, ctx.work]


def deployed(ctx: Ctx, n: int) -> None:
    assert read_lock_file(ctx.backing).deployment_id == ctx.deployment()
    assert open(os.path.join(ctx.work, "Runs/000/f000.xmd"), "rb").read() == \
        open(os.path.join(ctx.backing, "Runs/000/f000.xmd"), "rb").read()


def undeploy(ctx: Ctx, n: int) -> list[str]:
    if not os.path.exists(os.path.join(ctx.work, ".spaceport", "deployment.json")):
        ctx.work = os.path.join(ctx.tmp, f"w{n}")
        assert run_cli("deploy", ctx.primary, ctx.work, *FAST).code == 0
    write(ctx.work, f"last{n}.txt", b"last")
    return ["undeploy", ctx.work]


def undeployed(ctx: Ctx, n: int) -> None:
    assert read_lock_file(ctx.backing) is None
    assert not [f for f in os.listdir(os.path.join(ctx.backing, S)) if f.startswith("lock")]
    assert open(os.path.join(ctx.backing, f"last{n}.txt"), "rb").read() == b"last"


def purge_a_batch(ctx: Ctx, n: int) -> list[str]:
    os.unlink(os.path.join(ctx.work, odd(n)))
    assert run_cli("save", ctx.work, *FAST).code == 0
    batches = sorted(os.listdir(os.path.join(ctx.backing, S, "trash")))
    return ["trash", "purge", "--primary", ctx.primary, "--batch", batches[-1], "--yes"]


def purged(ctx: Ctx, n: int) -> None:
    trash = os.path.join(ctx.backing, S, "trash")
    found = [f for _, _, fs in os.walk(trash) for f in fs if f == os.path.basename(odd(n))]
    assert not found


LOG = "Logs/run.log"


def save_an_append(ctx: Ctx, n: int) -> list[str]:
    """A log of 1 MiB (the least an append is tried for) saved once, then grown by a line:
    the save writes the line alone onto the primary's file, after reading back its tail."""
    if not os.path.exists(os.path.join(ctx.work, LOG)):
        write(ctx.work, LOG, os.urandom(1 << 20))
        assert run_cli("save", ctx.work, *FAST).code == 0
    with open(os.path.join(ctx.work, LOG), "ab") as f:
        f.write(b"line %d\n" % n)
    return ["save", ctx.work]


def appended(ctx: Ctx, n: int) -> None:
    """The primary's log is the working copy's, and it was appended to: not set aside in
    the trash and uploaded whole, as an append that failed for good is."""
    assert open(os.path.join(ctx.backing, LOG), "rb").read() == \
        open(os.path.join(ctx.work, LOG), "rb").read()
    trash = os.path.join(ctx.backing, S, "trash")
    assert not [f for _, _, fs in os.walk(trash) for f in fs if f == os.path.basename(LOG)]


def change_a_folder_mode(ctx: Ctx, n: int) -> list[str]:
    os.chmod(os.path.join(ctx.work, "Runs/000"), 0o750 | n)
    return ["save", ctx.work]


def folder_mode_set(ctx: Ctx, n: int) -> None:
    assert os.stat(os.path.join(ctx.backing, "Runs/000")).st_mode & 0o777 == 0o750 | n


def save_new_file_with_mtime(ctx: Ctx, n: int) -> list[str]:
    write(ctx.work, f"Runs/000/new{n}.xmd", b"round %d" % n, mtime_ns=(1_600_000_000 + n) * 10**9)
    return ["save", ctx.work]


def saved_with_its_mtime(ctx: Ctx, n: int) -> None:
    saved_new_file(ctx, n)
    st = os.stat(os.path.join(ctx.backing, f"Runs/000/new{n}.xmd"))
    assert st.st_mtime_ns == (1_600_000_000 + n) * 10**9


def verify_checksum(ctx: Ctx, n: int) -> list[str]:
    return ["verify", "--checksum", ctx.work]


def deploy_again_with_a_link(ctx: Ctx, n: int) -> list[str]:
    """As deploy_again, the manifest holding a link the deploy reads back."""
    if not os.path.lexists(os.path.join(ctx.work, "alink")):
        os.symlink("Runs/000/f000.xmd", os.path.join(ctx.work, "alink"))
        assert run_cli("save", ctx.work, *FAST).code == 0
    return deploy_again(ctx, n)


def deployed_with_the_link(ctx: Ctx, n: int) -> None:
    deployed(ctx, n)
    assert os.readlink(os.path.join(ctx.work, "alink")) == "Runs/000/f000.xmd"


def status_of_the_primary(ctx: Ctx, n: int) -> list[str]:
    if not os.path.exists(os.path.join(ctx.backing, S, "journal.jsonl")):
        write(ctx.work, "Runs/000/journaled.xmd", b"a line in the journal")
        assert run_cli("save", ctx.work, *FAST).code == 0
    return ["status", "--primary", ctx.primary]


def resume_comparing_a_file(ctx: Ctx, n: int) -> list[str]:
    """A working copy undeployed and kept (no faults yet), holding a file its index does not
    know and the primary holds with the same bytes: ``deploy --resume`` compares the two
    (safety.invariant.same_bytes) and records it as saved, uploading nothing."""
    if os.path.exists(os.path.join(ctx.work, ".spaceport", "deployment.json")):
        assert run_cli("undeploy", "--keep-work", ctx.work, *FAST).code == 0
    data = b"the same on both sides, round %d" % n
    write(ctx.backing, f"Runs/000/same{n}.xmd", data)
    write(ctx.work, f"Runs/000/same{n}.xmd", data)
    return ["deploy", "--resume", ctx.primary, ctx.work]


def found_the_same(ctx: Ctx, n: int) -> None:
    """Proven equal: neither uploaded nor kept as a conflict copy (what a comparison that
    failed leads to: the primary's version set aside, the working copy's uploaded)."""
    folder = os.path.join(ctx.backing, "Runs/000")
    assert not [f for f in os.listdir(folder) if f.startswith(f"same{n}.xmd.conflict-")]
    assert open(os.path.join(folder, f"same{n}.xmd"), "rb").read() == \
        open(os.path.join(ctx.work, f"Runs/000/same{n}.xmd"), "rb").read()


FAMILIES = [
    Family("lock open", "open", f"/{S}/lock", save_new_file, saved_new_file),
    Family("lock read", "read", f"/{S}/lock", save_new_file, saved_new_file, per_fault=2),
    Family("lock stat", "getattr", f"/{S}/lock", save_new_file, saved_new_file, per_fault=2,
           exact=False),
    Family("lock publication", "rename", f"/{S}/lock", deploy_again, deployed),
    Family("lock release", "rename", f"/{S}/lock.release.*", undeploy, undeployed),
    Family("heartbeat", "rename", f"/{S}/heartbeat.*", save_new_file, saved_new_file,
           (0,)),  # a heartbeat that cannot be written is a warning: the files are saved
    Family("manifest", "rename", f"/{S}/links.jsonl", save_a_link, link_in_the_manifest),
    Family("journal", "write", f"/{S}/journal.jsonl", save_new_file, saved_new_file, (0,)),
    Family("trash move", "rename", f"/{S}/trash/*", save_a_deletion, deleted_into_the_trash),
    Family("trash purge", "unlink", f"/{S}/trash/*", purge_a_batch, purged),
    Family("mkdir", "mkdir", "/Runs/newdir*", save_a_folder,
           lambda ctx, n: os.path.isdir(os.path.join(ctx.backing, f"Runs/newdir{n}"))),
    # A move refused for good is saved as an upload to the new place (exit 0; the next save
    # deletes the old copy): docs/RELIABILITY.md, "Renames".
    Family("folder move", "rename", "/Runs/moved[0-9]", save_a_move, moved, (0,)),
    Family("open (stage-in)", "open", "/Runs/000/f000.xmd", deploy_again, deployed),
    Family("upload", "rename", "/Runs/000/new*", save_new_file, saved_new_file),
    Family("listing (stage-in scan)", "readdir", "/Runs/000", deploy_again, deployed,
           transient=("ENOTCONN", "ESTALE")),
    Family("read (stage-in copy)", "read", "/Runs/000/f000.xmd", deploy_again, deployed,
           per_fault=2, transient=("ESTALE", "ENOTCONN")),
    # After a failed read of its 64 KiB, the kernel reads the tail again a page at a time:
    # the mount's count of reads is not the same from one run to the next. Failed for
    # good, the append is given up for a whole upload (the primary's file kept in the
    # trash: docs/RELIABILITY.md, "A growing log"), and the save succeeds.
    Family("read (append read-back)", "read", f"/{LOG}", save_an_append, appended, (0,),
           per_fault=2, exact=False, transient=("ESTALE", "ENOTCONN")),
    Family("append write", "write", f"/{LOG}", save_an_append, appended, (0,),
           transient=("ENOTCONN", "ESTALE")),
    Family("read (verify --checksum)", "read", "/Runs/000/f000.xmd", verify_checksum,
           per_fault=2, said_exactly=False),
    # OneData may refuse a mode or an mtime for good (reliable_chmod/mtime are False): a
    # refusal is no error there, the file is saved all the same (exit 0).
    Family("chmod", "chmod", "/Runs/000", change_a_folder_mode, folder_mode_set, (0,)),
    Family("mtime", "utimens", "/Runs/000/.spaceport-tmp-*", save_new_file_with_mtime,
           saved_with_its_mtime, (0,)),
    Family("manifest read (deploy)", "read", f"/{S}/links.jsonl", deploy_again_with_a_link,
           deployed_with_the_link, per_fault=2, transient=("ENOTCONN", "ETIMEDOUT")),
    # A journal that cannot be read is named among what status shows (exit 0).
    Family("journal read (status --primary)", "read", f"/{S}/journal.jsonl",
           status_of_the_primary, code_when_permanent=(0,), per_fault=2,
           transient=("ESTALE", "EIO")),
    # A file that cannot be compared for good is not proven saved: the resume uploads the
    # working copy's and keeps the primary's as a conflict copy (nothing lost, exit 0).
    Family("read (deploy --resume comparison)", "read", "/Runs/000/same[0-9].xmd",
           resume_comparing_a_file, found_the_same, code_when_permanent=(0,), per_fault=2,
           said_exactly=False, transient=("EIO", "ESTALE")),
]


@pytest.fixture
def deployment(tmp_path):
    fuse = Mount(tmp_path)
    for i in range(12):
        write(fuse.backing, f"Runs/{i % 2:03d}/f{i:03d}.xmd", os.urandom(500 + i))
    ctx = Ctx(fuse.backing, fuse.path, str(tmp_path / "w"), str(tmp_path))
    assert run_cli("deploy", ctx.primary, ctx.work, *FAST).code == 0
    yield fuse, ctx
    fuse.stop()


def run_round(fuse, ctx: Ctx, family: Family, n: int, *, errno: str, times):
    args = family.act(ctx, n)
    fuse.fs.inject(op=family.op, path=family.path, errno=errno, times=times)
    try:
        res = run_cli(*args, *FAST)
        rule = fuse.fs.faults()[0]
    finally:
        fuse.fs.clear_faults()
    assert "Traceback" not in res.err, res
    return res, rule


@needs_fuse
@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_each_family_of_calls_is_retried_and_a_permanent_error_is_not(deployment, family):
    fuse, ctx = deployment
    res, rule = run_round(fuse, ctx, family, 0, errno="EIO", times=0)
    assert res.code == 0, res
    baseline = rule["seen"]
    assert baseline >= 1, f"{family.name}: the command made no such call"
    family.check(ctx, 0)
    for n, (errno, faults) in enumerate(zip(family.transient, (1, 2)), start=1):
        times = faults * family.per_fault
        res, rule = run_round(fuse, ctx, family, n, errno=errno, times=times)
        assert res.code == 0, (family.name, times, res)
        assert rule["fired"] == times
        if family.exact:  # each failed call made once more, nothing else
            assert rule["seen"] == baseline + times, (family.name, times, rule, baseline)
            said = res.err.count("retrying")  # said, with the attempt
            assert said == faults if family.said_exactly else faults <= said <= times, res.err
        else:  # the kernel answered some of them itself
            assert 1 <= res.err.count("retrying") <= times, res.err
        family.check(ctx, n)
    res, rule = run_round(fuse, ctx, family, 3, errno="EACCES", times=None)
    assert res.code in family.code_when_permanent, (family.name, res)
    if family.exact:
        # Each failing call made once (the kernel's own second read of a page aside).
        assert rule["seen"] == rule["fired"] <= baseline * family.per_fault, \
            (family.name, rule, baseline)
    assert "retrying" not in res.err, res


# -- calls that landed, and answered an error all the same --------------------------------
LANDED = [
    Family("trash move", "rename", f"/{S}/trash/*", save_a_deletion, deleted_into_the_trash),
    Family("folder move", "rename", "/Runs/moved[0-9]", save_a_move, moved),
    Family("mkdir", "mkdir", "/Runs/newdir*", save_a_folder,
           lambda ctx, n: os.path.isdir(os.path.join(ctx.backing, f"Runs/newdir{n}"))),
    Family("manifest", "rename", f"/{S}/links.jsonl", save_a_link, link_in_the_manifest),
    Family("lock publication", "rename", f"/{S}/lock", deploy_again, deployed),
    Family("lock release", "rename", f"/{S}/lock.release.*", undeploy, undeployed),
    Family("trash purge", "unlink", f"/{S}/trash/*", purge_a_batch, purged),
]


@needs_fuse
@pytest.mark.parametrize("family", LANDED, ids=[f.name for f in LANDED])
def test_a_call_that_landed_but_failed_is_not_done_twice(deployment, family):
    fuse, ctx = deployment
    args = family.act(ctx, 1)
    # The call is made, then its answer is held at a gate and turned into EIO.
    fuse.fs.hold(op=family.op, path=family.path, times=1, timeout=0.05,
                 on_timeout="EIO", when="after")
    res = run_cli(*args, *FAST)
    fuse.fs.clear_stalls()
    assert res.code == 0, (family.name, res)
    assert "retrying" in res.err and "No such file" not in res.err
    family.check(ctx, 1)


@needs_fuse
def test_a_journal_line_that_landed_is_not_written_twice(deployment):
    fuse, ctx = deployment
    journal = os.path.join(ctx.backing, S, "journal.jsonl")
    before = open(journal).read().splitlines() if os.path.exists(journal) else []
    write(ctx.work, "Runs/000/journaled.xmd", b"j")
    fuse.fs.hold(op="write", path=f"/{S}/journal.jsonl", times=1, timeout=0.05,
                 on_timeout="EIO", when="after")
    res = run_cli("save", ctx.work, *FAST)
    fuse.fs.clear_stalls()
    assert res.code == 0 and "retrying" in res.err, res
    lines = open(journal).read().splitlines()
    assert len(lines) == len(before) + 1, lines


@needs_fuse
def test_a_journal_line_like_the_one_before_is_still_written_when_retried(tmp_path):
    """Two saves within one second that did the same make the same entry. A retry asks
    whether the file already ends with its line: it must not take the save before for
    its own (CI lost such a line when the faulted save ran in the same second)."""
    from spaceport.formats.journal import append_entry, read_tail
    from spaceport.store import PRIMARY_CAPABILITIES, PosixStore
    from spaceport.store.retry import RetryPolicy
    from spaceport.store.retrying import RetryingStore

    fuse = Mount(tmp_path)
    try:
        os.makedirs(os.path.join(fuse.backing, S))
        store = RetryingStore(PosixStore(fuse.path, PRIMARY_CAPABILITIES, temp_token="0" * 8),
                              RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.002))
        entry = {"time": "2026-12-05T13:02:21+00:00", "uploaded": 1, "bytes": 7}
        append_entry(store, S, entry)
        fuse.fs.inject(op="write", path=f"/{S}/journal.jsonl", errno="ETIMEDOUT", times=1)
        append_entry(store, S, entry)
        rule = fuse.fs.faults()[0]
        assert rule["fired"] == 1 and rule["seen"] == 2, rule  # failed once, made again
        lines = open(os.path.join(fuse.backing, S, "journal.jsonl")).read().splitlines()
        assert len(lines) == 2, lines
        tail = read_tail(store, S)
        assert [e["uploaded"] for e in tail] == [1, 1] and tail[0]["id"] != tail[1]["id"]
        store.close()
    finally:
        fuse.stop()


@needs_fuse
def test_the_daemons_heartbeat_is_retried(tmp_path, daemons):
    fuse = Mount(tmp_path)
    try:
        for i in range(4):
            write(fuse.backing, f"Runs/f{i}.xmd", b"x" * 100)
        d = daemons(fuse.path, str(tmp_path / "w"), "--interval", "600",
                    "--retries", "4", "--retry-delay", "0.01")
        d.wait_phase("running")
        deployment = read_lock_file(fuse.backing).deployment_id
        beat_file = os.path.join(fuse.backing, S, f"heartbeat.{deployment}")
        before = open(beat_file).read()
        fuse.fs.inject(op="rename", path=f"/{S}/heartbeat.*", errno="EIO", times=2)
        d.wait_for(lambda: open(beat_file).read() != before, 20, "a heartbeat after the faults")
        rule = fuse.fs.faults()[0]
        assert rule["fired"] == 2 and rule["seen"] >= 3, rule
        assert "lock heartbeat failed" not in d.log()
        assert "retrying" in d.log()
        assert "lock" not in d.status().get("problems", {}), d.status()
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0
    finally:
        fuse.stop()


# -- fencing: a retry is a new commit, checked again --------------------------------------
@needs_fuse
@pytest.mark.parametrize("what", ["trash move", "upload"])
def test_a_retry_after_the_lock_was_taken_writes_nothing(deployment, what):
    """A commit fails, and while it waits for its retry, someone unlocks the primary: the
    retry must be fenced like any commit (exit 4), never land."""
    fuse, ctx = deployment
    if what == "trash move":
        victim = odd(0)
        os.unlink(os.path.join(ctx.work, victim))
        fault = dict(op="rename", path=f"/{S}/trash/*")
    else:
        victim = "Runs/000/late-upload.xmd"
        write(ctx.work, victim, b"must not land")
        fault = dict(op="rename", path=f"/{victim}")
    fuse.fs.inject(errno="EIO", times=1, **fault)
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", ctx.work, "--retries",
                             "4", "--retry-delay", "3"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while fuse.fs.faults()[0]["fired"] == 0:  # the first attempt failed: the retry waits
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        assert run_cli("unlock", ctx.primary, "--force", "--yes").code == 0
        _, err = proc.communicate(timeout=60)
    finally:
        fuse.fs.clear_faults()
    err = err.decode(errors="replace")
    assert proc.returncode == 4, err
    assert "lock" in err and "Traceback" not in err
    if what == "trash move":  # still in place, never moved after the loss
        assert os.path.exists(os.path.join(ctx.backing, victim))
        trash = os.path.join(ctx.backing, S, "trash")
        assert not os.path.exists(trash) or not [
            f for _, _, fs in os.walk(trash) for f in fs if f == os.path.basename(victim)]
    else:
        assert not os.path.exists(os.path.join(ctx.backing, victim))
