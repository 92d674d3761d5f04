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
    assert "(the previous one, with 2 links no longer there, kept in the trash)" in r.out, r.out
    [batch] = batches(backing)
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
    m, primary, backing, work = mounted
    write(work, "data.mrc", b"d")
    os.symlink("data.mrc", os.path.join(work, "view.mrc"))
    assert run_cli("save", work).code == 0
    os.unlink(os.path.join(work, "view.mrc"))
    write(work, "view.mrc", b"now a file")
    r = run_cli("save", work)
    assert r.code == 0 and "1 link no longer there" in r.out, r.out
    assert links_of(manifest(backing)) == {}
    assert open(os.path.join(backing, "view.mrc"), "rb").read() == b"now a file"


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
