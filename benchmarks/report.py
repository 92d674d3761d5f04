"""Turning measurements into the tables of ``docs/BENCHMARKS.md`` and the console."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone

from .measure import OP_TITLES, OPS, Results
from .tools import FLAGS, find_rclone, find_rsync, version_of

NOCHANGE_CALLS_MAX = 50  # "a few tens at most"
JOBS = 32  # spaceport's default --jobs: the concurrency of its calls in the physical limit


def concurrency(op: str) -> int:
    """How many of spaceport's calls are under way at once: its --jobs for the copies; one
    for a save with nothing to do, whose few calls (the lock, the mount, the heartbeat) are
    made one after the other."""
    return 1 if op == "nochange" else JOBS


def physical_limit(res: Results, op: str) -> float | None:
    """The least time the calls could take: calls × latency ÷ concurrency, with every call
    a round trip of the scenario's delay."""
    calls = res.calls(op, "spaceport")
    return None if calls is None else calls * res.scenario.delay_ms / 1000 / concurrency(op)


def filesystem_of(path: str) -> str:
    """'ext4 (rw,relatime,...)' for the mount holding ``path``, from /proc/self/mounts."""
    best, found = "", "?"
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                _, point, fstype, options = line.split()[:4]
                if (path == point or path.startswith(point.rstrip("/") + "/")) \
                        and len(point) >= len(best):
                    best, found = point, f"{fstype} ({options})"
    except OSError:
        pass
    return found


def machine(workdir: str = "/var/tmp") -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), "?")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    def tool(find, args):
        try:
            return version_of([find(), *args])
        except Exception as exc:  # noqa: BLE001 - a missing tool is reported, not fatal
            return f"missing ({exc})"
    return {"cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{mem:.0f} GiB",
            "kernel": platform.release(), "disk": filesystem_of(workdir),
            "python": platform.python_version(),
            "rclone": tool(find_rclone, ["version"]), "rsync": tool(find_rsync, ["--version"]),
            "spaceport": commit}


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} ×"


