"""A clone that someone uses while it fills (issue 22): files appear whole or not at all,
folders before their files, the project's files first, then path order; a file that changes
on the source while it is copied is copied again; a notice at the root says the copy is not
complete; a stopped clone resumes without copying again what is there. Over the OneData-like
FUSE filesystem, with its calls counted."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import write

from spaceport.commands.clone import CloneProgress, clone
from spaceport.commands.clone_first import linked_source_paths
from spaceport.commands.clone_notice import NOTICE_NAME
from spaceport.commands.options import Options
from spaceport.errors import Interrupted
from spaceport.formats.links import Link
from spaceport.store.base import TEMP_PREFIX
from spaceport.store.retry import RetryPolicy
from spaceport.testing.onedatafs import OneDataFS, fuse_available

pytestmark = pytest.mark.fuse
BLOCK = 128 << 10  # what the kernel reads from a FUSE file per call


@pytest.fixture
def opts() -> Options:
    return Options(jobs=2, retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.05))


@pytest.fixture
def source(tmp_path):
    """A source on the OneData-like mount, without kernel attribute cache: a change made on
    the backing folder (another OneData client) shows at the next stat, as oneclient's
    change events make it show."""
    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    versions: dict[str, set[bytes]] = {}
    for i in range(12):
        rel = f"{'ab'[i % 2]}-movies/m{i:02d}.mrc"
        data = os.urandom(3 * BLOCK + i)  # several reads each: a torn copy is possible
        write(str(backing), rel, data)
        versions[rel] = {data}
    write(str(backing), "z-imports/linked.mrc", os.urandom(BLOCK))
    versions["z-imports/linked.mrc"] = {open(backing / "z-imports/linked.mrc", "rb").read()}
    with OneDataFS(backing, mnt, attr_timeout=0.0, io_delay_ms=5) as fs:
        yield fs, str(backing), str(mnt), versions


class Watcher(threading.Thread):
    """Polls the copy as a streaming import would, and records what it saw: every file
    that is not one of spaceport's temporaries, with the bytes it held, in order of
    first sight."""

    def __init__(self, root: str):
        super().__init__(daemon=True)
        self.root, self.done = root, threading.Event()
        self.seen: dict[str, set[bytes]] = {}
        self.order: list[str] = []
        self.orphans: list[str] = []  # a file seen in a folder that was not seen before it
        self.looks = 0

    def run(self) -> None:
        while not self.done.is_set():
            self.look()
        self.look()

    def look(self) -> None:
        self.looks += 1
        for dirpath, dirnames, names in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != ".spaceport"]
            for name in names:
                if name.startswith(TEMP_PREFIX) or name == NOTICE_NAME:
                    continue
                rel = os.path.normpath(os.path.join(rel_dir, name))
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue
                if rel not in self.seen:
                    self.order.append(rel)
                self.seen.setdefault(rel, set()).add(data)


def watched(dest: str, fn, *args, **kwargs):
    watcher = Watcher(dest)
    os.makedirs(dest, exist_ok=True)
    watcher.start()
    try:
        return fn(*args, **kwargs), watcher
    finally:
        watcher.done.set()
        watcher.join(30)


def test_a_watcher_never_sees_a_partial_or_torn_file_even_one_that_changed(source, tmp_path,
                                                                           opts, caplog):
    fs, backing, mnt, versions = source
    caplog.set_level("INFO", logger="spaceport")
    dest = str(tmp_path / "dest")
    # m03's copy is held after its first read while the source file is rewritten: the bytes
    # copied so far are of the old version, the rest of the new one.
    gate = fs.hold(op="read", path="/b-movies/m03.mrc", after=1, times=1)
    changed = os.urandom(3 * BLOCK + 3)
    versions["b-movies/m03.mrc"].add(changed)

    def change_while_held():
        fs.wait_held(gate, timeout=30)
        with open(os.path.join(backing, "b-movies/m03.mrc"), "r+b") as f:
            f.write(changed)
        fs.release(gate)

    changer = threading.Thread(target=change_while_held, daemon=True)
    changer.start()
    report, watcher = watched(dest, clone, mnt, dest, opts)
    changer.join(30)
    assert watcher.looks > 10  # it did watch during the clone
    for rel, seen in watcher.seen.items():
        assert seen <= versions[rel], f"{rel}: a version the source never had (torn/partial)"
    assert set(watcher.seen) == set(versions)
    with open(os.path.join(dest, "b-movies/m03.mrc"), "rb") as f:
        assert f.read() == changed  # copied again after the change, never torn
    assert "b-movies/m03.mrc changed while being copied; copying again" in caplog.text
    assert report.copied == len(versions)


def test_the_project_s_files_come_first_then_path_order(source, tmp_path, opts):
    fs, backing, mnt, versions = source
    dest = str(tmp_path / "dest")
    opts.jobs = 1  # one file at a time: the order of arrival is the order of the copies
    _, watcher = watched(dest, clone, mnt, dest, opts, first=["z-imports"])
    assert watcher.order[0] == "z-imports/linked.mrc"
    assert watcher.order[1:] == sorted(watcher.order[1:])
    # The negative control: without it, the project's file comes in path order, last.
    dest2 = str(tmp_path / "dest2")
    _, watcher = watched(dest2, clone, mnt, dest2, opts)
    assert watcher.order[-1] == "z-imports/linked.mrc" and watcher.order == sorted(watcher.order)


def test_the_project_s_files_arrive_while_the_rest_is_held(source, tmp_path, opts):
    """What the project needs is copied by name, before the source is even listed."""
    fs, backing, mnt, versions = source
    dest = str(tmp_path / "dest")
    gate = fs.hold(op="readdir", path="/", times=None, timeout=30)
    progress = CloneProgress()
    worker = threading.Thread(target=clone, args=(mnt, dest, opts),
                              kwargs={"first": ["z-imports/linked.mrc"], "progress": progress},
                              daemon=True)
    worker.start()
    try:
        fs.wait_held(gate, timeout=30)  # the listing of the source waits at the gate...
        # ...and the project's file is already there, whole, read-only.
        with open(os.path.join(dest, "z-imports/linked.mrc"), "rb") as f:
            assert {f.read()} == versions["z-imports/linked.mrc"]
        assert progress.first_done == progress.first_files == 1
        assert progress.stage == "listing"
        assert not os.path.exists(os.path.join(dest, "a-movies"))
        assert os.path.exists(os.path.join(dest, NOTICE_NAME))
    finally:
        fs.release(gate)
        worker.join(60)
    assert progress.stage == "complete"
    assert not os.path.exists(os.path.join(dest, NOTICE_NAME))


def test_the_notice_says_what_is_missing_and_goes_when_complete(source, tmp_path, opts):
    fs, backing, mnt, versions = source
    dest = str(tmp_path / "dest")
    stop = threading.Event()
    gate = fs.hold(op="open", path="/b-movies/m05.mrc", times=1, timeout=30)
    progress = CloneProgress()
    worker = threading.Thread(target=lambda: pytest.raises(Interrupted, clone, mnt, dest, opts,
                                                           stop=stop, progress=progress,
                                                           watch="http://page"), daemon=True)
    worker.start()
    fs.wait_held(gate, timeout=30)
    text = open(os.path.join(dest, NOTICE_NAME)).read()
    assert "NOT COMPLETE" in text and "http://page" in text and str(mnt) in text
    assert "13 files" in text  # what is missing, from the plan
    stop.set()
    fs.release(gate)
    worker.join(30)
    assert progress.stage == "stopped"
    text = open(os.path.join(dest, NOTICE_NAME)).read()
    assert "stopped" in text  # still incomplete, and it says so
    # The notice is never source data: a source file of that name is not cloned over it,
    # and the clone never removes it as something the source lacks; it goes at the end.
    write(backing, NOTICE_NAME, b"a file of the source")
    clone(mnt, dest, opts)
    assert not os.path.exists(os.path.join(dest, NOTICE_NAME))


def test_a_stopped_clone_resumes_without_copying_again_what_is_there(source, tmp_path, opts):
    fs, backing, mnt, versions = source
    dest = str(tmp_path / "dest")
    stop = threading.Event()
    opts.jobs = 1
    # Stopped once five files are in: the sixth file's open waits at the gate meanwhile.
    gate = fs.hold(op="open", path="/*.mrc", after=5, times=1, timeout=30)
    worker = threading.Thread(target=lambda: pytest.raises(Interrupted, clone, mnt, dest, opts,
                                                           stop=stop), daemon=True)
    worker.start()
    fs.wait_held(gate, timeout=30)
    stop.set()
    fs.release(gate)
    worker.join(30)
    there = {os.path.relpath(os.path.join(d, n), dest) for d, _, names in os.walk(dest)
             for n in names if n.endswith(".mrc")}
    assert len(there) == 5
    fs.reset_counts()
    report = clone(mnt, dest, opts)
    counts, read = fs.counts(), fs.io_bytes()["read"]
    missing = set(versions) - there
    assert report.copied == len(missing) == counts["open"]  # nothing opened again
    assert read == sum(len(next(iter(versions[p]))) for p in missing)


def test_links_into_the_source_s_copy_name_its_paths():
    links = [Link("Runs/1/extra/m1.mrc", "/mnt/vol-source/movies/m1.mrc"),
             Link("Runs/1/extra/all", "/mnt/vol-source/gains"),
             Link("Runs/2/extra/up", "../../../Uploads/x.mrc"),  # inside the project
             Link("Runs/3/extra/rel", "../../../../vol-source/movies/m2.mrc"),
             Link("Runs/4/extra/out", "/mnt/vol-sourcery/m3.mrc"),  # another folder
             Link("Runs/5/extra/up", "/mnt/vol-source/../etc/passwd")]
    found = linked_source_paths(links, "/mnt/vol-project/p", ["/mnt/vol-source"])
    assert found == ["gains", "movies/m1.mrc"]
    found = linked_source_paths(links, "/mnt/vol-project", ["/mnt/vol-source"])
    assert found == ["gains", "movies/m1.mrc", "movies/m2.mrc"]
