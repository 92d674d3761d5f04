"""What the primary pays, counted on a real FUSE mount: never timed, always counted.

The OneData-like filesystem counts every call it serves. A metadata call is a request of the
kernel other than read and write: on OneData each is a network round trip, and the
benchmarks' times follow their number. Counts are made deterministic in two ways: with the
kernel's caches off (``attr_timeout=0``: every lookup of every path component reaches the
server, the cold worst case) for the calls a save always makes, and with caches that never
expire during a test for the calls per file, which are then exactly those of the tables
below. (Traced with libfuse's own request log, ``python -m spaceport.testing.onedatafs
--debug``.)

Per file written to the primary (a save), the kernel sends:

    LOOKUP of the temporary (absent)  1   the kernel looks a name up before creating it
    CREATE                            1   the temporary, with its final mode: no chmod
    SETATTR (mtime)                   1   through the open descriptor
    FSYNC                             1   data safe before the rename (Options.fsync)
    FLUSH + RELEASE                   2   close()
    LOOKUP of the final name + RENAME 2   one rename puts it in place
                                     --
                                      8   no stat of what was just written (the SETATTR's
                                          reply left the attributes in the kernel's cache)

libfuse's high-level layer, which this filesystem uses, answers CREATE and SETATTR by calling
getattr after the operation, to fill the attributes that the reply carries: 10 calls of this
server per file. oneclient speaks the low-level protocol and fills those replies from the
operation's own round trip; the filesystem counts these calls apart
(``REPLY_GETATTR``, see ``metadata_calls``), and the test below holds both numbers.

Why not 7 (issue 22 asked for at most 7): each of the 8 is either the kernel's (the two
LOOKUPs of names not in its cache: the path walk of open(O_CREAT) and of rename(2); FLUSH
and RELEASE, which every close() of a FUSE file sends) or a promise: the temporary and its
rename (a file is whole or absent, DESIGN.md rule 7), the mtime (a deploy gives back the
times the files had), the fsync before the rename (rule zero: undeploy removes the working
copy seconds after the final save, and a provider that crashed before writing back would
have only a name). Cutting to 7 means dropping the fsync or the mtime; docs/RELIABILITY.md
says why neither goes.

Per file read from the primary (a stage-in on a node that never saw it): the scan's LOOKUP,
OPEN, FLUSH and RELEASE (4); no stat after reading (the primary is under our lock) and no
read past the end. With libfuse's default 1 s entry cache the OPEN needs another LOOKUP when
the listing is older than that: five per file in the benchmarks.

Per file cloned from the source (``spaceport clone``, the daemon's ``--source``): the same
four, and a GETATTR after the copy: the source is not under our lock, and a file that
changed while it was copied must be copied again (reading marked the cached atime stale,
so the kernel asks the server: the stat sees what the server has now).
"""

from __future__ import annotations

import os

import pytest
from conftest import write

from spaceport.commands.clone import clone
from spaceport.commands.deploy import deploy
from spaceport.commands.options import Options
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.store.retry import RetryPolicy
from spaceport.testing.onedatafs import (
    REPLY_GETATTR,
    OneDataFS,
    fuse_available,
    metadata_calls,
    server_calls,
)

pytestmark = pytest.mark.fuse

CALLS_PER_FILE = 8  # kernel requests per file saved: see the module docstring
SERVER_CALLS_PER_FILE = 10  # and calls of this high-level server, its reply getattrs added
STAGE_IN_PER_FILE = 4
CLONE_PER_FILE = 5
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
    """The calls ``fn`` made: the releases of what ran before it land before the count
    starts (a late RELEASEDIR of the previous save was once counted as this one's), and
    its own before the count ends."""
    fs.settled_counts()
    fs.reset_counts()
    fn(*args, **kwargs)
    return fs.settled_counts()


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


def first_save_counts(fs: OneDataFS, tmp_path, opts, files: int) -> dict:
    primary = os.path.join(fs.mountpoint, f"p{files}")
    os.mkdir(primary)
    work = str(tmp_path / f"work{files}")
    deploy(primary, work, opts)
    tree(work, files, dirs=10)
    return counted(fs, save, work, opts)


