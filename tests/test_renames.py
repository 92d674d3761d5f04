"""Renames and moves in the working copy are renames on the primary (issue 12).

Every test looks at the primary on disk afterwards: each file at its new path with its
content, nothing at the old paths, the trash untouched. Costs are counted on the
OneData-like FUSE mount (calls and bytes), never timed.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import run_cli, snapshot, write
from daemon_helpers import read_lock_file
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spaceport.commands.deploy import deploy
from spaceport.commands.save import save
from spaceport.commands.workcopy import pending_changes
from spaceport.engine.index import Index
from spaceport.formats.marker import index_path, require_marker
from spaceport.formats.trash import TRASH_DIR
from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.testing.onedatafs import OneDataFS, fuse_available, metadata_calls

AVAILABLE, REASON = fuse_available()


# -- helpers ------------------------------------------------------------------------------
def files(root: str) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (the status folder left out)."""
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in (DEFAULT_STATUS_DIR, ".spaceport")]
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.normpath(os.path.join(rel, name))] = \
                    hashlib.sha256(f.read()).hexdigest()
    return out


def folders(root: str) -> set[str]:
    out = set()
    for dirpath, dirnames, _ in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in (DEFAULT_STATUS_DIR, ".spaceport")]
        out |= {os.path.normpath(os.path.join(rel, d)) for d in dirnames}
    return out


def trash(primary: str) -> list[str]:
    base = os.path.join(primary, DEFAULT_STATUS_DIR, TRASH_DIR)
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def same_as_work(primary: str, work: str) -> None:
    assert files(primary) == files(work)
    assert folders(primary) == folders(work)


def project(root: str, runs: int = 90, other: int = 10) -> None:
    """``Runs/`` holds most of the files (``runs`` of them, in 9 run folders)."""
    for i in range(runs):
        write(root, f"Runs/run{i % 9:03d}/extra/f{i}.mrc", f"run file {i}".encode() * 20)
    for i in range(other):
        write(root, f"Other/o{i}.txt", f"other {i}".encode())
    write(root, "project.conf", b"conf")


def reorganise(work: str) -> None:
    """Runs/ (90 % of the files) becomes Runs-old/, and one run is moved elsewhere."""
    os.rename(os.path.join(work, "Runs"), os.path.join(work, "Runs-old"))
    os.makedirs(os.path.join(work, "Archive", "2026"))
    os.rename(os.path.join(work, "Runs-old", "run003"),
              os.path.join(work, "Archive", "2026", "run003"))


@pytest.fixture
def onedata(tmp_path):
    backing, mount = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mount.mkdir()
    fs = OneDataFS(str(backing), str(mount)).start()
    try:
        yield fs, str(backing), str(mount)
    finally:
        fs.stop()


