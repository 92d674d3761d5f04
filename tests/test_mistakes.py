"""The mistakes new users really make, each through the real command line (issue 14).

Every test checks the folders afterwards, not only the exit code: a mistake must never cost
a file, and what the user reads must say what happened and what to do next.
"""

from __future__ import annotations

import json
import os

import click
import pytest
from conftest import run_cli, snapshot, write
from legacy_spaces import put, westlife_linklist
from test_help import all_commands

from spaceport.cli.options import SAFETY_FLAGS
from spaceport.formats.marker import MARKER_DIR
from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR


def tree_of(root) -> dict:
    """Every file and link under ``root``, the status folder included, and the work
    marker's deployment record (not its busy file and log, which every command touches)."""
    tree = snapshot(root, skip_top={os.fsencode(MARKER_DIR)})
    marker = os.path.join(root, MARKER_DIR, "deployment.json")
    if os.path.exists(marker):
        tree["marker"] = open(marker, "rb").read()
    return tree


def deployed(tmp_path, files=("a", "b", "c"), name="p"):
    primary, work = str(tmp_path / name), str(tmp_path / (name + "-work"))
    for f in files:
        write(primary, f, f.encode())
    r = run_cli("deploy", primary, work)
    assert r.code == 0, r.err
    return primary, work




# -- safety overrides are flags only ------------------------------------------------------

# Options that read no variable, each for a reason: ``wait --source`` would read
# SPACEPORT_SOURCE, which in a container is ``run``'s --source folder (a path, not a flag).
NO_VARIABLE = {(("wait",), "source")}


def test_safety_overrides_have_no_environment_variable_and_every_other_option_has_one():
    seen = set()
    for path, command in all_commands():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            long = [o for o in param.opts if o.startswith("--")][0][2:]
            if long in SAFETY_FLAGS:
                seen.add(long)
                assert not param.envvar and not param.allow_from_autoenv, (path, long)
                assert param.is_flag, (path, long)
            elif (tuple(path), long) in NO_VARIABLE:
                assert not param.envvar and not param.allow_from_autoenv, (path, long)
            else:
                assert param.envvar == "SPACEPORT_" + long.upper().replace("-", "_"), (path, long)
    assert seen == set(SAFETY_FLAGS)


def test_wait_is_not_confused_by_the_containers_source_folder_variable():
    """In the pod, SPACEPORT_SOURCE names run's source folder; ``wait`` must not take it
    for its --source flag (a usage error, exit 2) but wait, here for a daemon that never
    answers, and give up at its timeout (exit 1)."""
    r = run_cli("wait", "--url", "http://127.0.0.1:9", "--timeout", "0.5", "--poll", "0.1",
                env={"SPACEPORT_SOURCE": "/mnt/vol-dataset"})
    assert r.code == 1, (r.code, r.err)


def test_exported_allow_mass_delete_is_ignored_by_save_and_undeploy(tmp_path):
    primary, work = deployed(tmp_path)
    os.unlink(os.path.join(work, "a"))
    os.unlink(os.path.join(work, "b"))
    before_primary, before_work = snapshot(primary), tree_of(work)
    env = {"SPACEPORT_ALLOW_MASS_DELETE": "1"}
    # The deletion guard holds the deletions (2 of the 3 top-level files gone): the save
    # says so and exits 0, the undeploy stops with exit 5; the variable changes nothing.
    for command, code in (("save", 0), ("undeploy", 5)):
        r = run_cli(command, work, env=env)
        assert r.code == code, (command, r.err)
        assert "SPACEPORT_ALLOW_MASS_DELETE is set in the environment and ignored" in r.err
        assert "--allow-mass-delete" in r.err and "2 deletions" in r.err
        assert snapshot(primary) == before_primary  # nothing moved to the trash
        assert tree_of(work) == before_work  # the working copy and its lock are kept
        assert os.path.exists(os.path.join(primary, S, "lock"))
    assert run_cli("save", work, "--allow-mass-delete").code == 0  # the flag still works
    assert sorted(os.listdir(primary)) == [S, "c"]


def test_exported_allow_mass_delete_is_ignored_by_clone(tmp_path):
    source, dest = str(tmp_path / "source"), str(tmp_path / "dest")
    for i in range(4):
        write(source, f"raw/f{i}", b"data")
    assert run_cli("clone", source, dest).code == 0
    for i in range(3):
        os.unlink(os.path.join(source, "raw", f"f{i}"))
    before = tree_of(dest)
    r = run_cli("clone", source, dest, env={"SPACEPORT_ALLOW_MASS_DELETE": "true"})
    assert r.code == 5, r.err
    assert tree_of(dest) == before