def test_the_first_save_makes_eight_requests_per_file_and_two_per_folder(mount, tmp_path,
                                                                           opts):
    """Two first saves, of 100 and of 400 files in the same 20 folders: what the 300 more
    files cost is exactly 300 times the per-file table of the module docstring."""
    small = first_save_counts(mount, tmp_path, opts, 100)
    large = first_save_counts(mount, tmp_path, opts, 400)
    # Up to a few calls apart: the lock's heartbeat, read once a second, is not per file.
    per_file = {op: round((large[op] - small[op]) / 300, 1) for op in large}
    assert {op: n for op, n in per_file.items() if n} == {
        "getattr": 2, "create": 1, "utimens": 1, "fsync": 1, "flush": 1, "release": 1,
        "rename": 1, "write": 1, REPLY_GETATTR: 2}
    assert abs(metadata_calls(large) - metadata_calls(small) - 300 * CALLS_PER_FILE) <= 3
    assert abs(server_calls(large) - server_calls(small) - 300 * SERVER_CALLS_PER_FILE) <= 3
    assert large["chmod"] == 0  # every mode was right at creation
    # The rest, the same for both: per folder (20) a LOOKUP (absent) and a MKDIR; then what
    # a save always costs (the lock, the manifest, the journal).
    assert large["mkdir"] == small["mkdir"] == 20
    assert metadata_calls(small) - 100 * CALLS_PER_FILE <= 2 * 20 + NO_CHANGE_MAX


def test_a_stage_in_makes_four_requests_per_file(mount, tmp_path, opts):
    """On a node whose kernel never saw the primary (a second mount of the same backing
    folder, as a new pod has): the scan's LOOKUP, then OPEN, FLUSH, RELEASE per file. Two
    stage-ins, of 100 and of 400 files in the same folders: the 300 more cost 4 each."""
    for files in (100, 400):
        _, work, _ = deployed(mount, tmp_path, f"p{files}", files, opts)
        undeploy(work, opts, keep_work=True)
    other = tmp_path / "mnt-new-node"
    other.mkdir()
    counts = {}
    with OneDataFS(mount.backing, other, attr_timeout=3600.0) as fresh:
        for files in (100, 400):
            counts[files] = counted(fresh, deploy, os.path.join(fresh.mountpoint, f"p{files}"),
                                    str(tmp_path / f"again{files}"), opts)
    small, large = counts[100], counts[400]
    per_file = {op: round((large[op] - small[op]) / 300, 1) for op in large}
    assert {op: n for op, n in per_file.items() if n} == {
        "getattr": 1, "open": 1, "flush": 1, "release": 1, "read": 1}
    assert abs(metadata_calls(large) - metadata_calls(small) - 300 * STAGE_IN_PER_FILE) <= 3
    # The rest: per folder (21) LOOKUP, OPENDIR, READDIR, RELEASEDIR; the lock, the manifest.
    assert metadata_calls(small) - 100 * STAGE_IN_PER_FILE <= 4 * 21 + 2 * NO_CHANGE_MAX


def test_a_clone_makes_five_requests_per_file(mount, tmp_path, opts):
    """Two clones from a fresh mount, of 100 and of 400 files in the same folders."""
    for files in (100, 400):
        for i in range(files):
            write(os.path.join(mount.backing, f"s{files}"), f"run{i % 10:03d}/m{i:05d}.mrc",
                  os.urandom(1000))
    other = tmp_path / "mnt-new-node"
    other.mkdir()
    counts = {}
    with OneDataFS(mount.backing, other, attr_timeout=3600.0) as fresh:
        for files in (100, 400):
            counts[files] = counted(fresh, clone, os.path.join(fresh.mountpoint, f"s{files}"),
                                    str(tmp_path / f"clone{files}"), opts)
    small, large = counts[100], counts[400]
    per_file = {op: round((large[op] - small[op]) / 300, 1) for op in large}
    assert {op: n for op, n in per_file.items() if n} == {
        "getattr": 2, "open": 1, "flush": 1, "release": 1, "read": 1}
    assert abs(metadata_calls(large) - metadata_calls(small) - 300 * CLONE_PER_FILE) <= 3


def test_the_primary_never_receives_a_symlink_call(mount, tmp_path, opts):
    primary, work, _ = deployed(mount, tmp_path, "p", 50, opts, links=5)
    os.symlink("f00001.xmd", os.path.join(work, "run002/extra/new-link"))
    save(work, opts)
    undeploy(work, opts, keep_work=True)
    deploy(primary, str(tmp_path / "again"), opts)
    assert mount.counts()["symlink"] == 0
    assert os.readlink(tmp_path / "again" / "run002/extra/new-link") == "f00001.xmd"
