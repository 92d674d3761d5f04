"""The POSIX store: atomic writes, declared capabilities, calls relative to the root fd."""

import errno
import os
import stat

import pytest

from spaceport.store import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore
from spaceport.store.base import UnsafePathError, is_our_temp, temp_name


@pytest.fixture
def store(tmp_path):
    s = PosixStore(str(tmp_path), WORK_CAPABILITIES, temp_token="abcdef01")
    yield s
    s.close()


def test_write_bytes_atomic_leaves_no_temporary(store, tmp_path):
    store.makedirs("a/b")
    store.write_bytes_atomic("a/b/f", b"hello", mode=0o640)
    assert (tmp_path / "a/b/f").read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(tmp_path / "a/b/f").st_mode) == 0o640
    assert os.listdir(tmp_path / "a/b") == ["f"]


def test_commit_sets_mode_and_mtime_through_the_descriptor(store, tmp_path):
    fd, tmp = store.create_temp("f")
    assert is_our_temp(os.path.basename(tmp), "abcdef01")
    os.write(fd, b"data")
    st = store.commit_temp(fd, tmp, "f", mode=0o751, mtime_ns=1_600_000_000_123_456_789)
    real = os.stat(tmp_path / "f")
    assert stat.S_IMODE(real.st_mode) == 0o751
    assert real.st_mtime_ns == 1_600_000_000_123_456_789
    assert st.st_ino == real.st_ino  # the returned stat is the file's, no re-stat needed


def test_failed_commit_removes_the_temporary(store, tmp_path):
    store.makedirs("d")
    fd, tmp = store.create_temp("d/f")
    os.write(fd, b"x")
    os.mkdir(tmp_path / "d" / "f")  # a directory where the file should go: rename fails
    os.mkdir(tmp_path / "d" / "f" / "blocker")
    with pytest.raises(OSError):
        store.commit_temp(fd, tmp, "d/f", mode=None, mtime_ns=None)
    assert sorted(os.listdir(tmp_path / "d")) == ["f"]


def test_temp_names_carry_the_token_and_are_recognised_only_with_it():
    name = temp_name("0123abcd")
    assert is_our_temp(name, "0123abcd")
    assert not is_our_temp(name, "ffffffff")
    assert not is_our_temp(".spaceport-tmp-0123abcd-xyz", "0123abcd")


def test_primary_store_refuses_symlinks_without_trying(tmp_path):
    with PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000") as s:
        with pytest.raises(OSError) as info:
            s.symlink("target", "link")
        assert info.value.errno == errno.EPERM
    assert not os.path.lexists(tmp_path / "link")


def test_unreliable_chmod_and_mtime_failures_are_tolerated(tmp_path, monkeypatch):
    # Fake: as root chmod never fails here, and OneData's refusals cannot be produced
    # without its mount; os.chmod/os.utime are made to fail as OneData's do.
    (tmp_path / "f").write_bytes(b"x")

    def refuse(*a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    with PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000") as s:
        monkeypatch.setattr(os, "chmod", refuse)
        monkeypatch.setattr(os, "utime", refuse)
        s.chmod("f", 0o600)
        s.set_mtime("f", 10**18)
        fd, tmp = s.create_temp("g")
        s.commit_temp(fd, tmp, "g", mode=0o600, mtime_ns=10**18)
    assert (tmp_path / "g").exists()
    with PosixStore(str(tmp_path), WORK_CAPABILITIES, temp_token="00000000") as s:
        with pytest.raises(OSError):
            s.chmod("f", 0o600)  # where chmod is declared reliable, failure is an error


def test_operations_stay_in_the_folder_opened_even_if_its_path_moves(tmp_path):
    """A vanished mount: the path now leads elsewhere, writes must not follow it."""
    real = tmp_path / "mount"
    real.mkdir()
    s = PosixStore(str(real), PRIMARY_CAPABILITIES, temp_token="00000000")
    os.rename(real, tmp_path / "moved")
    real.mkdir()  # the bare mount point left behind
    s.write_bytes_atomic("f", b"data")
    s.close()
    assert os.listdir(real) == []
    assert (tmp_path / "moved" / "f").read_bytes() == b"data"


def test_makedirs_and_walk_remove(store, tmp_path):
    store.makedirs("a/b/c")
    store.write_bytes_atomic("a/b/c/f", b"1")
    os.symlink("/etc", tmp_path / "a" / "link")
    store.walk_remove("a")
    assert not os.path.lexists(tmp_path / "a")
    assert os.path.exists("/etc")


def test_append_bytes_creates_and_appends(store, tmp_path):
    store.append_bytes("j", b"one\n")
    store.append_bytes("j", b"two\n")
    assert (tmp_path / "j").read_bytes() == b"one\ntwo\n"


def test_create_exclusive_refuses_existing(store):
    store.create_exclusive("lockfile", b"1")
    with pytest.raises(FileExistsError):
        store.create_exclusive("lockfile", b"2")
    assert store.read_bytes("lockfile") == b"1"


def test_link_creation_never_goes_through_a_link_or_leaves_the_root(tmp_path):
    work, other = tmp_path / "work", tmp_path / "vol-dataset"
    work.mkdir()
    (other / "movies").mkdir(parents=True)
    (other / "movies" / "movie.tif").write_bytes(b"raw")
    os.symlink(str(other), work / "dataset")
    (work / "file").write_bytes(b"x")
    before = sorted(p for p in os.walk(other))
    with PosixStore(str(work), WORK_CAPABILITIES, temp_token="00000000") as store:
        for rel in ("dataset/movies/evil", "dataset/evil", "dataset/new/evil", "file/evil",
                    "../evil", "/tmp/evil", "a/../../evil", "a//b", "./a"):
            with pytest.raises(UnsafePathError):
                store.symlink("target", rel, parents=True)
        store.symlink("../x", "deep/er/link", parents=True)
        with pytest.raises(FileNotFoundError):
            store.symlink("x", "missing/link")  # parents not asked for: not made
    assert sorted(p for p in os.walk(other)) == before
    assert not os.path.lexists(tmp_path / "evil") and not os.path.lexists("/tmp/evil")
    assert os.readlink(work / "deep/er/link") == "../x"
    assert sorted(os.listdir(work)) == ["dataset", "deep", "file"]
