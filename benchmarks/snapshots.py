"""Database snapshots against a plain copy: ``python -m benchmarks.snapshots [--quick]``.

For a 100 MiB and a 1 GiB SQLite database (rollback journal, as Scipion keeps them), idle
and under a busy writer (a process committing small transactions as fast as it can), it
saves the database the two ways spaceport's Copier can: a plain copy of the file, and a
snapshot (spaceport.engine.snapshot, the backup API in one read transaction). Each result is
checked with ``PRAGMA integrity_check`` and the writer's counter against its log table (a committed state has as many log rows
as the counter says). Under
the writer it also records how long the writer's commits waited meanwhile: a snapshot
holds a read lock for its whole length, and a rollback-journal writer cannot commit then.

Prints a markdown table; ``--write`` puts it in docs/BENCHMARKS.md (its own section,
which ``python -m benchmarks.run`` keeps when it writes the rest of the file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

if __package__ in (None, ""):  # python benchmarks/snapshots.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from spaceport.engine.progress import Tracker  # noqa: E402
from spaceport.engine.snapshot import Snapshotter  # noqa: E402
from spaceport.engine.transfer import Copier, CopyJob  # noqa: E402
from spaceport.store import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore  # noqa: E402
from spaceport.store.base import temp_name  # noqa: E402
from spaceport.store.retry import RetryPolicy  # noqa: E402

from .sections import markers, write_section  # noqa: E402

BEGIN, END = markers("snapshots")
TOKEN = "5eed5eed"

WRITER = textwrap.dedent("""
    import os, sqlite3, sys, time
    path, lat = sys.argv[1], sys.argv[2]
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    n = db.execute("SELECT n FROM counter").fetchone()[0]
    pages = db.execute("SELECT max(rowid) FROM blobs").fetchone()[0]
    waits = []
    open(lat + ".ready", "w").close()
    try:
        while True:
            n += 1
            t = time.monotonic()
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE blobs SET b = randomblob(4000) WHERE rowid = ?",
                       ((n * 7919) % pages + 1,))
            db.execute("INSERT INTO log VALUES (?, randomblob(100))", (n,))
            db.execute("UPDATE counter SET n = ?", (n,))
            db.execute("COMMIT")
            waits.append(time.monotonic() - t)
            if len(waits) % 200 == 0:
                with open(lat, "w") as f:
                    f.write(repr(waits))
    except KeyboardInterrupt:
        pass
    with open(lat, "w") as f:
        f.write(repr(waits))
