"""CERIT's ``symlink-dump`` on the primary is the one spaceport would write, at every save of
a space CERIT's app has used (issue 20, "A way back"): not only when the links change. A dump
removed (by hand, by a cleanup) is written again by the next save, the final save of an
undeploy included; one found in place costs a stat and is not written again; one that is
not spaceport's is kept in the trash before it is replaced.

Real CLI processes; the files are checked on the primary afterwards, and the dump is read
by CERIT's own parser written again (tests/cerit_controller.py), never by spaceport's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from cerit_controller import ROOT, every_check, parse_dump, restore_links
from conftest import run_cli

from spaceport.safety.lock import DEFAULT_STATUS_DIR

STATUS = DEFAULT_STATUS_DIR
DUMP = "symlink-dump"
LINKS = {
    "Runs/000002_Import/extra/rel.mrc": "../../../Logs/project.log",
    "Runs/000002_Import/extra/movie.tif": "/mnt/vol-dataset/movies/m1.tif",
    "Runs/000002_Import/extra/with space.mrc": "../../../Logs/project.log",  # not expressible
}
SELF = "Runs/000002_Import/extra/self.mrc"  # absolute, into the working copy itself


def project(root: str) -> None:
    os.makedirs(os.path.join(root, "Runs", "000002_Import", "extra"))
    os.makedirs(os.path.join(root, "Logs"))
    with open(os.path.join(root, "project.sqlite"), "wb") as f:
        f.write(b"SQLite format 3\0" + b"x" * 100)
    with open(os.path.join(root, "Logs", "project.log"), "w") as f:
        f.write("log\n")


def link_up(work: str) -> None:
    for rel, target in LINKS.items():
        os.symlink(target, os.path.join(work, rel))
    os.symlink(os.path.join(work, "project.sqlite"), os.path.join(work, SELF))


def expected_lines() -> set[tuple[str, str]]:
    """What CERIT's parser must read from the dump of link_up's working copy: every link it
    can express, the absolute one into the copy under CERIT's root."""
    links = {**LINKS, SELF: ROOT + "/project.sqlite"}
    return {(t, f"{ROOT}/{p}") for p, t in links.items() if " " not in p + t}


def read_dump(primary: str) -> bytes:
    with open(os.path.join(primary, DUMP), "rb") as f:
        return f.read()


