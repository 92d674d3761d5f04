"""Tests of the OneData-like FUSE filesystem used by spaceport's tests and benchmarks."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from spaceport.testing.onedatafs import (OPS, REPLY_GETATTR, FaultRule, OneDataFS, errno_value,
                                         fuse_available, metadata_calls, renameat2,
                                         server_calls)
from spaceport.testing.stalls import StallRule

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


# --------------------------------------------------------------------------- fixtures
def require_fuse() -> None:
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)


@pytest.fixture
def make_fs(tmp_path):
    """Factory: make_fs(**options) -> a started OneDataFS on fresh folders.
    Every filesystem it started is stopped afterwards, whatever the test did."""
    require_fuse()
    started: list[OneDataFS] = []

    def make(**options) -> OneDataFS:
        n = len(started)
        backing, mnt = tmp_path / f"backing{n}", tmp_path / f"mnt{n}"
        backing.mkdir()
        mnt.mkdir()
        fs = OneDataFS(backing, mnt, **options)
        started.append(fs)
        return fs.start()

    try:
        yield make
    finally:
        for fs in started:
            fs.stop()


@pytest.fixture
def odfs(make_fs) -> OneDataFS:
    return make_fs()


def mnt(fs: OneDataFS) -> Path:
    return Path(fs.mountpoint)


def back(fs: OneDataFS) -> Path:
    return Path(fs.backing)


def eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def expect_errno(code: int, fn, *args) -> None:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == code, info.value


# --------------------------------------------------------------------------- pure logic
def test_fault_rule_after_and_times():
    rule = FaultRule(op="write", path="/run1/*.mrc", errno="ENOSPC", after=1, times=2).validate()
    assert rule.errno == errno.ENOSPC
    assert not rule.hit("read", ("/run1/a.mrc",))
    assert not rule.hit("write", ("/run2/a.mrc",))
    hits = [rule.hit("write", ("/run1/a.mrc",)) for _ in range(5)]
    assert hits == [False, True, True, False, False]
    assert (rule.seen, rule.fired) == (5, 2)
    assert FaultRule(op="re*").validate().hit("rename", ("/a", "/b"))


def test_fault_rule_validation():
    with pytest.raises(ValueError):
        FaultRule(errno="ENOTANERRNO").validate()
    with pytest.raises(ValueError):
        FaultRule(op="wirte").validate()
    with pytest.raises(ValueError):
        FaultRule(after=-1).validate()
    assert errno_value("enotconn") == errno.ENOTCONN
    assert errno_value(errno.EIO) == errno.EIO


def test_metadata_calls_excludes_data_io():
    counts = dict.fromkeys(OPS, 0) | {"read": 7, "write": 5, "getattr": 3, "rename": 1}
    assert metadata_calls(counts) == 4


def test_fuse_available_shape():
    ok, why = fuse_available()
    assert isinstance(ok, bool) and (why == "") == ok


# --------------------------------------------------------------------------- passthrough
@pytest.mark.fuse
def test_passthrough_file_and_directory_ops(odfs):
    m, b = mnt(odfs), back(odfs)
    (m / "a.txt").write_bytes(b"hello")
    assert (b / "a.txt").read_bytes() == b"hello"
    fd = os.open(m / "mode.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.close(fd)
    assert (b / "mode.bin").stat().st_mode & 0o777 == 0o640 & ~_umask()
    expect_errno(errno.EEXIST, os.open, m / "mode.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    (m / "d" / "sub").mkdir(parents=True)
    os.rename(m / "a.txt", m / "d" / "sub" / "b.txt")
    assert sorted(os.listdir(m)) == ["d", "mode.bin"]
    assert (b / "d" / "sub" / "b.txt").read_bytes() == b"hello"
    with open(m / "d" / "sub" / "b.txt", "r+b") as f:
        f.truncate(2)
    assert (m / "d" / "sub" / "b.txt").stat().st_size == 2
    expect_errno(errno.ENOTEMPTY, os.rmdir, m / "d" / "sub")
    os.unlink(m / "d" / "sub" / "b.txt")
    os.rmdir(m / "d" / "sub")
    assert not (b / "d" / "sub").exists() and os.listdir(b / "d") == []
    assert os.statvfs(m).f_bsize > 0


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.fuse
def test_rename_replaces_atomically_and_honours_noreplace(odfs):
    m, b = mnt(odfs), back(odfs)
    (m / "new").write_bytes(b"new")
    (m / "old").write_bytes(b"old")
    os.rename(m / "new", m / "old")
    assert (b / "old").read_bytes() == b"new" and not (b / "new").exists()
    (m / "tmp").write_bytes(b"tmp")
    expect_errno(errno.EEXIST, renameat2, str(m / "tmp"), str(m / "old"), RENAME_NOREPLACE)
    renameat2(str(m / "tmp"), str(m / "fresh"), RENAME_NOREPLACE)
    assert (b / "fresh").read_bytes() == b"tmp"
    expect_errno(errno.EINVAL, renameat2, str(m / "fresh"), str(m / "old"), RENAME_EXCHANGE)


@pytest.mark.fuse
def test_big_file_roundtrip(odfs):
    m, b = mnt(odfs), back(odfs)
    data = os.urandom(50 * 1024 * 1024)
    with open(m / "big.bin", "wb") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
    expect = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256((b / "big.bin").read_bytes()).hexdigest() == expect
    h = hashlib.sha256()
    with open(m / "big.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == expect


@pytest.mark.fuse
def test_unlinked_open_file_stays_readable_and_hidden(odfs):
    m = mnt(odfs)
    (m / "f").write_bytes(b"still here")
    with open(m / "f", "rb") as f:
        os.unlink(m / "f")
        # hard_remove: no ".fuse_hidden*" stand-in appears in the listing or the backing.
        assert os.listdir(m) == [] and os.listdir(back(odfs)) == []
        assert f.read() == b"still here"
        # fstat() sends a GETATTR without a file handle, which libfuse's path-based API
        # cannot resolve for a removed name: ESTALE (observed with libfuse 3.14).
        try:
            assert os.fstat(f.fileno()).st_size == 10
        except OSError as exc:
            assert exc.errno == errno.ESTALE


@pytest.mark.fuse
def test_parallel_writers(odfs):
    m, b = mnt(odfs), back(odfs)
    chunk, nchunks = 64 * 1024, 32
    size = chunk * nchunks
    with open(m / "shared.bin", "wb") as f:
        f.truncate(8 * size)

    def own_file(i: int) -> None:
        with open(m / f"own{i}.bin", "wb") as f:
            for _ in range(nchunks):
                f.write(bytes([i]) * chunk)

    def shared_region(i: int) -> None:
        fd = os.open(m / "shared.bin", os.O_WRONLY)
        try:
            for k in range(nchunks):
                os.pwrite(fd, bytes([100 + i]) * chunk, i * size + k * chunk)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=fn, args=(i,)) for i in range(8)
               for fn in (own_file, shared_region)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = (b / "shared.bin").read_bytes()
    for i in range(8):
        assert (m / f"own{i}.bin").read_bytes() == bytes([i]) * size
        assert shared[i * size:(i + 1) * size] == bytes([100 + i]) * size


# --------------------------------------------------------------------------- OneData quirks
@pytest.mark.fuse
def test_links_chown_and_special_files_are_refused(odfs):
    m = mnt(odfs)
    (m / "target").write_bytes(b"x")
    expect_errno(errno.EPERM, os.symlink, "target", m / "sym")
    expect_errno(errno.EPERM, os.link, m / "target", m / "hard")
    expect_errno(errno.EPERM, os.chown, m / "target", 1000, 1000)
    expect_errno(errno.EPERM, os.mkfifo, m / "fifo")
    expect_errno(errno.EINVAL, os.readlink, m / "target")
    assert sorted(os.listdir(m)) == ["target"]
    counts = odfs.counts()
    assert counts["symlink"] == 1 and counts["link"] == 1 and counts["chown"] == 1


@pytest.mark.fuse
def test_chmod_and_utimens_pass_through_by_default(odfs):
    m, b = mnt(odfs), back(odfs)
    (m / "f").write_bytes(b"x")
    os.chmod(m / "f", 0o600)
    os.utime(m / "f", ns=(1_000_000_000, 2_000_000_123))
    st = (b / "f").stat()
    assert st.st_mode & 0o777 == 0o600
    assert st.st_mtime_ns == 2_000_000_123 and st.st_atime_ns == 1_000_000_000
    # touch -m sets the mtime and leaves the atime alone (UTIME_OMIT reaches utimens).
    subprocess.run(["touch", "-m", "-d", "@100", str(m / "f")], check=True)
    st = (b / "f").stat()
    assert st.st_mtime_ns == 100 * 10**9 and st.st_atime_ns == 1_000_000_000
    subprocess.run(["touch", str(m / "f")], check=True)  # UTIME_NOW
    assert abs((b / "f").stat().st_mtime - time.time()) < 60


@pytest.mark.fuse
def test_chmod_and_utimens_noop(make_fs):
    fs = make_fs(chmod_noop=True, utimens_noop=True)
    m, b = mnt(fs), back(fs)
    (m / "f").write_bytes(b"x")
    before = (b / "f").stat()
    os.chmod(m / "f", 0o600)  # succeeds, as on a OneData space that ignores it
    os.utime(m / "f", (1, 1))
    after = (b / "f").stat()
    assert after.st_mode == before.st_mode and after.st_mtime_ns == before.st_mtime_ns
    assert fs.counts()["chmod"] == 1 and fs.counts()["utimens"] == 1


@pytest.mark.fuse
def test_utime_through_fd_reaches_utimens(odfs):
    m, b = mnt(odfs), back(odfs)
    fd = os.open(m / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        odfs.reset_counts()
        os.utime(fd, ns=(5 * 10**9, 6 * 10**9))  # futimens: a SETATTR that libfuse maps to utimens
        assert odfs.counts()["utimens"] == 1
    finally:
        os.close(fd)
    assert (b / "f").stat().st_mtime_ns == 6 * 10**9


# --------------------------------------------------------------------------- counts and delays
@pytest.mark.fuse
def test_the_getattr_that_fills_a_reply_is_counted_apart_from_kernel_requests(odfs):
    """CREATE, SETATTR and MKDIR are one request each in the FUSE protocol, their reply
    carrying the attributes; libfuse's high-level layer calls getattr to fill it. Those
    calls are counted as REPLY_GETATTR; a stat of a name not cached is a LOOKUP, a
    request, and stays a getattr (the negative control)."""
    m = mnt(odfs)
    odfs.reset_counts()
    os.mkdir(m / "d")
    fd = os.open(m / "d" / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.utime(fd, ns=(10**18, 10**18))
    os.close(fd)
    time.sleep(1.2)  # the mount's 1 s entry cache expires: the next stat is a LOOKUP
    os.stat(m / "d" / "f")
    counts = odfs.counts()
    assert counts[REPLY_GETATTR] == 3  # mkdir's, create's, utimens'
    assert counts["getattr"] >= 3  # lookups: d (absent), f (absent), f after the expiry
    assert server_calls(counts) - metadata_calls(counts) == 3


@pytest.mark.fuse
def test_counts_per_operation_and_reset(odfs):
    m = mnt(odfs)
    odfs.reset_counts()
    assert set(odfs.counts()) == set(OPS) | {REPLY_GETATTR} and not any(odfs.counts().values())
    os.mkdir(m / "d")
    fd = os.open(m / "d" / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    for _ in range(3):
        os.write(fd, b"x" * 100)
    os.close(fd)
    os.rename(m / "d" / "f", m / "d" / "g")
    with open(m / "d" / "g", "rb") as f:
        assert f.read() == b"x" * 300
    counts = odfs.counts()
    assert counts["mkdir"] == 1 and counts["create"] == 1 and counts["write"] == 3
    assert counts["rename"] == 1 and counts["open"] == 1 and counts["read"] >= 1
    assert counts["flush"] >= 2  # close() waits for FLUSH...
    # ...but not for RELEASE, which the kernel sends asynchronously after close returns.
    assert eventually(lambda: odfs.counts()["release"] == 2)
    assert server_calls(counts) == sum(counts.values()) - counts["read"] - counts["write"]
    assert metadata_calls(counts) == server_calls(counts) - counts[REPLY_GETATTR]
    odfs.reset_counts()
    assert not any(odfs.counts().values())


@pytest.mark.fuse
def test_meta_delay_is_reported_applied_and_overlaps(make_fs):
    fs = make_fs(meta_delay_ms=150, io_delay_ms=7.5)
    cfg = fs.config()
    assert cfg["meta_delay_ms"] == 150 and cfg["io_delay_ms"] == 7.5 and cfg["pid"] == fs.pid
    m = mnt(fs)
    start = time.monotonic()
    for _ in range(3):
        os.statvfs(m)  # statfs is never cached by the kernel: one call each
    assert time.monotonic() - start >= 0.45  # a lower bound: sleep never returns early
    # Calls from 8 threads overlap (serially they would take 1.2 s); generous bound.
    threads = [threading.Thread(target=os.statvfs, args=(m,)) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 0.9
    fs.set_delays(meta_delay_ms=0)
    assert fs.config()["meta_delay_ms"] == 0 and fs.config()["io_delay_ms"] == 7.5


# --------------------------------------------------------------------------- fault injection
@pytest.mark.fuse
def test_eio_once_then_success(odfs):
    m, b = mnt(odfs), back(odfs)
    odfs.inject(op="write", path="/f.bin", errno="EIO", times=1)
    fd = os.open(m / "f.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        expect_errno(errno.EIO, os.write, fd, b"a" * 10)
        assert os.write(fd, b"a" * 10) == 10
    finally:
        os.close(fd)
    assert (b / "f.bin").read_bytes() == b"a" * 10
    odfs.inject(op="rename", errno="EIO", times=1)
    expect_errno(errno.EIO, os.rename, m / "f.bin", m / "g.bin")
    os.rename(m / "f.bin", m / "g.bin")
    assert [(r["op"], r["fired"]) for r in odfs.faults()] == [("write", 1), ("rename", 1)]


@pytest.mark.fuse
def test_enospc_from_third_write_on(odfs):
    m = mnt(odfs)
    odfs.inject(op="write", errno="ENOSPC", after=2)
    fd = os.open(m / "f.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"1" * 4096)
        os.write(fd, b"2" * 4096)
        expect_errno(errno.ENOSPC, os.write, fd, b"3" * 4096)
        expect_errno(errno.ENOSPC, os.write, fd, b"4" * 4096)
    finally:
        os.close(fd)
    assert (back(odfs) / "f.bin").stat().st_size == 8192
    [rule] = odfs.faults()
    assert (rule["seen"], rule["fired"], rule["errno"]) == (4, 2, errno.ENOSPC)


@pytest.mark.fuse
def test_enotconn_on_path_glob_and_clear(odfs):
    m, b = mnt(odfs), back(odfs)
    for run in ("run1", "run2"):
        (b / run).mkdir()
        (b / run / "a.mrc").write_bytes(b"data")
    odfs.inject(path="/run1/*.mrc", errno="ENOTCONN")
    expect_errno(errno.ENOTCONN, (m / "run1" / "a.mrc").read_bytes)
    expect_errno(errno.ENOTCONN, open, m / "run1" / "new.mrc", "wb")
    assert (m / "run2" / "a.mrc").read_bytes() == b"data"
    assert os.listdir(m / "run1") == ["a.mrc"]  # the folder itself does not match
    odfs.inject(op="*", path="*", errno="EIO")  # the whole mount fails...
    expect_errno(errno.EIO, os.statvfs, m)
    assert odfs.counts()["statfs"] >= 1  # ...but control does not go through it
    odfs.clear_faults()
    assert odfs.faults() == []
    assert (m / "run1" / "a.mrc").read_bytes() == b"data"


@pytest.mark.fuse
def test_inject_rejects_bad_rules(odfs):
    with pytest.raises(ValueError):
        odfs.inject(errno="EWHATEVER")
    with pytest.raises(ValueError):
        odfs.inject(op="frobnicate")
    assert odfs.faults() == []


# --------------------------------------------------------------------------- stalls and gates
class Call(threading.Thread):
    """Run fn(*args) in a thread; afterwards .result, .error and .seconds tell how it went."""

    def __init__(self, fn, *args) -> None:
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result = self.error = self.seconds = None
        self.start()

    def run(self) -> None:
        start = time.monotonic()
        try:
            self.result = self.fn(*self.args)
        except OSError as exc:
            self.error = exc
        self.seconds = time.monotonic() - start

    def finished(self, timeout: float = 10.0) -> bool:
        self.join(timeout)
        return not self.is_alive()


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_stall_rule_validation():
    assert StallRule(op="rename", delay_ms=5).validate(OPS).when == "before"
    assert StallRule(op="re*", gate="g", when="after").validate(OPS).gate == "g"
    bad = [dict(delay_ms=0), dict(delay_ms=5, gate="g"), dict(delay_ms=-1),
           dict(op="wirte", delay_ms=5), dict(gate="g", when="during"),
           dict(gate="g", timeout=0), dict(gate="g", on_timeout="ENOTANERRNO"),
           dict(gate="g", after=-1)]
    for fields in bad:
        with pytest.raises(ValueError):
            StallRule(**fields).validate(OPS)
    rule = StallRule(op="rename", path="/s/*", gate="g", after=1, times=1).validate(OPS)
    assert [rule.hit("rename", ("/s/a", "/s/b")) for _ in range(3)] == [False, True, False]
    assert not rule.hit("read", ("/s/a",)) and (rule.seen, rule.fired) == (3, 1)


@pytest.mark.fuse
def test_stall_delays_the_selected_calls_by_at_least_ms(odfs):
    m = mnt(odfs)
    odfs.stall(op="statfs", ms=300, after=1, times=2)
    os.statvfs(m)  # the first is let through (after=1)
    for _ in range(2):
        start = time.monotonic()
        os.statvfs(m)
        assert time.monotonic() - start >= 0.3  # sleep never returns early
    os.statvfs(m)
    [rule] = odfs.stalls()["stalls"]
    assert (rule["seen"], rule["fired"], rule["delay_ms"]) == (4, 2, 300)
    # "after": the call is done on the backing folder, its answer comes 300 ms later.
    (mnt(odfs) / "a").write_bytes(b"a")
    odfs.stall(op="rename", path="/a", ms=300, when="after")
    call = Call(os.rename, m / "a", m / "b")
    assert eventually(lambda: (back(odfs) / "b").exists(), timeout=5)
    assert call.finished() and call.error is None and call.seconds >= 0.3
    assert odfs.counts()["rename"] == 1


@pytest.mark.fuse
def test_held_call_blocks_until_released_while_the_mount_goes_on(odfs):
    m, b = mnt(odfs), back(odfs)
    gate = odfs.hold(op="write", path="/held")
    writer = Call(write_file, m / "held", b"late")
    assert odfs.wait_held(gate, timeout=10) == 1
    assert odfs.waiting(gate) == 1 and writer.is_alive()
    # The rest of the mount, the same folder included, and the control socket go on.
    write_file(m / "other", b"other")
    os.rename(m / "other", m / "renamed")
    assert (m / "renamed").read_bytes() == b"other"
    assert sorted(os.listdir(m)) == ["held", "renamed"] and os.statvfs(m)
    assert odfs.counts()["write"] >= 2
    time.sleep(0.3)
    assert writer.is_alive() and (b / "held").read_bytes() == b""  # still held
    assert odfs.release(gate) == 1
    assert writer.finished() and writer.error is None and writer.seconds >= 0.3
    assert (b / "held").read_bytes() == b"late"
    assert odfs.gate(gate) == dict(name=gate, open=True, waiting=0, held=1, timed_out=0)
    write_file(m / "held", b"again")  # an open gate holds nothing any more
    assert (b / "held").read_bytes() == b"again"


@pytest.mark.fuse
def test_wait_held_does_not_block_the_control_socket(odfs):
    m = mnt(odfs)
    gate = odfs.hold(op="statfs", name="statfs-gate")
    assert gate == "statfs-gate"
    waiter = Call(odfs.wait_held, gate, 10.0)
    time.sleep(0.2)
    assert waiter.is_alive() and odfs.waiting(gate) == 0
    assert odfs.config()["pid"] == odfs.pid  # served while wait_held waits
    caller = Call(os.statvfs, m)
    assert waiter.finished() and waiter.result == 1
    assert caller.is_alive()
    assert odfs.release(gate) == 1 and caller.finished() and caller.error is None


@pytest.mark.fuse
def test_hold_after_the_call_keeps_a_stale_answer(make_fs):
    """The window of a lock reader: it has read the lock and stalls before acting on it,
    while another node takes the lock over. Two mounts of one backing folder are two nodes
    of one space: they share no kernel locks (see the next test)."""
    node1 = make_fs(attr_timeout=0)
    node2 = OneDataFS(node1.backing, mnt(node1).parent / "node2", attr_timeout=0)
    os.mkdir(node2.mountpoint)
    with node2:
        m1, m2, b = mnt(node1), mnt(node2), back(node1)
        (m1 / "lock").write_bytes(b"A's lock")
        gate = node1.hold(op="read", path="/lock", when="after")
        reader = Call((m1 / "lock").read_bytes)
        node1.wait_held(gate, timeout=10)
        (m2 / "lock").rename(m2 / "lock.broken")  # unlock --force, then B's deploy
        (m2 / "lock.new").write_bytes(b"B's lock")
        os.rename(m2 / "lock.new", m2 / "lock")
        assert (b / "lock").read_bytes() == b"B's lock" and reader.is_alive()
        node1.release(gate)
        assert reader.finished() and reader.result == b"A's lock"


@pytest.mark.fuse
def test_held_calls_keep_what_the_kernel_locked_for_them(odfs):
    """Why stalls.py says to act from a second mount: on its own mount, a held rename keeps
    its folder locked, and a held write keeps its file locked; the calls that wait for those
    locks wait in the kernel and never reach the filesystem."""
    m = mnt(odfs)
    for folder in ("s", "t"):
        os.mkdir(m / folder)
        for name in ("a", "c"):
            (m / folder / name).write_bytes(b"x")
    gate = odfs.hold(op="rename", path="/s/a")
    held = Call(os.rename, m / "s" / "a", m / "s" / "b")
    odfs.wait_held(gate, timeout=10)
    os.rename(m / "t" / "a", m / "t" / "b")  # another folder: goes on
    same_folder = Call(os.rename, m / "s" / "c", m / "s" / "d")
    time.sleep(0.5)
    assert same_folder.is_alive() and odfs.counts()["rename"] == 2
    odfs.release(gate)
    assert held.finished() and same_folder.finished()
    assert sorted(os.listdir(m / "s")) == ["b", "d"]

    gate = odfs.hold(op="write", path="/t/b")
    held = Call(write_file, m / "t" / "b", b"held")
    odfs.wait_held(gate, timeout=10)
    os.rename(m / "t" / "c", m / "t" / "d")  # another file in the folder: goes on
    assert os.stat(m / "t" / "b").st_size == 0
    same_file = Call(os.rename, m / "t" / "b", m / "t" / "e")
    time.sleep(0.5)
    assert same_file.is_alive() and odfs.counts()["rename"] == 4
    odfs.release(gate)
    assert held.finished() and same_file.finished()
    assert sorted(os.listdir(m / "t")) == ["d", "e"]
    assert (m / "t" / "e").read_bytes() == b"held"

    # A rename between two folders locks both, and every other such rename on the mount
    # waits too (s_vfs_rename_mutex); a rename within a third folder goes on.
    for folder in ("u", "v"):
        os.mkdir(m / folder)
    (m / "u" / "a").write_bytes(b"x")
    gate = odfs.hold(op="rename", path="/s/b")
    held = Call(os.rename, m / "s" / "b", m / "t" / "b")
    odfs.wait_held(gate, timeout=10)
    os.rename(m / "u" / "a", m / "u" / "b")
    unrelated = Call(os.rename, m / "u" / "b", m / "v" / "b")
    time.sleep(0.5)
    assert unrelated.is_alive() and odfs.counts()["rename"] == 7
    odfs.release(gate)
    assert held.finished() and unrelated.finished()
    assert os.listdir(m / "s") == ["d"] and sorted(os.listdir(m / "t")) == ["b", "d", "e"]
    assert os.listdir(m / "u") == [] and os.listdir(m / "v") == ["b"]


@pytest.mark.fuse
def test_hold_that_is_never_released_times_out(odfs):
    m, b = mnt(odfs), back(odfs)
    gate = odfs.hold(op="write", path="/f", timeout=0.5)
    writer = Call(write_file, m / "f", b"data")
    odfs.wait_held(gate, timeout=10)
    assert writer.finished() and writer.seconds >= 0.5
    assert writer.error is not None and writer.error.errno == errno.ETIMEDOUT
    assert (b / "f").read_bytes() == b""
    assert odfs.gate(gate)["timed_out"] == 1 and odfs.gate(gate)["waiting"] == 0
    # on_timeout=None: the call goes on after the timeout instead of failing.
    gate = odfs.hold(op="write", path="/g", timeout=0.5, on_timeout=None)
    writer = Call(write_file, m / "g", b"data")
    assert writer.finished() and writer.error is None and writer.seconds >= 0.5
    assert (b / "g").read_bytes() == b"data" and odfs.gate(gate)["timed_out"] == 1


@pytest.mark.fuse
def test_wait_held_times_out_and_bad_gates_are_refused(odfs):
    gate = odfs.hold(op="unlink", path="/never")
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="0 of 1"):
        odfs.wait_held(gate, timeout=0.3)
    assert time.monotonic() - start >= 0.3
    with pytest.raises(ValueError, match="exists already"):
        odfs.hold(op="unlink", name=gate)
    for request in (lambda: odfs.release("nope"), lambda: odfs.waiting("nope"),
                    lambda: odfs.wait_held("nope", timeout=0.1)):
        with pytest.raises(ValueError, match="no gate named 'nope'"):
            request()
    with pytest.raises(ValueError):
        odfs.hold(op="frobnicate")
    with pytest.raises(ValueError):
        odfs.stall(op="read", ms=0)
    assert list(odfs.stalls()["gates"]) == [gate]
    assert odfs.clear_stalls() == 0 and odfs.stalls() == {"stalls": [], "gates": {}}


@pytest.mark.fuse
def test_many_held_calls_do_not_starve_the_mount(odfs):
    """12 held calls: more than libfuse's default of 10 threads; we pass max_threads=64."""
    m = mnt(odfs)
    fds = [os.open(m / f"h{i}", os.O_WRONLY | os.O_CREAT, 0o644) for i in range(12)]
    try:
        gate = odfs.hold(op="write", path="/h*", times=None)
        writers = [Call(os.write, fd, b"x") for fd in fds]
        assert odfs.wait_held(gate, timeout=10, count=12) == 12
        probe = Call(os.statvfs, m)
        assert probe.finished(timeout=5)
        assert odfs.release(gate) == 12
        assert all(w.finished() and w.result == 1 for w in writers)
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.fuse
def test_max_threads_bounds_how_many_calls_can_be_held(make_fs):
    """With max_threads=3, three held calls take every handler thread: the mount waits."""
    fs = make_fs(max_threads=3)
    m = mnt(fs)
    fds = [os.open(m / f"h{i}", os.O_WRONLY | os.O_CREAT, 0o644) for i in range(3)]
    try:
        gate = fs.hold(op="write", path="/h*", times=None)
        writers = [Call(os.write, fd, b"x") for fd in fds]
        fs.wait_held(gate, timeout=10, count=3)
        probe = Call(os.statvfs, m)
        time.sleep(0.5)
        assert probe.is_alive()
        fs.release(gate)
        assert probe.finished() and all(w.finished() for w in writers)
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.fuse
def test_stop_lets_held_calls_go(make_fs):
    fs = make_fs()
    m = mnt(fs)
    gate = fs.hold(op="write", path="/f")
    writer = Call(write_file, m / "f", b"x")
    fs.wait_held(gate, timeout=10)
    start = time.monotonic()
    fs.stop()
    assert time.monotonic() - start < 10 and not fs.running
    assert writer.finished()
    assert not os.path.ismount(m)