def test_exported_discard_local_is_ignored(tmp_path):
    primary, work = deployed(tmp_path)
    assert run_cli("undeploy", work, "--keep-work").code == 0
    write(work, "thesis.tex", b"unsaved chapter")
    r = run_cli("deploy", primary, work, env={"SPACEPORT_DISCARD_LOCAL": "1"})
    assert r.code == 5, r.err
    assert "never saved" in r.err and "SPACEPORT_DISCARD_LOCAL" in r.err
    assert open(os.path.join(work, "thesis.tex"), "rb").read() == b"unsaved chapter"
    assert not os.path.exists(os.path.join(primary, S, "lock"))


def test_exported_force_and_yes_are_ignored_by_unlock(tmp_path):
    primary, work = deployed(tmp_path)
    lock = open(os.path.join(primary, S, "lock"), "rb").read()
    r = run_cli("unlock", primary, env={"SPACEPORT_FORCE": "1", "SPACEPORT_YES": "1"})
    assert r.code == 3 and "not stale" in r.err  # without --force only a stale lock goes
    assert open(os.path.join(primary, S, "lock"), "rb").read() == lock
    r = run_cli("unlock", primary, "--force", env={"SPACEPORT_YES": "1"})
    assert r.code == 2 and "--yes" in r.err  # no terminal to ask, and no --yes flag
    assert open(os.path.join(primary, S, "lock"), "rb").read() == lock
    assert run_cli("save", work).code == 0  # the deployment still holds its lock


def test_exported_yes_is_ignored_by_trash_purge(tmp_path):
    primary, work = deployed(tmp_path, files=("a", "b", "c", "d"))
    os.unlink(os.path.join(work, "a"))
    assert run_cli("save", work).code == 0
    trash = os.path.join(primary, S, "trash")
    batches = os.listdir(trash)
    r = run_cli("trash", "purge", work, "--all", env={"SPACEPORT_YES": "1"})
    assert r.code == 2 and "--yes" in r.err
    assert os.listdir(trash) == batches and os.listdir(os.path.join(trash, batches[0])) == ["a"]


def stale_daemon_lock(primary: str) -> str:
    """Make the command-line lock look like a daemon's whose process is gone here."""
    path = os.path.join(primary, S, "lock")
    data = json.load(open(path))
    json.dump({**data, "live": True}, open(path, "w"))
    return data["deployment_id"]


def test_exported_take_over_stale_is_ignored_by_deploy(tmp_path):
    primary, _ = deployed(tmp_path)
    holder = stale_daemon_lock(primary)
    other = str(tmp_path / "other")
    r = run_cli("deploy", primary, other, env={"SPACEPORT_TAKE_OVER_STALE": "yes"})
    assert r.code == 3, r.err
    assert json.load(open(os.path.join(primary, S, "lock")))["deployment_id"] == holder
    assert not os.path.exists(other)  # a refused deploy leaves no folder behind
    r = run_cli("deploy", primary, other, "--take-over-stale")  # the flag does it
    assert r.code == 0, r.err
    assert json.load(open(os.path.join(primary, S, "lock")))["deployment_id"] != holder


def test_exported_take_over_stale_is_ignored_by_the_daemon(tmp_path, daemons):
    primary, _ = deployed(tmp_path)
    holder = stale_daemon_lock(primary)
    d = daemons(primary, str(tmp_path / "daemon-work"), env={"SPACEPORT_TAKE_OVER_STALE": "1"})
    assert d.wait_exit() == 3
    assert json.load(open(os.path.join(primary, S, "lock")))["deployment_id"] == holder


# -- --discard-local, swapped arguments, the home folder, an ordinary folder ----------------

def user_tree(root) -> dict:
    """Everything under ``root``, hidden folders included: what the user would miss."""
    return snapshot(root, skip_top=set())


def project_with_history(tmp_path, name="project"):
    """A primary that was deployed and brought home: it holds a status folder."""
    primary = str(tmp_path / name)
    write(primary, "thesis.tex", b"\\chapter{Results}")
    write(primary, "Runs/000041/run.db", b"db")
    work = str(tmp_path / (name + "-once"))
    assert run_cli("deploy", primary, work).code == 0
    assert run_cli("undeploy", work).code == 0
    return primary


def assert_never_suggests_discarding(result):
    assert "--discard-local" not in result.out + result.err.replace(
        "SPACEPORT_DISCARD_LOCAL", "")


