"""Spaces as the two older systems left them, byte for byte (issue 13; legacy.py docstring).

Each tree is given once, as data: where its links were in the old working root and what
they pointed to. From it come the old tool's list exactly as that tool writes it, the
primary as its rsync left it (folders and files, never links), and the links a deploy must
re-create, with the exact target each must have in the working copy.
"""

from __future__ import annotations

import os

S = b".deployment_status_do_not_delete"

# -- westlife-cloudify-scipion ---------------------------------------------------------
WESTLIFE_ROOT = b"/data/ScipionUserData"
R = b"projects/Ribosome/Runs/"
# (folder relative to the root, name, target) — 12 links, as Scipion and users made them.
WESTLIFE_LINKS = [
    (R + b"000002_ProtImportMovies/extra", b"movie_001.tif",
     b"/mnt/onedata/source/movies/movie_001.tif"),
    (R + b"000002_ProtImportMovies/extra", b"movie_002.tif",
     b"/mnt/onedata/source/movies/movie_002.tif"),
    (R + b"000064_ProtMotionCorr/extra", b"movie_001.tif",
     b"../../000002_ProtImportMovies/extra/movie_001.tif"),
    (R + b"000064_ProtMotionCorr/extra", b"gain.mrc",  # absolute, inside the root
     WESTLIFE_ROOT + b"/" + R + b"000002_ProtImportMovies/extra/gain.mrc"),
    (R + b"000064_ProtMotionCorr/logs", b"run.stdout",  # through the ~scipion alias
     b"/home/scipion/ScipionUserData/" + R + b"000064_ProtMotionCorr/logs/run.log"),
    (R + b"000128_ProtCTFFind", b"inputs", b"../000064_ProtMotionCorr"),  # to a folder
    (R + b"000128_ProtCTFFind/extra", b"micrograph 001.mrc",
     b"../../000064_ProtMotionCorr/extra/micrograph 001.mrc"),
    (R + b"000128_ProtCTFFind/extra", b"caf\xe9.mrc", b"caf\xe9-orig.mrc"),  # Latin-1
    (R + b"000128_ProtCTFFind/extra", "čárka.mrc".encode(),
     "/mnt/onedata/source/čárka.mrc".encode()),
    (R + b"000128_ProtCTFFind/extra", b'it\'s "quoted".mrc', b'say "hi"'),
    (b"projects/Ribosome", b"latest", b"Runs/000128_ProtCTFFind"),
    (b"", b"current", WESTLIFE_ROOT + b"/projects/Ribosome"),  # DIR is exactly the root
]
WESTLIFE_FILES = [R + b"000002_ProtImportMovies/extra/gain.mrc",
                  R + b"000064_ProtMotionCorr/logs/run.log",
                  R + b"000064_ProtMotionCorr/extra/micrograph 001.mrc",
                  R + b"000128_ProtCTFFind/extra/caf\xe9-orig.mrc",
                  b"projects/Ribosome/project.sqlite"]
WESTLIFE_LOCK = (b"# This folder is already deployed on:\n"
                 b"HOST:scipion-vm.cloud.example.org\n"
                 b"MOUNT:/mnt/onedata/scipion-space\n"
                 b"DIR:/data/ScipionUserData\n"
                 b"USER:root\n"
                 b"DATE:2019-05-14 10:23:45+02:00\n")
WESTLIFE_EARLY_LOCK = (b"This folder was deployed on machine scipion-old.cloud.example.org "
                       b"on 2017-03-02 14:05:11+01:00\n")


def linklist_line(root: bytes, folder: bytes, name: bytes, target: bytes) -> bytes:
    """One line of ``find "$ROOT/" -type l -printf '"%h" "%f" "%l"\\n'``."""
    where = root + b"/" + folder if folder else root
    return b'"' + where + b'" "' + name + b'" "' + target + b'"\n'


def westlife_linklist(root: bytes = WESTLIFE_ROOT, links=WESTLIFE_LINKS) -> bytes:
    return b"".join(linklist_line(root, *link) for link in links)


