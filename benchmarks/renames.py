"""A folder of 10,000 files renamed, then saved: ``python -m benchmarks.renames [--write]``.

On the OneData-like FUSE filesystem (spaceport.testing.onedatafs), each tool gets its own
primary folder on one mount holding the same project: ``Runs/`` with 10,000 small files in
100 run folders, plus a few other files. The project is saved once (spaceport: deployed,
then saved), then each tool makes a save with nothing changed and, after ``Runs/`` is
renamed ``Runs-old/`` in the working copy, one save. The filesystem counts the calls and the
bytes written; both saves start cold (the kernel's FUSE caches expired), as a periodic save
does. Counted, not timed. Every primary is compared with its working copy at the end.

rsync (``-a --delete``) and rclone (``sync``) do the same sync in the same run, each into its
own folder (benchmarks/tools.py); neither knows about renames: they copy the files again
under the new name and delete the old ones.

Prints a markdown table; ``--write`` puts it in docs/BENCHMARKS.md between its markers (a
section ``python -m benchmarks.run`` keeps).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

if __package__ in (None, ""):  # python benchmarks/renames.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from spaceport.testing.onedatafs import OneDataFS, fuse_available, metadata_calls  # noqa: E402

from .sections import markers, write_section  # noqa: E402
from .tools import Case, Tool, ToolMissing, make_tools  # noqa: E402

BEGIN, END = markers("renames")
ATTR_TIMEOUT = 1.0  # the mount's attribute and entry cache (libfuse's default), seconds
TARGET_CALLS = 10  # issue 12: at most this many metadata calls beyond a no-change save


def make_project(root: str, files: int) -> None:
    """``Runs/`` with ``files`` files of 1 KiB in 100 run folders, plus a few others."""
    for i in range(files):
        folder = os.path.join(root, "Runs", f"run{i % 100:03d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{i:05d}.mrc"), "wb") as f:
            f.write(i.to_bytes(4, "little") * 256)
    for name in ("Logs/project.log", "project.conf", "Other/notes.txt"):
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(name.encode() * 10)


def digests(root: str, skip=(".spaceport", ".deployment_status_do_not_delete")) -> dict:
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = \
                    hashlib.sha256(f.read()).hexdigest()
    return out


def counted(fs: OneDataFS, tool: Tool, case: Case, what: str) -> dict:
    time.sleep(ATTR_TIMEOUT + 0.2)  # cold, as a periodic save starts
    fs.reset_counts()
    tool.run(tool.save_cmd(case), what)
    counts = fs.counts()
    return {"calls": metadata_calls(counts), "bytes": fs.bytes_written(),
            "renames": counts["rename"], "creates": counts["create"],
            "unlinks": counts["unlink"], "counts": counts}


def measure(root: str, files: int, tools: list[Tool], meta_delay_ms: float) -> dict:
    backing, mount = os.path.join(root, "backing"), os.path.join(root, "mnt")
    os.makedirs(backing)
    os.makedirs(mount)
    results = {}
    with OneDataFS(backing, mount, meta_delay_ms=meta_delay_ms) as fs:
        for tool in tools:
            primary = os.path.join(mount, tool.name)
            case = Case(primary=primary, work=os.path.join(root, f"work-{tool.name}"),
                        stagein=os.path.join(root, f"stagein-{tool.name}"))
            os.makedirs(os.path.join(backing, tool.name))
            if tool.name == "spaceport":  # the project is on the primary, deployed
                make_project(os.path.join(backing, tool.name), files)
                tool.run(tool.base + ["deploy", primary, case.work], "deploy")
            else:  # the project is in the working copy, synced once
                make_project(case.work, files)
            tool.run(tool.save_cmd(case), "first")
            quiet = counted(fs, tool, case, "nochange")
            os.rename(os.path.join(case.work, "Runs"), os.path.join(case.work, "Runs-old"))
            renamed = counted(fs, tool, case, "renamed")
            same = digests(os.path.join(backing, tool.name)) == digests(case.work)
            results[tool.name] = {"nochange": quiet, "renamed": renamed, "same": same}
    return results


def table(results: dict, files: int, argv: list[str], meta_delay_ms: float) -> str:
    sp = results.get("spaceport")
    lines = [BEGIN, "## A renamed folder (issue 12): counted, not timed", "",
             f"Written by `python -m {' '.join(['benchmarks.renames'] + argv)}` on "
             f"{datetime.now(timezone.utc):%Y-%m-%d} ({os.cpu_count()}-core "
             f"{platform.machine()} machine; OneData-like FUSE mount, "
             f"{meta_delay_ms:g} ms per metadata call). A project of {files:,} files of 1 KiB "
             f"in `Runs/` (100 run folders) plus 3 other files is saved once; then each "
             "tool saves with nothing changed, and once more after `Runs/` was renamed "
             "`Runs-old/` in the working copy. Both saves start with the kernel's FUSE caches "
             "expired. *Calls*: metadata calls the filesystem counted (everything but read "
             "and write); *beyond*: the renamed save's calls minus the no-change save's; "
             "*bytes*: bytes written through the mount. rsync and rclone do the same sync "
             "into their own folder on the same mount, in the same run; the ratios are "
             "theirs over spaceport's.", "",
             "| tool | no-change save: calls | renamed: calls | beyond no-change | "
             "renames | files created | files deleted | bytes written (renamed) | "
             "primary equals work |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        q, n = r["nochange"], r["renamed"]
        lines.append(f"| {name} | {q['calls']:,} | {n['calls']:,} | "
                     f"{n['calls'] - q['calls']:,} | {n['renames']:,} | {n['creates']:,} | "
                     f"{n['unlinks']:,} | {n['bytes']:,} | {'yes' if r['same'] else 'NO'} |")
    if sp:
        beyond = sp["renamed"]["calls"] - sp["nochange"]["calls"]
        file_bytes = sp["renamed"]["bytes"] - sp["nochange"]["bytes"]
        lines += ["", f"spaceport: {beyond} metadata calls beyond a no-change save (target: "
                      f"at most {TARGET_CALLS}: {'met' if beyond <= TARGET_CALLS else 'MISSED'}), "
                      f"{file_bytes} bytes written beyond it (the save journal's line; "
                      "no file uploaded: target 0 bytes of files, "
                      f"{'met' if sp['renamed']['creates'] <= sp['nochange']['creates'] else 'MISSED'})."]
        for name, r in results.items():
            if name == "spaceport":
                continue
            n = r["renamed"]
            calls = n["calls"] / max(1, sp["renamed"]["calls"])
            data = n["bytes"] / max(1, sp["renamed"]["bytes"])
            lines.append(f"{name}: {calls:,.0f}× spaceport's metadata calls and {data:,.0f}× "
                         f"its bytes written for the same rename.")
    lines += ["", "A folder renamed in the working copy is one rename on the primary: "
                  "spaceport finds it from the index (the folder's inode, and a file inside "
                  "it at its place as the same file: inode, size, mtime and ctime), makes it, "
                  "then moves the index rows "
                  "(src/spaceport/engine/renames.py; tests/test_renames.py counts the same on every "
                  "run).", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.renames", description=__doc__)
    p.add_argument("--files", type=int, default=10_000, help="files in Runs/ (10,000)")
    p.add_argument("--tools", default="spaceport,rsync,rclone")
    p.add_argument("--meta-delay-ms", type=float, default=0.5)
    p.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    p.add_argument("--json", help="also write every number to this file")
    args = p.parse_args(argv)
    ok, why = fuse_available()
    if not ok:
        raise SystemExit(f"FUSE is not available here: {why}")
    root = tempfile.mkdtemp(prefix="spaceport-renames-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        try:
            tools = make_tools(args.tools.split(","), root, jobs=None)
        except ToolMissing as exc:
            raise SystemExit(str(exc)) from None
        results = measure(root, args.files, tools, args.meta_delay_ms)
    finally:
        subprocess.run(["fusermount3", "-u", "-q", os.path.join(root, "mnt")],
                       stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(root, ignore_errors=True)
    shown = [a for a in argv if a not in ("--write",) and not a.startswith("--json")]
    text = table(results, args.files, shown, args.meta_delay_ms)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.write:
        print("wrote", write_section("renames", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
