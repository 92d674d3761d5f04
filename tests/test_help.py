"""Every ``--help`` lists only options its command really uses (issue 14).

An option "is used" when there is evidence in the code that runs, not in a table kept by
hand:

* an option the command function names as a parameter must be read in its body (the AST
  of the function: a parameter accepted and never read is an option that does nothing);
* an option the function takes in ``**kwargs`` must be read from them (``p["interval"]``) or
  from ``ctx.params`` while the command really runs (each command is run on real folders,
  in this process, with ``ctx.params`` recording what is read); and if what reads it is
  ``make_options``, the field of ``Options`` that it sets must then be read by the flow
  while that command runs (``Options`` records its reads): ``--status-dir`` on a command
  whose flow takes the status folder from the work marker is an option that does nothing.
  Which field each key sets is found by calling ``make_options`` with the key changed.

The daemon (``run``) cannot run inside the test process; its flows are deploy, save and
clone, so the fields those read when run here, and the ``opts.<field>`` its own modules
read, count for it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import os
import re
import sys
import textwrap
from pathlib import Path

import click
import pytest
from conftest import run_cli, write

import spaceport.daemon
from spaceport.cli import cli, daemon_cmd, main
from spaceport.cli.options import make_options, status_dir_option, storage_options, verbose_option
from spaceport.commands.options import Options
from spaceport.engine.progress import Tracker
from spaceport.safety.lock import DEFAULT_STATUS_DIR

FIELDS = {f.name for f in dataclasses.fields(Options)}
# A value unlike the default for each key make_options may read; which field it lands in
# is found by trying (field_of below), not written down here.
SAMPLES = {"status_dir": "other_status", "retries": 3, "retry_delay": 0.125, "jobs": 3,
           "instance": "pod-x", "mass_delete_threshold": 0.25, "trash_retention_days": 2.5,
           "legacy_root": "/old/root", "stale_after": 77, "rebase": ("/a=/b",),
           "no_fsync": True, "verbose": 0, "progress": False, "exclude": ("tmp/",)}


def all_commands(group=cli, prefix=()):
    ctx = click.Context(group)  # the group loads its commands when asked (spaceport.cli)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


def field_of(key: str) -> set[str]:
    """The Options fields that ``make_options`` sets from ``key`` (leaving out those that
    differ between two calls with the same input: new objects such as callbacks)."""
    base, again = make_options({}, tracker=Tracker()), make_options({}, tracker=Tracker())
    changed = make_options({key: SAMPLES[key]}, tracker=Tracker())
    return {f for f in FIELDS if getattr(base, f) == getattr(again, f)
            and getattr(base, f) != getattr(changed, f)}


# -- what the code reads ----------------------------------------------------------------

def function_ast(fn) -> ast.FunctionDef:
    fn = inspect.unwrap(fn)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))


def static_reads(fn) -> tuple[set[str], set[str], set[str]]:
    """(named parameters, the names it loads, the string keys it subscripts or .get()s)."""
    node = function_ast(fn)
    named = {a.arg for a in node.args.args + node.args.kwonlyargs}
    loads, keys = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            loads.add(n.id)
        elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant):
            keys.add(n.slice.value)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                and n.func.attr == "get" and n.args and isinstance(n.args[0], ast.Constant):
            keys.add(n.args[0].value)
    return named, loads, keys


def daemon_option_fields() -> set[str]:
    """``opts.<field>`` / ``self.opts.<field>`` read in the daemon's own modules."""
    fields = set()
    files = list(Path(spaceport.daemon.__file__).parent.glob("*.py")) + [Path(daemon_cmd.__file__)]
    for path in files:
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load) \
                    and n.attr in FIELDS and (
                        (isinstance(n.value, ast.Name) and n.value.id == "opts") or
                        (isinstance(n.value, ast.Attribute) and n.value.attr == "opts")):
                fields.add(n.attr)
    return fields


class Recording(dict):
    """``ctx.params`` that remembers which keys were read."""

    def __init__(self, data, seen: set):
        super().__init__(data)
        self.seen = seen

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)


class Spy:
    """Runs commands in this process and records, per command, the ``ctx.params`` keys
    and the ``Options`` fields read while it ran."""

    def __init__(self, monkeypatch):
        self.params: dict[tuple, set] = {}
        self.fields: dict[tuple, set] = {}
        self.originals: dict[tuple, object] = {}  # the command functions, unwrapped
        self._current: set | None = None
        original = Options.__getattribute__
        spy = self

        def getattribute(obj, name):
            if spy._current is not None and name in FIELDS:
                caller = sys._getframe(1).f_code.co_filename
                if not caller.endswith("dataclasses.py"):  # replace() copies every field
                    spy._current.add(name)
            return original(obj, name)

        monkeypatch.setattr(Options, "__getattribute__", getattribute)
        for path, command in all_commands():
            self._wrap(monkeypatch, path, command)

    def _wrap(self, monkeypatch, path, command):
        original = self.originals[path] = command.callback
        params = self.params.setdefault(path, set())

        def callback(*args, **kwargs):
            ctx = click.get_current_context()
            ctx.params = Recording(ctx.params, params)
            return original(*args, **kwargs)

        monkeypatch.setattr(command, "callback", callback)

    def run(self, *args: str) -> int:
        path = tuple(a for a in args if not a.startswith("-") and a in _COMMAND_WORDS)
        self._current = self.fields.setdefault(path, set())
        try:
            return main(list(args))
        finally:
            self._current = None


_COMMAND_WORDS = {word for path, _ in all_commands() for word in path}


