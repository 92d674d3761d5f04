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
from dataclasses import asdict
from datetime import datetime, timezone

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from spaceport.testing.onedatafs import fuse_available  # noqa: E402

from .measure import Results, Runner, Sample, Scenario  # noqa: E402
from .notes import NOTES  # noqa: E402
from .report import machine, markdown, scenario_tables, targets  # noqa: E402
from .scale import bigfile, scale  # noqa: E402
from .sections import kept_sections  # noqa: E402
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
    p.add_argument("--json", help="also write every number measured to this file")
    p.add_argument("--render", metavar="JSON",
                   help="measure nothing: write the report again from a --json file (after "
                        "editing benchmarks/notes.py, say)")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.render:
        with open(args.render) as f:
            run = load_run(json.load(f))
        write_outputs(run, args.out or os.path.join(REPO, "docs", "BENCHMARKS.md"), None)
        return 0
    parts = set(args.only.split(","))
    if parts & {"A", "B"}:
        ok, why = fuse_available()
        if not ok:
            print(f"cannot mount the FUSE filesystem: {why}", file=sys.stderr)
            return 1
    workdir = args.workdir or tempfile.mkdtemp(prefix="spaceport-bench-", dir="/var/tmp")
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    try:
        tools = make_tools(args.tools.split(","), os.path.join(workdir, "logs"), args.jobs,
                           fsync=not args.no_fsync)
    except ToolMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so the mount is always taken down.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run = measure(args, argv, parts, tools, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    out = args.out or (None if args.quick else os.path.join(REPO, "docs", "BENCHMARKS.md"))
    write_outputs(run, out, args.json)
    return 0


def measure(args, argv: list[str], parts: set[str], tools, workdir: str) -> dict:
    """Run the chosen parts; everything the report needs, as a dict (also saved as JSON)."""
    scenarios = dict(QUICK if args.quick else FULL)
    for sc in scenarios.values():
        if args.reps:
            every_rep_fresh = sc.first_reps == sc.reps
            sc.reps = args.reps
            sc.first_reps = args.reps if every_rep_fresh else min(sc.first_reps, args.reps)
        if args.delay_ms is not None:
            sc.delay_ms = args.delay_ms
    names = [t.name for t in tools]
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    run: dict = {"argv": argv, "started": started.isoformat(), "tools": names,
                 "machine": machine(os.path.dirname(workdir)), "results": {},
                 "scale": None, "bigfile": None}
    runner = Runner(workdir, tools, say)
    for key, sc in scenarios.items():
        if key in parts:
            say(f"== scenario {key}: {sc.title}, {sc.reps} repetition(s)")
            run["results"][key] = runner.run(sc)
            say(scenario_tables(run["results"][key], names))
    if "scale" in parts and "spaceport" in names:
        files = args.scale_files or (20000 if args.quick else 200_000)
        say(f"== scale: {files:,} files on local disk")
        run["scale"] = scale(workdir, files, 3, say)
    if "bigfile" in parts and "spaceport" in names:
        mib = args.big_mib or (256 if args.quick else 1024)
        say(f"== big file: {mib} MiB on local disk")
        run["bigfile"] = bigfile(workdir, mib << 20, 5, say)
    run["minutes"] = (time.monotonic() - t0) / 60
    return run


def write_outputs(run: dict, out: str | None, json_path: str | None) -> None:
    say("== targets")
    for target, measured, verdict in targets(run["results"], run["scale"], run["bigfile"]):
        say(f"  {verdict:13s} {target}: {measured}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dump_run(run), f, indent=1)
    if out:
        text = markdown(run["argv"], datetime.fromisoformat(run["started"]), run["minutes"],
                        run["machine"], run["results"], run["tools"], run["scale"],
                        run["bigfile"], NOTES)
        text += kept_sections(out)
        with open(out, "w") as f:
            f.write(text)
        say(f"wrote {out}")


def dump_run(run: dict) -> dict:
    return {**run, "results": {k: {"scenario": asdict(r.scenario), "tree": r.tree,
                                   "problems": r.problems, "load": r.load,
                                   "samples": [{"op": op, "tool": tool,
                                                "runs": [asdict(s) for s in v]}
                                               for (op, tool), v in r.samples.items()]}
                               for k, r in run["results"].items()}}


def load_run(data: dict) -> dict:
    results = {}
    for key, r in data["results"].items():
        res = Results(Scenario(**r["scenario"]), tree=r["tree"], problems=r["problems"],
                      load=r.get("load", []))
        for item in r["samples"]:
            for s in item["runs"]:
                res.add(item["op"], item["tool"], Sample(**s))
        results[key] = res
    return {**data, "results": results}


def say(msg: str) -> None:
    print(msg, flush=True)


if __name__ == "__main__":
    sys.exit(main())