# --------------------------------------------------------------------------- lifecycle
@pytest.mark.fuse
def test_lazy_unmount_keeps_open_files_working(odfs):
    """Observed on Linux 6.x / libfuse 3.14: `fusermount3 -u -z` detaches the mount at
    once (the mountpoint is a plain empty folder again) but files opened before keep
    working, reads and writes alike, because the process still serves the detached
    mount; it exits by itself when the last of them is closed."""
    m, b = mnt(odfs), back(odfs)
    (m / "r.bin").write_bytes(b"r" * 100_000)
    reader = open(m / "r.bin", "rb")
    writer = open(m / "w.bin", "wb", buffering=0)
    odfs.lazy_unmount()
    try:
        assert not os.path.ismount(m) and os.listdir(m) == []
        assert reader.read() == b"r" * 100_000
        writer.write(b"late")
        assert (b / "w.bin").read_bytes() == b"late"
        assert odfs.running
    finally:
        reader.close()
        writer.close()
    assert eventually(lambda: not odfs.running)
    odfs.stop()


@pytest.mark.fuse
def test_crash_gives_enotconn_and_stop_cleans_up(make_fs):
    fs = make_fs(attr_timeout=0)  # else the kernel may answer a stat from its cache
    m = mnt(fs)
    (m / "f").write_bytes(b"x")
    f = open(m / "f", "rb")
    fs.crash()
    expect_errno(errno.ENOTCONN, os.stat, m)
    expect_errno(errno.ENOTCONN, f.read)
    expect_errno(errno.ENOTCONN, f.close)  # flush fails, the descriptor is closed anyway
    fs.stop()
    assert not os.path.ismount(m) and os.listdir(m) == []


@pytest.mark.fuse
def test_stop_is_idempotent_and_context_manager(tmp_path):
    require_fuse()
    (tmp_path / "b").mkdir()
    (tmp_path / "m").mkdir()
    fs = OneDataFS(tmp_path / "b", tmp_path / "m")
    fs.stop()  # never started: nothing to do
    with fs:
        assert os.path.ismount(tmp_path / "m") and fs.running
        control_dir = fs.control_dir
    assert not os.path.ismount(tmp_path / "m") and not fs.running
    assert not os.path.exists(control_dir)
    fs.stop()
    fs.stop()
    with pytest.raises(RuntimeError):
        fs.counts()


@pytest.mark.fuse
def test_start_failure_reports_process_output(tmp_path, monkeypatch):
    require_fuse()
    (tmp_path / "b").mkdir()
    (tmp_path / "m").mkdir()
    fs = OneDataFS(tmp_path / "b", tmp_path / "m")
    original = OneDataFS._command
    monkeypatch.setattr(OneDataFS, "_command", lambda self: [*original(self), "--no-such-option"])
    with pytest.raises(RuntimeError, match="no-such-option"):
        fs.start()
    assert not fs.running and not os.path.ismount(tmp_path / "m")
    fs.stop()