def test_swapped_arguments_with_an_empty_primary_are_recognised(tmp_path):
    project = project_with_history(tmp_path)
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    before = user_tree(project)
    r = run_cli("deploy", empty, project)
    assert r.code == 2, r.err
    assert "wrong way round" in r.err and f"spaceport deploy {project} {empty}" in r.err
    assert_never_suggests_discarding(r)
    # Following the old hint changes nothing either.
    r = run_cli("deploy", empty, project, "--discard-local", "--yes")
    assert r.code == 2 and "wrong way round" in r.err
    assert user_tree(project) == before and os.listdir(empty) == []
    r = run_cli("deploy", project, empty)  # the command the message suggests
    assert r.code == 0, r.err
    assert open(os.path.join(empty, "thesis.tex"), "rb").read() == b"\\chapter{Results}"


def test_a_working_copy_given_as_primary_is_recognised(tmp_path):
    primary, work = deployed(tmp_path)
    write(work, "unsaved.txt", b"today's work")
    before_primary, before_work = user_tree(primary), tree_of(work)
    r = run_cli("deploy", work, primary)
    assert r.code == 2 and "wrong way round" in r.err, r.err
    assert f"spaceport deploy {primary} {work}" in r.err
    assert_never_suggests_discarding(r)
    assert user_tree(primary) == before_primary and tree_of(work) == before_work


def test_a_project_never_deployed_given_as_work_is_left_alone(tmp_path):
    project, empty = str(tmp_path / "project"), str(tmp_path / "empty")
    write(project, "thesis.tex", b"five years of work")
    os.makedirs(empty)
    before = user_tree(project)
    for extra in ((), ("--discard-local", "--yes")):
        r = run_cli("deploy", empty, project, *extra)
        assert r.code == 5, r.err
        assert "not a spaceport working copy" in r.err and "Nothing was changed" in r.err
        if not extra:
            assert_never_suggests_discarding(r)
        assert user_tree(project) == before and os.listdir(empty) == []


def test_the_home_folder_is_never_emptied(tmp_path):
    primary, home = str(tmp_path / "primary"), str(tmp_path / "home")
    write(primary, "data.mrc", b"micrograph")
    write(home, ".bashrc", b"export PATH")
    write(home, "Documents/cv.pdf", b"my cv")
    before = user_tree(home)
    env = {"HOME": home}
    r = run_cli("deploy", primary, home, env=env)
    assert r.code == 5 and "your home folder" in r.err, r.err
    assert_never_suggests_discarding(r)
    assert user_tree(home) == before  # not even a .spaceport folder was left
    r = run_cli("deploy", primary, home, "--discard-local", "--yes", env=env)
    assert r.code == 5 and "only for a working copy" in r.err
    assert user_tree(home) == before
    suggested = os.path.join(home, "primary")
    assert f"spaceport deploy {primary} {suggested}" in run_cli("deploy", primary, home,
                                                                env=env).err
    assert not os.path.exists(os.path.join(primary, S, "lock"))


def test_an_ordinary_folder_keeps_its_thesis_and_the_suggestion_works(tmp_path):
    primary, folder = str(tmp_path / "primary"), str(tmp_path / "papers")
    write(primary, "data.mrc", b"micrograph")
    write(folder, "thesis.tex", b"the thesis")
    before = user_tree(folder)
    r = run_cli("deploy", primary, folder)
    assert r.code == 5 and "a folder of other files" in r.err, r.err
    assert_never_suggests_discarding(r)
    r = run_cli("deploy", primary, folder, "--discard-local", "--yes")
    assert r.code == 5 and user_tree(folder) == before
    r = run_cli("deploy", primary, os.path.join(folder, "primary"))  # as the message says
    assert r.code == 0, r.err
    assert open(os.path.join(folder, "thesis.tex"), "rb").read() == b"the thesis"
    assert open(os.path.join(folder, "primary", "data.mrc"), "rb").read() == b"micrograph"


def kept_copy_with_unsaved_work(tmp_path):
    primary, work = deployed(tmp_path, files=("a", "b", "run/c"))
    assert run_cli("undeploy", work, "--keep-work").code == 0
    write(work, "a", b"edited, never saved")
    write(work, "new.txt", b"new, never saved")
    write(work, "newrun/log", b"a new folder")
    os.symlink("a", os.path.join(work, "link-to-a"))
    os.unlink(os.path.join(work, "b"))
    return primary, work


