"""Deploy and save through the Python API: incremental behaviour and the safety rules."""

import json
import os
import shutil
import stat

import pytest
from conftest import snapshot, write

from spaceport.commands.deploy import deploy
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.errors import LockedError, LockLostError, RefusedError
from spaceport.safety.lock import DEFAULT_STATUS_DIR, read_lock
from spaceport.store import PRIMARY_CAPABILITIES, PosixStore

S = DEFAULT_STATUS_DIR


def project(primary, files=10):
    for i in range(files):
        write(primary, f"run{i % 3}/file{i}.dat", os.urandom(100 + i), mode=0o644,
              mtime_ns=1_600_000_000_000_000_000 + i)
    write(primary, "ro.txt", b"read only", mode=0o444)
    write(primary, "exec.sh", b"#!/bin/sh\n", mode=0o755)
    os.makedirs(os.path.join(primary, "empty", "nested"))
    os.chmod(os.path.join(primary, "run1"), 0o750)


def test_deploy_copies_content_modes_mtimes_and_empty_dirs(dirs, opts):
    primary, work = dirs
    project(primary)
    report = deploy(primary, work, opts)
    assert report.copied == report.files == 12
    assert snapshot(primary) == snapshot(work)
    assert os.path.isdir(os.path.join(work, ".spaceport"))
    assert read_lock(PosixStore(primary, PRIMARY_CAPABILITIES, temp_token="0" * 8), S) \
        .deployment_id == report.deployment_id