""")


def make_db(path: str, mib: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size=4096")
    db.execute("CREATE TABLE blobs (b BLOB)")
    db.execute("CREATE TABLE counter (n INTEGER)")
    db.execute("CREATE TABLE log (i INTEGER PRIMARY KEY, pad BLOB)")
    db.execute("INSERT INTO counter VALUES (0)")
    db.execute("BEGIN")
    rows = mib * 1024 * 1024 // 4200
    for start in range(0, rows, 10000):
        db.execute("INSERT INTO blobs SELECT randomblob(4000) FROM "
                   "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
                   f"LIMIT {min(10000, rows - start)}) SELECT x FROM c)")
    db.execute("COMMIT")
    db.close()


def consistent(path: str) -> str:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        n = db.execute("SELECT n FROM counter").fetchone()[0]
        logged = db.execute("SELECT count(*) FROM log").fetchone()[0]
        db.close()
        if ok != "ok":
            return "corrupt"
        return "intact" if n == logged else "torn (counter and log disagree)"
    except sqlite3.DatabaseError:
        return "corrupt"


def save_once(work: str, dst: str, name: str, snapshot: bool) -> tuple[float, str]:
    src = PosixStore(work, WORK_CAPABILITIES, temp_token=TOKEN)
    out = PosixStore(dst, PRIMARY_CAPABILITIES, temp_token=TOKEN, fsync=False)
    snaps = Snapshotter(os.path.join(work, ".spaceport", "snapshots")) if snapshot else None
    copier = Copier(src, out, tracker=Tracker(), task="bench", retry=RetryPolicy(attempts=1),
                    stop=threading.Event(), snapshots=snaps)
    t = time.monotonic()
    done = copier.copy(CopyJob(name, os.path.getsize(os.path.join(work, name)),
                               temp_name(TOKEN)))
    seconds = time.monotonic() - t
    if done.error is not None:
        return seconds, f"not saved ({done.error})"
    verdict = consistent(os.path.join(dst, name))
    return seconds, verdict + (" (changed while copied)" if done.unstable else "")


def measure(root: str, mib: int, reps: int) -> list[dict]:
    work, dst = os.path.join(root, f"work{mib}"), os.path.join(root, f"dst{mib}")
    os.makedirs(work)
    os.makedirs(dst)
    name = f"db{mib}.sqlite"
    path = os.path.join(work, name)
    t = time.monotonic()
    make_db(path, mib)
    print(f"  made a {mib} MiB database in {time.monotonic() - t:.1f} s", flush=True)
    rows = []
    for load in ("idle", "busy writer"):
        writer, lat = None, os.path.join(root, f"lat{mib}")
        if load != "idle":
            writer = subprocess.Popen([sys.executable, "-c", WRITER, path, lat])
            while not os.path.exists(lat + ".ready"):
                time.sleep(0.01)
            time.sleep(1.0)
        for method in ("plain copy", "snapshot"):
            times, verdicts = [], []
            marks = []
            for _ in range(reps):
                os.sync()
                marks.append(time.monotonic())
                seconds, verdict = save_once(work, dst, name, method == "snapshot")
                times.append(seconds)
                verdicts.append(verdict)
            row = {"size_mib": mib, "load": load, "method": method,
                   "seconds": sorted(times)[len(times) // 2], "all_seconds": times,
                   "results": verdicts}
            rows.append(row)
            print(f"  {mib} MiB {load:11s} {method:10s} {row['seconds']:6.2f} s  {verdicts}",
                  flush=True)
        if writer is not None:
            writer.send_signal(2)
            writer.wait(timeout=60)
            with open(lat) as f:
                waits = eval(f.read())  # noqa: S307 - our own writer's repr of floats
            for row in rows[-2:]:
                row["writer_commits"] = len(waits)
            rows[-1]["writer_max_wait"] = rows[-2]["writer_max_wait"] = max(waits)
    return rows


def table(rows: list[dict], argv: str) -> str:
    lines = [BEGIN, "## SQLite databases: snapshot against a plain copy", "",
             f"Measured with `{argv}` on {time.strftime('%Y-%m-%d')} (2-core machine, local "
             "disk to local disk; the primary is a plain folder so that the figures show the "
             "cost of the snapshot itself). Each figure is the median of the repetitions; the "
             "result of every repetition is checked with `PRAGMA integrity_check` and by "
             "comparing the writer's counter with its log table (one row per commit). "
             "\"changed while copied\": the Copier saw the file change under the plain copy "
             "(it commits it and saves it again next time).", "",
             "| database | load | plain copy | snapshot | plain copy results | snapshot results |",
             "| -------- | ---- | ---------: | -------: | ------------------ | ---------------- |"]
    by = {(r["size_mib"], r["load"], r["method"]): r for r in rows}
    for mib in sorted({r["size_mib"] for r in rows}):
        for load in ("idle", "busy writer"):
            plain, snap = by[(mib, load, "plain copy")], by[(mib, load, "snapshot")]

            def summary(r):
                counts: dict[str, int] = {}
                for v in r["results"]:
                    counts[v] = counts.get(v, 0) + 1
                return ", ".join(f"{n} {v}" for v, n in counts.items())
            lines.append(f"| {mib} MiB | {load} | {plain['seconds']:.2f} s | "
                         f"{snap['seconds']:.2f} s | {summary(plain)} | {summary(snap)} |")
    busy = [r for r in rows if r["load"] != "idle" and r["method"] == "snapshot"]
    lines += ["", "Under the busy writer (" + "; ".join(
        f"{r['size_mib']} MiB: {r['writer_commits']} commits during the measurements, the "
        f"longest waited {r['writer_max_wait']:.2f} s" for r in busy) + "): a snapshot holds "
        "a read lock for as long as it reads, and a rollback-journal writer waits for it to "
        "commit (pyworkflow 3.11.7 opens its databases with a 1000 s busy timeout, so it "
        "waits, it does not fail). A plain copy does not stop the writer, and what it copies is not a "
        "database one can trust.", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.snapshots", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10 and 100 MiB, one repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    p.add_argument("--json", help="also write every number to this file")
    args = p.parse_args(argv)
    sizes, reps = ([10, 100], 1) if args.quick else ([100, 1024], args.reps)
    root = tempfile.mkdtemp(prefix="spaceport-snapbench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        rows = []
        for mib in sizes:
            rows += measure(root, mib, reps)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = table(rows, "python -m benchmarks.snapshots" + (" --quick" if args.quick else ""))
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.write:
        print("wrote", write_section("snapshots", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
