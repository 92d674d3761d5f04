"""Nothing lost under faults: kills at many points, full disks, a vanishing mount, EIO.

Every test here breaks something for real: a process killed with SIGKILL, a tmpfs that is
full, a FUSE mount (the project's OneData-like filesystem) that returns errors, is lazily
unmounted or whose server dies. The counts these tests reach are reported in
docs/RELIABILITY.md.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli, snapshot, write

from spaceport.commands.deploy import deploy
from spaceport.commands.save import save
from spaceport.engine.index import Index
from spaceport.engine.scan import Kind
from spaceport.errors import PartialSaveError, StorageUnavailableError
from spaceport.formats.marker import index_path, read_marker
from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.testing.onedatafs import OneDataFS, fuse_available

S = DEFAULT_STATUS_DIR
AVAILABLE, REASON = fuse_available()
needs_fuse = pytest.mark.skipif(not AVAILABLE, reason=f"FUSE unavailable: {REASON}")
KILL_POINTS_SAVE = int(os.environ.get("SPACEPORT_KILL_POINTS", "16"))
KILL_POINTS_DEPLOY = int(os.environ.get("SPACEPORT_KILL_POINTS", "16"))


class Mount:
    """A OneData-like FUSE mount over a backing folder, stopped at the end."""

    def __init__(self, tmp_path, name="mnt", **delays):
        self.backing = str(tmp_path / f"{name}-backing")
        self.path = str(tmp_path / name)
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.path, exist_ok=True)
        self.fs = OneDataFS(self.backing, self.path, attr_timeout=0.0, **delays).start()

    def calls(self) -> int:
        return sum(self.fs.counts().values())

    def stop(self):
        self.fs.stop()


@pytest.fixture
def mount(tmp_path):
    if not AVAILABLE:
        pytest.skip(f"FUSE unavailable: {REASON}")
    m = Mount(tmp_path, meta_delay_ms=1.0)
    yield m
    m.stop()


def project_files(root, count=40):
    for i in range(count):
        write(root, f"Runs/{i % 4:03d}/extra/f{i:03d}.xmd", os.urandom(2000 + 37 * i),
              mtime_ns=1_600_000_000_000_000_000 + i)
    write(root, "Runs/000/micrograph.mrc", os.urandom(3 << 20))
    write(root, "project.sqlite", os.urandom(100_000))


def files_only(snap):
    return {k: v[1] for k, v in snap.items() if v[0] == "file"}


def spaceport_proc(*args):
    return subprocess.Popen([sys.executable, "-m", "spaceport", *args, "--retries", "2",
                             "--retry-delay", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_after_calls(mount, proc, target, timeout=60) -> bool:
    """SIGKILL ``proc`` once the mount has served ``target`` more calls; False if it ended."""
    start = mount.calls()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if mount.calls() - start >= target:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    proc.communicate()
    return False


def assert_index_claims_only_what_landed(work, primary_backing):
    """Every file the index says is saved is on the primary with the work's content."""
    index = Index(index_path(work))
    try:
        for path, known in index.load().items():
            if known.entry.kind is not Kind.FILE or known.psize is None:
                continue
            here = os.path.join(work, path)
            if not os.path.lexists(here):
                continue  # deleted in work; its deletion is what is pending
            st = os.lstat(here)
            if (st.st_size, st.st_mtime_ns) != (known.entry.size, known.entry.mtime_ns):
                continue  # the index does not claim the current work content
            with open(here, "rb") as a, open(os.path.join(primary_backing, path), "rb") as b:
                assert a.read() == b.read(), f"index claims {path} was saved, it was not"
    finally:
        index.close()


def measure_calls(tmp_path, prepare) -> int:
    """How many calls a whole run makes on the mount (to spread kill points over it)."""
    m = Mount(tmp_path / "measure", meta_delay_ms=1.0)
    try:
        args = prepare(m, tmp_path / "measure")
        start = m.calls()
        assert run_cli(*args).code == 0
        return m.calls() - start
    finally:
        m.stop()


