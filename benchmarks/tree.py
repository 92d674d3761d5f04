"""A Scipion-like project tree, generated deterministically from a seed.

A Scipion project is a folder of protocol runs (``Runs/000002_ProtImportMovies/`` ...), each
with its logs, a small SQLite file, and an ``extra/`` folder holding thousands of small
outputs (coordinates, CTF estimations, thumbnails, metadata) and, for some protocols, big
micrographs. Import runs link to the raw data outside the project (absolute links); later
runs link to outputs of earlier ones (relative links and absolute links into the project).

What matters for a sync benchmark is reproduced: the count of files and folders, the mix of
sizes (mostly a few KiB, some hundreds of KiB, a few MiB-sized micrographs), the fan-out of
folders and a few percent of symbolic links of every kind.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

PROTOCOLS = ("ProtImportMovies", "ProtMotionCorr", "ProtCTFFind", "ProtGautomatch",
             "ProtExtractParticles", "ProtClassify2D", "ProtInitialVolume", "ProtRefine3D",
             "ProtLocalRes", "ProtSubtractParticles")
SMALL_EXTS = (".xmd", ".star", ".txt", ".json", ".log", ".pos", ".ctfparam", ".sqlite")
RAW_DATA = "/data/raw/EMPIAR-10288"  # where the absolute "import" links point


@dataclass
class TreeStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0


def _small_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.70:
        return rng.randint(100, 4 << 10)  # metadata, logs, star files
    if r < 0.95:
        return rng.randint(4 << 10, 64 << 10)  # thumbnails, coordinates
    return rng.randint(64 << 10, 512 << 10)  # PSDs, small stacks


def generate(root: str, *, files: int, big: int = 2, big_size: int = 4 << 20,
             link_share: float = 0.02, seed: int = 1, max_size: int | None = None) -> TreeStats:
    """Create a project with ``files`` small files, ``big`` files of ``big_size`` bytes and
    about ``link_share`` × ``files`` symbolic links under ``root`` (created if missing).

    ``max_size`` caps the small files (the scale test needs many files, not many bytes)."""
    rng = random.Random(seed)
    size_of = _small_size if max_size is None else (lambda r: r.randint(0, max_size))
    stats = TreeStats()
    root = os.path.abspath(root)

    def mkdir(rel: str) -> str:
        path = os.path.join(root, rel)
        if not os.path.isdir(path):
            os.makedirs(path)
            stats.dirs += 1
        return path

    def put(rel: str, size: int) -> None:
        mkdir(os.path.dirname(rel))
        with open(os.path.join(root, rel), "wb") as f:
            f.write(rng.randbytes(size))
        stats.files += 1
        stats.bytes += size

    def link(rel: str, target: str) -> None:
        mkdir(os.path.dirname(rel))
        os.symlink(target, os.path.join(root, rel))
        stats.links += 1

    os.makedirs(root, exist_ok=True)
    for name, size in (("project.sqlite", 256 << 10), ("settings.sqlite", 24 << 10),
                       ("Logs/project.log", 12 << 10)):
        put(name, size)
    mkdir("Tmp")
    runs = max(2, min(len(PROTOCOLS) * 4, files // 400))
    per_run = max(1, (files - stats.files) // runs)
    outputs: list[str] = []  # files later runs may link to
    for r in range(runs):
        run = f"Runs/{2 + r * 48:06d}_{PROTOCOLS[r % len(PROTOCOLS)]}"
        for name in ("logs/run.log", "logs/run.stdout", "logs/run.stderr", "run.db"):
            put(f"{run}/{name}", size_of(rng))
        mkdir(f"{run}/tmp")
        budget = per_run - 4 if r < runs - 1 else files - stats.files
        # Outputs by micrograph: some protocols keep one folder per micrograph.
        nested = r % 3 == 2
        i = 0
        while budget > 0:
            mic = f"mic_{i // 8 if nested else i:05d}"
            sub = f"extra/{mic}/" if nested else "extra/"
            ext = SMALL_EXTS[i % len(SMALL_EXTS)]
            rel = f"{run}/{sub}{mic}_{i % 8 if nested else 0}{ext}"
            put(rel, size_of(rng))
            outputs.append(rel)
            budget -= 1
            i += 1
    # Links, in the proportions a real project shows.
    nlinks = int(files * link_share)
    for k in range(nlinks):
        run = f"Runs/{2 + (k % runs) * 48:06d}_{PROTOCOLS[(k % runs) % len(PROTOCOLS)]}"
        kind = k % 4
        if kind == 0:  # import: absolute link to the raw data outside the project
            link(f"{run}/extra/movie_{k:05d}.tif", f"{RAW_DATA}/movie_{k:05d}.tif")
        elif kind == 1:  # relative link to an earlier run's output
            target = outputs[(k * 7919) % len(outputs)]
            here = os.path.dirname(f"{run}/links/in_{k:05d}")
            link(f"{run}/links/in_{k:05d}", os.path.relpath(target, here))
        elif kind == 2:  # absolute link into the project itself
            target = outputs[(k * 104729) % len(outputs)]
            link(f"{run}/links/abs_{k:05d}", os.path.join(root, target))
        else:  # a dangling link (an output that was deleted), kept as is
            link(f"{run}/links/gone_{k:05d}", f"../extra/deleted_{k:05d}.mrc")
    for b in range(big):
        put(f"Runs/{2 + 48:06d}_{PROTOCOLS[1]}/extra/micrograph_{b:03d}.mrc", big_size)
    return stats


def regular_files(root: str) -> list[str]:
    """Relative paths of the regular files below ``root``, sorted (links not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(os.path.relpath(path, root))
    return sorted(out)


def change_files(root: str, share: float, *, seed: int = 2) -> list[str]:
    """Rewrite ``share`` of the regular files below ``root`` (new content, new mtime)."""
    rng = random.Random(seed)
    paths = regular_files(root)
    step = max(1, round(1 / share)) if share > 0 else len(paths) + 1
    chosen = paths[::step]
    for rel in chosen:
        path = os.path.join(root, rel)
        size = os.lstat(path).st_size
        with open(path, "r+b") as f:
            f.write(rng.randbytes(min(size, 64) or 1))
        st = os.lstat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return chosen