def assert_the_working_copys_links(primary: str, tmp_path) -> bytes:
    """The dump on the primary holds the working copy's links as CERIT's controller reads
    them, each line once, restorable by its own loop; and the manifest names it as
    spaceport's (so the next deploy never takes it for CERIT's)."""
    raw = read_dump(primary)
    parsed = parse_dump(raw)
    assert set(parsed) == expected_lines() and len(parsed) == len(expected_lines()), parsed
    cerit = str(tmp_path / f"cerit-{time.monotonic_ns()}")
    os.makedirs(os.path.join(cerit, "Runs", "000002_Import", "extra"))
    assert restore_links(raw, cerit) == []
    with open(os.path.join(primary, STATUS, "links.jsonl"), "rb") as f:
        header = json.loads(f.readline())
    assert header["cerit_dump"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert not [n for n in os.listdir(primary) if "tmp" in n]  # written atomically
    return raw


def deployed_with_links(tmp_path, *deploy_args: str) -> tuple[str, str]:
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    r = run_cli("deploy", *deploy_args, primary, work)
    assert r.code == 0, r.err
    link_up(work)
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert "symlink-dump written" in r.out
    return primary, work


def test_a_dump_removed_from_the_primary_is_written_again_by_the_next_save(tmp_path):
    primary, work = deployed_with_links(tmp_path, "--cerit")
    first = assert_the_working_copys_links(primary, tmp_path)
    os.unlink(os.path.join(primary, DUMP))
    r = run_cli("save", work)  # no link changed: before the fix, nothing was written
    assert r.code == 0, r.err
    assert "symlink-dump written" in r.out
    assert "link manifest written" not in r.out  # the manifest already names this dump
    assert assert_the_working_copys_links(primary, tmp_path) == first
    assert run_cli("undeploy", work).code == 0


def test_the_final_save_of_undeploy_writes_a_removed_dump_again(tmp_path):
    primary, work = deployed_with_links(tmp_path, "--cerit")
    os.unlink(os.path.join(primary, DUMP))
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert every_check(primary) == {"free"}  # CERIT's app may open it now...
    assert_the_working_copys_links(primary, tmp_path)  # ...and finds every link it can hold
    # the dump is newer than the manifest now, and still known as spaceport's own
    again = str(tmp_path / "again")
    r = run_cli("deploy", primary, again)
    assert r.code == 0, r.err
    assert "written after spaceport's last save" not in r.err
    assert os.path.islink(os.path.join(again, "Runs/000002_Import/extra/with space.mrc"))
    assert os.readlink(os.path.join(again, SELF)) == os.path.join(again, "project.sqlite")
    assert run_cli("undeploy", again).code == 0


def test_a_primary_cerits_app_used_gets_the_dump_without_being_told(tmp_path):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    os.makedirs(os.path.join(primary, "scipion-docker"))  # CERIT's app was here
    r = run_cli("deploy", primary, work)  # no --cerit
    assert r.code == 0, r.err
    link_up(work)
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert "symlink-dump written" in r.out
    assert_the_working_copys_links(primary, tmp_path)
    os.unlink(os.path.join(primary, DUMP))
    assert run_cli("undeploy", work).code == 0
    assert_the_working_copys_links(primary, tmp_path)


def test_a_save_that_finds_the_dump_in_place_does_not_write_it(tmp_path):
    primary, work = deployed_with_links(tmp_path, "--cerit")
    path = os.path.join(primary, DUMP)
    before = os.stat(path)
    with open(os.path.join(work, "Logs", "project.log"), "a") as f:
        f.write("more\n")  # a save with something to do, no link changed
    for _ in range(2):
        r = run_cli("save", work)
        assert r.code == 0, r.err
        assert "symlink-dump written" not in r.out
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # touched (a copy tool, a hand): the same bytes are read once and kept, not written
    later = time.time() + 5
    os.utime(path, (later, later))
    r = run_cli("save", work)
    assert r.code == 0 and "symlink-dump written" not in r.out, r.out + r.err
    assert os.stat(path).st_ino == before.st_ino
    assert run_cli("undeploy", work).code == 0


def test_a_dump_that_is_not_spaceports_is_kept_in_the_trash_and_replaced(tmp_path):
    primary, work = deployed_with_links(tmp_path, "--cerit")
    theirs = b"../../../project.sqlite /mnt/vol-project/Runs/made-elsewhere\n"
    with open(os.path.join(primary, DUMP), "wb") as f:
        f.write(theirs)
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert "symlink-dump written" in r.out
    assert "is not the one this deployment wrote" in r.err and "trash batch" in r.err
    assert_the_working_copys_links(primary, tmp_path)
    trash = os.path.join(primary, STATUS, "trash")
    kept = [os.path.join(trash, b, DUMP) for b in os.listdir(trash)]
    assert [open(p, "rb").read() for p in kept if os.path.exists(p)] == [theirs]
    assert run_cli("undeploy", work).code == 0


@pytest.mark.fuse
def test_the_dump_in_place_costs_one_stat_and_no_write(tmp_path, onedata):
    """Counted on the OneData-like FUSE filesystem (kernel caches off): the calls on
    ``symlink-dump`` itself, save by save. Writing it is a create of a temporary name and a
    rename onto it; a save with nothing changed makes neither, and one lookup of it."""
    fs, backing = onedata, tmp_path / "backing"  # the fixture's backing folder
    primary, work = os.path.join(fs.mountpoint, "space"), str(tmp_path / "work")
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    link_up(work)
    assert run_cli("save", work).code == 0

    def dump_calls(*args: str) -> dict[str, int]:
        fs.clear_faults()
        for op in ("rename", "getattr", "open"):  # rules that never fire: counters
            fs.inject(op=op, path="/space/symlink-dump", times=0)
        r = run_cli(*args)
        assert r.code == 0, r.err
        fs.settled_counts()
        return {rule["op"]: rule["seen"] for rule in fs.faults()}

    nothing = dump_calls("save", work)
    assert nothing["rename"] == 0 and nothing["open"] == 0, nothing  # not written, not read
    assert 1 <= nothing["getattr"] <= 2, nothing  # the stat (a lookup, its attributes)
    os.unlink(os.path.join(backing, "space", DUMP))
    removed = dump_calls("save", work)
    assert removed["rename"] == 1, removed  # written again, once
    assert dump_calls("save", work)["rename"] == 0
    assert run_cli("undeploy", work).code == 0
    assert_the_working_copys_links(str(backing / "space"), tmp_path)
