"""The transfer engine: exact copies, same result with any parallelism, isolated failures."""

import os
import threading

import pytest

from spaceport.progress import Tracker
from spaceport.retry import RetryPolicy
from spaceport.store import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore
from spaceport.store.base import temp_name
from spaceport.transfer import Copier, CopyJob, run_copies

from conftest import snapshot, write


def make_source(root, count=60):
    for i in range(count):
        write(root, f"d{i % 7}/f{i}", os.urandom(i * 997 % 50000), mode=0o600 + (i % 2) * 0o44,
              mtime_ns=1_500_000_000_000_000_000 + i)
    write(root, "big", os.urandom(20 << 20))


def copy_all(src_root, dst_root, jobs, names=None, src_cls=PosixStore):
    src = src_cls(str(src_root), WORK_CAPABILITIES, temp_token="11111111")
    dst = PosixStore(str(dst_root), PRIMARY_CAPABILITIES, temp_token="11111111")
    tracker = Tracker()
    files = names or sorted(os.path.relpath(os.path.join(d, f), src_root)
                            for d, _, fs in os.walk(src_root) for f in fs)
    for f in files:
        dst.makedirs(os.path.dirname(f))
    tracker.start("t", files=len(files), nbytes=0)
    results = []
    copier = Copier(src, dst, tracker=tracker, task="t", stop=threading.Event(),
                    retry=RetryPolicy(attempts=2, initial_delay=0.01))
    run_copies(copier, [CopyJob(f, 0, temp_name("11111111")) for f in files], jobs,
               results.append)
    return results, tracker


@pytest.mark.parametrize("jobs", [1, 8])
def test_copies_are_exact_with_any_parallelism(tmp_path, jobs):
    make_source(tmp_path / "src")
    (tmp_path / "dst").mkdir()
    results, tracker = copy_all(tmp_path / "src", tmp_path / "dst", jobs)
    assert all(r.error is None for r in results)
    assert snapshot(tmp_path / "src") == snapshot(tmp_path / "dst")
    task = tracker.tasks["t"]
    assert task.files_done == len(results)
    assert task.bytes_done == sum(r.src_st.st_size for r in results)


def test_a_failing_file_does_not_harm_the_others(tmp_path):
    make_source(tmp_path / "src", count=40)
    (tmp_path / "dst").mkdir()
    names = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "src")
                   for d, _, fs in os.walk(tmp_path / "src") for f in fs)
    results, _ = copy_all(tmp_path / "src", tmp_path / "dst", 8, names=names + ["missing/file"])
    failed = [r for r in results if r.error is not None]
    assert [r.job.path for r in failed] == ["missing/file"]
    dst = snapshot(tmp_path / "dst")
    assert dst.pop(b"missing") == ("dir", 0o755)  # made by the test, left empty
    assert snapshot(tmp_path / "src") == dst
    leftovers = [f for _, _, fs in os.walk(tmp_path / "dst") for f in fs if "spaceport-tmp" in f]
    assert leftovers == []


def test_a_write_error_in_one_worker_leaves_no_half_file(tmp_path):
    make_source(tmp_path / "src", count=30)
    (tmp_path / "dst").mkdir()

    class FailingRead(PosixStore):
        # Fake: an I/O error in the middle of one file, as a flaky mount gives.
        def open_read(self, rel):
            fd = super().open_read(rel)
            if rel == "big":
                os.close(fd)
                return os.open("/proc/self/mem", os.O_RDONLY)  # reads fail with EIO
            return fd

    results, _ = copy_all(tmp_path / "src", tmp_path / "dst", 8, src_cls=FailingRead)
    failed = {r.job.path for r in results if r.error is not None}
    assert failed == {"big"}
    assert not (tmp_path / "dst" / "big").exists()
    src, dst = snapshot(tmp_path / "src"), snapshot(tmp_path / "dst")
    del src[b"big"]
    assert src == dst


def test_a_file_changing_during_its_copy_is_flagged_unstable(tmp_path):
    write(tmp_path / "src", "f", b"a" * 1000)
    (tmp_path / "dst").mkdir()

    class Appending(PosixStore):
        # Fake timing: the application appends right after the copy took its first stat,
        # which a real writer does at random moments.
        def create_temp(self, rel, name=None, mode=None):
            with open(tmp_path / "src" / "f", "ab") as f:
                f.write(b"more")
            return super().create_temp(rel, name, mode)

    src = PosixStore(str(tmp_path / "src"), WORK_CAPABILITIES, temp_token="11111111")
    dst = Appending(str(tmp_path / "dst"), PRIMARY_CAPABILITIES, temp_token="11111111")
    tracker = Tracker()
    tracker.start("t", files=1, nbytes=1000)
    copier = Copier(src, dst, tracker=tracker, task="t", stop=threading.Event(),
                    retry=RetryPolicy.none())
    done = copier.copy(CopyJob("f", 1000, temp_name("11111111")))
    assert done.error is None and done.unstable
