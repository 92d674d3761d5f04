"""A broken status folder (issue 18): a heartbeat, lock, manifest or journal path that is a
folder, or cannot be read, is named in the message with what to do, and the save of the
files goes on where it safely can.

* the heartbeat and the journal are no reason to stop saving: the files are saved (exit 0)
  with a warning naming the file; a daemon keeps autosaving and shows the problem;
* the manifest is: links are project data. Everything else is saved, the save exits 1
  naming the manifest, and an undeploy keeps the lock and the working copy until the links
  are recorded;
* the lock: nobody can tell who holds the primary. Saves are fenced off (exit 4), other
  deployments refused (exit 3), each naming the lock and what to do.

Real processes; the files on both sides checked after each step.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import run_cli, snapshot, write
from daemon_helpers import read_lock_file
from test_faults import Mount, needs_fuse

from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR
FAST = ["--retries", "2", "--retry-delay", "0.01"]


def deployed(tmp_path, primary=None, files_at=None):
    primary = primary or str(tmp_path / "p")
    work = str(tmp_path / "w")
    for i in range(6):
        write(files_at or primary, f"Runs/{i % 2:03d}/f{i}.xmd", os.urandom(300 + i))
    assert run_cli("deploy", primary, work, *FAST).code == 0
    deployment = json.load(open(os.path.join(work, ".spaceport", "deployment.json")))
    return primary, work, deployment["deployment_id"]


def in_the_way(path: str) -> None:
    """What a person or a sync tool leaves: a folder, with something in it, in place of a
    file spaceport writes."""
    if os.path.isfile(path):
        os.unlink(path)
    os.makedirs(path)
    write(path, "kept.txt", b"not spaceport's: never removed")


def still_there(path: str) -> bool:
    return open(os.path.join(path, "kept.txt"), "rb").read() == b"not spaceport's: never removed"


def test_a_folder_in_place_of_the_heartbeat_is_named_and_the_files_are_saved(tmp_path):
    primary, work, deployment = deployed(tmp_path)
    beat = os.path.join(primary, S, f"heartbeat.{deployment}")
    in_the_way(beat)
    write(work, "Runs/000/new.xmd", b"saved all the same")
    res = run_cli("save", work, *FAST)
    assert res.code == 0, res
    flat = " ".join(res.err.split())
    assert f"the heartbeat file {beat} is a folder" in flat and "Move what is at" in flat
    assert ".spaceport-tmp-" not in res.err  # the temporary is not what is named
    assert open(os.path.join(primary, "Runs/000/new.xmd"), "rb").read() == b"saved all the same"
    journal = open(os.path.join(primary, S, "journal.jsonl")).read().splitlines()
    assert json.loads(journal[-1])["uploaded"] == 1  # recorded after the heartbeat failed
    status = run_cli("status", work)
    assert status.code == 0 and "held by this working copy" in status.out, status
    # Undeploy: final save, proof, removal, release; the folder in the way is not ours.
    res = run_cli("undeploy", work, *FAST)
    assert res.code == 0, res
    assert read_lock_file(primary) is None
    assert still_there(beat)
    assert not os.path.exists(os.path.join(work, "Runs"))


def test_a_folder_in_place_of_the_journal_is_named_and_the_files_are_saved(tmp_path):
    primary, work, _ = deployed(tmp_path)
    journal = os.path.join(primary, S, "journal.jsonl")
    in_the_way(journal)
    write(work, "Runs/001/new.xmd", b"journal or not")
    res = run_cli("save", work, *FAST)
    assert res.code == 0, res
    flat = " ".join(res.err.split())
    assert f"the save journal {journal} is a folder" in flat
    assert "the files themselves are saved" in flat
    assert open(os.path.join(primary, "Runs/001/new.xmd"), "rb").read() == b"journal or not"
    res = run_cli("status", "--primary", primary)
    assert res.code == 0 and "the save journal" in res.out and "is a folder" in res.out, res
    assert still_there(journal)


def test_a_folder_in_place_of_the_manifest_keeps_the_links_and_says_so(tmp_path):
    primary, work, _ = deployed(tmp_path)
    manifest = os.path.join(primary, S, "links.jsonl")
    in_the_way(manifest)
    write(work, "Runs/000/new.xmd", b"the data lands")
    os.symlink("Runs/000/f0.xmd", os.path.join(work, "latest"))
    res = run_cli("save", work, *FAST)
    assert res.code == 1, res
    flat = " ".join(res.err.split())
    assert f"the link manifest {manifest} is a folder" in flat
    assert "links of this working copy could not be recorded" in flat
    assert ".spaceport-tmp-" not in res.err
    assert open(os.path.join(primary, "Runs/000/new.xmd"), "rb").read() == b"the data lands"
    # An undeploy never gives up a working copy whose links are not recorded.
    res = run_cli("undeploy", work, *FAST)
    assert res.code == 1 and "the link manifest" in res.err, res
    assert os.readlink(os.path.join(work, "latest")) == "Runs/000/f0.xmd"
    assert read_lock_file(primary) is not None
    # Once the folder is moved away (what the message says), it all completes.
    os.rename(manifest, str(tmp_path / "was-in-the-way"))
    assert run_cli("undeploy", work, *FAST).code == 0
    again = str(tmp_path / "again")
    assert run_cli("deploy", primary, again, *FAST).code == 0
    assert os.readlink(os.path.join(again, "latest")) == "Runs/000/f0.xmd"


def test_a_folder_in_place_of_the_lock_refuses_clearly_and_unlock_force_clears_it(tmp_path):
    primary, work, _ = deployed(tmp_path)
    lock = os.path.join(primary, S, "lock")
    os.rename(lock, str(tmp_path / "lock-moved-away"))
    in_the_way(lock)
    write(work, "Runs/000/edit.xmd", b"edit")
    res = run_cli("save", work, *FAST)
    assert res.code == 4, res
    assert "unreadable lock file" in res.err and "it is a folder" in res.err
    assert "unlock --force" in res.err and "deploy --resume" in res.err
    assert not os.path.exists(os.path.join(primary, "Runs/000/edit.xmd"))
    res = run_cli("deploy", primary, str(tmp_path / "elsewhere"), *FAST)
    assert res.code == 3 and "it is a folder" in res.err, res
    res = run_cli("status", "--primary", primary)
    assert res.code == 0 and "it is a folder" in res.out, res
    res = run_cli("unlock", "--force", "--yes", primary)
    assert res.code == 0, res
    broken = [n for n in os.listdir(os.path.join(primary, S)) if n.startswith("lock.broken-")]
    assert len(broken) == 1 and still_there(os.path.join(primary, S, broken[0]))
    assert run_cli("deploy", "--resume", primary, work, *FAST).code == 0
    assert open(os.path.join(primary, "Runs/000/edit.xmd"), "rb").read() == b"edit"


def test_a_daemon_keeps_saving_beside_a_folder_in_place_of_its_heartbeat(tmp_path, daemons):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    for i in range(4):
        write(primary, f"Runs/f{i}.xmd", os.urandom(200))
    d = daemons(primary, work)
    d.wait_phase("running")
    deployment = read_lock_file(primary).deployment_id
    beat = os.path.join(primary, S, f"heartbeat.{deployment}")
    in_the_way(beat)
    write(work, "Runs/new.xmd", b"autosaved")
    d.wait_for(lambda: os.path.exists(os.path.join(primary, "Runs/new.xmd")), 20,
               "the autosave of a new file")
    status = d.wait_status(lambda s: "heartbeat file" in s["health_reason"], 20,
                           "the heartbeat problem on the daemon's page")
    assert status["health"] == "degraded" and "is a folder" in status["health_reason"]
    assert d.log().count("Move what is at") <= 2  # said, not at every autosave
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert read_lock_file(primary) is None and still_there(beat)


# -- unreadable, not a folder: permission denied for good, on the FUSE mount ------------
@needs_fuse
@pytest.mark.parametrize("name,op,code,words", [
    ("heartbeat.*", "rename", 0, "the heartbeat file"),
    ("journal.jsonl", "open", 0, "the save journal"),
    ("links.jsonl", "rename", 1, "the link manifest"),
])
def test_a_status_file_that_cannot_be_written_is_named(tmp_path, name, op, code, words):
    fuse = Mount(tmp_path)
    try:
        _, work, _ = deployed(tmp_path, fuse.path, fuse.backing)
        write(work, "Runs/000/first.xmd", b"a first save starts the journal")
        assert run_cli("save", work, *FAST).code == 0
        os.symlink("Runs/000/f0.xmd", os.path.join(work, "alink"))
        write(work, "Runs/000/landed.xmd", b"landed")
        before = snapshot(fuse.backing)
        fuse.fs.inject(op=op, path=f"/{S}/{name}", errno="EACCES")
        res = run_cli("save", work, *FAST)
        fuse.fs.clear_faults()
        assert res.code == code, res
        flat = " ".join(res.err.split())
        assert words in flat and "permission denied" in flat, res
        assert "retrying" not in res.err  # permanent: never retried
        assert open(os.path.join(fuse.backing, "Runs/000/landed.xmd"), "rb").read() == b"landed"
        assert {k for k in before if not k.startswith(S.encode())} <= set(snapshot(fuse.backing))
        assert run_cli("save", work, *FAST).code == 0  # once it can, it all lands
        assert "alink" in open(os.path.join(fuse.backing, S, "links.jsonl")).read()
    finally:
        fuse.stop()


# -- cannot be read: permission denied for good on reading, on the FUSE mount -------------
def said_by(res) -> str:
    """What a command said, on both streams, its lines joined."""
    return " ".join((res.out + res.err).split())


@needs_fuse
@pytest.mark.parametrize("op", ["open", "read"])
def test_a_lock_that_cannot_be_read_fences_the_saves_off_and_is_named(tmp_path, op):
    """Nobody can tell who holds the primary: the holder's save writes nothing (exit 4),
    another deploy is refused (exit 3), each naming the lock, with the way out the message
    gives (``unlock --force``, then ``deploy --resume``), which saves the edit."""
    fuse = Mount(tmp_path)
    try:
        primary, work, _ = deployed(tmp_path, fuse.path, fuse.backing)
        lock = os.path.join(fuse.backing, S, "lock")
        record = open(lock, "rb").read()
        write(work, "Runs/000/edit.xmd", b"edit")
        fuse.fs.inject(op=op, path=f"/{S}/lock", errno="EACCES")
        res = run_cli("save", work, *FAST)
        assert res.code == 4, res
        said = said_by(res)
        assert f"an unreadable lock file {S}/lock" in said and "permission denied" in said
        assert "unlock --force" in said and "deploy --resume" in said, said
        assert "retrying" not in res.err  # permanent: never retried
        assert not os.path.exists(os.path.join(fuse.backing, "Runs/000/edit.xmd"))
        res = run_cli("deploy", primary, str(tmp_path / "elsewhere"), *FAST)
        assert res.code == 3 and "permission denied" in said_by(res), res
        assert not os.path.exists(tmp_path / "elsewhere" / "Runs")
        res = run_cli("status", "--primary", primary)
        assert res.code == 0 and "unreadable lock file" in res.out, res
        assert run_cli("unlock", "--force", "--yes", primary).code == 0
        broken = [n for n in os.listdir(os.path.join(fuse.backing, S))
                  if n.startswith("lock.broken-")]
        assert len(broken) == 1  # set aside, never removed: its record kept
        assert open(os.path.join(fuse.backing, S, broken[0]), "rb").read() == record
        fuse.fs.clear_faults()
        assert run_cli("deploy", "--resume", primary, work, *FAST).code == 0
        assert open(os.path.join(fuse.backing, "Runs/000/edit.xmd"), "rb").read() == b"edit"
    finally:
        fuse.stop()


@needs_fuse
def test_a_manifest_that_cannot_be_read_is_named_and_the_links_are_never_given_up(tmp_path):
    """The links recorded on the primary cannot be compared: the undeploy's final save lands
    the files, then it stops (exit 1) naming the manifest, with the lock and the working
    copy (links included) kept. A deploy that cannot read it is refused (exit 1), never a
    working copy without its links. Once it can be read, both go ahead."""
    fuse = Mount(tmp_path)
    try:
        primary, work, _ = deployed(tmp_path, fuse.path, fuse.backing)
        manifest = os.path.join(primary, S, "links.jsonl")
        os.symlink("Runs/000/f0.xmd", os.path.join(work, "latest"))
        assert run_cli("save", work, *FAST).code == 0
        write(work, "Runs/000/last.xmd", b"the final save lands it")
        fuse.fs.inject(op="read", path=f"/{S}/links.jsonl", errno="EACCES")
        res = run_cli("undeploy", work, *FAST)
        assert res.code == 1, res
        said = said_by(res)
        assert f"the link manifest {manifest} cannot be read" in said, said
        assert "permission denied" in said and f"Check who may read and write {manifest}" in said
        assert "retrying" not in res.err
        assert open(os.path.join(fuse.backing, "Runs/000/last.xmd"), "rb").read() == \
            b"the final save lands it"
        assert read_lock_file(fuse.backing) is not None
        assert os.readlink(os.path.join(work, "latest")) == "Runs/000/f0.xmd"
        assert os.path.exists(os.path.join(work, "Runs/000/f0.xmd"))
        fuse.fs.clear_faults()
        assert run_cli("undeploy", work, *FAST).code == 0
        again = str(tmp_path / "again")
        fuse.fs.inject(op="read", path=f"/{S}/links.jsonl", errno="EACCES")
        res = run_cli("deploy", primary, again, *FAST)
        assert res.code == 1, res
        assert f"the link manifest {manifest} cannot be read" in said_by(res)
        assert f"Check who may read and write {manifest}" in said_by(res)
        assert read_lock_file(fuse.backing) is None  # nothing taken
        assert not os.path.exists(os.path.join(again, "Runs"))
        fuse.fs.clear_faults()
        assert run_cli("deploy", primary, again, *FAST).code == 0
        assert os.readlink(os.path.join(again, "latest")) == "Runs/000/f0.xmd"
    finally:
        fuse.stop()


@needs_fuse
def test_a_journal_that_cannot_be_read_is_named_and_the_saves_go_on(tmp_path):
    """Only ``status --primary`` reads the journal: it names it (exit 0); saves append to it
    as before."""
    fuse = Mount(tmp_path)
    try:
        primary, work, _ = deployed(tmp_path, fuse.path, fuse.backing)
        journal = os.path.join(fuse.backing, S, "journal.jsonl")
        write(work, "Runs/000/first.xmd", b"a first save starts the journal")
        assert run_cli("save", work, *FAST).code == 0
        before = open(journal).read().splitlines()
        fuse.fs.inject(op="read", path=f"/{S}/journal.jsonl", errno="EACCES")
        write(work, "Runs/001/new.xmd", b"saved")
        res = run_cli("save", work, *FAST)
        assert res.code == 0, res
        assert open(os.path.join(fuse.backing, "Runs/001/new.xmd"), "rb").read() == b"saved"
        res = run_cli("status", "--primary", primary)
        assert res.code == 0, res
        where = os.path.join(primary, S, "journal.jsonl")
        said = said_by(res)
        assert f"the save journal {where} cannot be read" in said and "permission denied" in said
        assert f"Check who may read and write {where}" in said, said
        assert "retrying" not in res.err
        fuse.fs.clear_faults()
        lines = open(journal).read().splitlines()
        assert len(lines) == len(before) + 1 and json.loads(lines[-1])["uploaded"] == 1
    finally:
        fuse.stop()


@needs_fuse
@pytest.mark.parametrize("op", ["open", "read"])
def test_a_save_that_changes_links_never_replaces_a_manifest_it_cannot_read(tmp_path, op):
    """What the manifest on the primary holds cannot be compared or kept in the trash first:
    it is not written over (a rename would succeed, the old links gone with it). The save
    lands the files, then stops (exit 1) naming it and what to do; once it can be read, the
    next save writes the new one, the old one kept in that save's trash batch."""
    fuse = Mount(tmp_path)
    try:
        primary, work, _ = deployed(tmp_path, fuse.path, fuse.backing)
        os.symlink("Runs/000/f0.xmd", os.path.join(work, "latest"))
        assert run_cli("save", work, *FAST).code == 0
        kept = os.path.join(fuse.backing, S, "links.jsonl")
        old = open(kept, "rb").read()
        assert b'"latest"' in old
        os.unlink(os.path.join(work, "latest"))  # the link changed: removed, another made
        os.symlink("Runs/001/f1.xmd", os.path.join(work, "newer"))
        write(work, "Runs/000/landed.xmd", b"landed")
        fuse.fs.inject(op=op, path=f"/{S}/links.jsonl", errno="EACCES")
        res = run_cli("save", work, *FAST)
        assert res.code == 1, res
        said = said_by(res)
        manifest = os.path.join(primary, S, "links.jsonl")
        assert f"the link manifest {manifest} cannot be read" in said, said
        assert "permission denied" in said and "left it as it is" in said
        assert "links of this working copy could not be recorded" in said
        assert f"Check who may read and write {manifest}" in said
        assert "retrying" not in res.err and ".spaceport-tmp-" not in res.err
        assert open(kept, "rb").read() == old  # the old manifest's bytes, in place
        assert open(os.path.join(fuse.backing, "Runs/000/landed.xmd"), "rb").read() == b"landed"
        assert not os.path.exists(os.path.join(fuse.backing, S, "trash"))
        assert read_lock_file(fuse.backing) is not None
        fuse.fs.clear_faults()
        res = run_cli("save", work, *FAST)
        assert res.code == 0, res
        now = open(kept, "rb").read()
        assert b'"newer"' in now and b'"latest"' not in now
        [batch] = os.listdir(os.path.join(fuse.backing, S, "trash"))
        assert open(os.path.join(fuse.backing, S, "trash", batch, S, "links.jsonl"),
                    "rb").read() == old  # the link removed can be restored from there
    finally:
        fuse.stop()


@needs_fuse
def test_status_of_the_primary_says_a_manifest_that_cannot_be_read_is_there(tmp_path):
    """Not 'none yet': the manifest is there and holds links; status names it and the
    error, with what to do. Once readable, its links are counted again."""
    fuse = Mount(tmp_path)
    try:
        primary, work, _ = deployed(tmp_path, fuse.path, fuse.backing)
        os.symlink("Runs/000/f0.xmd", os.path.join(work, "latest"))
        assert run_cli("save", work, *FAST).code == 0
        fuse.fs.inject(op="read", path=f"/{S}/links.jsonl", errno="EACCES")
        res = run_cli("status", "--primary", primary)
        fuse.fs.clear_faults()
        assert res.code == 0, res
        manifest = os.path.join(primary, S, "links.jsonl")
        said = said_by(res)
        assert "none yet" not in res.out, res.out
        assert f"manifest the link manifest {manifest} cannot be read" in said, res.out
        assert "permission denied" in said and f"Check who may read and write {manifest}" in said
        res = run_cli("status", "--primary", primary)
        assert res.code == 0 and "manifest      1 link" in res.out, res.out
    finally:
        fuse.stop()
