"""A model-based test of the engine (issue 10).

Hypothesis drives the real deploy, save and undeploy, in this process and as real
``spaceport`` processes killed at random moments (SIGKILL, SIGTERM, SIGINT, SIGHUP), through
random edits, renames, deletes, same-size rewrites that put the old mtime back, hard links
(a file with several names), sparse files (holes between blocks of data), direct edits and
deletions on the primary, two commands on one working copy at once, ``.spaceport/busy``
deleted under a command that holds the copy (frozen with SIGSTOP there; nothing else may
take the copy meanwhile, checked in /proc/locks), and a folder put where the status folder's
heartbeat, journal or manifest goes (issue 18). After every step it checks the three
invariants of the issue against the files themselves:

1. no version that was ever in the working copy is lost: it is still there, or on the
   primary, or in the trash or a conflict copy. (A version the user replaced or deleted in
   the working copy is theirs to lose; one overwritten directly on the primary was lost by
   whoever did that, not by spaceport.)
2. the primary never holds a torn file under a real name: every file on it is one whole
   version some step wrote;
3. the index never claims a file is saved when it is not: a row that proves the working
   copy's file, and whose record of the primary still holds, has the same bytes there.

And a fourth (issue 18): a sparse version stays sparse wherever it is, in the working
copy, on the primary or in its trash (it takes fewer blocks than its size).

At the end of every example a deploy --resume and an undeploy must both succeed (what was
killed is resumable; a folder left in the status folder is first moved away, as its message
says; a file with several names is removed at the first try), and then every version owed
is on the primary or in its trash.

Every version is unique (it starts with its own number), so "found somewhere" is a search
by content. CI runs SPACEPORT_MODEL_EXAMPLES examples of up to SPACEPORT_MODEL_STEPS steps
(defaults 24 and 14, under a minute on two busy cores); the soak,
``SPACEPORT_MODEL_SOAK=300 pytest -m slow tests/test_model.py``, runs that many.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from spaceport.commands.deploy import deploy
from spaceport.commands.options import Options
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.engine.index import Index, proven
from spaceport.engine.scan import Kind
from spaceport.errors import SpaceportError
from spaceport.formats.marker import index_path, read_marker
from spaceport.safety.invariant import entry_at
from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.safety.worklock import WorkBusyError, busy_path, hold_work, read_holder
from spaceport.store import WORK_CAPABILITIES, PosixStore
from spaceport.store.retry import RetryPolicy

S = DEFAULT_STATUS_DIR
PATHS = ["a.xmd", "b.mrc", "Runs/001/c.star", "Runs/001/logs/run.log", "Runs/002/d.mrc",
         "project.sqlite", "Runs/002/e"]
COMMANDS = ["save", "deploy", "deploy --resume", "undeploy", "undeploy --keep-work"]
KILLS = [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
EXIT_OK = {0, 1, 3, 4, 5, 130}
SEEN: Counter = Counter()  # what the steps ran into, printed at the end (pytest -s)


def event(what: str) -> None:
    SEEN[what] += 1


def files_under(root: str) -> dict[str, bytes]:
    """Every regular file below ``root`` (relative path -> bytes), our temporaries left out."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if ".spaceport-tmp-" in name or os.path.islink(path):
                continue
            rel = os.path.relpath(path, root)
            if rel.startswith(".spaceport/"):
                continue
            with open(path, "rb") as f:
                out[rel] = f.read()
    return out


def flock_holders() -> set[int]:
    """Processes that hold a flock (any file), from /proc/locks."""
    with open("/proc/locks") as f:
        return {int(parts[4]) for parts in (line.split() for line in f)
                if len(parts) > 4 and parts[1] == "FLOCK" and parts[4].isdigit()}


class EngineModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.base = tempfile.mkdtemp(prefix="spaceport-model-")
        self.primary = os.path.join(self.base, "primary")
        self.work = os.path.join(self.base, "work")
        self.counter = 0
        self.checked = False  # Hypothesis checks the invariants once before the first step
        event("example")
        self.versions: set[bytes] = set()  # every content any step ever wrote
        self.sparse: set[bytes] = set()  # of those, the ones written with holes
        self.owed: set[bytes] = set()  # versions spaceport took out of the working copy
        self.opts = Options(jobs=2, retry=RetryPolicy(attempts=2, initial_delay=0.01,
                                                      max_delay=0.02), busy_wait=5.0)
        os.makedirs(self.primary)
        for i in range(60):  # a project that was there before
            self._write(self.primary, f"Runs/00{i % 3}/extra/f{i:02d}", 500 + 37 * i)
        self._write(self.primary, "Runs/000/big.mrc", 600_000)
        deploy(self.primary, self.work, self.opts)

    # -- versions ----------------------------------------------------------------------
    def _new(self, size: int) -> bytes:
        self.counter += 1
        head = b"v%06d:" % self.counter
        data = head + random.Random(self.counter).randbytes(max(0, size - len(head)))
        self.versions.add(data)
        return data

    def _write(self, root: str, rel: str, size: int) -> None:
        path = os.path.join(root, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self._new(size))

    def deployed(self) -> bool:
        return read_marker(self.work) is not None if os.path.isdir(self.work) else False

    def work_files(self) -> list[str]:
        return sorted(files_under(self.work)) if os.path.isdir(self.work) else []

    # -- what spaceport does is accounted around each of its commands -------------------
    def _spaceport(self, run) -> None:
        before = set(files_under(self.work).values()) if os.path.isdir(self.work) else set()
        try:
            run()
        finally:
            after = set(files_under(self.work).values()) if os.path.isdir(self.work) else set()
            self.owed |= before - after
            self.owed -= after

    def _process(self, command: str, *, kill=None, delay: float = 0.0) -> None:
        args = command.split()
        args += [self.primary, self.work] if args[0] == "deploy" else [self.work]
        proc = subprocess.Popen([sys.executable, "-m", "spaceport", *args, "--jobs", "2",
                                 "--retries", "2", "--retry-delay", "0.01", "--wait", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if kill is not None:
            time.sleep(delay)
            proc.send_signal(kill)
        _, err = proc.communicate(timeout=120)
        err = err.decode(errors="replace")
        event(f"{command} with {signal.Signals(kill).name if kill else 'no signal'}: exit "
              f"{proc.returncode}")
        if "Traceback" in err and "/spaceport/" not in err:
            return  # it landed while the interpreter started, before any code of ours ran
        assert "Traceback" not in err, err
        if kill is not None and proc.returncode == -kill:
            return  # the signal's own action, before any handler of ours was in place
        assert proc.returncode in EXIT_OK, (command, kill, proc.returncode, err)

    def _api(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
            event(f"{fn.__name__}: done")
        except SpaceportError as exc:
            # Refused, locked, not deployed...: the invariants say if that was right.
            event(f"{fn.__name__}: {type(exc).__name__}")
            if os.environ.get("SPACEPORT_MODEL_VERBOSE"):
                print(f"{fn.__name__}: {exc}")

    # -- the user, in the working copy ---------------------------------------------------
    # No preconditions and no draws that depend on the files: real processes and timings
    # make the state differ from one run of the same steps to the next, and hypothesis
    # needs the same steps to draw the same data. A step that does not apply does nothing.
    def pick(self, n: int) -> str | None:
        files = self.work_files()
        return files[n % len(files)] if files else None

    @rule(path=st.sampled_from(PATHS), size=st.integers(0, 70_000))
    def edit(self, path, size):
        if self.deployed():
            self._write(self.work, path, size)

    @rule(count=st.integers(5, 40))
    def many_new_files(self, count):
        if self.deployed():
            for i in range(count):
                self._write(self.work, f"Runs/bulk{self.counter}/n{i:02d}", 300 + i)

    @rule(n=st.integers(0, 1000))
    def same_size_rewrite_with_the_old_mtime(self, n):
        rel = self.pick(n)
        if rel is None:
            return
        path = os.path.join(self.work, rel)
        old = os.lstat(path)
        with open(path, "r+b") as f:  # in place: the same inode, size and (below) mtime
            f.write(self._new(old.st_size)[:old.st_size])
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))

    @rule(n=st.integers(0, 1000), to=st.sampled_from(PATHS))
    def rename(self, n, to):
        rel = self.pick(n)
        dst = os.path.join(self.work, to)
        if rel is None or os.path.isdir(dst):
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(os.path.join(self.work, rel), dst)

    @rule(n=st.integers(0, 1000), to=st.sampled_from(PATHS + ["Runs/003/linked"]))
    def hard_link(self, n, to):
        """Another name for a file: saved as a file of its own, removed without being
        called changed."""
        rel = self.pick(n)
        dst = os.path.join(self.work, to)
        if rel is None or os.path.lexists(dst) or rel == to:
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(os.path.join(self.work, rel), dst)
        event("hard link made")

    @rule(path=st.sampled_from(PATHS + ["Runs/002/disk.img"]), mib=st.integers(1, 3),
          at=st.integers(0, 100))
    def sparse_file(self, path, mib, at):
        """A file of ``mib`` MiB holding a unique head and one block of data ``at`` % of
        the way in; the rest holes."""
        target = os.path.join(self.work, path)
        if not self.deployed() or os.path.isdir(target):
            return
        size = mib << 20
        head, block = self._new(64), random.Random(self.counter).randbytes(4096)
        offset = max(4096, min(size - 4096, size * at // 100 // 4096 * 4096))
        data = bytearray(size)
        data[:64], data[offset:offset + 4096] = head, block
        self.versions.add(bytes(data))
        self.sparse.add(bytes(data))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):
            os.unlink(target)  # not through another name of it
        with open(target, "wb") as f:
            f.truncate(size)
            f.write(head)
            f.seek(offset)
            f.write(block)
        event("sparse file made")

    @rule(n=st.integers(0, 1000))
    def delete(self, n):
        rel = self.pick(n)
        if rel is not None:
            os.unlink(os.path.join(self.work, rel))

    # -- someone else, directly on the primary -------------------------------------------
    @rule(path=st.sampled_from(PATHS + ["Runs/000/extra/f00"]), size=st.integers(1, 5000),
          remove=st.booleans())
    def direct_edit_on_the_primary(self, path, size, remove):
        target = os.path.join(self.primary, path)
        if os.path.isdir(target):
            return
        if os.path.exists(target):
            with open(target, "rb") as f:
                self.owed.discard(f.read())  # lost by whoever did this, not by spaceport
            if remove:
                os.unlink(target)
                return
        self._write(self.primary, path, size)

    # -- spaceport ---------------------------------------------------------------------
    @rule(allow=st.booleans())
    def save(self, allow):
        self._spaceport(lambda: self._api(save, self.work, self.opts, allow_mass_delete=allow))

    @rule(resume=st.booleans(), allow=st.booleans())
    def deploy(self, resume, allow):
        self._spaceport(lambda: self._api(deploy, self.primary, self.work, self.opts,
                                          resume=resume, allow_mass_delete=allow))

    @rule(keep=st.booleans(), allow=st.booleans())
    def undeploy(self, keep, allow):
        self._spaceport(lambda: self._api(undeploy, self.work, self.opts, keep_work=keep,
                                          allow_mass_delete=allow))

    @rule(command=st.sampled_from(COMMANDS), kill=st.sampled_from(KILLS),
          delay=st.floats(0.1, 0.6))
    def killed(self, command, kill, delay):
        self._spaceport(lambda: self._process(command, kill=kill, delay=delay))

    def _start(self, command: str, *extra: str) -> subprocess.Popen:
        args = command.split()
        args += [self.primary, self.work] if args[0] == "deploy" else [self.work]
        return subprocess.Popen([sys.executable, "-m", "spaceport", *args, "--jobs", "2",
                                 "--retries", "2", "--retry-delay", "0.01", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @rule(first=st.sampled_from(COMMANDS), second=st.sampled_from(["save", "deploy --resume"]),
          delay=st.floats(0.0, 0.05))
    def busy_deleted_under_a_command(self, first, second, delay):
        """``.spaceport/busy`` deleted while a command holds the working copy (issue 18):
        nothing may take the copy while that command holds any lock of it (checked in
        /proc/locks), and a second command after it must find everything in order. The
        first is frozen (SIGSTOP) while busy is deleted and the copy probed: a command that
        stalls in the middle is the case that matters, and the model's commands are quick."""
        def run():
            a = self._start(first, "--wait", "5")
            deadline = time.monotonic() + 15
            while a.poll() is None and read_holder(self.work).get("pid") != a.pid \
                    and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(delay)
            a.send_signal(signal.SIGSTOP)
            try:
                self._probe_after_deleting_busy(first, a)
            finally:
                a.send_signal(signal.SIGCONT)
            b = self._start(second, "--wait", "10")
            for command, proc in ((first, a), (second, b)):
                _, err = proc.communicate(timeout=120)
                err = err.decode(errors="replace")
                assert "Traceback" not in err and "Stale file handle" not in err, err
                assert proc.returncode in EXIT_OK, (command, proc.returncode, err)
            event(f"{second} after a busy file was deleted: exit {b.returncode}")
        self._spaceport(run)

    def _probe_after_deleting_busy(self, first: str, a: subprocess.Popen) -> None:
        try:
            os.unlink(busy_path(self.work))
        except FileNotFoundError:
            pass
        try:
            with hold_work(self.work, "probe", wait=0):
                # Ours: the first holds no lock of any kind any more (with busy alone it
                # would still hold the deleted busy file's, believing it had the copy).
                assert a.pid not in flock_holders(), f"{first} and this probe at once"
                event(f"busy deleted under {first}: it had finished")
        except WorkBusyError:
            event(f"busy deleted under {first}: the copy stayed its own")

    @rule(which=st.sampled_from(["heartbeat", "journal.jsonl", "links.jsonl"]),
          clear=st.booleans())
    def status_file_in_the_way(self, which, clear):
        """A folder where spaceport writes a file of the status folder (or, ``clear``, the
        documented way out: moved away). Nothing may be lost, whichever way it goes."""
        status = os.path.join(self.primary, S)
        marker = read_marker(self.work) if self.deployed() else None
        name = f"heartbeat.{marker.deployment_id}" if which == "heartbeat" and marker else which
        path = os.path.join(status, name)
        if clear:
            if os.path.isdir(path):
                shutil.rmtree(path)
                event(f"{which} in the way: cleared")
            return
        if which == "heartbeat" and marker is None or not os.path.isdir(status):
            return
        if os.path.isfile(path):
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        event(f"{which} in the way")

    @rule(first=st.sampled_from(COMMANDS), second=st.sampled_from(["save", "deploy --resume"]))
    def two_at_once(self, first, second):
        def both():
            a = subprocess.Popen([sys.executable, "-c", "pass"])  # warm the page cache
            a.wait()
            procs = []
            for command in (first, second):
                args = command.split()
                args += [self.primary, self.work] if args[0] == "deploy" else [self.work]
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "spaceport", *args, "--jobs", "2", "--wait", "10"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for command, proc in zip((first, second), procs):
                _, err = proc.communicate(timeout=120)
                event(f"{command}, beside another: exit {proc.returncode}")
                assert "Traceback" not in err.decode(errors="replace"), err
                assert proc.returncode in EXIT_OK, (first, second, err)
        self._spaceport(both)

    # -- the invariants ----------------------------------------------------------------
    @invariant()
    def no_version_is_lost(self):
        # Run after every step and once before the first: steps are the checks after one.
        if self.checked:
            event("step")
        self.checked = True
        self.nothing_owed_is_missing()

    def nothing_owed_is_missing(self):
        present = set(files_under(self.primary).values())
        if os.path.isdir(self.work):
            present |= set(files_under(self.work).values())
        lost = self.owed - present
        assert not lost, f"{len(lost)} versions lost, e.g. {sorted(lost)[0][:9]!r}"

    @invariant()
    def no_torn_file_on_the_primary(self):
        for rel, data in files_under(self.primary).items():
            if rel.startswith(S + "/") and not rel.startswith(S + "/trash/"):
                continue  # the lock, heartbeat, manifest, journal
            assert data in self.versions, f"{rel} on the primary is no whole version"

    @invariant()
    def sparse_versions_stay_sparse(self):
        roots = [self.primary] + ([self.work] if os.path.isdir(self.work) else [])
        for root in roots:
            for rel, data in files_under(root).items():
                if data in self.sparse:
                    st = os.stat(os.path.join(root, rel))
                    assert st.st_blocks * 512 < st.st_size, f"{rel} in {root} lost its holes"

    @invariant()
    def the_index_claims_only_what_landed(self):
        if not os.path.exists(index_path(self.work)):
            return
        index = Index(index_path(self.work))
        try:
            rows = index.load()
        finally:
            index.close()
        work = PosixStore(self.work, WORK_CAPABILITIES, temp_token="0" * 8)
        try:
            for rel, row in rows.items():
                if row.entry.kind is not Kind.FILE:
                    continue
                try:
                    here = entry_at(work, rel, work.lstat(rel))
                    there = os.lstat(os.path.join(self.primary, rel))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if not proven(here, row) or \
                        (there.st_size, there.st_mtime_ns) != (row.psize, row.pmtime_ns):
                    continue  # the row claims nothing about what is there now
                with open(os.path.join(self.work, rel), "rb") as a, \
                        open(os.path.join(self.primary, rel), "rb") as b:
                    assert a.read() == b.read(), f"the index claims {rel} is saved; it is not"
        finally:
            work.close()

    def teardown(self):
        try:
            status = os.path.join(self.primary, S)
            for name in os.listdir(status) if os.path.isdir(status) else ():
                if name != "trash" and os.path.isdir(os.path.join(status, name)):
                    shutil.rmtree(os.path.join(status, name))  # what the messages say to do
            if os.path.isdir(self.work):
                # Whatever was killed, the documented recovery completes.
                self._spaceport(lambda: deploy(self.primary, self.work, self.opts,
                                               resume=True, allow_mass_delete=True))
                self._spaceport(lambda: undeploy(self.work, self.opts, allow_mass_delete=True))
                self.nothing_owed_is_missing()
                self.no_torn_file_on_the_primary()
                assert not self.work_files()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _settings(examples: int) -> settings:
    return settings(max_examples=examples,
                    stateful_step_count=int(os.environ.get("SPACEPORT_MODEL_STEPS", "14")),
                    deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def _run(examples: int) -> None:
    SEEN.clear()
    run = EngineModel.TestCase
    run.settings = _settings(examples)
    run("runTest").runTest()
    print(f"\n{SEEN['example']} examples, {SEEN['step']} steps:")
    for what, count in sorted(SEEN.items()):
        print(f"  {count:5d}  {what}")


def test_engine_against_the_model():
    _run(int(os.environ.get("SPACEPORT_MODEL_EXAMPLES", "24")))


@pytest.mark.slow
@pytest.mark.timeout(0)  # as long as the soak asked for
@pytest.mark.skipif("SPACEPORT_MODEL_SOAK" not in os.environ,
                    reason="the soak runs when SPACEPORT_MODEL_SOAK gives its examples")
def test_engine_against_the_model_soak():
    _run(int(os.environ["SPACEPORT_MODEL_SOAK"]))
