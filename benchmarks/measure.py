"""Running the scenarios on a OneData-like FUSE mount: time and metadata calls per operation.

Each tool gets its own primary folder on one mount, and runs, in each repetition: a first
save of the project into the empty primary, a save with nothing changed, a save after 1 %
of the files changed, and a stage-in of the primary into an empty folder. Before each timed
operation the kernel's FUSE caches are left to expire, so every operation starts as a
periodic save does in real life: cold. The filesystem counts the calls each operation made.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field

from spaceport.testing.onedatafs import OneDataFS, metadata_calls

from .tools import Case, Tool
from .tree import change_files, generate

OPS = ("first", "nochange", "change1", "stagein")
OP_TITLES = {"first": "first save", "nochange": "save, nothing changed",
             "change1": "save, 1 % of files changed", "stagein": "stage-in to an empty folder"}
ATTR_TIMEOUT = 1.0  # the mount's attribute and entry cache, seconds (libfuse's default)


@dataclass
class Scenario:
    name: str
    files: int
    delay_ms: float
    big: int = 2
    big_size: int = 4 << 20
    reps: int = 3
    first_reps: int = 3  # repetitions that start from an empty primary (first save timed)

    @property
    def title(self) -> str:
        big = f" plus {self.big} × {self.big_size >> 20} MiB" if self.big else ""
        return f"{self.files:,} files{big}, {self.delay_ms:g} ms per metadata call"


@dataclass
class Sample:
    seconds: float
    calls: int
    counts: dict


@dataclass
class Results:
    scenario: Scenario
    samples: dict = field(default_factory=dict)  # (op, tool) -> [Sample]
    problems: list[str] = field(default_factory=list)
    tree: dict = field(default_factory=dict)
    load: list = field(default_factory=list)  # 1-min load average at the start and the end

    def add(self, op: str, tool: str, sample: Sample) -> None:
        self.samples.setdefault((op, tool), []).append(sample)

    def median(self, op: str, tool: str) -> float | None:
        got = self.samples.get((op, tool))
        return statistics.median(s.seconds for s in got) if got else None

    def calls(self, op: str, tool: str) -> int | None:
        got = self.samples.get((op, tool))
        return int(statistics.median(s.calls for s in got)) if got else None

    def n(self, op: str, tool: str) -> int:
        return len(self.samples.get((op, tool), []))


def copy_tree(template: str, dest: str) -> None:
    """``cp -a``, then re-point absolute links that led into the template into ``dest``."""
    subprocess.run(["cp", "-a", template, dest], check=True)
    prefix = template.rstrip("/") + "/"
    for dirpath, _, filenames in os.walk(dest):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                target = os.readlink(path)
                if target.startswith(prefix):
                    os.unlink(path)
                    os.symlink(os.path.join(dest, target[len(prefix):]), path)


def tree_summary(root: str) -> tuple[dict[str, int], int]:
    """(relative path -> size of every regular file, number of links); markers skipped."""
    files, links = {}, 0
    skip = {".spaceport", ".deployment_status_do_not_delete"}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                links += 1
            elif name in filenames and os.path.isfile(path):
                files[os.path.relpath(path, root)] = st.st_size
    return files, links


def settled_counts(fs: OneDataFS) -> dict:
    """The call counts once the kernel's asynchronous releases have arrived."""
    counts = fs.counts()
    for _ in range(40):
        time.sleep(0.05)
        again = fs.counts()
        if again == counts:
            break
        counts = again
    return counts