# -- CERIT-SC scipion-docker ------------------------------------------------------------
CERIT_ROOT = b"/mnt/vol-project"
P = b"Ribosome/Runs/"
# (link path relative to the root, target) — 8 links of the project.
CERIT_LINKS = [
    (P + b"000002_ProtImportMovies/extra/movie_001.tif",
     b"/home/scipionuser/ScipionUserData/dataset/movies/movie_001.tif"),
    (P + b"000002_ProtImportMovies/extra/movie_002.tif", b"/mnt/vol-dataset/movies/movie_002.tif"),
    (P + b"000064_ProtMotionCorr/extra/movie_001.tif",
     b"../../000002_ProtImportMovies/extra/movie_001.tif"),
    (P + b"000064_ProtMotionCorr/extra/gain.mrc",
     CERIT_ROOT + b"/" + P + b"000002_ProtImportMovies/extra/gain.mrc"),
    (P + b"000064_ProtMotionCorr/logs/run.stdout",  # through the desktop's alias
     b"/home/scipionuser/ScipionUserData/projects/" + P + b"000064_ProtMotionCorr/logs/run.log"),
    (P + b"000128_ProtCTFFind/extra/micrograph 001.mrc",
     b"../../000064_ProtMotionCorr/extra/micrograph 001.mrc"),
    (b"Ribosome/dataset", b"/mnt/vol-dataset"),  # a folder link into another volume
    (b"Ribosome/latest", b"Runs/000064_ProtMotionCorr"),  # a folder link inside
]
# What the Python controller also dumps: links found by walking through the two folder
# links — inside the raw-data volume, and a second time inside the project.
CERIT_PHANTOMS = [
    (b"Ribosome/dataset/gain.mrc", b"movies/gain-ref.mrc"),
    (b"Ribosome/dataset/movies/current", b"movie_002.tif"),
    (b"Ribosome/latest/extra/movie_001.tif", b"../../000002_ProtImportMovies/extra/movie_001.tif"),
    (b"Ribosome/latest/extra/gain.mrc",
     CERIT_ROOT + b"/" + P + b"000002_ProtImportMovies/extra/gain.mrc"),
    (b"Ribosome/latest/logs/run.stdout",
     b"/home/scipionuser/ScipionUserData/projects/" + P + b"000064_ProtMotionCorr/logs/run.log"),
]
# The raw-data volume (/mnt/vol-dataset): its files and its own links.
DATASET_FILES = [b"movies/movie_001.tif", b"movies/movie_002.tif", b"movies/gain-ref.mrc"]
DATASET_LINKS = [(b"gain.mrc", b"movies/gain-ref.mrc"), (b"movies/current", b"movie_002.tif")]
CERIT_FILES = [P + b"000002_ProtImportMovies/extra/gain.mrc",
               P + b"000064_ProtMotionCorr/logs/run.log",
               P + b"000064_ProtMotionCorr/extra/micrograph 001.mrc",
               b"Ribosome/project.sqlite"]
# The order the Python controller writes: in each folder its links, then each subfolder
# (links to folders included) in turn.
CERIT_PYTHON_ORDER = [
    b"Ribosome/dataset", b"Ribosome/latest",
    P + b"000002_ProtImportMovies/extra/movie_001.tif",
    P + b"000002_ProtImportMovies/extra/movie_002.tif",
    P + b"000064_ProtMotionCorr/extra/gain.mrc",
    P + b"000064_ProtMotionCorr/extra/movie_001.tif",
    P + b"000064_ProtMotionCorr/logs/run.stdout",
    P + b"000128_ProtCTFFind/extra/micrograph 001.mrc",
    b"Ribosome/dataset/gain.mrc", b"Ribosome/dataset/movies/current",
    b"Ribosome/latest/extra/gain.mrc", b"Ribosome/latest/extra/movie_001.tif",
    b"Ribosome/latest/logs/run.stdout",
]

# The bash cloner (2022): 7 links, link paths written "./..." and its dump appended to at
# every save (it removed the old dump under the wrong name), so a space deployed twice
# holds every line twice. find -L went through the folder link "latest" as well.
CERIT_BASH_LINKS = [
    (P + b"000002_ProtImportMovies/extra/movie_001.tif", b"/mnt/vol-dataset/movies/movie_001.tif"),
    (P + b"000002_ProtImportMovies/extra/movie_002.tif",
     b"/home/scipionuser/ScipionUserData/dataset/movies/movie_002.tif"),
    (P + b"000064_ProtMotionCorr/extra/movie_001.tif",
     b"../../000002_ProtImportMovies/extra/movie_001.tif"),
    (P + b"000064_ProtMotionCorr/extra/gain.mrc",
     CERIT_ROOT + b"/" + P + b"000002_ProtImportMovies/extra/gain.mrc"),
    (P + b"000064_ProtMotionCorr/logs/run.stdout",
     b"/home/scipionuser/ScipionUserData/projects/" + P + b"000064_ProtMotionCorr/logs/run.log"),
    (b"Ribosome/latest", b"Runs/000064_ProtMotionCorr"),
    (P + b"000128_ProtCTFFind/extra/mic_001.mrc", b"../../000064_ProtMotionCorr/extra/mic_001.mrc"),
]
CERIT_BASH_PHANTOMS = [
    (b"Ribosome/latest/extra/gain.mrc",
     CERIT_ROOT + b"/" + P + b"000002_ProtImportMovies/extra/gain.mrc"),
    (b"Ribosome/latest/extra/movie_001.tif", b"../../000002_ProtImportMovies/extra/movie_001.tif"),
    (b"Ribosome/latest/logs/run.stdout",
     b"/home/scipionuser/ScipionUserData/projects/" + P + b"000064_ProtMotionCorr/logs/run.log"),
]
CERIT_BASH_FILES = [P + b"000002_ProtImportMovies/extra/gain.mrc",
                    P + b"000064_ProtMotionCorr/logs/run.log",
                    P + b"000064_ProtMotionCorr/extra/mic_001.mrc"]