def test_save_touches_only_what_changed(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    assert save(work, opts).uploaded == 0
    write(work, "run0/file0.dat", b"changed")
    write(work, "new/deep/file", b"new")
    os.chmod(os.path.join(work, "exec.sh"), 0o700)
    report = save(work, opts)
    assert report.uploaded == 3 and report.dirs_created == 2
    assert snapshot(primary) == snapshot(work)
    assert save(work, opts).uploaded == 0


def test_kind_changes(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    os.unlink(os.path.join(work, "ro.txt"))
    os.makedirs(os.path.join(work, "ro.txt"))  # a file became a folder
    write(work, "ro.txt/inside", b"1")
    os.rename(os.path.join(work, "empty"), os.path.join(work, "was_empty"))
    write(work, "empty", b"a folder became a file")
    os.unlink(os.path.join(work, "exec.sh"))
    os.symlink("run0", os.path.join(work, "exec.sh"))  # a file became a link
    save(work, opts, allow_mass_delete=True)
    got = snapshot(primary)
    want = snapshot(work)
    assert want.pop(b"exec.sh") == ("link", b"run0")  # links live in the manifest only
    assert got == want


def test_fencing_lock_replaced_means_nothing_written(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    lock_path = os.path.join(primary, S, "lock")
    data = json.load(open(lock_path))
    data["deployment_id"] = "f" * 32
    json.dump(data, open(lock_path, "w"))
    before = snapshot(primary)
    write(work, "run0/file0.dat", b"changed")
    with pytest.raises(LockLostError) as info:
        save(work, opts)
    assert info.value.exit_code == 4
    assert snapshot(primary) == before


def test_missing_marker_refuses_to_save(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    before = snapshot(primary)
    os.rename(os.path.join(work, ".spaceport"), os.path.join(work, "..", "moved-marker"))
    with pytest.raises(RefusedError) as info:
        save(work, opts)
    assert info.value.exit_code == 5 and "unmounted" in str(info.value)
    assert snapshot(primary) == before


def test_files_never_seen_are_never_deleted(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    write(primary, "run0/added_by_someone_else", b"keep me")  # straight onto the primary
    for name in os.listdir(os.path.join(work, "run0")):
        os.unlink(os.path.join(work, "run0", name))
    os.rmdir(os.path.join(work, "run0"))
    report = save(work, opts)
    assert open(os.path.join(primary, "run0/added_by_someone_else"), "rb").read() == b"keep me"
    assert report.kept_dirs == ["run0"]
    assert sorted(os.listdir(os.path.join(primary, "run0"))) == ["added_by_someone_else"]


def test_deleted_files_go_to_the_trash_and_a_batch_old_only_by_its_name_is_kept(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    old = os.path.join(primary, S, "trash", "20200101T000000Z")
    write(old, "x", b"very old")
    recent_content = open(os.path.join(work, "run1/file1.dat"), "rb").read()
    os.unlink(os.path.join(work, "run1/file1.dat"))
    report = save(work, opts)
    trashed = os.path.join(primary, S, "trash", report.trash_batch, "run1/file1.dat")
    assert open(trashed, "rb").read() == recent_content
    assert not os.path.exists(os.path.join(primary, "run1/file1.dat"))
    # Old by its name, but never watched by any deployment (safety.retention): kept. Old
    # batches are purged once watched for the retention period (tests/test_trash.py).
    assert report.purged == [] and open(os.path.join(old, "x"), "rb").read() == b"very old"


def test_mass_delete_guard(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    for i in range(7):
        os.unlink(os.path.join(work, f"run{i % 3}/file{i}.dat"))
    before = snapshot(primary)
    report = save(work, opts)  # a run's few files deleted: normal work, not held
    assert report.held is None and report.deleted == 7
    assert snapshot(primary) == snapshot(work) != before
    for name in os.listdir(work):  # the volume emptied: held, nothing deleted
        path = os.path.join(work, name)
        if name != ".spaceport":
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    before = snapshot(primary)
    report = save(work, opts)
    assert report.held["files"] == 5 and report.deleted == 0
    assert "none of the 5 files the index knows is left" in report.held["reason"]
    assert snapshot(primary) == before
    save(work, opts, allow_mass_delete=True)
    assert snapshot(primary) == snapshot(work)


def test_hard_links_become_separate_files_and_specials_are_skipped(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    write(work, "h1", b"shared")
    os.link(os.path.join(work, "h1"), os.path.join(work, "h2"))
    os.mkfifo(os.path.join(work, "pipe"))
    report = save(work, opts)
    assert report.special == ["pipe"]
    assert not os.path.exists(os.path.join(primary, "pipe"))
    a, b = os.stat(os.path.join(primary, "h1")), os.stat(os.path.join(primary, "h2"))
    assert a.st_ino != b.st_ino and open(os.path.join(primary, "h2"), "rb").read() == b"shared"


def test_unsaved_work_is_never_discarded_silently(dirs, opts, tmp_path):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    write(work, "unsaved.txt", b"precious")
    os.unlink(os.path.join(primary, S, "lock"))  # the deployment died and was unlocked
    with pytest.raises(RefusedError) as info:
        deploy(primary, work, opts)
    assert "--resume" in str(info.value) and "--discard-local" in str(info.value)
    assert open(os.path.join(work, "unsaved.txt"), "rb").read() == b"precious"
    deploy(primary, work, opts, resume=True)
    assert open(os.path.join(primary, "unsaved.txt"), "rb").read() == b"precious"
    assert snapshot(primary) == snapshot(work)
    # And --discard-local really discards.
    write(work, "scratch.txt", b"throw away")
    os.unlink(os.path.join(primary, S, "lock"))
    deploy(primary, work, opts, discard_local=True)
    assert not os.path.exists(os.path.join(work, "scratch.txt"))
    assert snapshot(primary) == snapshot(work)


def test_resume_keeps_a_primary_version_changed_meanwhile_as_a_conflict_copy(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    write(work, "run0/file0.dat", b"mine")
    os.unlink(os.path.join(primary, S, "lock"))
    write(primary, "run0/file0.dat", b"someone else's newer version")
    report = deploy(primary, work, opts, resume=True)
    assert open(os.path.join(primary, "run0/file0.dat"), "rb").read() == b"mine"
    [(path, kept_as)] = report.saved.conflicts
    assert path == "run0/file0.dat" and kept_as.startswith("run0/file0.dat.conflict-")
    assert open(os.path.join(primary, kept_as), "rb").read() == b"someone else's newer version"
    assert snapshot(primary) == snapshot(work)  # both versions, on both sides
    assert not os.path.exists(os.path.join(primary, S, "trash"))  # never purged away


def test_non_empty_folder_that_is_not_a_working_copy_is_refused(dirs, opts):
    primary, work = dirs
    project(primary)
    write(work, "something", b"unknown")
    with pytest.raises(RefusedError, match="not empty"):
        deploy(primary, work, opts)
    assert not os.path.exists(os.path.join(primary, S, "lock"))


def test_second_deployment_refused_and_redeploy_after_undeploy(dirs, opts, tmp_path):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    with pytest.raises(LockedError):
        deploy(primary, str(tmp_path / "other"), opts)
    write(work, "late.txt", b"saved by undeploy")
    undeploy(work, opts, keep_work=True)
    assert not os.path.exists(os.path.join(primary, S, "lock"))
    assert open(os.path.join(primary, "late.txt"), "rb").read() == b"saved by undeploy"
    write(primary, "run2/changed_while_away", b"new on primary")
    again = deploy(primary, work, opts)
    assert again.copied == 1 and again.already_current == 13
    assert snapshot(primary) == snapshot(work)


def test_deploy_removes_work_files_deleted_on_primary_meanwhile(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    undeploy(work, opts, keep_work=True)
    os.unlink(os.path.join(primary, "run0/file0.dat"))
    report = deploy(primary, work, opts)
    assert report.removed_from_work == 1
    assert snapshot(primary) == snapshot(work)


def test_read_only_directories_round_trip(dirs, opts):
    primary, work = dirs
    write(primary, "locked/f", b"1")
    os.chmod(os.path.join(primary, "locked"), 0o555)
    deploy(primary, work, opts)
    assert stat.S_IMODE(os.stat(os.path.join(work, "locked")).st_mode) == 0o555
    assert snapshot(primary) == snapshot(work)


def test_restart_of_a_finished_deployment_keeps_edits_made_after_the_last_save(dirs, opts):
    """A daemon killed after stage-in and started again resumes its lock: it must not copy
    the primary over edits the user made since the last autosave."""
    primary, work = dirs
    project(primary)
    first = deploy(primary, work, opts)
    write(work, "run0/file0.dat", b"edited after the last save")
    os.unlink(os.path.join(work, "run1/file1.dat"))
    again = deploy(primary, work, opts)
    assert again.resumed_own and again.deployment_id == first.deployment_id
    assert again.copied == 0
    assert open(os.path.join(work, "run0/file0.dat"), "rb").read() == b"edited after the last save"
    assert not os.path.exists(os.path.join(work, "run1/file1.dat"))
    save(work, opts)
    assert snapshot(primary) == snapshot(work)


def test_a_stopped_stage_in_is_not_called_finished_and_reruns(dirs, opts):
    """The daemon's SIGTERM during stage-in: the deploy stops, releases the lock, and the
    same deploy run again completes (the folders it made are known, not 'unsaved work')."""
    import threading

    from spaceport.errors import Interrupted

    primary, work = dirs
    project(primary)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        deploy(primary, work, opts, stop=stop)
    assert not os.path.exists(os.path.join(primary, S, "lock"))
    deploy(primary, work, opts)
    assert snapshot(primary) == snapshot(work)


def test_stop_during_stage_in_after_folders_were_made(dirs, opts, monkeypatch):
    import threading

    from spaceport.commands.deploy.stagein import flow as stagein_flow
    from spaceport.errors import Interrupted

    primary, work = dirs
    project(primary)
    stop = threading.Event()
    real_download = stagein_flow.download

    def download_then_stop(run, plan):  # the signal arrives during the copies
        stop.set()
        real_download(run, plan)
    monkeypatch.setattr(stagein_flow, "download", download_then_stop)
    with pytest.raises(Interrupted):
        deploy(primary, work, opts, stop=stop)
    monkeypatch.undo()
    assert os.path.isdir(os.path.join(work, "run0"))  # folders were made
    deploy(primary, work, opts)
    assert snapshot(primary) == snapshot(work)


def test_lost_and_found_of_a_fresh_volume_is_not_the_project(tmp_path, opts):
    import subprocess
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    os.makedirs(work)
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", work], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        os.mkdir(os.path.join(work, "lost+found"), 0o700)
        deploy(primary, work, opts)  # not refused as "not empty"
        assert save(work, opts).plan["new_dirs"] == 0  # and never uploaded
        assert not os.path.exists(os.path.join(primary, "lost+found"))
    finally:
        subprocess.run(["umount", "-l", work])