def test_discard_local_moves_unsaved_work_aside_and_says_how_to_get_it_back(tmp_path):
    primary, work = kept_copy_with_unsaved_work(tmp_path)
    r = run_cli("deploy", primary, work)
    assert r.code == 5 and "--discard-local" in r.err and "--resume" in r.err  # safe here
    r = run_cli("deploy", primary, work, "--discard-local")  # no terminal to ask, no --yes
    assert r.code == 2 and "--yes" in r.err and "Nothing was changed" in r.err
    assert "a\n" in r.err and "new.txt" in r.err and "newrun" in r.err  # the list was shown
    assert open(os.path.join(work, "new.txt"), "rb").read() == b"new, never saved"
    r = run_cli("deploy", primary, work, "--discard-local", "--yes")
    assert r.code == 0, r.err
    assert "Nothing was deleted" in r.err and "cp -a" in r.err
    aside = os.path.join(work, MARKER_DIR, "discarded")
    (batch,) = os.listdir(aside)
    kept = os.path.join(aside, batch)
    assert f"{kept}/" in r.err
    assert open(os.path.join(kept, "a"), "rb").read() == b"edited, never saved"
    assert open(os.path.join(kept, "new.txt"), "rb").read() == b"new, never saved"
    assert open(os.path.join(kept, "newrun", "log"), "rb").read() == b"a new folder"
    assert os.readlink(os.path.join(kept, "link-to-a")) == "a"
    assert snapshot(work) == snapshot(primary)  # the working copy is the primary's again
    # Getting one back as the message says: the next save uploads it.
    os.rename(os.path.join(kept, "new.txt"), os.path.join(work, "new.txt"))
    assert run_cli("save", work).code == 0
    assert open(os.path.join(primary, "new.txt"), "rb").read() == b"new, never saved"


def test_discard_local_is_refused_for_the_working_copy_of_another_primary(tmp_path):
    _, work = deployed(tmp_path, name="one")
    assert run_cli("undeploy", work, "--keep-work").code == 0
    write(work, "mine.txt", b"unsaved")
    other = str(tmp_path / "two")
    write(other, "x", b"x")
    before = tree_of(work)
    r = run_cli("deploy", other, work)
    assert r.code == 5 and "another primary" in r.err
    assert_never_suggests_discarding(r)
    r = run_cli("deploy", other, work, "--discard-local", "--yes")
    assert r.code == 5 and "only for a working copy" in r.err
    assert tree_of(work) == before


def test_discard_local_moves_nothing_while_another_deployment_holds_the_primary(tmp_path):
    primary, work = kept_copy_with_unsaved_work(tmp_path)
    assert run_cli("deploy", primary, str(tmp_path / "elsewhere")).code == 0
    before = tree_of(work)
    r = run_cli("deploy", primary, work, "--discard-local", "--yes")
    assert r.code == 3, r.err
    assert tree_of(work) == before and not os.path.exists(os.path.join(work, MARKER_DIR,
                                                                       "discarded"))


def test_discard_local_in_a_copy_that_still_holds_its_lock(tmp_path):
    primary, work = deployed(tmp_path)
    write(work, "a", b"a change I do not want")
    write(work, "scratch", b"scratch")
    r = run_cli("deploy", primary, work, "--discard-local", "--yes")
    assert r.code == 0, r.err
    assert open(os.path.join(work, "a"), "rb").read() == b"a"
    assert not os.path.exists(os.path.join(work, "scratch"))
    assert "Nothing was deleted" in r.err
    assert run_cli("save", work).code == 0
    assert snapshot(work) == snapshot(primary)
    r = run_cli("deploy", primary, work, "--discard-local", "--yes")
    assert r.code == 0 and "nothing to discard" in r.err


def run_with_terminal(*args: str, answer: bytes) -> tuple[int, str]:
    """Run the command line with a terminal as its input, and type ``answer``."""
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "spaceport", *args], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200"})
    os.close(slave)
    os.write(master, answer)
    out, err = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, (out + err).decode(errors="replace")


def test_discard_local_asks_and_no_means_nothing_moves(tmp_path):
    primary, work = kept_copy_with_unsaved_work(tmp_path)
    before = tree_of(work)
    code, text = run_with_terminal("deploy", primary, work, "--discard-local", answer=b"n\n")
    assert code == 1 and "Move them into" in text and "nothing was changed" in text
    assert tree_of(work) == before
    code, text = run_with_terminal("deploy", primary, work, "--discard-local", answer=b"y\n")
    assert code == 0, text
    assert snapshot(work) == snapshot(primary)


# -- a primary that cannot be read, or a status folder that cannot be written ---------------

