"""Shared fixtures: real trees in temporary folders, real processes, snapshots to compare."""

from __future__ import annotations

import compileall
import hashlib
import os
import stat
import subprocess
import sys
from dataclasses import dataclass

import pytest

import spaceport
from spaceport.commands.options import Options
from spaceport.formats.marker import MARKER_DIR
from spaceport.safety.lock import DEFAULT_STATUS_DIR
from spaceport.store.retry import RetryPolicy


def pytest_sessionstart(session):
    """Compile spaceport once, before thousands of ``python -m spaceport`` processes start.

    An editable install writes no bytecode, and where PYTHONDONTWRITEBYTECODE is set (these
    machines set it) no process writes any either: every command the tests start compiled the
    same 100-odd modules again, about 0.1 s each time and a fifth of a CLI-heavy test file's
    time. compileall writes bytecode whatever that variable says; a tree it cannot write to
    is left as it is (each process then compiles, as before)."""
    compileall.compile_dir(os.path.dirname(spaceport.__file__), quiet=2)

SKIP_TOP = {os.fsencode(MARKER_DIR), os.fsencode(DEFAULT_STATUS_DIR)}


def snapshot(root: str, *, skip_top=SKIP_TOP, mtimes: bool = True) -> dict:
    """Everything under ``root`` that a round trip must keep, keyed by relative bytes path.

    Absolute link targets into ``root`` are written relative to a <ROOT> placeholder, so
    trees deployed at different paths compare equal when their links followed the tree.
    """
    root_b = os.fsencode(os.path.abspath(root))
    out = {}
    for dirpath, dirnames, filenames in os.walk(root_b):
        rel_dir = os.path.relpath(dirpath, root_b)
        if rel_dir == b".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
            filenames = [f for f in filenames if f not in skip_top]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if target == root_b or target.startswith(root_b + b"/"):
                    target = b"<ROOT>" + target[len(root_b):]
                out[rel] = ("link", target)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", digest, stat.S_IMODE(st.st_mode),
                            st.st_mtime_ns if mtimes else None)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def write(root: str, rel: str | bytes, data: bytes = b"x", mode: int | None = None,
          mtime_ns: int | None = None) -> str:
    path = os.path.join(os.fsencode(root), os.fsencode(rel))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return os.fsdecode(path)


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str, env: dict | None = None, cwd: str | None = None,
            timeout: float = 120) -> Result:
    """Run ``python -m spaceport`` as a real process; returns code, stdout, stderr."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "spaceport", *args], capture_output=True,
                          env=full_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                  proc.stderr.decode(errors="replace"))


@pytest.fixture
def onedata(tmp_path):
    """The OneData-like FUSE filesystem (kernel caches off), for faults at a chosen call.
    Some test files keep a variant of their own (a tuple, a started server), which wins."""
    from spaceport.testing.onedatafs import OneDataFS, fuse_available

    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    with OneDataFS(str(backing), str(mnt), attr_timeout=0.0) as fs:
        yield fs


@pytest.fixture
def opts() -> Options:
    """Fast options for API-level tests: few retries with short delays."""
    return Options(jobs=4, retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.05))


@pytest.fixture
def dirs(tmp_path):
    """A primary and a work path (work not yet created)."""
    primary = tmp_path / "primary"
    primary.mkdir()
    return str(primary), str(tmp_path / "work")


@pytest.fixture
def daemons(tmp_path):
    """Start real ``spaceport run`` processes; each is stopped at the end of the test."""
    from daemon_helpers import DaemonProcess

    started = []

    def start(*args, **kwargs):
        daemon = DaemonProcess(tmp_path, *args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
