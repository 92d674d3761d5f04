"""The deployment lock, format 2: published once, never rewritten by its holder, heartbeats
beside it, release that cannot remove another's lock, staleness judged on our own clock.

Process-level races (FUSE stalls, faked clocks, pid namespaces) are in test_lock_races.py.
"""

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from spaceport.errors import FormatError, LockedError, LockLostError, SpaceportError
from spaceport.formats.legacy import LegacyLock
from spaceport.hostinfo import ProcessIdentity, hostname
from spaceport.safety.lock import (
    DEFAULT_STATUS_DIR,
    DeploymentLock,
    LockKeeper,
    UnreadableLock,
    WorkCopy,
    force_unlock,
    read_heartbeat,
    read_lock,
    set_aside,
    watch_stale,
)
from spaceport.store import PRIMARY_CAPABILITIES, PosixStore

S = DEFAULT_STATUS_DIR
WORK = WorkCopy("node-1", "/work", "4242")


@pytest.fixture
def store(tmp_path):
    s = PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000")
    yield s
    s.close()


def take(store, dep="a" * 32, work=WORK, **kw):
    return DeploymentLock.acquire(store, S, deployment_id=dep, work=work, instance="pod-1",
                                  parameters={"jobs": 3}, **kw)


def lock_bytes(tmp_path) -> bytes:
    return (tmp_path / S / "lock").read_bytes()


def test_lock_file_is_json_a_person_can_read(store, tmp_path):
    take(store)
    data = json.loads(lock_bytes(tmp_path))
    for key in ("format", "deployment_id", "host", "boot_id", "instance", "pid", "user",
                "primary", "work", "work_id", "created", "stale_after", "parameters",
                "tool_version", "live"):
        assert key in data, key
    assert data["format"] == 2 and "heartbeat" not in data
    assert data["instance"] == "pod-1" and data["parameters"] == {"jobs": 3}
    assert (data["host"], data["work"], data["work_id"]) == ("node-1", "/work", "4242")
    beat = read_heartbeat(store, S, "a" * 32)
    assert beat.pid == os.getpid() and beat.boot_id == ProcessIdentity.current().boot_id
    # Nothing else is left in the status folder: no temporaries of the publication.
    assert sorted(os.listdir(tmp_path / S)) == ["heartbeat." + "a" * 32, "lock"]


def test_second_deployment_is_refused_naming_the_holder(store):
    take(store)
    with pytest.raises(LockedError) as info:
        take(store, dep="b" * 32)
    message = str(info.value)
    assert "pod-1" in message and "last heartbeat" in message and "since" in message
    assert "/work" in message and info.value.exit_code == 3


def test_own_deployment_resumes_its_lock_without_rewriting_it(store, tmp_path):
    take(store)
    before, inode = lock_bytes(tmp_path), os.stat(tmp_path / S / "lock").st_ino
    take(store)
    assert lock_bytes(tmp_path) == before and os.stat(tmp_path / S / "lock").st_ino == inode


@pytest.mark.parametrize("copy,accepted", [
    (WorkCopy("node-1", "/work", "4242"), True),        # the same copy
    (WorkCopy("node-1", "/work", "9999"), True),        # same host, marker re-created
    (WorkCopy("pod-new", "/work", "4242"), True),       # the volume moved to a new pod
    (WorkCopy("node-1", "/work2", "4242"), False),      # cp -a work work2
    (WorkCopy("node-2", "/work", "5555"), False),       # a copy on another node
])
def test_the_lock_names_its_working_copy(store, copy, accepted):
    take(store)
    if accepted:
        take(store, work=copy)
        return
    with pytest.raises(LockLostError) as info:
        take(store, work=copy)
    assert info.value.exit_code == 4
    assert "/work" in str(info.value) and copy.path in str(info.value)


def test_heartbeat_never_touches_the_lock(store, tmp_path):
    lock = take(store)
    before, inode = lock_bytes(tmp_path), os.stat(tmp_path / S / "lock").st_ino
    beat0 = read_heartbeat(store, S, lock.info.deployment_id)
    lock.heartbeat(last_save="2026-01-01T00:00:00+00:00")
    beat1 = read_heartbeat(store, S, lock.info.deployment_id)
    assert beat1.beat != beat0.beat and beat1.last_save == "2026-01-01T00:00:00+00:00"
    assert lock_bytes(tmp_path) == before and os.stat(tmp_path / S / "lock").st_ino == inode
    # A new holder object of the same deployment (the daemon's next beat) keeps last_save.
    DeploymentLock(store, S, read_lock(store, S)).heartbeat()
    assert read_heartbeat(store, S, lock.info.deployment_id).last_save == beat1.last_save


