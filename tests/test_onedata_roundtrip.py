"""The story on a real FUSE mount that behaves like OneData (no links, slow metadata)."""

import os

import pytest
from conftest import snapshot, write

from spaceport.commands.deploy import deploy
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.testing.onedatafs import OneDataFS, fuse_available

AVAILABLE, REASON = fuse_available()
pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not AVAILABLE, reason=f"FUSE unavailable: {REASON}")]


@pytest.fixture
def onedata(tmp_path):
    backing, mount = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mount.mkdir()
    fs = OneDataFS(str(backing), str(mount), meta_delay_ms=0.2).start()
    try:
        yield fs, str(backing), str(mount)
    finally:
        fs.stop()


def test_round_trip_through_a_onedata_like_mount(onedata, tmp_path, opts):
    fs, backing, mount = onedata
    for i in range(30):
        write(mount, f"run{i % 3}/f{i}", os.urandom(1000 + i), mtime_ns=10**18 + i)
    write(mount, 'odd/a "quoted"\nname', b"odd")
    work, work2 = str(tmp_path / "work"), str(tmp_path / "work2")
    deploy(mount, work, opts)
    os.symlink("../run0/f0", os.path.join(work, "odd", "rel"))
    os.symlink(os.path.join(work, "run1"), os.path.join(work, "abs"))
    write(work, "run2/new", b"new")
    fs.reset_counts()
    report = save(work, opts)
    counts = fs.counts()
    assert report.uploaded == 1 and report.manifest_written
    assert counts["symlink"] == 0 and counts["link"] == 0  # never even tried on the primary
    expected = snapshot(work)
    undeploy(work, opts)
    for root, _, files in os.walk(backing):
        assert not any(os.path.islink(os.path.join(root, f)) for f in files)
    deploy(mount, work2, opts)
    assert snapshot(work2) == expected
