"""The trash keeps what a save took away, as it was (issue 18): links (the manifest a save
replaced), folders (empty ones included), and for as long as no clock can shorten.

Real ``spaceport`` processes over the project's OneData-like FUSE mount; the primary's
files (its backing folder), the trash batches and the working copy are checked on disk.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from conftest import run_cli, snapshot, write
from test_faults import Mount, needs_fuse

from spaceport.formats.links import parse_manifest
from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR


def manifest(root: str) -> bytes:
    with open(os.path.join(root, S, "links.jsonl"), "rb") as f:
        return f.read()


def links_of(raw: bytes) -> dict[str, str]:
    return {link.path: link.target for link in parse_manifest(raw).links}


def batches(root: str) -> list[str]:
    folder = os.path.join(root, S, "trash")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture
def mounted(tmp_path):
    """(mount, primary path on the mount, its backing folder, a working copy deployed)."""
    m = Mount(tmp_path, meta_delay_ms=0.5)
    primary, work = m.path + "/p", str(tmp_path / "work")
    os.mkdir(primary)
    try:
        assert run_cli("deploy", primary, work).code == 0
        yield m, primary, m.backing + "/p", work
    finally:
        m.stop()


# -- links ------------------------------------------------------------------------------------
@needs_fuse
def test_a_save_that_drops_links_keeps_the_manifest_before_it_and_restore_brings_them_back(
        mounted, tmp_path):
    m, primary, backing, work = mounted
    write(work, "Runs/r1/extra/out.mrc", b"out")
    for name, target in (("a", "extra/out.mrc"), ("b", "extra/out.mrc"), ("c", "/data/x")):
        os.symlink(target, os.path.join(work, "Runs/r1", name))
    assert run_cli("save", work).code == 0
    before = manifest(backing)
    # Only a link added: nothing is lost, no manifest goes to the trash (and no batch).
    os.symlink("extra/out.mrc", os.path.join(work, "Runs/r1/d"))
    r = run_cli("save", work)
    assert r.code == 0 and "kept in the trash" not in r.out and batches(backing) == []
    before = manifest(backing)
    # One link removed, one retargeted: the manifest before goes to the trash, as it was.
    os.unlink(os.path.join(work, "Runs/r1/a"))
    os.unlink(os.path.join(work, "Runs/r1/c"))
    os.symlink("/data/y", os.path.join(work, "Runs/r1/c"))
    r = run_cli("save", work)
    assert r.code == 0, r.err
    [batch] = batches(backing)
    assert f"(the previous one, with 2 links no longer there, kept in trash batch {batch})" \
        in r.out, r.out
    kept = os.path.join(backing, S, "trash", batch, S, "links.jsonl")
    assert open(kept, "rb").read() == before  # byte for byte
    assert links_of(manifest(backing)) == {"Runs/r1/b": "extra/out.mrc",
                                           "Runs/r1/c": "/data/y", "Runs/r1/d": "extra/out.mrc"}
    assert "manifest kept" in run_cli("trash", "list", work).out
    assert "the link manifest as it was" in run_cli("trash", "list", work, "--batch", batch).out
    # Restored: the link whose name is free comes back; b, c and d have their names taken
    # (c with another target: kept as it is).
    r = run_cli("trash", "restore", work, batch)
    assert r.code == 0, r.err
    assert "restored 0 files, 1 link" in r.out and "3 links skipped: the name is taken" in r.out
    assert os.readlink(os.path.join(work, "Runs/r1/a")) == "extra/out.mrc"
    assert os.readlink(os.path.join(work, "Runs/r1/c")) == "/data/y"
    assert run_cli("save", work).code == 0
    assert links_of(manifest(backing))["Runs/r1/a"] == "extra/out.mrc"
    # Into the primary, when nobody has it deployed: the link goes back into its manifest.
    os.unlink(os.path.join(work, "Runs/r1/a"))
    assert run_cli("save", work).code == 0
    second = [b for b in batches(backing) if b != batch][0]
    assert run_cli("undeploy", work).code == 0
    assert "Runs/r1/a" not in links_of(manifest(backing))
    r = run_cli("trash", "restore", "--primary", primary, second, "Runs/r1/a")
    assert r.code == 0 and "1 link" in r.out, r.out + r.err
    assert links_of(manifest(backing))["Runs/r1/a"] == "extra/out.mrc"
    again = str(tmp_path / "again")
    assert run_cli("deploy", primary, again).code == 0
    assert os.readlink(os.path.join(again, "Runs/r1/a")) == "extra/out.mrc"


@needs_fuse
def test_a_link_that_became_a_file_leaves_the_manifest_the_old_one_kept(mounted):
    """The save that takes a link out of the manifest because a file took its name keeps
    the manifest before it in that save's trash batch, byte for byte, and the link can be
    restored from there once its name is free again."""
    m, primary, backing, work = mounted
    write(work, "data.mrc", b"d")
    os.symlink("data.mrc", os.path.join(work, "view.mrc"))
    assert run_cli("save", work).code == 0
    before = manifest(backing)
    assert links_of(before) == {"view.mrc": "data.mrc"} and batches(backing) == []
    os.unlink(os.path.join(work, "view.mrc"))
    write(work, "view.mrc", b"now a file")
    r = run_cli("save", work)
    assert r.code == 0 and "1 link no longer there" in r.out, r.out
    assert links_of(manifest(backing)) == {}
    assert open(os.path.join(backing, "view.mrc"), "rb").read() == b"now a file"
    [batch] = batches(backing)
    assert f"kept in trash batch {batch}" in r.out, r.out
    assert open(os.path.join(backing, S, "trash", batch, S, "links.jsonl"), "rb").read() \
        == before  # byte for byte, in that save's own batch
    assert "the link manifest as it was" in run_cli("trash", "list", work, "--batch",
                                                    batch).out
    # The name is taken by the file: the link is skipped, the file kept as it is.
    r = run_cli("trash", "restore", work, batch)
    assert r.code == 0 and "1 link skipped: the name is taken" in r.out, r.out + r.err
    assert open(os.path.join(work, "view.mrc"), "rb").read() == b"now a file"
    # The file gone (saved: into a batch of its own), the link comes back and is saved.
    os.unlink(os.path.join(work, "view.mrc"))
    assert run_cli("save", work).code == 0
    r = run_cli("trash", "restore", work, batch, "view.mrc")
    assert r.code == 0 and "1 link" in r.out, r.out + r.err
    assert os.readlink(os.path.join(work, "view.mrc")) == "data.mrc"
    assert run_cli("save", work).code == 0
    assert links_of(manifest(backing)) == {"view.mrc": "data.mrc"}


# -- folders ----------------------------------------------------------------------------------
def scipion_run(root: str, name: str) -> None:
    """A finished Scipion run: its logs, its output, and the folders it leaves empty."""
    write(root, f"Runs/{name}/logs/run.log", b"done")
    write(root, f"Runs/{name}/extra/particles.sqlite.txt", b"set")
    os.makedirs(os.path.join(root, f"Runs/{name}/tmp"))
    os.makedirs(os.path.join(root, f"Runs/{name}/extra/empty/deeper"))
    os.chmod(os.path.join(root, f"Runs/{name}/tmp"), 0o700)


def tree(root: str) -> dict:
    return {k: v for k, v in snapshot(root, mtimes=False).items()
            if k.startswith(b"Runs/")}


@needs_fuse
def test_a_deleted_run_is_restored_with_its_empty_folders(mounted, tmp_path):
    m, primary, backing, work = mounted
    scipion_run(work, "000002_Crop")
    write(work, "Runs/000001_Import/logs/run.log", b"stays")
    assert run_cli("save", work).code == 0
    as_saved = tree(work)
    shutil.rmtree(os.path.join(work, "Runs/000002_Crop"))
    r = run_cli("save", work)
    assert r.code == 0, r.err
    [batch] = batches(backing)
    kept = os.path.join(backing, S, "trash", batch, "Runs/000002_Crop")
    assert os.path.isdir(os.path.join(kept, "tmp")) and \
        os.path.isdir(os.path.join(kept, "extra/empty/deeper"))
    assert stat.S_IMODE(os.stat(os.path.join(kept, "tmp")).st_mode) == 0o700
    listing = run_cli("trash", "list", work, "--batch", batch).out
    assert "Runs/000002_Crop/tmp/" in listing and "folder" in listing
    r = run_cli("trash", "restore", work, batch, "Runs/000002_Crop")
    assert r.code == 0 and "restored 2 files, 6 folders" in r.out, r.out + r.err
    assert tree(work) == as_saved  # as it was: empty folders and modes included
    assert run_cli("save", work).code == 0
    assert os.path.isdir(os.path.join(backing, "Runs/000002_Crop/extra/empty/deeper"))
    # The same from the primary's side, with nobody deployed.
    shutil.rmtree(os.path.join(work, "Runs/000002_Crop"))
    assert run_cli("save", work).code == 0
    second = [b for b in batches(backing) if b != batch][0]
    assert run_cli("undeploy", work).code == 0
    r = run_cli("trash", "restore", "--primary", primary, second)
    assert r.code == 0, r.err
    again = str(tmp_path / "again")
    assert run_cli("deploy", primary, again).code == 0
    assert tree(again) == as_saved


# -- retention that no clock can shorten ------------------------------------------------------
def faketime(offset: str) -> tuple[str, ...]:
    """libfaketime as it comes: it fakes the wall clock and the monotonic clocks too."""
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (apt-get install faketime)")
    return ("faketime", "-f", offset)


def save_at(work: str, clock: tuple[str, ...] = (), *args: str):
    import subprocess
    import sys
    proc = subprocess.run([*clock, sys.executable, "-m", "spaceport", "save", work, *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc


@needs_fuse
def test_trash_survives_saves_on_a_clock_8_days_ahead_and_after_one_30_days_behind(mounted):
    m, primary, backing, work = mounted
    for i in range(4):
        write(work, f"f{i}", b"%d" % i)
    save_at(work)
    os.unlink(os.path.join(work, "f0"))
    save_at(work)
    [first] = batches(backing)
    # A node whose clock is 8 days ahead: the batch is 8 days old by its clock, seconds by
    # the boot clock. Kept; the clock's jump said once.
    write(work, "g", b"g")
    ahead = save_at(work, faketime("+8d"))
    assert batches(backing) == [first]
    assert "no trash was purged: this host's clock moved 8.0 days ahead" in ahead.stderr
    write(work, "g", b"gg")
    again = save_at(work, faketime("+8d"))
    assert batches(backing) == [first] and "no trash was purged" not in again.stderr
    # A node 30 days behind names a batch 30 days in the past, and sees the others in its
    # future: it purges nothing.
    os.unlink(os.path.join(work, "f1"))
    behind = save_at(work, faketime("-30d"))
    assert len(batches(backing)) == 2
    assert f"the trash batch {first} is named 30.0 days after this host's clock" in \
        behind.stderr
    back_named = [b for b in batches(backing) if b != first][0]
    assert back_named < first  # named on the wrong clock
    # The next saves on a correct clock: the batch named 30 days ago is minutes old.
    write(work, "h", b"h")
    right = save_at(work)
    assert batches(backing) == sorted([first, back_named])
    assert "moved 30.0 days ahead" in right.stderr
    write(work, "h", b"hh")
    quiet = save_at(work)
    assert batches(backing) == sorted([first, back_named]) and "purged" not in quiet.stderr
    files = {os.path.relpath(os.path.join(d, n), os.path.join(backing, S, "trash"))
             for d, _, names in os.walk(os.path.join(backing, S, "trash")) for n in names}
    assert files == {f"{first}/f0", f"{back_named}/f1"}


@needs_fuse
def test_old_batches_still_purge_when_both_measures_agree(mounted, tmp_path):
    import json
    import time
    m, primary, backing, work = mounted
    seconds = 5.0  # the retention; a batch is watched for `watch` s before an undeploy
    watch = 2
    retention = ("--trash-retention-days", str(seconds / 86400))
    for i in range(3):
        write(work, f"f{i}", b"%d" % i)
    save_at(work)
    os.unlink(os.path.join(work, "f0"))
    save_at(work, (), *retention)
    [first] = batches(backing)
    time.sleep(seconds + 1)
    save_at(work, (), *retention)  # older than the retention by both clocks: purged
    assert batches(backing) == []
    # Watched time adds up over deployments, never the time nobody had the project.
    os.unlink(os.path.join(work, "f1"))
    save_at(work, (), *retention)
    [second] = batches(backing)
    time.sleep(watch)
    assert run_cli("undeploy", work).code == 0  # its final save writes what it watched
    with open(os.path.join(backing, S, "trash-watch.json")) as f:
        watched = json.load(f)["seconds"][second]
    assert watch <= watched < seconds
    time.sleep(seconds - watch + 1)  # nobody deployed: past the retention by the clock only
    again = str(tmp_path / "again")
    assert run_cli("deploy", primary, again).code == 0
    save_at(again, (), *retention)
    assert batches(backing) == [second]
    time.sleep(seconds - watched + 1)
    save_at(again, (), *retention)
    assert batches(backing) == []


def test_watched_time_is_carried_across_a_reboot_but_not_the_gap():
    from datetime import datetime, timedelta, timezone

    from spaceport.safety.retention import Watch, judge

    name = "20260101T000000Z"
    now = datetime(2026, 1, 20, tzinfo=timezone.utc)  # 19 days old by its name
    seven = timedelta(days=7)
    watch = Watch({}, "boot-1", 1000.0)
    assert judge([name], watch, now, seven, None).purge == []
    watch.up = 1000.0 + 5 * 86400  # 5 days watched in the first boot
    assert judge([name], watch, now, seven, None).purge == []
    rebooted = Watch(watch.records, "boot-2", 50.0)  # the gap across the reboot: not counted
    assert judge([name], rebooted, now, seven, None).purge == []
    assert rebooted.seconds(name) == 5 * 86400
    rebooted.up = 50.0 + 2 * 86400 + 1  # 5 days, then 2 days and a second
    assert judge([name], rebooted, now, seven, None).purge == [name]
    # And the boot clock alone never purges what the wall clock calls young.
    young = Watch({}, "boot-1", 0.0)
    judge(["20260119T000000Z"], young, now, seven, None)
    young.up = 30 * 86400.0
    assert judge(["20260119T000000Z"], young, now, seven, None).purge == []