def fuse_primary(tmp_path):
    from spaceport.testing.onedatafs import OneDataFS, fuse_available

    available, reason = fuse_available()
    if not available:
        pytest.skip(f"FUSE unavailable: {reason}")
    backing, mountpoint = str(tmp_path / "backing"), str(tmp_path / "onedata")
    os.makedirs(mountpoint)
    write(backing, "Runs/run.db", b"project data")
    return backing, OneDataFS(backing, mountpoint, attr_timeout=0.0).start(), mountpoint


def test_deploy_refuses_a_status_folder_it_cannot_create_naming_it(tmp_path):
    backing, fs, primary = fuse_primary(tmp_path)
    work = str(tmp_path / "work")
    try:
        fs.inject(op="create", errno="EACCES")
        r = run_cli("deploy", primary, work, "--retries", "1")
        assert r.code == 1, r.err
        assert f"cannot create the status folder {os.path.join(primary, S)}" in r.err
        assert "permission denied" in r.err and "write permission" in r.err
        assert "Traceback" not in r.err and not os.path.exists(work)
        assert sorted(os.listdir(backing)) == ["Runs"]  # no probe or lock left behind
        # Once the folder exists, the check is made inside it.
        fs.clear_faults()
        os.makedirs(os.path.join(backing, S))
        fs.inject(op="create", path=f"/{S}/*", errno="EACCES")
        r = run_cli("deploy", primary, work, "--retries", "1")
        assert r.code == 1 and f"cannot write in the status folder {os.path.join(primary, S)}" \
            in r.err, r.err
        assert not os.path.exists(work) and os.listdir(os.path.join(backing, S)) == []
        fs.clear_faults()
        assert run_cli("deploy", primary, work).code == 0
    finally:
        fs.stop()


def test_deploy_refuses_a_primary_it_cannot_list_naming_it(tmp_path):
    backing, fs, primary = fuse_primary(tmp_path)
    work = str(tmp_path / "work")
    try:
        fs.inject(op="readdir", path="/", errno="EACCES")
        r = run_cli("deploy", primary, work, "--retries", "1")
        assert r.code == 1, r.err
        assert f"cannot read the primary folder {primary}: permission denied" in r.err
        assert not os.path.exists(work) and sorted(os.listdir(backing)) == ["Runs"]
    finally:
        fs.stop()


def test_deploy_refuses_a_read_only_primary(tmp_path):
    import subprocess

    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    os.makedirs(primary)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", primary],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        write(primary, "data.mrc", b"micrograph")
        subprocess.run(["mount", "-o", "remount,ro", primary], check=True)
        r = run_cli("deploy", primary, work)
        assert r.code == 1 and "the file system is read-only" in r.err, r.err
        assert os.path.join(primary, S) in r.err and not os.path.exists(work)
        r = run_cli("deploy", "--dry-run", primary, work)  # the dry run says so as well
        assert r.code == 1 and "read-only" in r.err
    finally:
        subprocess.run(["umount", "-l", primary])


# -- a plain primary folder brings its links along ---------------------------------------

def test_links_in_a_plain_primary_folder_are_deployed_recorded_and_left_alone(tmp_path):
    primary, work, work2 = (str(tmp_path / n) for n in ("primary", "work", "work2"))
    write(primary, "data/mic.mrc", b"micrograph")
    os.symlink("data/mic.mrc", os.path.join(primary, "relative.mrc"))
    os.symlink(os.path.join(primary, "data"), os.path.join(primary, "absolute-inside"))
    os.symlink("/opt/elsewhere/raw", os.path.join(primary, "outside"))
    os.symlink("nothing/here", os.path.join(primary, "dangling"))
    before = snapshot(primary)
    r = run_cli("deploy", "-vv", primary, work)
    assert r.code == 0, r.err
    assert "4 links from the primary folder" in r.out
    assert "4 links found in the primary folder are restored" in r.err  # and said in the log
    assert os.readlink(os.path.join(work, "relative.mrc")) == "data/mic.mrc"
    assert os.readlink(os.path.join(work, "absolute-inside")) == os.path.join(work, "data")
    assert os.readlink(os.path.join(work, "outside")) == "/opt/elsewhere/raw"
    assert os.readlink(os.path.join(work, "dangling")) == "nothing/here"
    assert run_cli("verify", work).code == 0
    assert run_cli("status", work).out.count("nothing: the primary is up to date") == 1
    os.symlink("data/mic.mrc", os.path.join(work, "made-in-work"))
    assert run_cli("save", work).code == 0
    assert snapshot(primary) == before  # its links untouched, no link written there
    manifest = open(os.path.join(primary, S, "links.jsonl")).read()
    for name in ("relative.mrc", "absolute-inside", "outside", "dangling", "made-in-work"):
        assert f'"path": "{name}"' in manifest
    assert run_cli("undeploy", work).code == 0
    r = run_cli("deploy", primary, work2)  # elsewhere: the manifest is the record now
    assert r.code == 0 and "5 links from links.jsonl" in r.out, r.out + r.err
    assert os.readlink(os.path.join(work2, "absolute-inside")) == os.path.join(work2, "data")
    assert run_cli("verify", work2).code == 0


