"""Nothing in a working copy is ever lost (issue 10), each failure with real processes.

Every test here reproduces one way a user lost work (Ctrl-C, a dropped ssh session, a
second terminal, a full disk, a file that keeps changing, a restored mtime, a deleted status
folder or marker) and checks the files afterwards, not only the exit codes. The model-based
test of the whole engine is in test_model.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import run_cli, snapshot, write
from test_faults import (Mount, assert_index_claims_only_what_landed, files_only, measure_calls,
                         needs_fuse, spaceport_proc)

from spaceport.commands.deploy import read_marker_quietly
from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR


def project(root, files=12, size=3000):
    for i in range(files):
        write(root, f"Runs/{i % 3:03d}/f{i:03d}.xmd", os.urandom(size + i),
              mtime_ns=1_600_000_000_000_000_000 + i)
    write(root, "project.sqlite", os.urandom(20_000))


def holding_work(work: str, command: str = "save") -> subprocess.Popen:
    """Another process that holds the working copy's OS lock until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from spaceport.safety.worklock import hold_work
        with hold_work({work!r}, {command!r}, wait=0):
            print("held", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- one command at a time: --wait / --no-wait, trash restore --------------------------
def test_a_second_command_waits_says_so_and_names_the_first(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    os.unlink(os.path.join(work, "Runs/001/f001.xmd"))
    assert run_cli("save", work).code == 0
    batch = os.listdir(os.path.join(primary, S, "trash"))[0]
    write(work, "Runs/000/new.txt", b"edit")
    holder = holding_work(work, "save")
    try:
        started = time.monotonic()
        res = run_cli("save", work, "--no-wait")
        assert res.code == 1 and time.monotonic() - started < 8
        assert "busy" in res.err and "'spaceport save'" in res.err
        assert f"pid {holder.pid}" in res.err
        started = time.monotonic()
        res = run_cli("save", work, "--wait", "1.5")
        assert res.code == 1 and time.monotonic() - started >= 1.5
        assert "waiting for 'spaceport save'" in res.err and "busy" in res.err
        for command in (["undeploy", work, "--no-wait"],
                        ["deploy", "--resume", primary, work, "--no-wait"]):
            res = run_cli(*command)
            assert res.code == 1 and "busy" in res.err, (command, res)
        # trash restore writes into WORK: it takes the lock too.
        res = run_cli("trash", "restore", work, batch, "--no-wait")
        assert res.code == 1 and "busy" in res.err, res
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(os.path.join(primary, "Runs/000/new.txt"))  # nothing ran
    assert not os.path.exists(os.path.join(work, "Runs/001/f001.xmd"))
    res = run_cli("trash", "restore", work, batch)
    assert res.code == 0 and os.path.exists(os.path.join(work, "Runs/001/f001.xmd")), res
    res = run_cli("save", work)
    assert res.code == 0, res.err
    assert snapshot(primary) == snapshot(work)


def test_a_waiting_command_runs_when_the_first_one_ends(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    write(work, "late.txt", b"saved after the wait")
    holder = holding_work(work, "deploy")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "spaceport", "save", work, "--wait", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None  # waiting
    finally:
        holder.kill()
        holder.wait()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "waiting for 'spaceport deploy'" in err
    assert open(os.path.join(primary, "late.txt"), "rb").read() == b"saved after the wait"


# -- signals: SIGINT, SIGTERM, SIGHUP alike, at many points, never a traceback ---------
SIGNAL_POINTS = int(os.environ.get("SPACEPORT_SIGNAL_POINTS", "6"))
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signal_after_calls(mount, proc, target, sig, timeout=90) -> bool:
    """Send ``sig`` once the mount served ``target`` more calls; False if it ended first."""
    start = mount.calls()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if mount.calls() - start >= target:
            proc.send_signal(sig)
            return True
        time.sleep(0.001)
    return False


def many_small_files(root, count=300):
    for i in range(count):
        write(root, f"Runs/{i % 7:03d}/extra/f{i:04d}.xmd", os.urandom(500 + i),
              mtime_ns=1_600_000_000_000_000_000 + i)
    write(root, "Runs/000/micrograph.mrc", os.urandom(2 << 20))


def prepare_signal_save(m, base):
    work = str(base / "work")
    many_small_files(m.path, 40)
    assert run_cli("deploy", m.path, work).code == 0
    for i in range(120):
        write(work, f"Runs/new/{i % 5}/g{i:04d}", os.urandom(400 + i))
    write(work, "project.sqlite", os.urandom(50_000))
    os.unlink(os.path.join(work, "Runs/001/extra/f0001.xmd"))
    return ["save", work]


def prepare_signal_deploy(m, base):
    many_small_files(m.path, 160)
    return ["deploy", m.path, str(base / "work")]


def prepare_signal_undeploy(m, base):
    work = prepare_signal_save(m, base)[1]
    return ["undeploy", work]


PREPARE = {"save": prepare_signal_save, "deploy": prepare_signal_deploy,
           "undeploy": prepare_signal_undeploy}


@needs_fuse
@pytest.mark.parametrize("command", ["save", "deploy", "undeploy"])
def test_signals_at_many_points_stop_cleanly_exit_130_and_resume(tmp_path, command):
    """Ctrl-C, kill and a dropped ssh session, each at points spread over the whole run
    (index transactions included): exit 130 and one line, never a traceback; nothing half
    written under a real name; the same command run again completes with nothing lost."""
    prepare = PREPARE[command]
    total = measure_calls(tmp_path, prepare)
    stopped = 0
    for k in range(1, SIGNAL_POINTS + 1):
        sig = SIGNALS[k % 3]
        base = tmp_path / f"sig{k}"
        m = Mount(base, meta_delay_ms=1.0)
        try:
            args = prepare(m, base)
            work = args[-1]
            wanted = files_only(snapshot(work)) if command != "deploy" else \
                files_only(snapshot(m.backing, skip_top={os.fsencode(S)}))
            before = files_only(snapshot(m.backing, skip_top={os.fsencode(S)}))
            proc = spaceport_proc(*args)
            sent = signal_after_calls(m, proc, total * k // (SIGNAL_POINTS + 1), sig)
            _, err = proc.communicate(timeout=120)
            err = err.decode(errors="replace")
            assert "Traceback" not in err, err
            if proc.returncode == 0:
                continue  # it finished before the signal
            assert sent and proc.returncode == 130, (sig, proc.returncode, err)
            assert "interrupted" in err and err.count("\n") <= 6, err
            stopped += 1
            if command != "deploy" or os.path.isdir(work):
                for path, digest in files_only(snapshot(m.backing)).items():
                    if b"spaceport-tmp" in path or path.startswith(os.fsencode(S)):
                        continue
                    # a whole version, the old or the new, never torn
                    assert digest in (before.get(path), wanted.get(path)), path
            if read_marker_quietly(work):
                assert_index_claims_only_what_landed(work, m.backing)
            if command == "deploy" and os.path.isdir(work):  # the dry run says the same
                preview = run_cli("deploy", "--dry-run", m.path, work)
                assert preview.code == 0, preview.out + preview.err
            again = run_cli(*args)
            assert again.code == 0, (sig, again.err)
            primary_files = files_only(snapshot(m.backing))
            if command == "undeploy":
                assert not os.path.exists(os.path.join(work, "project.sqlite"))
            else:
                assert files_only(snapshot(work)) == wanted
            assert {p: d for p, d in primary_files.items()
                    if not p.startswith(os.fsencode(S))} == wanted
            if command == "deploy":  # the rerun uploaded nothing and moved nothing away
                assert not os.path.exists(os.path.join(m.backing, S, "trash"))
        finally:
            m.stop()
    print(f"{command}: {SIGNAL_POINTS} signal points over {total} calls, {stopped} stopped it")
    assert stopped >= SIGNAL_POINTS // 2


# -- failure 1: deploy --resume killed, then run again as every message advises ---------
def edited_copy(m, base, edits=30, new=20):
    """A working copy of the mount's project, undeployed and kept, then edited offline."""
    work = str(base / "work")
    many_small_files(m.path, 40)
    assert run_cli("deploy", m.path, work).code == 0
    assert run_cli("undeploy", work, "--keep-work").code == 0
    for i in range(edits):
        write(work, f"Runs/{i % 7:03d}/extra/f{i:04d}.xmd", b"edit %d " % i + os.urandom(300))
    for i in range(new):
        write(work, f"Runs/fresh/n{i:03d}", b"new %d " % i + os.urandom(200))
    return work


def prepare_resume(m, base):
    return ["deploy", "--resume", m.path, edited_copy(m, base)]


KILLS = (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP)


@needs_fuse
def test_resume_killed_at_many_points_then_run_again_keeps_every_edit(tmp_path):
    total = measure_calls(tmp_path, prepare_resume)
    landed = 0
    for k in range(1, SIGNAL_POINTS + 1):
        base = tmp_path / f"r{k}"
        m = Mount(base, meta_delay_ms=1.0)
        try:
            args = prepare_resume(m, base)
            work = args[-1]
            edits = files_only(snapshot(work))
            proc = spaceport_proc(*args)
            landed += signal_after_calls(m, proc, total * k // (SIGNAL_POINTS + 1), KILLS[k % 3])
            _, err = proc.communicate(timeout=120)
            assert b"Traceback" not in err, err
            assert files_only(snapshot(work)) == edits  # nothing of the user's touched
            again = run_cli(*args)
            assert again.code == 0, again.err
            # Every edit and every new file, on both sides; nothing the primary held lost.
            assert files_only(snapshot(work)) == edits
            primary = files_only(snapshot(m.backing, skip_top={os.fsencode(S)}))
            assert primary == edits, sorted(set(primary) ^ set(edits))
            assert run_cli("undeploy", work).code == 0
            assert files_only(snapshot(m.backing, skip_top={os.fsencode(S)})) == edits
        finally:
            m.stop()
    print(f"deploy --resume: {SIGNAL_POINTS} kill points over {total} calls, {landed} landed")
    assert landed >= SIGNAL_POINTS // 2


def test_a_plain_deploy_after_an_interrupted_resume_refuses_and_keeps_the_edits(tmp_path):
    """A save that was interrupted before it uploaded the edits: the plain deploy (no
    --resume) must refuse, not copy the primary's versions over them."""
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    assert run_cli("undeploy", work, "--keep-work").code == 0
    write(work, "Runs/000/f000.xmd", b"unsaved edit")
    write(work, "brand-new.txt", b"unsaved new file")
    for command in (["deploy", primary, work], ["deploy", primary, work]):
        res = run_cli(*command)
        assert res.code == 5 and "--resume" in res.err, res
    assert open(os.path.join(work, "Runs/000/f000.xmd"), "rb").read() == b"unsaved edit"
    assert open(os.path.join(work, "brand-new.txt"), "rb").read() == b"unsaved new file"
    assert run_cli("deploy", "--resume", primary, work).code == 0
    assert open(os.path.join(primary, "Runs/000/f000.xmd"), "rb").read() == b"unsaved edit"
    assert snapshot(primary) == snapshot(work)


# -- failure 3: two saves of one working copy at once -----------------------------------
def test_two_saves_at_once_never_lose_or_misrecord_a_file(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary, files=30)
    assert run_cli("deploy", primary, work).code == 0
    cmd = [sys.executable, "-m", "spaceport", "save", work, "--jobs", "4"]
    rounds = int(os.environ.get("SPACEPORT_RACE_ROUNDS", "12"))
    for r in range(rounds):
        for i in range(r, r + 8):
            write(work, f"Runs/{i % 3:03d}/new-{r}-{i}.bin", os.urandom(20_000 + i))
        write(work, f"Runs/{r % 3:03d}/f{r % 12:03d}.xmd", os.urandom(4000))
        victims = sorted(p for p in files_only(snapshot(work)) if p.startswith(b"Runs/"))
        os.unlink(os.path.join(os.fsencode(work), victims[r % len(victims)]))
        if r % 3 == 2:  # the second one gives up at once: it names the first
            procs = [subprocess.Popen(cmd + extra, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
                     for extra in ([], ["--no-wait"])]
        else:
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        for code, err in results:
            assert code == 0 or (code == 1 and "busy" in err and "'spaceport save'" in err), err
            assert "Traceback" not in err and "No such file" not in err, err
        assert results[0][0] == 0 or results[1][0] == 0
        assert_index_claims_only_what_landed(work, primary)
        # Whatever ran, a save afterwards finds the primary complete.
        assert run_cli("save", work).code == 0
        assert files_only(snapshot(primary)) == files_only(snapshot(work)), f"round {r}"
        assert not [f for _, _, fs in os.walk(primary) for f in fs if "spaceport-tmp" in f]
        # Nothing the index calls saved was moved to the trash by the other save.
        trash = os.path.join(primary, S, "trash")
        for root, _, names in os.walk(trash):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), trash).split("/", 1)[1]
                assert not os.path.exists(os.path.join(work, rel)) or \
                    os.path.exists(os.path.join(primary, rel)), rel


# -- failure 4: undeploy while a file keeps changing ------------------------------------
WRITER = textwrap.dedent("""
    import os, sys, time
    path, block = sys.argv[1], 256 * 1024
    version = 0
    open(path + ".ready", "w").close()
    while True:  # rewrites the file in place, a block at a time, forever
        version += 1
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            for _ in range(8):
                f.write(bytes([version % 251]) * block)
                f.flush()
                time.sleep(0.002)
""")


def start_writer(path: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path])
    deadline = time.monotonic() + 20
    while not os.path.exists(path + ".ready") and time.monotonic() < deadline:
        time.sleep(0.01)
    os.unlink(path + ".ready")
    return proc


def whole_version(path: str) -> bool:
    """The file is one state the writer's file was in at some instant: version v in its
    first blocks and v-1 in the rest (it rewrites in place, front to back). A copy torn by
    changes during it mixes versions any other way, or is cut short."""
    data = open(path, "rb").read()
    block = 256 * 1024
    if len(data) != 8 * block:
        return False
    versions = []
    for i in range(8):
        chunk = data[i * block:(i + 1) * block]
        if chunk != chunk[:1] * block:
            return False
        versions.append(chunk[0])
    drops = [(a - b) % 251 for a, b in zip(versions, versions[1:])]
    return all(d == 0 for d in drops) or (sorted(drops)[-1] == 1 and drops.count(1) == 1
                                          and drops.count(0) == 6)


def test_undeploy_while_a_file_keeps_changing_keeps_lock_and_work(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    write(primary, "Runs/live.mrc", bytes([0]) * (8 * 256 * 1024))
    assert run_cli("deploy", primary, work).code == 0
    writer = start_writer(os.path.join(work, "Runs/live.mrc"))
    try:
        res = run_cli("undeploy", work)
        assert res.code == 1, res
        assert "kept changing" in res.err and "Runs/live.mrc" in res.err
        assert "stop the application, then run undeploy again" in res.err
        assert "Traceback" not in res.err
        assert os.path.exists(os.path.join(primary, S, "lock"))  # the lock is kept
        assert os.path.isdir(os.path.join(work, "Runs"))  # so is the working copy
        assert whole_version(os.path.join(primary, "Runs/live.mrc"))  # never torn
    finally:
        writer.kill()
        writer.wait()
    final = open(os.path.join(work, "Runs/live.mrc"), "rb").read()
    res = run_cli("undeploy", work)
    assert res.code == 0, res.err
    assert open(os.path.join(primary, "Runs/live.mrc"), "rb").read() == final
    assert not os.path.exists(os.path.join(work, "Runs"))
    assert not os.path.exists(os.path.join(primary, S, "lock"))


def test_saves_beside_a_writer_never_put_a_torn_file_on_the_primary(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    writer = start_writer(os.path.join(work, "live.mrc"))
    outcomes = set()
    try:
        for _ in range(6):
            res = run_cli("save", work)
            outcomes.add(res.code)
            assert res.code in (0, 1) and "Traceback" not in res.err, res
            if res.code == 1:
                assert "kept changing" in res.err and "live.mrc" in res.err
            there = os.path.join(primary, "live.mrc")
            assert not os.path.exists(there) or whole_version(there)
    finally:
        writer.kill()
        writer.wait()
    assert 1 in outcomes  # the writer really kept it changing
    assert run_cli("save", work).code == 0
    assert whole_version(os.path.join(primary, "live.mrc"))


def test_a_daemons_final_save_beside_a_writer_keeps_lock_and_work(tmp_path, daemons):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    d = daemons(primary, work, "--final-save-deadline", "4")
    d.wait_phase("running")
    writer = start_writer(os.path.join(work, "live.mrc"))
    try:
        d.signal(signal.SIGTERM)
        code = d.wait_exit(60)
        assert code == 1, d.log()
        assert "stop the application, then run undeploy again" in d.log()
        assert os.path.exists(os.path.join(primary, S, "lock"))
        assert os.path.exists(os.path.join(work, "live.mrc"))
        there = os.path.join(primary, "live.mrc")
        assert not os.path.exists(there) or whole_version(there)
    finally:
        writer.kill()
        writer.wait()
    res = run_cli("undeploy", work)
    assert res.code == 0, res.err
    assert whole_version(os.path.join(primary, "live.mrc"))


# -- failure 5: same size, mtime put back ------------------------------------------------
def test_a_rewrite_with_the_same_size_and_the_old_mtime_is_saved(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    path = os.path.join(work, "Runs/001/f001.xmd")
    old = os.lstat(path)
    new = os.urandom(old.st_size)
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(new)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # touch -r
    st = os.lstat(path)
    assert (st.st_size, st.st_mtime_ns, st.st_ino) == (old.st_size, old.st_mtime_ns, old.st_ino)
    res = run_cli("status", work)
    assert "f001.xmd" in res.out or "1 file" in res.out, res
    res = run_cli("undeploy", work)
    assert res.code == 0, res.err
    assert open(os.path.join(primary, "Runs/001/f001.xmd"), "rb").read() == new


def test_an_index_of_format_1_is_migrated_never_misread(tmp_path, opts):
    import sqlite3

    from spaceport.commands.deploy import deploy
    from spaceport.commands.save import save
    from spaceport.commands.undeploy import undeploy
    from spaceport.engine.index import INDEX_FORMAT, Index
    from spaceport.formats.marker import index_path

    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    deploy(primary, work, opts)
    # Make it what spaceport 0.1 wrote: no ctime column, format 1.
    db = sqlite3.connect(index_path(work))
    db.executescript("""
        CREATE TABLE old AS SELECT path, kind, size, mtime_ns, mode, ino, target, psize,
            pmtime_ns FROM entries;
        DROP TABLE entries;
        CREATE TABLE entries (path BLOB PRIMARY KEY, kind INTEGER NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,
            ino INTEGER NOT NULL, target BLOB, psize INTEGER, pmtime_ns INTEGER) WITHOUT ROWID;
        INSERT INTO entries SELECT * FROM old; DROP TABLE old;
        UPDATE meta SET value='1' WHERE key='index_format';
    """)
    db.commit()
    db.close()
    index = Index(index_path(work))
    assert index.get_meta("index_format") == str(INDEX_FORMAT)
    assert index.get("project.sqlite").entry.ctime_ns is None  # unknown, proves nothing
    index.close()
    report = save(work, opts)
    assert report.uploaded == 0  # what format 1 would have decided: nothing changed
    index = Index(index_path(work))
    assert index.get("project.sqlite").entry.ctime_ns == \
        os.lstat(os.path.join(work, "project.sqlite")).st_ctime_ns
    index.close()
    # From now on a same-size rewrite with the old mtime is seen.
    path = os.path.join(work, "project.sqlite")
    old = os.lstat(path)
    with open(path, "r+b") as f:
        f.write(b"Z" * 100)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    undeploy(work, opts)
    assert open(os.path.join(primary, "project.sqlite"), "rb").read(100) == b"Z" * 100


# -- failure 6: the status folder deleted, then deploy --resume -------------------------
def test_status_folder_deleted_then_resume_keeps_every_link(tmp_path):
    import shutil

    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    links = {"rel": "Runs/000", "abs": os.path.join(work, "Runs/001/f001.xmd"),
             "Runs/002/out": "/elsewhere/data", "dangling": "no/such/thing"}
    for name, target in links.items():
        os.symlink(target, os.path.join(work, name))
    assert run_cli("save", work).code == 0
    shutil.rmtree(os.path.join(primary, S))  # someone "cleans up" the hidden folder
    res = run_cli("save", work)
    assert res.code == 4, res  # the lock went with it: nothing is written
    res = run_cli("deploy", "--resume", primary, work)
    assert res.code == 0, res.err
    for name, target in links.items():
        assert os.readlink(os.path.join(work, name)) == target, name
    assert run_cli("undeploy", work).code == 0  # the final save writes the manifest again
    manifest = open(os.path.join(primary, S, "links.jsonl"), "rb").read()
    assert manifest.count(b"\n") == 1 + len(links), manifest
    again = str(tmp_path / "w2")
    assert run_cli("deploy", primary, again).code == 0
    for name, target in links.items():
        expected = target.replace(work, again) if target.startswith(work) else target
        assert os.readlink(os.path.join(again, name)) == expected, name


def test_a_missing_manifest_never_deletes_links(tmp_path):
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    os.symlink("Runs/000", os.path.join(work, "link"))
    assert run_cli("undeploy", work, "--keep-work").code == 0
    os.unlink(os.path.join(primary, S, "links.jsonl"))
    assert run_cli("deploy", primary, work).code == 0
    assert os.readlink(os.path.join(work, "link")) == "Runs/000"
    assert run_cli("save", work).code == 0
    assert b'"link"' in open(os.path.join(primary, S, "links.jsonl"), "rb").read()


# -- failure 7: the work marker deleted ------------------------------------------------
def test_a_lost_marker_is_reattached_by_resume_and_nothing_is_lost(tmp_path):
    import shutil

    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    os.symlink("Runs/000", os.path.join(work, "link"))
    assert run_cli("save", work).code == 0
    write(work, "Runs/000/f000.xmd", b"edited in work")
    write(work, "only-in-work.txt", b"new in work")
    write(primary, "Runs/001/f001.xmd", b"edited on the primary meanwhile")
    write(work, "Runs/001/f001.xmd", b"edited in work as well")
    shutil.rmtree(os.path.join(work, ".spaceport"))
    for command in (["save", work], ["deploy", primary, work]):
        res = run_cli(*command)
        assert res.code == 5, res
    assert "deploy --resume" in res.err and "re-attaches" in res.err
    # Another folder, or no lock naming this one: refused, saying why.
    other = str(tmp_path / "w-copy")
    shutil.copytree(work, other, symlinks=True)
    res = run_cli("deploy", "--resume", primary, other)
    assert res.code == 5 and "does not name this folder" in res.err, res
    res = run_cli("deploy", "--resume", primary, work)
    assert res.code == 0, res.err
    assert "conflict" in res.err and "Runs/001/f001.xmd" in res.err
    assert open(os.path.join(primary, "Runs/000/f000.xmd"), "rb").read() == b"edited in work"
    assert open(os.path.join(primary, "only-in-work.txt"), "rb").read() == b"new in work"
    assert open(os.path.join(primary, "Runs/001/f001.xmd"), "rb").read() == \
        b"edited in work as well"
    [conflict] = [n for n in os.listdir(os.path.join(primary, "Runs/001")) if "conflict" in n]
    assert open(os.path.join(primary, "Runs/001", conflict), "rb").read() == \
        b"edited on the primary meanwhile"
    assert os.readlink(os.path.join(work, "link")) == "Runs/000"
    assert files_only(snapshot(primary)) == files_only(snapshot(work))
    assert run_cli("undeploy", work).code == 0
    assert b'"link"' in open(os.path.join(primary, S, "links.jsonl"), "rb").read()
    assert not os.path.exists(os.path.join(primary, S, "lock"))


# -- failure 8: a full working disk during deploy ---------------------------------------
def tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


def test_a_stage_in_that_cannot_fit_is_refused_before_copying(tmp_path):
    primary, vol = str(tmp_path / "p"), str(tmp_path / "vol")
    work = os.path.join(vol, "work")
    for i in range(6):
        write(primary, f"big{i}.bin", os.urandom(1 << 20))
    tmpfs(vol, "4m")
    try:
        res = run_cli("deploy", primary, work)
        assert res.code == 1 and "too small" in res.err and "MiB" in res.err, res
        assert "Traceback" not in res.err and res.err.count("\n") <= 4, res.err
        assert not os.path.exists(os.path.join(primary, S, "lock"))
        assert [f for _, _, fs in os.walk(vol) for f in fs if f.startswith("big")] == []
        subprocess.run(["mount", "-o", "remount,size=16m", vol], check=True)
        assert run_cli("deploy", primary, work).code == 0
        assert snapshot(primary) == snapshot(work)
    finally:
        subprocess.run(["umount", "-l", vol])


def fill_up(path: str, leave: int) -> None:
    """Another tenant of the volume takes all the room but ``leave`` bytes."""
    with open(path, "wb", buffering=0) as f:  # unbuffered: no bytes left to flush at close
        chunk = b"\0" * 65536
        try:
            while f.write(chunk):
                pass
        except OSError:
            pass
        size = f.seek(0, os.SEEK_END)
        f.truncate(max(0, size - leave))


def test_a_disk_that_fills_during_the_stage_in_stops_with_one_line_and_resumes(tmp_path):
    """Something else fills the volume while the deploy copies: the first ENOSPC stops it
    with one summary line (no flood, no traceback), whether a copy, the state index or the
    marker hit it, and the same command continues once there is room."""
    primary, vol = str(tmp_path / "p"), str(tmp_path / "vol")
    for i in range(300):
        write(primary, f"Runs/{i % 5}/f{i:03d}", os.urandom(6000))
    tmpfs(vol, "6m")
    seen = {}
    try:
        for n, leave in enumerate((0, 16 << 10, 300 << 10, 600 << 10)):
            work = os.path.join(vol, f"work{n}")
            filler = os.path.join(vol, "filler")
            proc = subprocess.Popen([sys.executable, "-m", "spaceport", "deploy", primary,
                                     work, "--jobs", "2"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(work, "Runs")) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.001)
            fill_up(filler, leave)
            _, err = proc.communicate(timeout=120)
            assert "Traceback" not in err, err
            if proc.returncode:
                assert proc.returncode == 1 and "the working volume is full" in err, err
                assert err.count("\n") <= 3, err  # one summary, not a line per file
                seen[leave] = err
            os.unlink(filler)
            res = run_cli("deploy", primary, work)
            assert res.code == 0, res.err  # never taken for unsaved changes
            assert snapshot(primary) == snapshot(work)
            assert run_cli("undeploy", work).code == 0
    finally:
        subprocess.run(["umount", "-l", vol])
    print("\n".join(seen.values()))
    assert any("were copied" in err for err in seen.values())  # the copies hit it


# -- an undeploy killed while it removes the working copy -------------------------------
def wait_for_phase(work: str, phase: str, proc, timeout=60) -> bool:
    path = os.path.join(work, ".spaceport", "deployment.json")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if f'"{phase}"' in open(path).read():
                return True
        except OSError:
            pass
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("then", ["undeploy", "deploy"])
def test_an_undeploy_killed_while_removing_is_finished_by_a_rerun(tmp_path, then):
    """What an interrupted removal took away is never taken for the user's deletions: the
    rerun deletes nothing on the primary (no trash), and a deploy instead brings it back."""
    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    for i in range(1500):
        write(primary, f"Runs/{i % 30:03d}/f{i:04d}", b"%d" % i)
    assert run_cli("deploy", primary, work).code == 0
    before = files_only(snapshot(primary))
    landed = partial = 0
    for delay in (0.0, 0.002, 0.01):
        proc = subprocess.Popen([sys.executable, "-m", "spaceport", "undeploy", work],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        landed += wait_for_phase(work, "removing", proc)
        first = os.path.join(work, "Runs/000/f0000")  # removed first (deepest, then by name)
        while os.path.exists(first) and proc.poll() is None:
            time.sleep(0.0002)
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        left = len(files_only(snapshot(work)))
        partial += 0 < left < len(before)
        if not os.path.exists(os.path.join(work, ".spaceport", "deployment.json")):
            assert run_cli("deploy", primary, work).code == 0  # it finished: again
            continue
        res = run_cli(then, *([primary] if then == "deploy" else []), work)
        assert res.code == 0, res.err
        assert files_only(snapshot(primary)) == before
        assert not os.path.exists(os.path.join(primary, S, "trash"))
        if then == "undeploy":
            assert not os.path.exists(os.path.join(work, "Runs"))
            assert run_cli("deploy", primary, work).code == 0
        assert files_only(snapshot(work)) == before
    assert landed >= 2 and partial >= 1  # killed in the middle of the removal


def test_the_command_line_called_as_a_library_gives_the_signal_handlers_back(tmp_path):
    from spaceport.cli import main

    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    assert main(["save", str(tmp_path)]) == 5  # not a working copy: refused
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before


# -- hard links (issue 18) --------------------------------------------------------------------
def hard_links(work: str) -> None:
    """hard/a and hard/b name one file; three names of another across folders."""
    write(work, "hard/a", b"shared content")
    os.link(os.path.join(work, "hard/a"), os.path.join(work, "hard/b"))
    write(work, "x/c", os.urandom(3000))
    os.makedirs(os.path.join(work, "y"))
    os.link(os.path.join(work, "x/c"), os.path.join(work, "y/d"))
    os.link(os.path.join(work, "x/c"), os.path.join(work, "e"))


def test_hard_links_are_saved_as_files_and_undeploy_at_the_first_try(tmp_path):
    m = Mount(tmp_path, meta_delay_ms=0.5)
    try:
        primary, work, again = m.path + "/p", str(tmp_path / "w"), str(tmp_path / "again")
        os.mkdir(primary)
        assert run_cli("deploy", primary, work).code == 0
        hard_links(work)
        assert run_cli("save", work).code == 0
        as_saved = snapshot(work, mtimes=False)
        for name in ("hard/a", "hard/b", "x/c", "y/d", "e"):  # separate files there
            assert os.stat(os.path.join(m.backing, "p", name)).st_nlink == 1
        r = run_cli("undeploy", work)
        assert r.code == 0, r.err
        assert "changed" not in r.err and sorted(os.listdir(work)) == [".spaceport"]
        assert run_cli("deploy", primary, again).code == 0
        assert snapshot(again, mtimes=False) == as_saved  # both names, the same content
    finally:
        m.stop()


def test_the_guard_still_refuses_a_hard_link_changed_after_its_other_name_went(tmp_path):
    """The ctime the removal of one name left is the only change allowed to the other: a
    rewrite through it with the size and mtime put back is kept, as for any file."""
    from spaceport.engine.scan import scan_tree
    from spaceport.safety.invariant import WorkGuard
    from spaceport.store import WORK_CAPABILITIES
    from spaceport.store.posix import PosixStore

    root = str(tmp_path / "w")
    write(root, "a", b"one inode")
    os.link(os.path.join(root, "a"), os.path.join(root, "b"))
    write(root, "c", b"another")
    os.link(os.path.join(root, "c"), os.path.join(root, "d"))
    with PosixStore(root, WORK_CAPABILITIES, temp_token="t0k3n") as store:
        entries = scan_tree(store).entries
        guard = WorkGuard(store, "t0k3n")
        assert guard.remove("a", entries["a"]) and guard.remove("b", entries["b"])
        assert guard.remove("c", entries["c"])
        time.sleep(0.05)  # past the clock tick that stamped the removal
        st = os.stat(os.path.join(root, "d"))
        with open(os.path.join(root, "d"), "r+b") as f:
            f.write(b"ANOTHER")
        os.utime(os.path.join(root, "d"), ns=(st.st_atime_ns, st.st_mtime_ns))
        assert not guard.remove("d", entries["d"])
        assert open(os.path.join(root, "d"), "rb").read() == b"ANOTHER"
        assert guard.kept == [("d", "it changed since it was saved")]