class PausingStore(PosixStore):
    """Stops one chosen call until the test lets it go: holds a race window open."""

    def __init__(self, *a, pause_on: str, **kw):
        super().__init__(*a, **kw)
        self.pause_on = pause_on
        self.armed = False
        self.reached = threading.Event()
        self.go = threading.Event()

    def _maybe_pause(self, name):
        if self.armed and name == self.pause_on and not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(10)

    def write_bytes_atomic(self, rel, data, mode=0o644):
        self._maybe_pause("write_bytes_atomic")
        return super().write_bytes_atomic(rel, data, mode)

    def rename(self, src, dst):
        self._maybe_pause("rename")
        return super().rename(src, dst)


def in_thread(fn):
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_a_stalled_heartbeat_cannot_bring_back_a_lock_taken_over(tmp_path):
    """Issue 9, failure 1: the old heartbeat read the lock, then renamed a fresh copy over it."""
    a_store = PausingStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="aaaaaaaa",
                           pause_on="write_bytes_atomic")
    b_store = PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="bbbbbbbb")
    a = take(a_store)
    a_store.armed = True
    t, box = in_thread(a.heartbeat)  # verifies (ours), then stalls before writing
    assert a_store.reached.wait(5)
    force_unlock(b_store, S)
    take(b_store, dep="b" * 32, work=WorkCopy("node-2", "/w2", "1"))
    a_store.go.set()
    t.join(10)
    assert read_lock(b_store, S).deployment_id == "b" * 32
    with pytest.raises(LockLostError):
        a.heartbeat()
    assert read_lock(b_store, S).deployment_id == "b" * 32


def test_release_never_deletes_a_lock_taken_meanwhile(tmp_path):
    """Issue 9, failure 2: the old release read the lock, then unlinked whatever was there.
    Now a lock taken in the window is kept aside as broken (never deleted, never put back:
    docs/lock-model/ shows that putting it back breaks fencing), and its owner is fenced."""
    a_store = PausingStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="aaaaaaaa",
                           pause_on="rename")
    b_store = PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="bbbbbbbb")
    a = take(a_store)
    a_store.armed = True
    t, box = in_thread(a.release)  # checks the lock is its own, then stalls before the rename
    assert a_store.reached.wait(5)
    force_unlock(b_store, S)
    b = take(b_store, dep="b" * 32, work=WorkCopy("node-2", "/w2", "1"))
    a_store.go.set()
    t.join(10)
    assert isinstance(box.get("error"), LockLostError)
    kept = [n for n in os.listdir(tmp_path / S) if n.startswith("lock.broken-")]
    records = [json.loads((tmp_path / S / n).read_text())["deployment_id"] for n in kept]
    assert "b" * 32 in records  # B's record still exists: set aside, not deleted
    assert not (tmp_path / S / "lock").exists()
    assert not [n for n in os.listdir(tmp_path / S) if n.startswith("lock.release")]
    with pytest.raises(LockLostError):
        b.verify()  # B is fenced, and a new deploy can proceed


def test_release_of_a_lock_that_is_no_longer_ours_touches_nothing(tmp_path):
    a_store = PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="aaaaaaaa")
    a = take(a_store)
    force_unlock(a_store, S)
    take(a_store, dep="b" * 32, work=WorkCopy("node-2", "/w2", "1"))
    before = lock_bytes(tmp_path)
    with pytest.raises(LockLostError):
        a.release()
    assert lock_bytes(tmp_path) == before


def test_release_removes_own_lock_and_heartbeat(store, tmp_path):
    lock = take(store)
    lock.release()
    assert os.listdir(tmp_path / S) == []
    with pytest.raises(LockLostError):
        lock.release()


def write_heartbeat(tmp_path, dep, **fields):
    data = {"deployment_id": dep, "beat": "x", "time": "2020-01-01T00:00:00+00:00",
            "host": hostname(), "pid": 1, **fields}
    (tmp_path / S / f"heartbeat.{dep}").write_text(json.dumps(data))


def test_a_beating_holder_is_never_stale_whatever_its_clock_says(store, tmp_path):
    """Issue 9, failure 4: staleness compared the holder's clock with ours."""
    lock = take(store, live=True, stale_after=1)
    write_heartbeat(tmp_path, lock.info.deployment_id, time="2001-01-01T00:00:00+00:00")
    stop = threading.Event()

    def beat():  # its clock is 25 years behind, but it beats
        n = 0
        while not stop.wait(0.1):
            n += 1
            write_heartbeat(tmp_path, lock.info.deployment_id, beat=str(n),
                            time="2001-01-01T00:00:00+00:00")
    t = threading.Thread(target=beat)
    t.start()
    try:
        assert watch_stale(store, S, read_lock(store, S), poll=0.05) is None
        with pytest.raises(LockedError):
            take(store, dep="b" * 32, take_over_stale=True)
    finally:
        stop.set()
        t.join()
    assert read_lock(store, S).deployment_id == lock.info.deployment_id