def test_dry_run_of_a_plain_primary_shows_its_links(tmp_path):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    write(primary, "f", b"1")
    os.symlink("f", os.path.join(primary, "l"))
    r = run_cli("deploy", "--dry-run", primary, work)
    assert r.code == 0 and "1 link found in the primary folder" in r.out
    assert not os.path.exists(work) and not os.path.exists(os.path.join(primary, S))


# -- save --dry-run lists what it would do -------------------------------------------------

def test_save_dry_run_lists_every_path_by_kind_and_changes_nothing(tmp_path):
    primary, work = deployed(tmp_path, files=[f"keep/k{i:02d}" for i in range(40)]
                             + ["old.txt", "gone/x.txt"])
    for i in range(25):
        write(work, f"new/n{i:02d}.mrc", b"new data")
    write(work, "odd\nname.txt", b"odd")
    os.unlink(os.path.join(work, "old.txt"))
    os.unlink(os.path.join(work, "gone", "x.txt"))
    os.rmdir(os.path.join(work, "gone"))
    os.symlink("keep/k00", os.path.join(work, "shortcut"))
    before_primary, before_work = snapshot(primary, skip_top=set()), tree_of(work)
    r = run_cli("save", "--dry-run", work)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert "would save" in lines[0] and "nothing was changed" in lines[0]
    assert "upload:        26 files (203 B)" in lines
    assert "  new/n00.mrc" in lines and "  new/n19.mrc" in lines
    assert "  new/n24.mrc" not in lines and "  ... and 6 more (-v lists them all)" in lines
    assert "create:        1 folder" in lines and "  new" in lines
    assert "move to trash: 2 files" in lines and "  old.txt" in lines and "  gone/x.txt" in lines
    assert "remove:        1 empty folder" in lines and "  gone" in lines
    assert "record link:   1 link" in lines and "  shortcut -> keep/k00" in lines
    assert "True" not in r.out and "(s)" not in r.out
    verbose = run_cli("save", "--dry-run", "-v", work).out.splitlines()
    assert all(f"  new/n{i:02d}.mrc" in verbose for i in range(25))
    assert '  "odd\\nname.txt"' in verbose  # one line, whatever the name holds
    assert snapshot(primary, skip_top=set()) == before_primary and tree_of(work) == before_work
    r = run_cli("save", work)  # the real save does what the dry run said
    assert r.code == 0 and "26 files uploaded" in r.out and "2 files moved to the trash" in r.out


def test_save_dry_run_shows_the_plan_and_the_refusal(tmp_path):
    primary, work = deployed(tmp_path, files=("a", "b", "c"))
    os.unlink(os.path.join(work, "a"))
    os.unlink(os.path.join(work, "b"))
    before = snapshot(primary, skip_top=set())
    r = run_cli("save", "--dry-run", work)  # the deletion guard would hold them: exit 0
    assert r.code == 0, r.err
    assert "hold:          2 deletions (the deletion guard: 2 of the 3 top-level entries" \
        in r.out and "  a" in r.out.splitlines() and "move to trash" not in r.out
    assert "--allow-mass-delete carries them out" in r.out
    assert snapshot(primary, skip_top=set()) == before
    r = run_cli("save", "--dry-run", "--allow-mass-delete", work)
    assert r.code == 0 and "move to trash: 2 files" in r.out and "hold:" not in r.out
    os.rename(os.path.join(work, MARKER_DIR), str(tmp_path / "marker-away"))
    r = run_cli("save", "--dry-run", work)
    assert r.code == 5 and "the save would be refused:" in r.err
    assert "not a spaceport working copy" in r.err
    assert snapshot(primary, skip_top=set()) == before


# -- undeploy twice, the folder left behind, status of a folder that is no working copy ----

