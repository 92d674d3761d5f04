"""The deployment lock: exclusive, read back, fenced, heartbeat, stale, contention."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from spaceport.errors import FormatError, LockedError, LockLostError
from spaceport.legacy import LegacyLock
from spaceport.lock import (DEFAULT_STATUS_DIR, DeploymentLock, LockKeeper, UnreadableLock,
                            force_unlock, read_lock)
from spaceport.store import PRIMARY_CAPABILITIES, PosixStore

S = DEFAULT_STATUS_DIR


@pytest.fixture
def store(tmp_path):
    s = PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000")
    yield s
    s.close()


def take(store, dep="a" * 32, **kw):
    return DeploymentLock.acquire(store, S, deployment_id=dep, work="/work", instance="pod-1",
                                  parameters={"jobs": 3}, **kw)


def test_lock_file_is_json_a_person_can_read(store, tmp_path):
    take(store)
    data = json.loads((tmp_path / S / "lock").read_text())
    for key in ("format", "deployment_id", "host", "instance", "pid", "user", "primary", "work",
                "created", "heartbeat", "stale_after", "parameters", "tool_version"):
        assert key in data
    assert data["instance"] == "pod-1" and data["parameters"] == {"jobs": 3}
    assert data["pid"] == os.getpid()


def test_second_deployment_is_refused_naming_the_holder(store):
    take(store)
    with pytest.raises(LockedError) as info:
        take(store, dep="b" * 32)
    message = str(info.value)
    assert "pod-1" in message and "last heartbeat" in message and "since" in message
    assert info.value.exit_code == 3


def test_own_deployment_resumes_its_lock(store):
    first = take(store)
    again = take(store)
    assert again.info.created == first.info.created


def test_fencing_detects_a_replaced_or_removed_lock(store, tmp_path):
    lock = take(store)
    lock.verify()
    data = json.loads((tmp_path / S / "lock").read_text())
    data["deployment_id"] = "c" * 32
    (tmp_path / S / "lock").write_text(json.dumps(data))
    with pytest.raises(LockLostError):
        lock.verify()
    with pytest.raises(LockLostError):
        lock.heartbeat()
    assert json.loads((tmp_path / S / "lock").read_text())["deployment_id"] == "c" * 32
    os.unlink(tmp_path / S / "lock")
    with pytest.raises(LockLostError):
        lock.release()


def test_heartbeat_rewrites_atomically(store, tmp_path):
    lock = take(store)
    lock.heartbeat(last_save="2026-01-01T00:00:00+00:00")
    data = json.loads((tmp_path / S / "lock").read_text())
    assert data["last_save"] == "2026-01-01T00:00:00+00:00"
    assert os.listdir(tmp_path / S) == ["lock"]


def write_old_lock(tmp_path, **changes):
    lock_path = tmp_path / S / "lock"
    data = json.loads(lock_path.read_text())
    data.update(changes)
    lock_path.write_text(json.dumps(data))


def test_stale_lock_is_reported_and_can_be_taken_over(store, tmp_path):
    take(store, live=True)
    write_old_lock(tmp_path, heartbeat="2020-01-01T00:00:00+00:00", host="elsewhere")
    with pytest.raises(LockedError, match="stale"):
        take(store, dep="b" * 32)
    lock = take(store, dep="b" * 32, take_over_stale=True)
    assert read_lock(store, S).deployment_id == "b" * 32
    assert any(n.startswith("lock.broken-") for n in os.listdir(tmp_path / S))
    lock.release()


def test_command_line_deployments_never_look_stale(store, tmp_path):
    take(store)
    write_old_lock(tmp_path, heartbeat="2020-01-01T00:00:00+00:00", pid=2**22 + 1)
    holder = read_lock(store, S)
    assert holder.stale_reason() is None and "command-line deployment" in holder.describe()
    with pytest.raises(LockedError):
        take(store, dep="b" * 32, take_over_stale=True)


def test_lock_of_a_dead_process_on_this_host_is_stale(store, tmp_path):
    take(store, live=True)
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    write_old_lock(tmp_path, pid=int(proc.stdout))
    holder = read_lock(store, S)
    assert "gone" in holder.stale_reason()


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
    os.unlink(tmp_path / S / "lock")
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


def test_newer_lock_format_is_refused_clearly(store, tmp_path):
    take(store)
    write_old_lock(tmp_path, format=99)
    with pytest.raises(FormatError, match="newer"):
        read_lock(store, S)


def test_keeper_refreshes_and_notices_loss(store, tmp_path):
    lock = take(store)
    before = read_lock(store, S).heartbeat
    with LockKeeper(lock, interval=0.02) as keeper:
        time.sleep(1.2)  # heartbeat timestamps have one-second resolution
        assert read_lock(store, S).heartbeat != before
        write_old_lock(tmp_path, deployment_id="d" * 32)
        deadline = time.monotonic() + 5
        while keeper.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LockLostError):
            keeper.check()


CONTENDER = textwrap.dedent("""
    import os, sys, time
    from spaceport.lock import DeploymentLock
    from spaceport.errors import LockedError
    from spaceport.store import PosixStore, PRIMARY_CAPABILITIES
    root, start, dep = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    store = PosixStore(root, PRIMARY_CAPABILITIES, temp_token="00000000")
    while time.time() < start:
        pass
    try:
        DeploymentLock.acquire(store, ".deployment_status_do_not_delete", deployment_id=dep,
                               work="/w/" + dep)
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
    assert json.loads((tmp_path / S / "lock").read_text())["deployment_id"] == f"{winner:032x}"