def test_a_silent_heartbeat_is_stale_after_watching_our_own_clock(store, tmp_path):
    lock = take(store, live=True, stale_after=1)
    write_heartbeat(tmp_path, lock.info.deployment_id, time="2099-01-01T00:00:00+00:00")
    ticks = []
    started = time.monotonic()
    reason = watch_stale(store, S, read_lock(store, S), poll=0.05,
                         on_tick=lambda done, total: ticks.append((done, total)))
    assert "did not change" in reason and time.monotonic() - started >= 1.0
    assert ticks[-1] == (1.0, 1.0)
    take(store, dep="b" * 32, take_over_stale=True)
    assert read_lock(store, S).deployment_id == "b" * 32
    assert any(n.startswith("lock.stale-") for n in os.listdir(tmp_path / S))


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    return int(proc.stdout)


def test_dead_process_on_this_boot_and_pid_namespace_is_stale_at_once(store, tmp_path):
    lock = take(store, live=True, stale_after=3600)
    me = ProcessIdentity.current()
    write_heartbeat(tmp_path, lock.info.deployment_id, pid=dead_pid(), boot_id=me.boot_id,
                    pid_ns=me.pid_ns)
    assert "gone" in watch_stale(store, S, read_lock(store, S))


@pytest.mark.parametrize("other", ["pid_ns", "boot_id"])
def test_same_host_name_is_not_enough_to_call_a_process_gone(store, tmp_path, other):
    """A second container of a pod has our host name and its own pid namespace."""
    lock = take(store, live=True, stale_after=1)
    me = ProcessIdentity.current()
    fields = {"pid": dead_pid(), "boot_id": me.boot_id, "pid_ns": me.pid_ns, other: "other"}
    write_heartbeat(tmp_path, lock.info.deployment_id, **fields)
    started = time.monotonic()
    assert "did not change" in watch_stale(store, S, read_lock(store, S), poll=0.05)
    assert time.monotonic() - started >= 1.0  # it had to watch


def test_a_reused_pid_is_recognised(store, tmp_path):
    lock = take(store, live=True, stale_after=3600)
    me = ProcessIdentity.current()
    write_heartbeat(tmp_path, lock.info.deployment_id, pid=os.getpid(), boot_id=me.boot_id,
                    pid_ns=me.pid_ns, started="1")  # our pid, but started at another time
    assert "another process" in watch_stale(store, S, read_lock(store, S))


def test_command_line_deployments_never_look_stale(store, tmp_path):
    take(store)
    assert watch_stale(store, S, read_lock(store, S)) is None
    assert "deployed from the command line" in read_lock(store, S).describe()
    with pytest.raises(LockedError):
        take(store, dep="b" * 32, take_over_stale=True)


class FullStore(PosixStore):
    def create_exclusive(self, rel, data):
        fd = os.open(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=self._fd)
        os.close(fd)  # the file exists, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", rel)