def test_undeploy_twice_answers_already_undeployed(tmp_path):
    primary, work = deployed(tmp_path)
    r = run_cli("undeploy", work)
    assert r.code == 0 and "the working copy is removed" in r.out
    assert f"The folder {work} stays" in r.out  # and why
    before = snapshot(primary, skip_top=set())
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert "already undeployed" in r.out and "Nothing to do" in r.out
    assert "delete the project" not in r.out + r.err and r.err == ""
    assert snapshot(primary, skip_top=set()) == before
    r = run_cli("status", work)
    assert r.code == 1 and "was undeployed on" in r.out
    r = run_cli("save", work)
    assert r.code == 5 and "was undeployed on" in r.err and f"spaceport deploy {primary}" in r.err
    assert run_cli("deploy", primary, work).code == 0  # the folder is ready to use again
    assert run_cli("undeploy", work).code == 0


def test_undeploy_of_a_kept_copy_twice_and_with_changes_made_since(tmp_path):
    primary, work = deployed(tmp_path)
    assert run_cli("undeploy", work, "--keep-work").code == 0
    r = run_cli("undeploy", work, "--keep-work")
    assert r.code == 0 and "already undeployed" in r.out and "kept" in r.out
    write(work, "later.txt", b"written after the undeploy")
    r = run_cli("undeploy", work)
    assert r.code == 5 and "never saved" in r.err and "1 file to upload" in r.err
    assert f"spaceport deploy --resume {primary} {work}" in r.err
    assert open(os.path.join(work, "later.txt"), "rb").read() == b"written after the undeploy"
    os.unlink(os.path.join(work, "later.txt"))
    r = run_cli("undeploy", work)  # all saved: now it may go
    assert r.code == 0 and "removed now" in r.out
    assert os.listdir(work) == [MARKER_DIR]


def test_undeploy_keeps_what_discard_local_set_aside_and_says_why_the_folder_stays(tmp_path):
    primary, work = kept_copy_with_unsaved_work(tmp_path)
    assert run_cli("deploy", primary, work, "--discard-local", "--yes").code == 0
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert "--discard-local set aside (.spaceport/discarded/)" in r.out
    (batch,) = os.listdir(os.path.join(work, MARKER_DIR, "discarded"))
    kept = os.path.join(work, MARKER_DIR, "discarded", batch)
    assert open(os.path.join(kept, "new.txt"), "rb").read() == b"new, never saved"
    assert os.listdir(work) == [MARKER_DIR]


def test_status_of_a_folder_that_is_not_a_working_copy_exits_1(tmp_path):
    plain = str(tmp_path / "plain")
    write(plain, "notes.txt", b"notes")
    r = run_cli("status", plain)
    assert r.code == 1 and "is not a spaceport working copy" in r.out
    r = run_cli("status", plain, "--json")
    assert r.code == 1 and json.loads(r.out)["deployed"] is False
    r = run_cli("status", str(tmp_path / "nowhere"))
    assert r.code == 1 and "does not exist" in r.out
    assert os.listdir(plain) == ["notes.txt"]


def test_undeploy_of_a_folder_that_is_not_a_working_copy_changes_nothing(tmp_path):
    plain = str(tmp_path / "plain")
    write(plain, "notes.txt", b"notes")
    r = run_cli("undeploy", plain)
    assert r.code == 5 and "not a spaceport working copy" in r.err
    assert "delete the project" not in r.err
    assert os.listdir(plain) == ["notes.txt"]


def test_a_refused_deploy_creates_no_folder(tmp_path):
    primary, _ = deployed(tmp_path)
    work = tmp_path / "new" / "deeper" / "work"
    r = run_cli("deploy", primary, str(work))
    assert r.code == 3 and "Nothing was changed" in r.err
    assert not (tmp_path / "new").exists()
    # Refused under the lock, after WORK was made: an old list whose root nobody knows.
    space = tmp_path / "old-space"
    put(space, S.encode() + b"/linklist", westlife_linklist(root=b"/opt/old work"))
    put(space, b"projects/Ribosome/project.sqlite", b"db")
    r = run_cli("deploy", str(space), str(work))
    assert r.code == 5 and "--legacy-root" in r.err, r.err
    assert not (tmp_path / "new").exists()


# -- a log per working copy ---------------------------------------------------------------

def read_log(work) -> list[str]:
    return open(os.path.join(work, MARKER_DIR, "log", "spaceport.log"),
                encoding="utf-8").read().splitlines()


