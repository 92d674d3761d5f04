"""What the primary pays, counted on a real FUSE mount: never timed, always counted.

The OneData-like filesystem counts every call it serves. A metadata call is any call but
read and write: on OneData each is a network round trip, and the benchmarks' times follow
their number. Counts are made deterministic in two ways: with the kernel's caches off
(``attr_timeout=0``: every lookup of every path component reaches the server, the cold
worst case) for the calls a save always makes, and with caches that never expire during a
test for the calls per file, which are then exactly those of the table below.

Per file written to the primary, the FUSE server sees (libfuse's high-level API):

    lookup of the temporary (absent)  1   the kernel looks a name up before creating it
    create + its getattr              2   libfuse fetches the new file's attributes
    utimens + its getattr             2   the mtime, set through the open descriptor
    fsync                             1   data safe before the rename (Options.fsync)
    flush + release                   2   close()
    lookup of the final name + rename 2   one rename puts it in place
                                     --
                                     10   no chmod when the mode is already right, no
                                          stat of what was just written
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import write

from spaceport.commands.deploy import deploy
from spaceport.commands.options import Options
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.store.retry import RetryPolicy
from spaceport.testing.onedatafs import OneDataFS, fuse_available, metadata_calls

pytestmark = pytest.mark.fuse

CALLS_PER_FILE = 10  # see the module docstring
JOURNAL = 3  # a save that changed something appends a line: open, flush, release
NO_CHANGE_MAX = 50  # "a few tens": read the lock (twice) and rewrite it, check the mount


def make_mount(tmp_path, attr_timeout: float):
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    return OneDataFS(backing, mnt, attr_timeout=attr_timeout)


@pytest.fixture
def cold(tmp_path):
    """No kernel cache: every call a save makes reaches the server."""
    with make_mount(tmp_path, 0.0) as fs:
        yield fs


@pytest.fixture
def mount(tmp_path):
    """Kernel caches that outlive the test: the per-file calls, exactly."""
    with make_mount(tmp_path, 3600.0) as fs:
        yield fs


@pytest.fixture
def opts():
    return Options(jobs=4, retry=RetryPolicy(attempts=1))


def tree(root, files: int, dirs: int = 10, links: int = 0) -> list[str]:
    names = [f"run{i % dirs:03d}/extra/f{i:05d}.xmd" for i in range(files)]
    for name in names:
        write(root, name, os.urandom(100))
    for k in range(links):
        os.symlink(f"../extra/f{k:05d}.xmd", os.path.join(root, f"run000/l{k}"))
        os.symlink("/data/raw/movie.tif", os.path.join(root, f"run001/abs{k}"))
    return names


def deployed(fs: OneDataFS, tmp_path, name: str, files: int, opts, links: int = 0):
    """A working copy of ``files`` files, saved once to its own primary on the mount."""
    primary = os.path.join(fs.mountpoint, name)
    os.mkdir(primary)
    work = str(tmp_path / f"work-{name}")
    deploy(primary, work, opts)
    names = tree(work, files, links=links)
    save(work, opts)
    return primary, work, names


def counted(fs: OneDataFS, fn, *args, **kwargs) -> dict:
    """The calls ``fn`` made, once the kernel's asynchronous releases have arrived."""
    fs.reset_counts()
    fn(*args, **kwargs)
    counts = fs.counts()
    while True:
        time.sleep(0.05)
        again = fs.counts()
        if again == counts:
            return counts
        counts = again


def test_a_save_with_nothing_changed_costs_the_same_for_any_tree_size(cold, tmp_path, opts):
    _, small, _ = deployed(cold, tmp_path, "small", 100, opts)
    _, large, _ = deployed(cold, tmp_path, "large", 2000, opts)
    calls_small = metadata_calls(counted(cold, save, small, opts))
    calls_large = metadata_calls(counted(cold, save, large, opts))
    assert calls_small == calls_large <= NO_CHANGE_MAX


def test_a_save_after_k_changes_makes_calls_in_proportion_to_k(mount, tmp_path, opts):
    _, work, names = deployed(mount, tmp_path, "p", 600, opts)
    base = metadata_calls(counted(mount, save, work, opts))
    calls = {}
    for k in (5, 50):
        for name in names[:k]:
            write(work, name, os.urandom(200))
        calls[k] = metadata_calls(counted(mount, save, work, opts))
    # Each changed file costs its calls on top of what a save always costs, and nothing
    # is paid for the 595 or 550 files that did not change.
    assert calls[5] == base + JOURNAL + 5 * CALLS_PER_FILE
    assert calls[50] == base + JOURNAL + 50 * CALLS_PER_FILE


def test_the_first_save_makes_ten_calls_per_file_and_three_per_folder(mount, tmp_path, opts):
    primary = os.path.join(mount.mountpoint, "p")
    os.mkdir(primary)
    work = str(tmp_path / "work")
    deploy(primary, work, opts)
    tree(work, 300, dirs=10)
    counts = counted(mount, save, work, opts)
    folders = 2 * 10  # run*/ and run*/extra/
    # A folder: lookup (absent), mkdir and libfuse's getattr after it.
    per_entry = CALLS_PER_FILE * 300 + 3 * folders
    assert counts["chmod"] == 0  # every mode was right at creation
    assert metadata_calls(counts) <= per_entry + NO_CHANGE_MAX


def test_a_stage_in_makes_four_calls_per_file(mount, tmp_path, opts):
    primary, work, _ = deployed(mount, tmp_path, "p", 500, opts)
    undeploy(work, opts, keep_work=True)
    counts = counted(mount, deploy, primary, str(tmp_path / "again"), opts)
    # Per file: the listing's lookup, open, flush and release; no stat after reading (the
    # primary is under our lock) and no read past the end. Per folder: readdir and lookup.
    # (With the kernel's 1 s cache, the lookup at open comes back when the listing is
    # older than that: five per file in the benchmarks.)
    folders = 21
    assert counts["open"] <= 500 + 5
    assert metadata_calls(counts) <= 4 * 500 + 2 * folders + NO_CHANGE_MAX


def test_the_primary_never_receives_a_symlink_call(mount, tmp_path, opts):
    primary, work, _ = deployed(mount, tmp_path, "p", 50, opts, links=5)
    os.symlink("f00001.xmd", os.path.join(work, "run002/extra/new-link"))
    save(work, opts)
    undeploy(work, opts, keep_work=True)
    deploy(primary, str(tmp_path / "again"), opts)
    assert mount.counts()["symlink"] == 0
    assert os.readlink(tmp_path / "again" / "run002/extra/new-link") == "f00001.xmd"