CERIT_LOCK_TIMESTAMP = b"1714557600"  # the dev branch: a unix time, no newline


def cerit_python_dump() -> bytes:
    targets = dict(CERIT_LINKS + CERIT_PHANTOMS)
    return b"".join(targets[path] + b" " + CERIT_ROOT + b"/" + path + b"\n"
                    for path in CERIT_PYTHON_ORDER)


def cerit_bash_dump(saves: int = 2) -> bytes:
    once = b"".join(target + b" ./" + path + b"\n"
                    for path, target in sorted(CERIT_BASH_LINKS + CERIT_BASH_PHANTOMS))
    return once * saves


# -- building the trees -------------------------------------------------------------------

def put(root, rel: bytes, data: bytes = b"x") -> None:
    path = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def mkdirs(root, rel: bytes) -> None:
    os.makedirs(os.path.join(os.fsencode(root), rel), exist_ok=True)


def westlife_space(primary, *, lock: bytes | None = None, linklist: bytes | None = None) -> None:
    """The primary as westlife's rsync left it: folders and files, the list, maybe a lock."""
    for folder, _, _ in WESTLIFE_LINKS:
        mkdirs(primary, folder)
    for rel in WESTLIFE_FILES:
        put(primary, rel, b"data of " + rel)
    put(primary, S + b"/linklist", westlife_linklist() if linklist is None else linklist)
    if lock is not None:
        put(primary, S + b"/lock", lock)


def westlife_expected(work: str) -> dict[bytes, bytes]:
    """Every link of the westlife tree in a working copy at ``work``, with its exact target."""
    out = {}
    for folder, name, target in WESTLIFE_LINKS:
        for old in (WESTLIFE_ROOT, b"/home/scipion/ScipionUserData"):
            if target.startswith(old + b"/"):
                target = os.fsencode(work) + target[len(old):]
        out[folder + b"/" + name if folder else name] = target
    return out


def cerit_space(primary, *, dump: bytes, files=CERIT_FILES, links=CERIT_LINKS,
                lock: bytes | None = None) -> None:
    """The primary as CERIT's controller left it: its rsync copies the project (never the
    links), the dump at the top, its own folder scipion-docker/."""
    for path, _ in links:
        mkdirs(primary, os.path.dirname(path))
    for rel in files:
        put(primary, rel, b"data of " + rel)
    put(primary, b"symlink-dump", dump)
    put(primary, b"scipion-docker/instance-status", b"ok")
    put(primary, b"scipion-docker/instance.log", b"Restore has been completed\n")
    if lock is not None:
        put(primary, b"scipion-docker/project.lock", lock)


def cerit_expected(work: str, links=CERIT_LINKS, rebase: dict | None = None) -> dict[bytes, bytes]:
    out = {}
    for path, target in links:
        for old in (CERIT_ROOT, b"/home/scipionuser/ScipionUserData/projects"):
            if target.startswith(old + b"/") or target == old:
                target = os.fsencode(work) + target[len(old):]
        for old, new in (rebase or {}).items():
            if target == old or target.startswith(old + b"/"):
                target = new + target[len(old):]
        out[path] = target
    return out


def dataset_volume(folder) -> None:
    """The raw-data volume with its own links (what /mnt/vol-dataset holds)."""
    for rel in DATASET_FILES:
        put(folder, rel, b"raw " + rel)
    for rel, target in DATASET_LINKS:
        os.symlink(target, os.path.join(os.fsencode(folder), rel))


def links_in(root: str) -> dict[bytes, bytes]:
    """Every symbolic link below ``root`` (never followed) with its target."""
    out = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                out[os.path.relpath(path, base)] = os.readlink(path)
    return out


def tree_state(root: str) -> dict:
    """Names, kinds, link targets and contents below ``root``: to show nothing changed."""
    out = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", f.read(), os.stat(path).st_mtime_ns)
    return out
