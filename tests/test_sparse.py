"""Sparse files stay sparse (issue 18): holes are skipped when saving and when staging in,
the content identical. Counted on the OneData-like FUSE mount, which counts every byte
written; the blocks each copy takes are read from the filesystems themselves.
"""

from __future__ import annotations

import hashlib
import os

from conftest import run_cli, write
from test_faults import Mount, needs_fuse

from spaceport.engine.sparse import data_ranges, maybe_sparse, nonzero_runs

pytestmark = needs_fuse

MiB = 1 << 20
OVERHEAD = 64 << 10  # a save's heartbeat, journal line and manifest


def sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def sparse_file(path: str, size: int, data: dict[int, bytes]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, chunk in data.items():
            f.seek(offset)
            f.write(chunk)


def test_a_512_mib_file_of_4_kib_is_saved_and_staged_in_sparse(tmp_path):
    m = Mount(tmp_path, meta_delay_ms=0.5)
    try:
        primary, work, again = m.path + "/p", str(tmp_path / "w"), str(tmp_path / "again")
        os.mkdir(primary)
        assert run_cli("deploy", primary, work).code == 0
        image = os.path.join(work, "disk.img")
        sparse_file(image, 512 * MiB, {100 * MiB: os.urandom(4096)})  # ends in a hole
        assert allocated(image) <= 8192
        m.fs.reset_counts()
        r = run_cli("save", work)
        assert r.code == 0, r.err
        written = m.fs.io_bytes()["write"]
        print(f"save of a 512 MiB file holding 4 KiB: {written} bytes written on the mount "
              f"(with the heartbeat, the journal line and the manifest)")
        assert 4096 <= written <= 4096 + OVERHEAD
        # A hole between two data blocks, data at both ends; and a dense file of zeros,
        # which is written as it is (it has its blocks: not sparse).
        sparse_file(os.path.join(work, "map.dat"), 64 * MiB,
                    {0: b"head" * 1024, 64 * MiB - 4096: b"tail" * 1024})
        write(work, "zeros.dat", bytes(3 * MiB))
        m.fs.reset_counts()
        assert run_cli("save", work).code == 0
        assert m.fs.io_bytes()["write"] <= 8192 + 3 * MiB + OVERHEAD
        for name in ("disk.img", "map.dat", "zeros.dat"):
            there = os.path.join(m.backing, "p", name)
            assert sha(there) == sha(os.path.join(work, name)), name
        assert allocated(os.path.join(m.backing, "p", "disk.img")) <= 8192
        assert allocated(os.path.join(m.backing, "p", "map.dat")) <= 16384
        assert run_cli("undeploy", work, "--keep-work").code == 0
        # The stage-in reads through the mount (it does not answer SEEK_DATA: every byte
        # is read) and writes only the blocks that are not all zeros.
        m.fs.reset_counts()
        r = run_cli("deploy", primary, again)
        assert r.code == 0, r.err
        read = m.fs.io_bytes()["read"]
        print(f"stage-in: {read} bytes read through the mount; the working copy's file takes "
              f"{allocated(os.path.join(again, 'disk.img'))} bytes")
        for name in ("disk.img", "map.dat", "zeros.dat"):
            assert sha(os.path.join(again, name)) == sha(os.path.join(work, name)), name
        assert allocated(os.path.join(again, "disk.img")) <= 8192
        assert allocated(os.path.join(again, "map.dat")) <= 16384
        # A sparse file that grows is still appended to (its digest reads the holes as
        # zeros): only the new bytes are written.
        with open(os.path.join(again, "disk.img"), "ab") as f:
            f.write(b"appended" * 1024)
        m.fs.reset_counts()
        r = run_cli("save", again)
        assert r.code == 0 and "uploaded" in r.out, r.err
        r = run_cli("save", again)  # the first save after a deploy uploads a log whole once
        with open(os.path.join(again, "disk.img"), "ab") as f:
            f.write(b"more" * 1024)
        m.fs.reset_counts()
        r = run_cli("save", again)
        assert r.code == 0 and "1 file appended to" in r.out, r.out
        assert m.fs.io_bytes()["write"] <= 4096 + OVERHEAD
        assert sha(os.path.join(m.backing, "p", "disk.img")) == \
            sha(os.path.join(again, "disk.img"))
    finally:
        m.stop()


def test_data_ranges_and_zero_runs(tmp_path):
    path = str(tmp_path / "f")
    sparse_file(path, 10 * MiB, {MiB: b"x" * 5000, 9 * MiB: b"y"})
    st = os.stat(path)
    assert maybe_sparse(st, st.st_size)
    fd = os.open(path, os.O_RDONLY)
    try:
        ranges = data_ranges(fd, st.st_size)
    finally:
        os.close(fd)
    assert ranges and ranges[0][0] <= MiB and ranges[-1][1] >= 9 * MiB + 1
    assert sum(b - a for a, b in ranges) <= 64 << 10  # blocks, not the 10 MiB
    dense = str(tmp_path / "dense")
    write(str(tmp_path), "dense", os.urandom(MiB))
    assert not maybe_sparse(os.stat(dense), MiB)
    zeros = bytes(4 * MiB)
    chunk = bytearray(4 * MiB)
    chunk[5000:5001] = b"z"
    chunk[3 * MiB:3 * MiB + 8192] = b"w" * 8192
    assert nonzero_runs(bytes(chunk), zeros) == [(4096, 8192), (3 * MiB, 3 * MiB + 8192)]
    assert nonzero_runs(bytes(4 * MiB), zeros) == []
    data = os.urandom(100_000)
    assert nonzero_runs(data, zeros) == [(0, 100_000)]
