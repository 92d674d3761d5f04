"""Local-disk benchmarks: a no-change save of a very large tree, and one big file.

- Scale: a working copy of N files (200,000 in the full run) deployed from a primary on the
  same local disk; a save with nothing changed, run as the command a user or a cron job
  runs (``spaceport save WORK``: interpreter start-up included), against
  ``find WORK -printf '%s %T@\\n'`` on the same tree, which is the least any tool that
  looks at every file must do. Peak memory is the save process's maximum resident set.
- Big file: one file of ≥ 1 GiB saved to a primary on the same disk, against ``cp``. The
  save fsyncs the file before renaming it into place (the default), so it is compared with
  ``cp`` followed by an fsync of the copy; ``--no-fsync`` is compared with plain ``cp``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from .tools import compile_spaceport, spaceport_env
from .tree import generate

SAVE_TIMER = """
import json, sys, time
from spaceport.commands.options import Options
from spaceport.commands.save import save
work, fsync = sys.argv[1], sys.argv[2] == "1"
start = time.perf_counter()
report = save(work, Options(fsync=fsync))
print(json.dumps({"seconds": time.perf_counter() - start, "uploaded": report.uploaded}))
"""


def run_measured(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, int, bytes]:
    """(wall seconds, peak RSS in KiB, stdout) of one process."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL,
                                env=spaceport_env())
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own peak memory
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.stdout:
            proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                               f"{err.read().decode(errors='replace')[-3000:]}")
    return seconds, usage.ru_maxrss, out


def spaceport(*args: str) -> list[str]:
    return [sys.executable, "-m", "spaceport", *args]


def scale(workdir: str, files: int, reps: int, say=print) -> dict:
    base = os.path.join(workdir, "scale")
    shutil.rmtree(base, ignore_errors=True)
    primary, work = os.path.join(base, "primary"), os.path.join(base, "work")
    os.makedirs(primary)
    compile_spaceport()
    # Nothing is removed before the whole run ends (see measure.Runner.run).
    run_measured(spaceport("deploy", primary, work))
    t0 = time.perf_counter()
    stats = generate(work, files=files, big=0, max_size=2048)
    say(f"[scale] generated {stats.files} files, {stats.dirs} folders, {stats.links} "
        f"links in {time.perf_counter() - t0:.1f} s")
    first, _, _ = run_measured(spaceport("save", work))
    say(f"[scale] first save to the local primary: {first:.1f} s")
    find = ["find", work, "-printf", r"%s %T@\n"]
    run_measured(find)  # the same warm caches for both
    finds, saves, rss = [], [], []
    for _ in range(reps):
        finds.append(run_measured(find)[0])
        seconds, peak, _ = run_measured(spaceport("save", work))
        saves.append(seconds)
        rss.append(peak)
    inproc = [json.loads(run_measured([sys.executable, "-c", SAVE_TIMER, work, "1"],
                                      stdout=subprocess.PIPE)[2])["seconds"]
              for _ in range(reps)]
    result = {"files": stats.files, "dirs": stats.dirs, "links": stats.links,
              "reps": reps, "first_save": first,
              "find": statistics.median(finds), "save": statistics.median(saves),
              "save_in_process": statistics.median(inproc),
              "peak_rss_mb": max(rss) / 1024}
    say(f"[scale] no-change save {result['save']:.2f} s (in process "
        f"{result['save_in_process']:.2f} s), find {result['find']:.2f} s, peak RSS "
        f"{result['peak_rss_mb']:.0f} MB")
    return result


def _fresh_copy(path: str) -> None:
    """Make the next save upload ``path`` again: a new mtime, same bytes."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def bigfile(workdir: str, size: int, reps: int, say=print) -> dict:
    base = os.path.join(workdir, "bigfile")
    shutil.rmtree(base, ignore_errors=True)
    primary, work, cpdir = (os.path.join(base, d) for d in ("primary", "work", "cp"))
    os.makedirs(primary)
    os.makedirs(cpdir)
    compile_spaceport()
    run_measured(spaceport("deploy", primary, work))
    src = os.path.join(work, "micrograph_stack.mrcs")
    with open(src, "wb") as f:
        block = os.urandom(8 << 20)
        for _ in range(size // len(block)):
            f.write(block)
    run_measured(spaceport("save", work))  # source in the page cache, as for cp
    times: dict[str, list[float]] = {"cp": [], "cp+fsync": [], "spaceport --no-fsync": [],
                                     "spaceport": []}
    dst = os.path.join(cpdir, "copy.mrcs")
    for _ in range(reps):
        for what in times:
            subprocess.run(["sync"], check=True)  # no dirty pages from the last round
            if what.startswith("cp"):
                if os.path.exists(dst):
                    os.unlink(dst)
                start = time.perf_counter()
                subprocess.run(["cp", src, dst], check=True)
                if what == "cp+fsync":
                    fd = os.open(dst, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
                times[what].append(time.perf_counter() - start)
            else:
                # As for cp: the old copy is removed untimed (freeing 1 GiB of blocks
                # would otherwise be counted in the rename that replaces it).
                old = os.path.join(primary, os.path.basename(src))
                if os.path.exists(old):
                    os.unlink(old)
                    subprocess.run(["sync"], check=True)
                _fresh_copy(src)
                fsync = "0" if "no-fsync" in what else "1"
                _, _, out = run_measured([sys.executable, "-c", SAVE_TIMER, work, fsync],
                                         stdout=subprocess.PIPE)
                got = json.loads(out)
                assert got["uploaded"] == 1, got
                times[what].append(got["seconds"])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"size": size, "reps": reps, "seconds": med,
              "mb_per_s": {k: size / v / 1e6 for k, v in med.items()}}
    say("[bigfile] " + ", ".join(f"{k} {v:.2f} s ({size / v / 1e6:.0f} MB/s)"
                                 for k, v in med.items()))
    return result