@pytest.fixture
def deployed(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    return primary, work


# -- the command line, counted on the FUSE mount --------------------------------------
ATTR_TIMEOUT = 1.0  # the mount's attribute and entry cache (libfuse's default), seconds


def counted_save(fs: OneDataFS, work: str, *args: str):
    """A save by the command line, as a periodic save starts: the kernel's FUSE caches
    expired (else the count depends on how long ago the last call was). Returns the
    result, the metadata calls, the bytes written and the counts per operation."""
    time.sleep(ATTR_TIMEOUT + 0.2)
    fs.reset_counts()
    result = run_cli("save", *args, work)
    counts = fs.counts()
    return result, metadata_calls(counts), fs.bytes_written(), counts


@pytest.mark.fuse
@pytest.mark.skipif(not AVAILABLE, reason=f"FUSE: {REASON}")
def test_renaming_most_of_the_tree_by_the_command_line_costs_a_few_calls_and_no_bytes(
        onedata, tmp_path):
    fs, backing, mount = onedata
    project(backing)
    work = str(tmp_path / "work")
    journal = os.path.join(backing, DEFAULT_STATUS_DIR, "journal.jsonl")
    assert run_cli("deploy", mount, work).code == 0
    assert run_cli("save", work).code == 0  # settles what a first save records
    quiet, quiet_calls, quiet_bytes, _ = counted_save(fs, work)
    assert quiet.code == 0, quiet.err

    def journal_size() -> int:
        return os.path.getsize(journal) if os.path.exists(journal) else 0

    # Runs/ (90 % of the files) renamed; then one run moved elsewhere: each saved by the
    # command line, each counted against the save with nothing changed.
    steps = [("Runs", "Runs-old", "Runs/ -> Runs-old/"),
             ("Runs-old/run003", "Other/run003", "Runs-old/run003/ -> Other/run003/")]
    for old, new, listed in steps:
        os.rename(os.path.join(work, old), os.path.join(work, new))
        dry = run_cli("save", "--dry-run", work)
        assert f"move:          1 folder\n  {listed}\n" in dry.out, dry.out
        assert "upload" not in dry.out and "move to trash" not in dry.out
        before = journal_size()
        result, calls, written, counts = counted_save(fs, work)
        assert result.code == 0, result.err
        assert "0 files uploaded (0 B), 1 moved" in result.out, result.out
        same_as_work(backing, work)
        assert not os.path.exists(os.path.join(backing, old))
        assert trash(backing) == []
        assert counts["rename"] - 1 == 1  # the heartbeat's, and the one move
        assert calls - quiet_calls <= 10, (calls, quiet_calls, counts)
        # Not one byte of a file: what a save with nothing changed writes (the
        # heartbeat), plus the journal line that records this save.
        assert written == quiet_bytes + journal_size() - before, (written, quiet_bytes)
    assert "nothing to save" in run_cli("save", "--dry-run", work).out


# -- under the daemon ------------------------------------------------------------------
def test_renaming_most_of_the_tree_under_the_daemon_autosaves_it_as_renames(
        tmp_path, daemons):
    primary = str(tmp_path / "primary")
    project(primary)
    work = str(tmp_path / "work")
    d = daemons(primary, work)
    d.wait_phase("running")
    d.wait_status(lambda s: s["saves"]["ok"] >= 1, 30, "a first autosave")
    reorganise(work)
    done = d.wait_status(lambda s: (s["last_save"] or {}).get("moved"), 30,
                         "an autosave that moved the folders")
    assert done["last_save"]["ok"] and done["last_save"]["uploaded"] == 0
    assert done["last_save"]["deleted"] == 0 and done["saves"]["failed"] == 0
    same_as_work(primary, work)
    assert not os.path.exists(os.path.join(primary, "Runs"))
    assert trash(primary) == []
    assert "refus" not in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    assert read_lock_file(primary) is None


# -- a save killed between the rename and the rekey ------------------------------------
@pytest.mark.fuse
@pytest.mark.skipif(not AVAILABLE, reason=f"FUSE: {REASON}")
def test_a_save_killed_after_the_rename_before_the_rekey_only_rekeys_next_time(
        onedata, tmp_path):
    fs, backing, mount = onedata
    project(backing)
    work = str(tmp_path / "work")
    assert run_cli("deploy", mount, work).code == 0
    reorganise(work)
    # The rename of Runs is made on the backing folder, then held: the save is killed
    # there, before it could record anything.
    gate = fs.hold(op="rename", path="/Runs", when="after", timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", work],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fs.wait_held(gate, timeout=30)
        assert os.path.isdir(os.path.join(backing, "Runs-old"))  # made, not recorded
        # Killed there: the kernel ends it as the held call returns, before the save
        # sees the rename's result.
        proc.send_signal(signal.SIGKILL)
    finally:
        fs.release(gate)
        if proc.poll() is None:
            proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    index = Index(index_path(work))
    rows = index.load()
    index.close()
    assert sum(p.startswith("Runs/") for p in rows) > 80  # still at the old path
    assert not any(p.startswith("Runs-old") for p in rows)

    fs.reset_counts()
    result = run_cli("save", work)
    counts = fs.counts()
    assert result.code == 0, result.err
    assert "0 files uploaded (0 B), 2 moved" in result.out, result.out
    assert counts["unlink"] == 0 and counts["rename"] >= 2  # nothing to the trash
    same_as_work(backing, work)
    assert trash(backing) == []
    assert not pending_changes(work, require_marker(work)).pending


# -- corner cases, each checked on disk ----------------------------------------------
def test_folder_moved_into_a_new_folder_creates_its_parents_first(deployed, opts):
    primary, work = deployed
    os.makedirs(os.path.join(work, "New", "Deep"))
    os.rename(os.path.join(work, "Other"), os.path.join(work, "New", "Deep", "Other"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (1, 0, 0)
    same_as_work(primary, work)


def test_a_rename_and_an_edit_inside_the_moved_folder(deployed, opts):
    primary, work = deployed
    os.rename(os.path.join(work, "Runs"), os.path.join(work, "Runs-old"))
    write(work, "Runs-old/run001/extra/f1.mrc", b"edited after the move")
    write(work, "Runs-old/run001/new.txt", b"new in the moved folder")
    os.unlink(os.path.join(work, "Runs-old/run002/extra/f2.mrc"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (1, 2, 1)
    same_as_work(primary, work)
    [batch] = trash(primary)  # the deleted file, by its new name
    assert os.path.exists(os.path.join(primary, DEFAULT_STATUS_DIR, TRASH_DIR, batch,
                                       "Runs-old/run002/extra/f2.mrc"))


def test_a_folder_and_a_folder_inside_it_moved_at_once(deployed, opts):
    primary, work = deployed
    os.rename(os.path.join(work, "Runs"), os.path.join(work, "R"))
    os.rename(os.path.join(work, "R", "run004", "extra"), os.path.join(work, "Other", "x"))
    os.rename(os.path.join(work, "R", "run005"), os.path.join(work, "R", "run005-renamed"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (3, 0, 0)
    same_as_work(primary, work)


def test_a_file_renamed_directly_is_uploaded_its_ctime_changed(deployed, opts):
    """Linux changes a file's ctime when it is renamed: it is not proven unchanged (the
    rule that also catches a rewrite with the old mtime), so it is uploaded as before."""
    primary, work = deployed
    os.rename(os.path.join(work, "project.conf"), os.path.join(work, "project.cfg"))
    report = save(work, opts, allow_mass_delete=True)
    assert (report.moved, report.uploaded, report.deleted) == (0, 1, 1)
    same_as_work(primary, work)


def test_swapped_folder_names_are_not_renamed_their_files_move_one_by_one(deployed, opts):
    """Two folders that swapped names wait on each other: neither is renamed. What is in
    them is compared as usual: files unchanged at a new path are moved one by one."""
    primary, work = deployed
    w = lambda p: os.path.join(work, p)  # noqa: E731
    os.rename(w("Runs/run001"), w("tmp"))
    os.rename(w("Runs/run002"), w("Runs/run001"))
    os.rename(w("tmp"), w("Runs/run002"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (20, 0, 0)
    same_as_work(primary, work)


def test_swapped_folders_holding_the_same_names_are_uploaded_as_before(dirs, opts):
    primary, work = dirs
    for name in ("A", "B"):
        write(primary, f"{name}/same.txt", f"in {name}".encode())
    write(primary, "C/other.txt", b"c")
    deploy(primary, work, opts)
    w = lambda p: os.path.join(work, p)  # noqa: E731
    os.rename(w("A"), w("T"))
    os.rename(w("B"), w("A"))
    os.rename(w("T"), w("B"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (0, 2, 0)
    same_as_work(primary, work)
    assert open(os.path.join(primary, "A/same.txt"), "rb").read() == b"in B"


def test_a_rename_chain_is_made_in_order(deployed, opts):
    primary, work = deployed
    w = lambda p: os.path.join(work, p)  # noqa: E731
    os.rename(w("Runs/run002"), w("Runs/run009"))  # run002 -> run009, then run001 -> run002
    os.rename(w("Runs/run001"), w("Runs/run002"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (2, 0, 0)
    same_as_work(primary, work)


def test_a_move_onto_a_name_the_primary_already_holds_falls_back_to_upload(deployed, opts):
    primary, work = deployed
    write(primary, "Elsewhere/theirs.txt", b"not known to this copy")
    os.rename(os.path.join(work, "Other"), os.path.join(work, "Elsewhere"))
    report = save(work, opts)
    assert report.moved == 0 and report.uploaded == 10 and report.deleted == 0
    # Nothing unknown was replaced; the moved files are at their new path...
    assert open(os.path.join(primary, "Elsewhere/theirs.txt"), "rb").read() == \
        b"not known to this copy"
    for name, digest in files(work).items():
        assert files(primary)[name] == digest
    assert os.path.exists(os.path.join(primary, "Other/o1.txt"))  # ...the old copy, still
    report = save(work, opts)  # deleted by the next save (through the deletion guard)
    assert report.deleted == 10 and report.moved == 0
    assert not os.path.exists(os.path.join(primary, "Other"))
    assert set(files(primary)) == set(files(work)) | {"Elsewhere/theirs.txt"}


def test_hard_links_in_a_moved_folder_and_outside_it(dirs, opts):
    primary, work = dirs
    write(primary, "A/a.txt", b"a")
    write(primary, "B/keep.txt", b"keep")
    deploy(primary, work, opts)
    os.link(os.path.join(work, "A/a.txt"), os.path.join(work, "A/a2.txt"))
    os.link(os.path.join(work, "B/keep.txt"), os.path.join(work, "A/keep-link.txt"))
    save(work, opts)
    os.rename(os.path.join(work, "A"), os.path.join(work, "C"))  # both links of a.txt
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (1, 0, 0)
    same_as_work(primary, work)
    assert files(primary)["C/a2.txt"] == files(primary)["C/a.txt"]
    assert files(primary)["B/keep.txt"] == files(primary)["C/keep-link.txt"]


def test_a_folder_row_without_its_inode_is_adopted_then_moves(deployed, opts):
    """An index written before renames were detected has no folder inodes: a save with
    nothing to do records them, and the next rename is one rename."""
    primary, work = deployed
    db = sqlite3.connect(index_path(work))
    db.execute("UPDATE entries SET ino=0 WHERE kind=2")
    db.commit()
    db.close()
    assert save(work, opts).uploaded == 0
    os.rename(os.path.join(work, "Runs"), os.path.join(work, "Runs-old"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.deleted) == (1, 0, 0)
    same_as_work(primary, work)


def test_status_and_dry_run_count_a_move_as_a_change(deployed, opts):
    _, work = deployed
    os.rename(os.path.join(work, "Other"), os.path.join(work, "Other2"))
    plan = pending_changes(work, require_marker(work))
    assert plan.pending and [(m.old, m.new) for m in plan.moves] == [("Other", "Other2")]
    assert plan.deletes == [] and plan.uploads == []
    out = run_cli("status", work).out
    assert "1 move" in out, out


# -- random trees, random moves and edits: the same primary as a plain upload ----------
OPS = st.lists(st.tuples(st.sampled_from(["move_dir", "move_dir_new_parent", "edit",
                                          "delete", "create", "move_file"]),
                         st.integers(0, 10_000), st.integers(0, 10_000)),
               min_size=1, max_size=6)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(0, 3), min_size=3, max_size=12), ops=OPS)
def test_random_moves_and_edits_leave_the_primary_as_a_plain_upload_would(
        tmp_path_factory, opts, shape, ops):
    base = tmp_path_factory.mktemp("random")
    primary, work = str(base / "primary"), str(base / "work")
    for i, depth in enumerate(shape):
        folder = "/".join(f"d{(i + k) % 4}" for k in range(depth))
        write(primary, f"{folder}/f{i}" if folder else f"f{i}", f"file {i}".encode())
    deploy(primary, work, opts)

    def dirs_now():
        return sorted(folders(work))

    def files_now():
        return sorted(files(work))

    for op, a, b in ops:
        ds, fs_ = dirs_now(), files_now()
        if op.startswith("move_dir") and ds:
            src = ds[a % len(ds)]
            parents = [""] + [d for d in ds if d != src and not d.startswith(src + "/")]
            parent = parents[b % len(parents)]
            if op == "move_dir_new_parent":
                parent = os.path.join(parent, f"new{b}")
                os.makedirs(os.path.join(work, parent), exist_ok=True)
            dst = os.path.join(parent, f"m{a}")
            if not os.path.exists(os.path.join(work, dst)):
                os.rename(os.path.join(work, src), os.path.join(work, dst))
        elif op == "edit" and fs_:
            write(work, fs_[a % len(fs_)], f"edited {b}".encode())
        elif op == "delete" and fs_:
            os.unlink(os.path.join(work, fs_[a % len(fs_)]))
        elif op == "create":
            parent = ([""] + ds)[b % (len(ds) + 1)]
            write(work, os.path.join(parent, f"c{a}"), f"created {a}".encode())
        elif op == "move_file" and fs_ and ds:
            dst = os.path.join(ds[b % len(ds)], f"mf{a}")
            if not os.path.exists(os.path.join(work, dst)):
                os.rename(os.path.join(work, fs_[a % len(fs_)]), os.path.join(work, dst))
    report = save(work, opts, allow_mass_delete=True)
    event(f"renames made: {min(report.moved, 2)}{'+' if report.moved > 2 else ''}")
    assert snapshot(primary) == snapshot(work)  # what a plain upload makes of it
    # Nothing went to the trash but what was deleted: a batch holds files only if files
    # were deleted (a folder removed is kept there empty, issue 18).
    batch = os.path.join(primary, DEFAULT_STATUS_DIR, "trash", report.trash_batch or "-")
    assert report.deleted or not [n for _, _, names in os.walk(batch) for n in names]
    assert not pending_changes(work, require_marker(work)).pending  # the index agrees
    assert save(work, opts).uploaded == 0


def test_links_in_a_moved_folder_are_recorded_at_their_new_path(dirs, opts, tmp_path):
    primary, work = dirs
    write(primary, "A/a.txt", b"a")
    deploy(primary, work, opts)
    os.symlink("a.txt", os.path.join(work, "A/link"))
    save(work, opts)
    os.rename(os.path.join(work, "A"), os.path.join(work, "X"))
    report = save(work, opts)
    assert (report.moved, report.uploaded, report.manifest_written) == (1, 0, True)
    manifest = open(os.path.join(primary, DEFAULT_STATUS_DIR, "links.jsonl")).read()
    assert '"X/link"' in manifest and '"A/link"' not in manifest
    again = save(work, opts)
    assert not again.manifest_written and again.uploaded == 0  # nothing left to say
    other = str(tmp_path / "other")
    from spaceport.commands.undeploy import undeploy
    undeploy(work, opts)
    deploy(primary, other, opts)
    assert os.readlink(os.path.join(other, "X/link")) == "a.txt"


def test_a_new_folder_that_got_a_deleted_ones_inode_back_is_not_a_move(tmp_path):
    """ext4 gives a deleted folder's and file's inode numbers to the next ones created at
    once. Scipion deletes a run and starts another: taken for a move, the old run's folder
    was renamed on the primary while the project.sqlite there still listed it. A move needs
    a file proven the same (inode, size, mtime and ctime), never an inode number alone."""
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    for i in range(3):
        write(primary, f"Runs/old{i}/extra/output.mrc", b"old run %d" % i)
    assert run_cli("deploy", primary, work).code == 0
    reused = 0
    for i in range(3):
        old = os.path.join(work, f"Runs/old{i}")
        inodes = {os.stat(os.path.join(old, p)).st_ino for p in ("", "extra", "extra/output.mrc")}
        subprocess.run(["rm", "-rf", old], check=True)
        write(work, f"Runs/new{i}/extra/output.mrc", b"new run %d, another size" % i)
        new = os.path.join(work, f"Runs/new{i}")
        reused += len(inodes & {os.stat(os.path.join(new, p)).st_ino
                                for p in ("", "extra", "extra/output.mrc")})
        res = run_cli("save", work)
        assert res.code == 0, res.err
        assert not re.search(r"\d+ moved", res.out), res.out
        assert open(os.path.join(primary, f"Runs/new{i}/extra/output.mrc"), "rb").read() == \
            b"new run %d, another size" % i
        assert not os.path.exists(os.path.join(primary, f"Runs/old{i}"))
        trash = os.path.join(primary, DEFAULT_STATUS_DIR, TRASH_DIR)
        kept = [os.path.join(d, f) for d, _, fs in os.walk(trash) for f in fs
                if d.endswith(f"Runs/old{i}/extra")]
        assert [open(k, "rb").read() for k in kept] == [b"old run %d" % i]
    if not reused:
        pytest.skip("this filesystem gave no inode number back: the case did not arise")