def prepare_save(m, base):
    work = str(base / "work")
    project_files(m.path, count=20)
    assert run_cli("deploy", m.path, work).code == 0
    for i in range(20, 60):
        write(work, f"Runs/new/f{i:03d}", os.urandom(3000 + i))
    write(work, "project.sqlite", os.urandom(120_000))
    os.unlink(os.path.join(work, "Runs/001/extra/f001.xmd"))
    return ["save", work]


@needs_fuse
def test_save_killed_at_many_points_never_corrupts_and_resumes(tmp_path):
    total = measure_calls(tmp_path, prepare_save)
    killed = 0
    for k in range(1, KILL_POINTS_SAVE + 1):
        base = tmp_path / f"kill{k}"
        m = Mount(base, meta_delay_ms=1.0)
        try:
            work = prepare_save(m, base)[1]
            before = files_only(snapshot(m.backing))
            wanted = files_only(snapshot(work))
            proc = spaceport_proc("save", work)
            killed += kill_after_calls(m, proc, total * k // (KILL_POINTS_SAVE + 1))
            # No file under a real name is half written: each is the old or the new one.
            for path, digest in files_only(snapshot(m.backing)).items():
                if b"spaceport-tmp" in path or path.startswith(os.fsencode(S)):
                    continue
                assert digest in (before.get(path), wanted.get(path)), path
            assert_index_claims_only_what_landed(work, m.backing)
            result = run_cli("save", work)
            assert result.code == 0, result.err
            assert files_only(snapshot(m.backing)) == wanted
            assert not [f for _, _, fs in os.walk(m.backing) for f in fs if "spaceport-tmp" in f]
        finally:
            m.stop()
    print(f"save: {KILL_POINTS_SAVE} kill points over {total} calls, {killed} landed mid-run")
    assert killed >= KILL_POINTS_SAVE // 2  # most kills landed inside the run


def prepare_deploy(m, base):
    project_files(m.path, count=50)
    return ["deploy", m.path, str(base / "work")]


@needs_fuse
def test_deploy_killed_at_many_points_never_corrupts_and_resumes(tmp_path):
    total = measure_calls(tmp_path, prepare_deploy)
    killed = 0
    for k in range(1, KILL_POINTS_DEPLOY + 1):
        base = tmp_path / f"kill{k}"
        m = Mount(base, meta_delay_ms=1.0)
        try:
            work = prepare_deploy(m, base)[2]
            before = snapshot(m.backing)
            proc = spaceport_proc("deploy", m.path, work)
            killed += kill_after_calls(m, proc, total * k // (KILL_POINTS_DEPLOY + 1))
            source = files_only(before)
            if os.path.isdir(work):
                for path, digest in files_only(snapshot(work)).items():
                    if b"spaceport-tmp" not in path:
                        assert digest == source[path], path  # never half a file
                if read_marker(work):
                    assert_index_claims_only_what_landed(work, m.backing)
            result = run_cli("deploy", m.path, work)
            assert result.code == 0, result.err
            assert snapshot(work) == {k: v for k, v in before.items()
                                      if not k.startswith(os.fsencode(S))}
            after = snapshot(m.backing)
            assert files_only(after) == source  # the primary was never changed
        finally:
            m.stop()
    print(f"deploy: {KILL_POINTS_DEPLOY} kill points over {total} calls, {killed} landed mid-run")
    assert killed >= KILL_POINTS_DEPLOY // 2


@needs_fuse
def test_disk_full_on_the_primary_is_reported_and_recovers(mount, tmp_path, opts):
    work = str(tmp_path / "work")
    project_files(mount.path, count=10)
    deploy(mount.path, work, opts)
    write(work, "Runs/new/big.mrc", os.urandom(1 << 20))
    write(work, "project.sqlite", b"changed")
    before = files_only(snapshot(mount.backing))
    mount.fs.inject(op="write", errno="ENOSPC")
    with pytest.raises(PartialSaveError) as info:
        save(work, opts)
    assert "full" in str(info.value)
    assert files_only(snapshot(mount.backing)) == before  # existing files intact
    assert os.path.exists(os.path.join(mount.backing, S, "lock"))
    assert open(os.path.join(work, "project.sqlite"), "rb").read() == b"changed"
    mount.fs.clear_faults()
    save(work, opts)
    assert files_only(snapshot(mount.backing)) == files_only(snapshot(work))


def tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


def test_disk_full_on_the_work_volume_during_deploy(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project_files(primary, count=10)
    write(primary, "big.mrc", os.urandom(4 << 20))
    before = snapshot(primary)
    tmpfs(work, "2m")
    try:
        result = run_cli("deploy", primary, work)
        assert result.code == 1 and "full" in result.err and "Traceback" not in result.err
        assert snapshot(primary) == before  # (snapshots leave the status folder out)
        assert not os.path.exists(os.path.join(primary, S, "lock"))
    finally:
        subprocess.run(["umount", "-l", work])


@needs_fuse
def test_primary_vanishing_under_a_running_save(tmp_path):
    m = Mount(tmp_path, meta_delay_ms=1.0, io_delay_ms=2.0)
    try:
        work = str(tmp_path / "work")
        assert run_cli("deploy", m.path, work).code == 0
        for i in range(300):
            write(work, f"many/f{i:03d}", os.urandom(5000))
        proc = spaceport_proc("save", work, "-j", "2")
        deadline = time.monotonic() + 30
        while m.fs.counts()["create"] < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        m.fs.lazy_unmount()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (4, 6), err.decode()
        assert b"mount" in err or b"reachable" in err
        assert os.listdir(m.path) == []  # nothing written into the bare mount point
        assert b"Traceback" not in err
    finally:
        m.stop()


@needs_fuse
def test_primary_server_dying_exits_6_and_a_rerun_completes(tmp_path):
    m = Mount(tmp_path, meta_delay_ms=1.0, io_delay_ms=1.0)
    work = str(tmp_path / "work")
    try:
        assert run_cli("deploy", m.path, work).code == 0
        for i in range(200):
            write(work, f"many/f{i:03d}", os.urandom(5000))
        proc = spaceport_proc("save", work)
        deadline = time.monotonic() + 30
        while m.fs.counts()["create"] < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        m.fs.crash()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 6, err.decode()
        assert b"not reachable" in err and b"Traceback" not in err
    finally:
        m.stop()
    m = Mount(tmp_path)  # oneclient restarted: the same space is mounted again
    try:
        result = run_cli("save", work)
        assert result.code == 0, result.err
        assert files_only(snapshot(m.backing)) == files_only(snapshot(work))
    finally:
        m.stop()


@needs_fuse
def test_eio_on_one_file_is_retried_reported_and_retried_next_save(mount, tmp_path, opts):
    work = str(tmp_path / "work")
    project_files(mount.path, count=8)
    deploy(mount.path, work, opts)
    for i in range(10):
        write(work, f"new/f{i}", os.urandom(1000))
    mount.fs.inject(op="write", path="/new/.spaceport-tmp-*", errno="EIO", times=1)
    save(work, opts)  # a single EIO is retried away
    assert files_only(snapshot(mount.backing)) == files_only(snapshot(work))
    write(work, "new/cursed", b"keeps failing")
    write(work, "new/fine", b"fine")
    mount.fs.inject(op="rename", path="/new/cursed", errno="EIO")
    with pytest.raises(PartialSaveError) as info:
        save(work, opts)
    assert "new/cursed" in str(info.value) and "new/fine" not in str(info.value)
    assert open(os.path.join(mount.backing, "new/fine"), "rb").read() == b"fine"
    assert not os.path.exists(os.path.join(mount.backing, "new/cursed"))
    mount.fs.clear_faults()
    save(work, opts)
    assert open(os.path.join(mount.backing, "new/cursed"), "rb").read() == b"keeps failing"


@needs_fuse
def test_enotconn_that_passes_is_retried(mount, tmp_path, opts):
    work = str(tmp_path / "work")
    deploy(mount.path, work, opts)
    write(work, "a", b"1")
    mount.fs.inject(op="create", errno="ENOTCONN", times=1)
    save(work, opts)
    assert open(os.path.join(mount.backing, "a"), "rb").read() == b"1"


def test_hostile_names_and_trees(tmp_path, opts):
    primary, work, work2 = (str(tmp_path / n) for n in ("p", "w", "w2"))
    outside = tmp_path / "outside"
    write(outside, "precious", b"not ours")
    os.makedirs(primary)
    deploy(primary, work, opts)
    token = read_marker(work).token
    hostile = {
        "n" * 255: b"longest name",
        ".spaceport-tmp-deadbeef-0123456789ab": b"looks like a temporary of another run",
        "sub/.deployment_status_do_not_delete/lock": b"a status-like folder below the top",
        "sub/trash/20200101T000000Z/x": b"looks like trash",
        os.fsdecode(bytes(range(1, 47)) + bytes(range(48, 256))): b"every byte but / and NUL",
    }
    for name, data in hostile.items():
        write(work, name, data)
    deep = "/".join(["d" * 200] * 25)  # deeper than PATH_MAX: cannot be saved as one path
    os.makedirs(os.path.join(work, "deep"))
    cwd = os.getcwd()
    try:
        os.chdir(os.path.join(work, "deep"))
        for part in deep.split("/"):
            os.mkdir(part)
            os.chdir(part)
        open("leaf", "wb").write(b"deep")
    finally:
        os.chdir(cwd)
    os.symlink("loop", os.path.join(work, "loop"))
    os.symlink(str(outside), os.path.join(work, "to-outside"))
    os.symlink("../../../../../../../../etc/passwd", os.path.join(work, "escape"))
    write(work, f"{S}/lock", b"a user folder named like the status folder")
    with pytest.raises(PartialSaveError) as info:
        save(work, opts)  # the too-deep folder is named; everything else is saved
    assert "deep/" in str(info.value) and ("too long" in str(info.value))
    lock = json.load(open(os.path.join(primary, S, "lock")))
    assert lock["deployment_id"].startswith(token)  # the user's status-like folder was not saved
    shutil.rmtree(os.path.join(work, "deep"))
    shutil.rmtree(os.path.join(work, S))
    save(work, opts)
    expected = snapshot(work)
    run = run_cli("undeploy", work)
    assert run.code == 0, run.err
    assert (outside / "precious").read_bytes() == b"not ours"  # links were not followed
    real = tmp_path / "real-work"
    real.mkdir()
    os.symlink(real, work2)  # a working copy that is itself a symlink
    deploy(primary, work2, opts)
    got = snapshot(work2)
    assert {k: v for k, v in got.items() if v[0] != "link"} == \
        {k: v for k, v in expected.items() if v[0] != "link"}
    assert os.readlink(os.path.join(work2, "to-outside")) == str(outside)
    assert os.readlink(os.path.join(work2, "loop")) == "loop"


def test_damaged_lock_manifest_index_and_marker(tmp_path, opts):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project_files(primary, count=6)
    assert run_cli("deploy", primary, work).code == 0
    os.symlink("Runs/000", os.path.join(work, "link"))
    assert run_cli("save", work).code == 0
    lock_path = os.path.join(primary, S, "lock")
    good_lock = open(lock_path, "rb").read()
    # A truncated lock: the save is fenced off (4), another deploy is refused (3).
    open(lock_path, "wb").write(good_lock[:40])
    r = run_cli("save", work)
    assert r.code == 4 and "unreadable" in r.err and "Traceback" not in r.err
    r = run_cli("deploy", primary, str(tmp_path / "other"))
    assert r.code == 3 and "unreadable" in r.err
    open(lock_path, "wb").write(good_lock)
    # A damaged index: rebuilt safely by the next save, unsaved edits still saved.
    write(work, "project.sqlite", b"edited before the index broke")
    open(index_path(work), "wb").write(b"garbage" * 1000)
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert open(os.path.join(primary, "project.sqlite"), "rb").read() == \
        b"edited before the index broke"
    # The rebuilt index cannot tell whose the primary's differing version was: kept too.
    saved_before = files_only(snapshot(primary))
    [conflict] = [p for p in saved_before if b".conflict-" in p]
    assert conflict.startswith(b"project.sqlite.conflict-") and "conflict" in r.err
    del saved_before[conflict]
    assert saved_before == files_only(snapshot(work))
    # A truncated manifest: the next deploy refuses clearly and changes nothing.
    assert run_cli("undeploy", work).code == 0
    manifest = os.path.join(primary, S, "links.jsonl")
    header = open(manifest, "rb").read().split(b"\n")[0]
    open(manifest, "wb").write(header + b"\n")
    r = run_cli("deploy", primary, work)
    assert r.code == 1 and "truncated" in r.err and "Traceback" not in r.err
    assert not os.path.exists(lock_path)
    # A damaged work marker: a clear message, nothing written.
    os.makedirs(os.path.join(work, ".spaceport"), exist_ok=True)
    open(os.path.join(work, ".spaceport", "deployment.json"), "w").write("{broken")
    r = run_cli("save", work)
    assert r.code == 1 and "damaged" in r.err and "Traceback" not in r.err


@pytest.mark.slow
@needs_fuse
def test_soak_random_edits_saves_and_faults_against_a_model(tmp_path, opts):
    """A daemon-like loop: random edits, a fault between saves, and after every save the
    primary must equal the model (the working copy as saved, plus files never seen)."""
    import random

    rounds = int(os.environ.get("SPACEPORT_SOAK_ROUNDS", "15"))
    rng = random.Random(1234)
    m = Mount(tmp_path, meta_delay_ms=0.2)
    work = str(tmp_path / "work")
    faults = 0
    try:
        project_files(m.path, count=30)
        deploy(m.path, work, opts)
        foreign = {}
        for round_ in range(rounds):
            files = [os.path.join(d, f) for d, _, fs in os.walk(work) for f in fs
                     if ".spaceport" not in d]
            for _ in range(rng.randint(1, 8)):
                action = rng.random()
                if action < 0.4 or not files:
                    write(work, f"r{round_}/n{rng.randint(0, 99)}", os.urandom(rng.randint(0, 5000)))
                elif action < 0.7:
                    write(work, os.path.relpath(rng.choice(files), work), os.urandom(100))
                elif action < 0.85:
                    victim = rng.choice(files)
                    if os.path.exists(victim):
                        os.unlink(victim)
                else:
                    name = f"foreign{round_}"
                    foreign[name] = os.urandom(50)
                    write(m.backing, name, foreign[name])  # someone writes on the primary
            fault = rng.choice(["EIO", "ENOSPC", "ENOTCONN", None])
            if fault:
                op = rng.choice(["write", "create", "rename", "mkdir"])
                m.fs.inject(op=op, errno=fault, after=rng.randint(0, 5), times=rng.randint(1, 50))
                faults += 1
            try:
                save(work, opts, allow_mass_delete=True)
            except (PartialSaveError, StorageUnavailableError, OSError):
                pass  # the fault won this round; the model is checked after the retry
            m.fs.clear_faults()
            save(work, opts, allow_mass_delete=True)
            model = files_only(snapshot(work))
            model.update({os.fsencode(k): __import__("hashlib").sha256(v).hexdigest()
                          for k, v in foreign.items()})
            got = {k: v for k, v in files_only(snapshot(m.backing)).items()}
            assert got == model, f"round {round_}"
        print(f"soak: {rounds} rounds, {faults} faults injected, {len(model)} files checked")
    finally:
        m.stop()