def test_every_command_leaves_plain_lines_with_times_in_the_working_copy_log(tmp_path):
    import re

    primary, work = deployed(tmp_path, files=("a", "b", "c"))
    write(work, "new.txt", b"new")
    assert run_cli("save", work).code == 0
    for name in ("a", "b", "c"):
        os.unlink(os.path.join(work, name))
    held = run_cli("save", work)  # the deletion guard holds them: exit 0, a warning
    assert held.code == 0 and "3 deletions held" in held.err
    assert run_cli("undeploy", work, "--allow-mass-delete").code == 0
    lines = read_log(work)  # kept by the undeploy, with the record of it
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO |ERROR|WARNING) ")
    assert all(stamp.match(line) for line in lines), lines
    started = [line for line in lines if "(spaceport " in line]
    assert [line.split("] spaceport ")[1].split(" ")[0] for line in started] == \
        ["deploy", "save", "save", "undeploy"]
    text = "\n".join(lines)
    assert "said: saved" in text and "1 file uploaded" in text
    assert any(line.split()[1] == "WARNING" and "3 deletions held (3 files stay on the "
               "primary)" in line for line in lines)
    assert "said: undeployed" in text and text.count("ended with exit code 0") == 4
    assert "True" not in text and "None" not in text


def test_the_work_log_rotates(tmp_path):
    primary, work = deployed(tmp_path)
    log = os.path.join(work, MARKER_DIR, "log", "spaceport.log")
    with open(log, "a") as f:
        f.write("x" * (1 << 20) + "\n")
    assert run_cli("save", work).code == 0
    assert os.path.getsize(log + ".1") > 1 << 20
    assert "said: saved" in open(log).read()


def test_a_refused_deploy_writes_no_log_into_a_folder_of_other_files(tmp_path):
    primary, folder = str(tmp_path / "p"), str(tmp_path / "papers")
    write(primary, "f", b"1")
    write(folder, "thesis.tex", b"thesis")
    assert run_cli("deploy", primary, folder).code == 5
    assert os.listdir(folder) == ["thesis.tex"]


def test_the_daemon_logs_into_its_working_copy_too(tmp_path, daemons):
    import signal

    primary, work = str(tmp_path / "p"), str(tmp_path / "w")
    write(primary, "f", b"1")
    d = daemons(primary, work, "--keep-work")
    d.wait_phase("running")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    text = "\n".join(read_log(work))
    assert "run[" in text and "phase running" in text and "final save done" in text
    assert "ended with exit code 0" in text


# -- the demo ---------------------------------------------------------------------------

def test_demo_at_80_columns_cleans_up_and_its_box_fits(tmp_path):
    import re

    temp = tmp_path / "tmp"
    temp.mkdir()
    r = run_cli("demo", env={"COLUMNS": "80", "TMPDIR": str(temp)})
    assert r.code == 0, r.err
    assert "identical" in r.out
    assert list(temp.iterdir()) == []  # nothing left behind: no folder, no lock
    lines = r.out.splitlines()
    top = max(i for i, line in enumerate(lines) if line.startswith("╭"))
    box = lines[top:]
    assert box[-1].startswith("╰") and all(line.startswith("│") and line.endswith("│")
                                           for line in box[1:-1])
    assert all(len(line) <= 80 for line in box)
    assert "spaceport demo --keep" in " ".join(line.strip("│ ") for line in box)
    # The help states the real duration: "a second or two".
    seconds = float(re.search(r"The whole story in ([\d.]+) s", r.out).group(1))
    assert seconds < 10 and "a second or" in run_cli("demo", "--help").out
    assert "minute" not in run_cli("demo", "--help").out


def test_demo_keep_leaves_the_folders_and_a_command_that_can_be_copied(tmp_path):
    folder = str(tmp_path / "demo")
    r = run_cli("demo", "--dir", folder, "--keep", env={"COLUMNS": "80"})
    assert r.code == 0, r.err
    command = r.out.splitlines()[-1]  # on a line of its own, not cut by the box
    primary = os.path.join(folder, "onedata-space", "my-project")
    assert command == f"spaceport status --primary {primary}"
    status = run_cli(*command.split()[1:])
    assert status.code == 0 and "lock          none" in status.out  # no lock left held
    assert sorted(os.listdir(folder)) == ["node-a", "node-b", "onedata-space"]


def test_demo_never_uses_a_folder_that_holds_its_names(tmp_path):
    folder = str(tmp_path / "mine")
    write(folder, "node-a/precious.txt", b"mine")
    r = run_cli("demo", "--dir", folder)
    assert r.code == 2 and "node-a" in r.err
    assert open(os.path.join(folder, "node-a", "precious.txt"), "rb").read() == b"mine"
