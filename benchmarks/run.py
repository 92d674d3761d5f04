"""One command for every benchmark: ``python -m benchmarks.run [--quick]``.

Generates Scipion-like trees, mounts the OneData-like FUSE filesystem with the issue's
delays, measures spaceport, rclone and rsync on the same mount in the same run, then the
local-disk scale and big-file tests, prints the tables and writes ``docs/BENCHMARKS.md``
(the full run only, unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from spaceport.testing.onedatafs import fuse_available  # noqa: E402

from .measure import Runner, Scenario  # noqa: E402
from .notes import NOTES  # noqa: E402
from .report import machine, markdown, scenario_tables, targets  # noqa: E402
from .scale import bigfile, scale  # noqa: E402
from .tools import ToolMissing, make_tools  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FULL = {"A": Scenario("A", 5000, 1.0, reps=3, first_reps=3),
        "B": Scenario("B", 20000, 2.0, reps=3, first_reps=1)}
QUICK = {"A": Scenario("A", 1000, 1.0, reps=1, first_reps=1),
         "B": Scenario("B", 2000, 2.0, reps=2, first_reps=1)}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, one or two runs: a smoke check of about two minutes")
    p.add_argument("--only", default="A,B,scale,bigfile",
                   help="comma-separated parts to run: A, B, scale, bigfile")
    p.add_argument("--tools", default="spaceport,rclone,rsync")
    p.add_argument("--reps", type=int, help="repetitions per scenario (default 3; quick 1-2)")
    p.add_argument("--jobs", type=int, help="spaceport --jobs (default: spaceport's default)")
    p.add_argument("--no-fsync", action="store_true",
                   help="spaceport saves with --no-fsync (to measure what fsync costs)")
    p.add_argument("--delay-ms", type=float,
                   help="override the delay per metadata call of both scenarios")
    p.add_argument("--scale-files", type=int, help="files in the scale test (200000; quick 20000)")
    p.add_argument("--big-mib", type=int, help="size of the big file (1024; quick 256)")
    p.add_argument("--workdir", help="where trees and mounts go (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    p.add_argument("--out", help="markdown file to write (default: docs/BENCHMARKS.md for "
                                 "the full run, none for --quick)")
    p.add_argument("--json", help="also write the raw numbers to this file")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    parts = set(args.only.split(","))
    tools_wanted = args.tools.split(",")
    scenarios = dict(QUICK if args.quick else FULL)
    if args.reps:
        for sc in scenarios.values():
            every_rep_fresh = sc.first_reps == sc.reps
            sc.reps = args.reps
            sc.first_reps = args.reps if every_rep_fresh else min(sc.first_reps, args.reps)
    if args.delay_ms is not None:
        for sc in scenarios.values():
            sc.delay_ms = args.delay_ms
    scale_files = args.scale_files or (20000 if args.quick else 200_000)
    big_mib = args.big_mib or (256 if args.quick else 1024)
    out = args.out or (None if args.quick else os.path.join(REPO, "docs", "BENCHMARKS.md"))

    if parts & {"A", "B"}:
        ok, why = fuse_available()
        if not ok:
            print(f"cannot mount the FUSE filesystem: {why}", file=sys.stderr)
            return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix="spaceport-bench-", dir="/var/tmp")
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    try:
        tools = make_tools(tools_wanted, os.path.join(workdir, "logs"), args.jobs,
                           fsync=not args.no_fsync)
    except ToolMissing as exc:
        print(exc, file=sys.stderr)
        return 1

    # SIGTERM unwinds like Ctrl-C, so the mount is always taken down.
    signal.signal(signal.SIGTERM, _interrupt)
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    results, scale_res, big_res = {}, None, None
    try:
        runner = Runner(workdir, tools, say)
        for key, sc in scenarios.items():
            if key in parts:
                say(f"== scenario {key}: {sc.title}, {sc.reps} repetition(s)")
                results[key] = runner.run(sc)
                say(scenario_tables(results[key], [t.name for t in tools]))
        if "scale" in parts and "spaceport" in tools_wanted:
            say(f"== scale: {scale_files:,} files on local disk")
            scale_res = scale(workdir, scale_files, 3, say)
        if "bigfile" in parts and "spaceport" in tools_wanted:
            say(f"== big file: {big_mib} MiB on local disk")
            big_res = bigfile(workdir, big_mib << 20, 5, say)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")
    minutes = (time.monotonic() - t0) / 60
    say("== targets")
    for target, measured, verdict in targets(results, scale_res, big_res):
        say(f"  {verdict:13s} {target}: {measured}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scenarios": {k: {f"{op}/{tool}": [s.__dict__ for s in v]
                                         for (op, tool), v in r.samples.items()}
                                     for k, r in results.items()},
                       "scale": scale_res, "bigfile": big_res}, f, indent=1)
    if out:
        text = markdown(argv, started, minutes, machine(os.path.dirname(workdir)), results,
                        [t.name for t in tools], scale_res, big_res, NOTES)
        with open(out, "w") as f:
            f.write(text)
        say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
