"""The mistakes new users really make, each through the real command line (issue 14).

Every test checks the folders afterwards, not only the exit code: a mistake must never cost
a file, and what the user reads must say what happened and what to do next.
"""

from __future__ import annotations

import json
import os

import click
import pytest

from spaceport.cli import cli
from spaceport.cli.options import SAFETY_FLAGS
from spaceport.lock import DEFAULT_STATUS_DIR
from spaceport.marker import MARKER_DIR

from conftest import run_cli, snapshot, write

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


def all_commands(group=cli, prefix=()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


# -- safety overrides are flags only ------------------------------------------------------

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
            else:
                assert param.envvar == "SPACEPORT_" + long.upper().replace("-", "_"), (path, long)
    assert seen == set(SAFETY_FLAGS)


def test_exported_allow_mass_delete_is_ignored_by_save_and_undeploy(tmp_path):
    primary, work = deployed(tmp_path)
    os.unlink(os.path.join(work, "a"))
    os.unlink(os.path.join(work, "b"))
    before_primary, before_work = tree_of(primary), tree_of(work)
    env = {"SPACEPORT_ALLOW_MASS_DELETE": "1"}
    for command in ("save", "undeploy"):
        r = run_cli(command, work, env=env)
        assert r.code == 5, (command, r.err)
        assert "SPACEPORT_ALLOW_MASS_DELETE is set in the environment and ignored" in r.err
        assert "--allow-mass-delete" in r.err
        assert tree_of(primary) == before_primary  # nothing moved to the trash
        assert tree_of(work) == before_work  # the working copy and its lock are kept
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