def scenario_tables(res: Results, tools: list[str]) -> str:
    others = [t for t in tools if t != "spaceport"]
    head = ["operation"] + [f"{t}" for t in tools] + [f"spaceport ÷ {t}" for t in others
                                                       if "spaceport" in tools]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op in OPS:
        row = [OP_TITLES[op]]
        for t in tools:
            n = res.n(op, t)
            row.append(f"{fmt_s(res.median(op, t))}" + (f" (n={n})" if n else ""))
        if "spaceport" in tools:
            row += [fmt_r(ratio(res.median(op, "spaceport"), res.median(op, t))) for t in others]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Metadata calls on the primary (every request of the kernel but read and write, "
              "as oneclient would serve them; median; `tests/test_performance_invariants.py` "
              "says which is whose):",
              "", "| operation | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for op in OPS:
        lines.append(f"| {OP_TITLES[op]} | " + " | ".join(
            "–" if res.calls(op, t) is None else f"{res.calls(op, t):,}" for t in tools) + " |")
    if res.problems:
        lines += ["", "**Problems seen:**", ""] + [f"- {p}" for p in res.problems]
    return "\n".join(lines)


def targets(results: dict[str, Results], scale: dict | None, big: dict | None) -> list[tuple]:
    """(target, measured, verdict) rows; verdict is 'met', 'missed' or 'not measured'."""
    rows = []

    def vs_rclone(key: str, op: str, limit: float, text: str) -> None:
        res = results.get(key)
        mine, theirs = (res.median(op, "spaceport"), res.median(op, "rclone")) if res \
            else (None, None)
        r = ratio(mine, theirs)
        floor = physical_limit(res, op) if res else None
        measured = fmt_r(r) if r is None else (
            f"{fmt_r(r)} ({fmt_s(mine)} vs {fmt_s(theirs)}; physical limit "
            f"{res.calls(op, 'spaceport'):,} calls × {res.scenario.delay_ms:g} ms ÷ "
            f"{concurrency(op)} = "
            f"{fmt_s(floor)}, {fmt_r(ratio(floor, theirs))} rclone)")
        rows.append((text, measured, "not measured" if r is None else
                     "met" if r <= limit else "missed"))

    small, large = results.get("A"), results.get("B")
    at = lambda res: f" ({res.scenario.title})" if res else ""  # noqa: E731
    # Issue 22's limits (the first ones, issue 3's, were 0.5, 1.0, 0.15 and 0.3).
    vs_rclone("A", "first", 0.2, f"first save ≤ 0.2 × rclone{at(small)}")
    vs_rclone("A", "stagein", 0.4, f"stage-in ≤ 0.4 × rclone{at(small)}")
    vs_rclone("B", "nochange", 0.05, f"save, nothing changed ≤ 0.05 × rclone{at(large)}")
    vs_rclone("B", "change1", 0.3, f"save, 1 % changed ≤ 0.3 × rclone{at(large)}")
    calls = {k: r.calls("nochange", "spaceport") for k, r in results.items()
             if r.calls("nochange", "spaceport") is not None}
    if calls:
        sizes = ", ".join(f"{results[k].scenario.files:,} files: {v}" for k, v in calls.items())
        ok = max(calls.values()) <= NOCHANGE_CALLS_MAX and \
            max(calls.values()) - min(calls.values()) <= 5
        rows.append(("save with nothing changed: constant metadata calls, a few tens at most",
                     sizes, "met" if ok else "missed"))
    if scale:
        r = scale["save"] / scale["find"]
        rows.append((f"{scale['files']:,}-file no-change save ≤ 5 × find (local disk)",
                     f"{scale['save']:.2f} s vs {scale['find']:.2f} s = {r:.1f} ×",
                     "met" if r <= 5 else "missed"))
        rows.append(("peak memory of that save ≤ 250 MB", f"{scale['peak_rss_mb']:.0f} MB",
                     "met" if scale["peak_rss_mb"] <= 250 else "missed"))
    if big:
        s = big["seconds"]
        r1 = s["cp+fsync"] / s["spaceport"]
        r2 = s["cp"] / s["spaceport --no-fsync"]
        rows.append((f"one {big['size'] >> 20} MiB file ≥ 0.9 × cp's throughput",
                     f"{r1:.2f} × (fsync'ed, vs cp + fsync); {r2:.2f} × (--no-fsync, vs cp)",
                     "met" if min(r1, r2) >= 0.9 else "missed"))
    return rows


def markdown(argv: list[str], started: datetime, minutes: float, info: dict,
             results: dict[str, Results], tools: list[str], scale: dict | None,
             big: dict | None, notes: str) -> str:
    shown = _measuring_args(argv)
    out = ["# Benchmarks", "",
           f"Written by `python -m benchmarks.run{' ' + ' '.join(shown) if shown else ''}` on "
           f"{started.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC (the run took "
           f"{minutes:.0f} min). Run the same command from a fresh clone to refresh this "
           "file. The text around the tables lives in `benchmarks/report.py` and "
           "`benchmarks/notes.py`; `--json FILE` keeps every number and `--render FILE` "
           "writes this file again from them.", "",
           "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out += ["", "## Method", "", METHOD, "", "| tool | save | stage-in |", "|---|---|---|"]
    out += [f"| {t} | `{FLAGS[t][0]}` | `{FLAGS[t][1]}` |" for t in tools]
    for key, res in results.items():
        out += ["", f"## Scenario {key}: {res.scenario.title}", "",
                f"Tree: {res.tree.get('files', 0):,} files, {res.tree.get('dirs', 0):,} "
                f"folders, {res.tree.get('links', 0):,} links, "
                f"{res.tree.get('bytes', 0) / 2**20:.0f} MiB. Medians of n runs."
                + (f" Load average (1 min) of the shared machine: {res.load[0]:.2f} at the "
                   f"start, {res.load[-1]:.2f} at the end." if len(res.load) == 2 else ""), "",
                scenario_tables(res, tools)]
    if scale:
        out += ["", "## Scale: no-change save on local disk", "",
                f"{scale['files']:,} files in {scale['dirs']:,} folders ({scale['links']:,} "
                f"links), primary and working copy on the same local disk, medians of "
                f"{scale['reps']}.", "",
                "| what | time |", "|---|---|",
                f"| `find WORK -printf '%s %T@\\n'` | {fmt_s(scale['find'])} |",
                f"| `spaceport save WORK` (a new process) | {fmt_s(scale['save'])} |",
                f"| the same save inside a running process (the daemon) | "
                f"{fmt_s(scale['save_in_process'])} |",
                f"| peak memory of `spaceport save` | {scale['peak_rss_mb']:.0f} MB |",
                f"| (first save of the whole tree, once) | {fmt_s(scale['first_save'])} |"]
    if big:
        out += ["", f"## One big file ({big['size'] >> 20} MiB), local disk to local disk", "",
                "| what | time | throughput |", "|---|---|---|"]
        out += [f"| {k} | {fmt_s(v)} | {big['mb_per_s'][k]:.0f} MB/s |"
                for k, v in big["seconds"].items()]
    out += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    out += [f"| {t} | {m} | {v} |" for t, m, v in targets(results, scale, big)]
    out += ["", notes.strip(), ""]
    return "\n".join(out)


def _measuring_args(argv: list[str]) -> list[str]:
    """The command line without the options that only say where results go."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--json", "--out", "--workdir"):
            skip = True
        elif not arg.startswith(("--json=", "--out=", "--workdir=")) and arg != "--keep":
            shown.append(arg)
    return shown


METHOD = """\
The primary is a OneData-like FUSE filesystem (`spaceport.testing.onedatafs`, libfuse 3
through mfusepy, 64 server threads, 1 s attribute and entry caches) over a folder on the
local disk; every metadata call sleeps for the given delay, like a network round trip, and
is counted. The working copies are on the local disk. Each tool has its own primary on the
same mount and runs, in each repetition: a first save into the empty primary, a save with
nothing changed, a save after 1 % of the files changed (rewritten, new mtime), and a
stage-in of the primary into an empty folder. Before each timed operation the kernel's FUSE
caches are left to expire (1.1 s), as they have when a periodic save starts. The tools run
in turn (their order rotates between repetitions). Every command is a new process, so
start-up is counted for every tool (about 0.3 s for Python and spaceport). After every
stage-in the result is compared with the generated tree (files, sizes, links)."""
