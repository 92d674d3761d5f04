"""Time to the desktop, whatever the source's size: ``python -m benchmarks.background
[--write] [--quick]``.

A small Scipion-like project (a few hundred files) on the OneData-like FUSE mount, and a
source of raw data (movies of 64 MiB) in two sizes on the same mount, read at a throttled
bandwidth (``--bwlimit`` of each tool, the same rate for all: what a shared provider gives
one pod). For each size ``spaceport run`` is started as a container starts it, and timed
from its start:

* ready: ``/readyz`` answers 200 (the desktop would start now);
* complete: the source is all in its working copy (``/status``'s ``source_progress``).

with ``--source-in-background`` and without (today's default, where ready waits for the
source); beside them, rclone's full copy of the same source at the same rate (``rclone copy
--bwlimit``), the least a stage-in that waits for the source can take. Time to ready with
the option must not grow with the source.

Prints a markdown section; ``--write`` puts it in docs/BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

if __package__ in (None, ""):  # python benchmarks/background.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from spaceport.testing.onedatafs import OneDataFS, fuse_available  # noqa: E402

from .sections import markers, write_section  # noqa: E402
from .tools import ToolMissing, find_rclone, version_of  # noqa: E402
from .tree import generate  # noqa: E402

BEGIN, END = markers("background")
MiB = 1 << 20
MOVIE = 64 * MiB
DELAY_MS = 1.0  # per metadata call, as scenario A


def write_movies(root: str, total: int) -> int:
    """``total`` bytes of movies of MOVIE bytes; each starts with its own random bytes (a
    block repeated after that: writing GiBs of os.urandom would take longer than the run)."""
    os.makedirs(os.path.join(root, "movies"), exist_ok=True)
    block = os.urandom(4 * MiB)
    for i in range(total // MOVIE):
        with open(os.path.join(root, "movies", f"movie_{i:04d}.tif"), "wb") as f:
            f.write(os.urandom(4096))
            for _ in range(MOVIE // len(block)):
                f.write(block)
    return total // MOVIE


class Daemon:
    """One ``spaceport run``, timed from its start."""

    def __init__(self, args: list[str], log: str):
        self.port_file = log + ".port"
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "SPACEPORT_PROGRESS": "false"}
        env.pop("SPACEPORT_JOBS", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "spaceport", "run", "--listen",
                                      "127.0.0.1:0", "--port-file", self.port_file, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.url = None

    def status(self) -> dict | None:
        if self.url is None:
            try:
                with open(self.port_file) as f:
                    self.url = f"http://127.0.0.1:{int(f.read())}"
            except (OSError, ValueError):
                return None
        try:
            with urllib.request.urlopen(self.url + "/status", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def until(self, predicate, limit: float) -> float:
        """Seconds from the start until ``predicate(status)``; polled every 20 ms."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spaceport run exited {self.proc.returncode}; see {self.log.name}")
            s = self.status()
            if s is not None and predicate(s):
                return time.monotonic() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"gave up after {limit} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(600)
        finally:
            self.log.close()


def one_size(root: str, mnt: str, source: str, rate: str, background: bool, tag: str,
             logs: str) -> dict:
    """A fresh deployment of the project with the source in ``source`` (on the mount)."""
    primary = os.path.join(mnt, "project")
    work, swork = (os.path.join(root, "local", f"{tag}-{n}") for n in ("work", "source"))
    args = ["--primary", primary, "--work", work, "--source", source, "--source-work", swork,
            "--bwlimit", rate, "--interval", "3600"] + \
        (["--source-in-background"] if background else [])
    d = Daemon(args, os.path.join(logs, f"{tag}.log"))
    try:
        ready = d.until(lambda s: s["ready"], 7200)
        complete = d.until(lambda s: (s.get("source_progress") or {}).get("complete"), 7200)
    finally:
        d.stop()
    for path in (work, swork):  # the next run starts from empty volumes
        subprocess.run(["rm", "-rf", path], check=False)
    return {"ready": ready, "complete": complete}


def settle() -> None:
    """Every run starts with the disk idle: the GiBs just written (the source, the last
    run's copy) written back first, not while the next run is timed."""
    os.sync()
    time.sleep(2)


def rclone_copy(source: str, dest: str, rate: str) -> float:
    cmd = [find_rclone(), "copy", source, dest, "--bwlimit", rate, "--transfers", "8",
           "--checkers", "16", "--config", ""]
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.monotonic() - start
    shutil.rmtree(dest, ignore_errors=True)
    return seconds