# -- the check --------------------------------------------------------------------------

def unused_options(path, command, spy: Spy, daemon_fields: set[str] | None = None) -> list[str]:
    named, loads, keys = static_reads(spy.originals.get(path, command.callback))
    read_params = spy.params.get(path, set())
    fields = spy.fields.get(path, set()) if daemon_fields is None else daemon_fields
    if daemon_fields is not None:  # run: what make_options reads when called as run calls it
        seen: set = set()
        make_options(Recording({p.name: p.default for p in command.params}, seen),
                     tracker=Tracker())
        read_params = read_params | seen
    unused = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        if param.name in named:
            used = param.name in loads
        elif param.name in keys:
            used = True
        else:
            sets = field_of(param.name) if param.name in SAMPLES else set()
            used = param.name in read_params and (not sets or bool(sets & fields))
        if not used:
            unused.append(max(param.opts, key=len))
    return unused


def listed_options(path) -> set[str]:
    """The options ``spaceport PATH --help`` lists (the real command line)."""
    r = run_cli(*path, "--help")
    assert r.code == 0, r.err
    listed = set()
    in_options = False
    for line in r.out.splitlines():
        if line.startswith("Options:"):
            in_options = True
        elif in_options and re.match(r"^  -", line):
            column = line.strip().split("  ")[0]  # "-j, --jobs INTEGER RANGE"
            listed |= set(re.findall(r"(?:^|[\s,/])(--?[A-Za-z][\w-]*)", column))
    return listed - {"-h", "--help"}


@pytest.fixture(autouse=True)
def logging_as_it_was():
    """Commands run in this process set up logging; later tests get it back untouched."""
    loggers = [logging.getLogger(), logging.getLogger("spaceport")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


@pytest.fixture
def exercised(tmp_path, monkeypatch):
    """Every command run once on real folders (the daemon excepted, see the docstring)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    spy = Spy(monkeypatch)
    primary, work, source, dest = (str(tmp_path / n) for n in ("p", "w", "src", "dst"))
    for name in ("a", "b", "c", "d"):
        write(primary, f"run/{name}", name.encode())
    os.symlink("run/a", os.path.join(primary, "link"))  # so that --rebase has a link to act on
    write(source, "raw/movie.tiff", b"movie")
    assert spy.run("deploy", primary, work) == 0
    write(work, "new.txt", b"new")
    os.unlink(os.path.join(work, "run", "a"))
    assert spy.run("save", "--dry-run", work) == 0
    assert spy.run("save", work) == 0
    assert spy.run("status", work) == 0
    assert spy.run("status", "--primary", primary) == 0
    assert spy.run("verify", work) == 0
    batch = os.listdir(os.path.join(primary, DEFAULT_STATUS_DIR, "trash"))[0]
    assert spy.run("trash", "list", work) == 0
    assert spy.run("trash", "list", "--primary", primary) == 0
    assert spy.run("trash", "restore", work, batch) == 0
    assert spy.run("undeploy", work) == 0
    assert spy.run("trash", "purge", "--primary", primary, "--all", "--yes") == 0
    assert spy.run("deploy", primary, str(tmp_path / "w2")) == 0
    assert spy.run("unlock", primary, "--force", "--yes") == 0
    assert spy.run("clone", source, dest) == 0
    assert spy.run("demo", "--dir", str(tmp_path / "demo")) == 0
    return spy


def test_every_help_lists_only_options_the_command_uses(exercised):
    daemon = set().union(*(exercised.fields.get(p, set()) for p in
                           (("deploy",), ("save",), ("clone",)))) | daemon_option_fields()
    problems = []
    for path, command in all_commands():
        declared = {o for p in command.params if isinstance(p, click.Option)
                    for o in p.opts + p.secondary_opts}
        listed = listed_options(path)
        assert listed and listed <= declared, (path, listed - declared)
        for option in unused_options(path, command, exercised,
                                     daemon if path == ("run",) else None):
            if option in listed:
                problems.append(f"spaceport {' '.join(path)} --help lists {option}, which "
                                "the command never uses")
    assert problems == []


def test_the_check_finds_an_option_a_command_ignores(tmp_path, monkeypatch):
    """The check can fail: a command that takes --status-dir, --retries and --jobs-like
    named options but uses neither is caught on each."""
    @click.command("fake")
    @click.argument("work")
    @click.option("--ignored-flag", is_flag=True)
    @status_dir_option()
    @storage_options
    @verbose_option
    @click.pass_context
    def fake(ctx, work, ignored_flag, **_):
        make_options(ctx.params, tracker=Tracker())
        print(work)

    monkeypatch.setitem(cli.commands, "fake", fake)
    spy = Spy(monkeypatch)
    assert spy.run("fake", str(tmp_path)) == 0
    unused = unused_options(("fake",), fake, spy)
    assert set(unused) == {"--ignored-flag", "--status-dir", "--retries", "--retry-delay"}


def test_one_option_has_one_range_everywhere():
    """--stale-after once had a minimum of 10 on deploy and 2 on run; --jobs, --retries
    and the rest must not drift apart either."""
    seen: dict[str, tuple] = {}
    for path, command in all_commands():
        for param in command.params:
            if not isinstance(param, click.Option) or not hasattr(param.type, "min"):
                continue
            limits = (type(param.type).__name__, param.type.min, param.type.max)
            assert seen.setdefault(param.name, limits) == limits, (path, param.name)
    assert seen["stale_after"][1] == 2 and "jobs" in seen and "retries" in seen