def test_a_full_primary_leaves_no_lock_behind(tmp_path):
    """Issue 9, failure 8: a 0-byte lock blocked every later deploy."""
    full = FullStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000")
    with pytest.raises(SpaceportError, match="No space left") as info:
        take(full)
    assert "no lock was left" in str(info.value)
    assert os.listdir(tmp_path / S) == []
    take(PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000"))


class NoNoReplace(PosixStore):
    def rename_noreplace(self, src, dst):
        raise OSError(errno.EINVAL, "Invalid argument", src)


def test_storage_without_rename_noreplace_falls_back_to_exclusive_create(tmp_path):
    s = NoNoReplace(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000")
    lock = take(s)
    assert read_lock(s, S).deployment_id == lock.info.deployment_id
    with pytest.raises(LockedError):
        take(s, dep="b" * 32)
    assert sorted(os.listdir(tmp_path / S)) == ["heartbeat." + "a" * 32, "lock"]


def test_old_tools_and_unreadable_locks_count_as_held(store, tmp_path):
    # The real files (legacy_spaces.py): westlife's lock in the status folder, CERIT's
    # scipion-docker/project.lock, empty or a unix time with no newline.
    from legacy_spaces import WESTLIFE_LOCK

    (tmp_path / S).mkdir()
    (tmp_path / S / "lock").write_bytes(WESTLIFE_LOCK)
    assert isinstance(read_lock(store, S), LegacyLock)
    with pytest.raises(LockedError, match="scipion-vm.cloud.example.org"):
        take(store)
    (tmp_path / S / "lock").write_text('{"deployment_id": "trunc')
    assert isinstance(read_lock(store, S), UnreadableLock)
    with pytest.raises(LockedError, match="unreadable"):
        take(store)
    assert isinstance(force_unlock(store, S), UnreadableLock)
    (tmp_path / "scipion-docker").mkdir()
    for content in (b"", b"1714557600"):
        (tmp_path / "scipion-docker" / "project.lock").write_bytes(content)
        assert isinstance(read_lock(store, S), LegacyLock)
        with pytest.raises(LockedError, match="scipion-docker/project.lock"):
            take(store)
        assert not (tmp_path / S / "lock").exists()  # refused before anything was written
        assert isinstance(force_unlock(store, S), LegacyLock)
        assert read_lock(store, S) is None
    take(store)  # with the old locks set aside, a deploy takes the lock


FORMAT_1 = {"format": 1, "deployment_id": "a" * 32, "host": "node-1", "instance": "pod-1",
            "pid": 1, "user": "u", "primary": "/p", "work": "/work",
            "created": "2026-01-01T00:00:00+00:00", "heartbeat": "2026-01-02T00:00:00+00:00",
            "stale_after": 600, "parameters": {}, "tool_version": "0.1.0",
            "last_save": "2026-01-02T00:00:00+00:00", "live": False}


def test_a_format_1_lock_is_held_and_migrated_by_its_own_deployment(store, tmp_path):
    (tmp_path / S).mkdir()
    (tmp_path / S / "lock").write_text(json.dumps(FORMAT_1))
    with pytest.raises(LockedError, match="node-1"):
        take(store, dep="b" * 32)
    lock = take(store)  # the same deployment, from the working copy the lock names
    data = json.loads(lock_bytes(tmp_path))
    assert data["format"] == 2 and data["created"] == FORMAT_1["created"]
    assert data["work_id"] == "4242" and "heartbeat" not in data
    assert read_heartbeat(store, S, "a" * 32).last_save == FORMAT_1["last_save"]
    assert sorted(n for n in os.listdir(tmp_path / S) if n.startswith("lock")) == ["lock"] \
        or any(n.startswith("lock.format1-") for n in os.listdir(tmp_path / S))
    lock.release()
    assert read_lock(store, S) is None


def test_set_aside_with_an_expected_owner_leaves_another_lock_alone(store, tmp_path):
    take(store, dep="b" * 32)
    before = lock_bytes(tmp_path)
    assert set_aside(store, S, "a" * 32) is None
    assert lock_bytes(tmp_path) == before


def test_newer_lock_format_is_refused_clearly(store, tmp_path):
    take(store)
    data = json.loads(lock_bytes(tmp_path))
    data["format"] = 99
    (tmp_path / S / "lock").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="newer"):
        read_lock(store, S)


def test_keeper_beats_and_notices_loss(store, tmp_path):
    lock = take(store)
    before = read_heartbeat(store, S, lock.info.deployment_id).beat
    with LockKeeper(lock, interval=0.02) as keeper:
        deadline = time.monotonic() + 5
        while read_heartbeat(store, S, lock.info.deployment_id).beat == before:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        force_unlock(store, S)
        while keeper.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LockLostError):
            keeper.check()


CONTENDER = textwrap.dedent("""
    import os, sys, time
    from spaceport.safety.lock import DeploymentLock, WorkCopy
    from spaceport.errors import LockedError
    from spaceport.store import PosixStore, PRIMARY_CAPABILITIES
    root, start, dep = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    store = PosixStore(root, PRIMARY_CAPABILITIES, temp_token="00000000")
    while time.time() < start:
        pass
    try:
        DeploymentLock.acquire(store, ".deployment_status_do_not_delete", deployment_id=dep,
                               work=WorkCopy("h", "/w/" + dep, None))
        print("WON")
    except LockedError:
        print("LOST")
""")


@pytest.mark.parametrize("round_", range(3))
def test_exactly_one_of_many_processes_wins(tmp_path, round_):
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(tmp_path), str(start),
                               f"{i:032x}"], stdout=subprocess.PIPE, text=True)
             for i in range(8)]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(results) == ["LOST"] * 7 + ["WON"]
    winner = results.index("WON")
    assert json.loads(lock_bytes(tmp_path))["deployment_id"] == f"{winner:032x}"
    assert not [n for n in os.listdir(tmp_path / S) if n.startswith("lock.new")]