def measure(root: str, sizes: list[int], rate: str, project_files: int, say) -> dict:
    backing, mnt, logs = (os.path.join(root, n) for n in ("backing", "mnt", "logs"))
    for path in (backing, mnt, logs):
        os.makedirs(path)
    # The project: a first deployment's primary, made by spaceport itself (manifest, lock
    # folder), from a generated Scipion-like tree.
    template = os.path.join(root, "template")
    stats = generate(template, files=project_files, big=0)
    run = {"rate": rate, "project": dict(stats.__dict__), "rows": [], "load": [],
           "rclone": version_of([find_rclone(), "version"])}
    with OneDataFS(backing, mnt, meta_delay_ms=DELAY_MS):
        primary = os.path.join(mnt, "project")
        os.makedirs(primary)
        seed = os.path.join(root, "seed")
        cli = [sys.executable, "-m", "spaceport"]
        subprocess.run(cli + ["deploy", primary, seed], check=True, capture_output=True)
        subprocess.run(["cp", "-a", template + "/.", seed], check=True)
        subprocess.run(cli + ["undeploy", seed], check=True, capture_output=True)
        for size in sizes:
            name = f"source-{size // MiB}M"
            movies = write_movies(os.path.join(backing, name), size)
            source = os.path.join(mnt, name)
            settle()
            row = {"bytes": size, "movies": movies, "load": os.getloadavg()[0]}
            say(f"[background] source of {size // MiB} MiB ({movies} movies) at {rate}/s, "
                f"load {row['load']:.2f}")
            row["background"] = one_size(root, mnt, source, rate, True, f"{name}-bg", logs)
            say(f"  --source-in-background: ready {row['background']['ready']:.2f} s, "
                f"complete {row['background']['complete']:.2f} s")
            settle()
            row["default"] = one_size(root, mnt, source, rate, False, f"{name}-default", logs)
            say(f"  default: ready {row['default']['ready']:.2f} s")
            settle()
            row["rclone"] = rclone_copy(source, os.path.join(root, "local", "rclone"), rate)
            say(f"  rclone copy: {row['rclone']:.2f} s")
            row["load_after"] = os.getloadavg()[0]
            run["rows"].append(row)
            shutil.rmtree(os.path.join(backing, name))
    return run


def section(run: dict, command: str) -> str:
    rows = run["rows"]
    lines = [BEGIN, "## Time to the desktop with a large source (issue 22)", "",
             f"Written by `{command}`. A project of {run['project']['files']:,} files "
             f"({run['project']['bytes'] / MiB:.0f} MiB) and a source of 64 MiB movies, both "
             f"on the OneData-like mount ({DELAY_MS:g} ms per metadata call), every copy at "
             f"`--bwlimit {run['rate']}` (rclone {run['rclone'].split()[-1]}). Seconds from "
             "the start of `spaceport run`: ready is `/readyz` answering 200, complete is the "
             "source all in its working copy. One run each; the load average (1 min) when "
             "each size started is given.", "",
             "| source | spaceport ready, `--source-in-background` | complete | spaceport "
             "ready, default | rclone copy of the source | load |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bytes'] / MiB:,.0f} MiB ({r['movies']} movies) | "
                     f"{r['background']['ready']:.2f} s | {r['background']['complete']:.1f} s | "
                     f"{r['default']['ready']:.1f} s | {r['rclone']:.1f} s | "
                     f"{r['load']:.2f}–{r['load_after']:.2f} |")
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        grow = large["background"]["ready"] / small["background"]["ready"]
        verdict = "met" if grow <= 1.5 else "missed"
        lines += ["", f"Target: time to ready with the option does not grow with the source "
                  f"({large['bytes'] / small['bytes']:.0f} × the data): {verdict}, "
                  f"{small['background']['ready']:.2f} s and {large['background']['ready']:.2f}"
                  f" s ({grow:.2f} ×). Without the option ready waits for the whole source, "
                  "as long as rclone's copy of it at the same rate.", "",
                  "Each run starts after `sync` (the GiBs just written are on the disk). The "
                  "load average rises during the large runs because processes waiting for "
                  "the disk count in it. On the largest source the clone behind a ready "
                  "daemon took "
                  f"{large['background']['complete'] / large['default']['ready']:.2f} × as "
                  "long to complete as the same clone before ready (the same code and order "
                  "of files): not explained yet, one run each."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.background", description=__doc__)
    p.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="sources of 128 MiB and 512 MiB")
    p.add_argument("--sizes", help="source sizes in MiB, comma-separated (1024,8192)")
    p.add_argument("--rate", default="256M", help="bandwidth of every copy (256M)")
    p.add_argument("--project-files", type=int, default=300)
    p.add_argument("--json", help="also write every number measured to this file")
    p.add_argument("--render", metavar="JSON", help="measure nothing: write the section "
                                                    "again from a --json file")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            run = json.load(f)
        text = section(run, run.get("command", "python -m benchmarks.background"))
        print(text)
        if args.write:
            print(f"wrote {write_section('background', text)}")
        return 0
    ok, why = fuse_available()
    if not ok:
        print(f"FUSE unavailable: {why}", file=sys.stderr)
        return 2
    sizes = [int(s) * MiB for s in (args.sizes or ("128,512" if args.quick else "1024,8192"))
             .split(",")]
    root = tempfile.mkdtemp(prefix="spaceport-bgbench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        run = measure(root, sizes, args.rate, args.project_files, lambda m: print(m, flush=True))
    except ToolMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
    command = "python -m benchmarks.background" + (" --quick" if args.quick else "") + \
        (f" --sizes {args.sizes}" if args.sizes else "") + \
        (f" --rate {args.rate}" if args.rate != "256M" else "")
    run["command"] = command
    text = section(run, command)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)
    if args.write:
        print(f"wrote {write_section('background', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