class Runner:
    def __init__(self, workdir: str, tools: list[Tool], say=print):
        self.workdir = workdir
        self.tools = tools
        self.say = say

    def timed(self, fs: OneDataFS, tool: Tool, cmd: list[str], what: str) -> Sample:
        time.sleep(ATTR_TIMEOUT + 0.1)  # cold kernel caches, as for a periodic save
        fs.reset_counts()
        start = time.perf_counter()
        tool.run(cmd, what)
        seconds = time.perf_counter() - start
        counts = settled_counts(fs)
        return Sample(seconds, metadata_calls(counts), {k: v for k, v in counts.items() if v})

    def run(self, sc: Scenario) -> Results:
        res = Results(sc)
        res.load.append(os.getloadavg()[0])  # the machine is shared: say how busy it was
        base = os.path.join(self.workdir, sc.name)
        shutil.rmtree(base, ignore_errors=True)
        template, backing, mnt = (os.path.join(base, d) for d in ("template", "backing", "mnt"))
        os.makedirs(backing)
        os.makedirs(mnt)
        t0 = time.perf_counter()
        stats = generate(template, files=sc.files, big=sc.big, big_size=sc.big_size)
        res.tree = dict(stats.__dict__)
        self.say(f"[{sc.name}] generated {stats.files} files, {stats.dirs} folders, "
                 f"{stats.links} links, {stats.bytes / 2**20:.0f} MiB in "
                 f"{time.perf_counter() - t0:.1f} s")
        expected_files, expected_links = tree_summary(template)
        fs = OneDataFS(backing, mnt, meta_delay_ms=sc.delay_ms, attr_timeout=ATTR_TIMEOUT)
        fs.start()
        try:
            chains: dict[str, Case] = {}
            for rep in range(sc.reps):
                order = self.tools[rep % len(self.tools):] + self.tools[:rep % len(self.tools)]
                for tool in order:
                    self._one_rep(fs, tool, sc, rep, base, template, chains, res,
                                  expected_files, expected_links)
        finally:
            fs.stop()
            res.load.append(os.getloadavg()[0])
        # Nothing is deleted before the whole run ends: on an ext4 without a journal (this
        # machine's disk), creating files within 5 minutes of deleting others is several
        # times slower, which would tax whichever tool runs next.
        return res

    def _one_rep(self, fs, tool, sc, rep, base, template, chains, res, expected_files,
                 expected_links) -> None:
        name = tool.name
        stagein = os.path.join(base, "local", f"{name}-stagein-{rep}")
        measured = ["nochange", "change1", "stagein"]
        if rep < sc.first_reps:  # a fresh primary: the first save is measured
            measured.insert(0, "first")
            case = Case(os.path.join(fs.mountpoint, f"{name}-{rep}"),
                        os.path.join(base, "local", f"{name}-work-{rep}"), stagein)
            os.makedirs(os.path.join(fs.backing, f"{name}-{rep}"))
            os.makedirs(os.path.dirname(case.work), exist_ok=True)
            copy_tree(template, case.work)
            tool.prepare(case)
            res.add("first", name, self.timed(fs, tool, tool.save_cmd(case), "first"))
        else:  # go on with the previous repetition's stage-in as the working copy
            prev = chains[name]
            case = Case(prev.primary, prev.stagein, stagein)
        res.add("nochange", name, self.timed(fs, tool, tool.save_cmd(case), "nochange"))
        change_files(case.work, 0.01, seed=100 + rep)
        res.add("change1", name, self.timed(fs, tool, tool.save_cmd(case), "change1"))
        tool.before_stagein(case)
        res.add("stagein", name, self.timed(fs, tool, tool.stagein_cmd(case), "stagein"))
        tool.after_stagein(case)
        files, links = tree_summary(case.stagein)
        want_links = expected_links if tool.restores_links else 0
        if set(files) != set(expected_files) or links != want_links:
            res.problems.append(
                f"{sc.name} rep {rep}: {name}'s stage-in holds {len(files)} files and {links} "
                f"links; expected {len(expected_files)} files and {want_links} links")
        chains[name] = case
        last = {o: res.samples[(o, name)][-1] for o in measured}
        self.say(f"[{sc.name}] rep {rep + 1}/{sc.reps} {name:9s} " + "  ".join(
            f"{o} {s.seconds:6.2f}s/{s.calls}" for o, s in last.items()))
