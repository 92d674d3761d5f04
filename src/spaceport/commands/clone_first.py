"""What the project needs first: the source files its links point at, cloned before the
rest of the source is even listed.

An existing Scipion project refers to its raw data through symbolic links (imports made
with ``copyFiles=False`` link each movie into the source's working copy). Listing a source of
terabytes takes long on OneData (a round trip per file); the project's links name the few
files it needs, so those are copied by name first, and reopening the project works while
the rest of the source still arrives. Each file is copied as any clone copies it: under a
temporary name, renamed into place when complete, its folders made before it.

The links come from the project's manifest on the primary (what a restore re-creates; a
deployment resumed after a restart may have made a few links since its last save, which are
then cloned in the ordinary pass). A link that points into the source's working copy, a
file or a whole folder, names a path of the source; any other link is no concern of the
clone.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import threading
from dataclasses import dataclass

from ..errors import Interrupted, SpaceportError
from ..formats.links import Link, resolve_target
from ..store.base import Store, join, parent_of, relative_path_problem
from ..store.sides import open_primary
from .deploy.linksource import links_to_restore
from .options import Options

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Needed:
    """A source file to clone first, as the source has it now."""

    path: str
    size: int
    mtime_ns: int
    mode: int


def linked_source_paths(links: list[Link], work_root: str, source_roots: list[str],
                        rebase: list[tuple[str, str]] = ()) -> list[str]:
    """The paths, relative to the source, that ``links`` (of a project restored at
    ``work_root``) point at inside one of ``source_roots``; sorted, each once."""
    roots = [r.rstrip("/") for r in source_roots if r and r.rstrip("/")]
    found = set()
    for link in links:
        target = resolve_target(link, work_root, rebase)
        if not target.startswith("/"):  # relative to the folder the link is in
            target = join(os.path.join(work_root, parent_of(link.path)), target)
        target = os.path.normpath(target)
        for root in roots:
            if target.startswith(root + "/"):
                rel = target[len(root) + 1:]
                if not relative_path_problem(rel):
                    found.add(rel)
                break
    return sorted(found)


def needed_by_project(primary: str, work: str, source_work: str, opts: Options) -> list[str]:
    """The source paths the project's links (its manifest on the primary) point at. Any
    trouble reading them is said and costs only the head start: the clone goes on."""
    try:
        with open_primary(primary, "00000000", opts) as store:
            links = links_to_restore(store, opts).links
    except (OSError, SpaceportError) as exc:
        log.warning("could not read the project's links to clone what it needs first (%s); "
                    "the source is cloned in path order", exc)
        return []
    return linked_source_paths(links, work, [source_work, os.path.realpath(source_work)],
                               opts.rebase)


def list_needed(src: Store, paths: list[str], skip_top: frozenset[str],
                stop: threading.Event) -> list[Needed]:
    """The files that ``paths`` name on the source (a folder: every file under it), in path
    order. Paths that are gone, links and special files are left to the ordinary pass."""
    found: dict[str, Needed] = {}
    for path in paths:
        if path.split("/", 1)[0] in skip_top:
            continue
        try:
            st = src.lstat(path)
        except FileNotFoundError:
            continue
        _collect(src, path, st, found, stop)
    return [found[p] for p in sorted(found)]


def _collect(src: Store, path: str, st: os.stat_result, found: dict[str, Needed],
             stop: threading.Event) -> None:
    if stop.is_set():
        raise Interrupted("stopped while listing what the project needs first")
    if stat_mod.S_ISREG(st.st_mode):
        found[path] = Needed(path, st.st_size, st.st_mtime_ns, stat_mod.S_IMODE(st.st_mode))
    elif stat_mod.S_ISDIR(st.st_mode):
        try:
            items = src.listdir(path)
        except FileNotFoundError:
            return
        for name, sub in items:
            _collect(src, join(path, name), sub, found, stop)


def missing_from(dst: Store, needed: list[Needed], read_only) -> list[Needed]:
    """Those of ``needed`` that the copy does not hold as they are (size and mtime, as the
    ordinary pass compares), and whose place is free for a file."""
    out = []
    for item in needed:
        try:
            here = dst.lstat(item.path)
        except FileNotFoundError:
            out.append(item)
            continue
        except NotADirectoryError:
            continue  # a file where the source has a folder: the ordinary pass sorts it out
        if not stat_mod.S_ISREG(here.st_mode):
            continue
        if (here.st_size, here.st_mtime_ns) != (item.size, item.mtime_ns):
            out.append(item)
        elif stat_mod.S_IMODE(here.st_mode) != read_only(item.mode):
            dst.chmod(item.path, read_only(item.mode))
    return out


def make_parents(dst: Store, needed: list[Needed]) -> list[Needed]:
    """Folders before their files: each missing folder made, each read-only one given its
    owner's write bit back (the ordinary pass makes every folder read-only at its end).
    Returns the files whose folders are ready; one under something that is not a folder in
    the copy is left to the ordinary pass, which removes that first."""
    ready: dict[str, bool] = {"": True}
    out = []
    for item in needed:
        parts = item.path.split("/")[:-1]
        ok = True
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in ready:
                ready[folder] = _ready_folder(dst, folder)
            if not ready[folder]:
                ok = False
                break
        if ok:
            out.append(item)
    return out


def _ready_folder(dst: Store, folder: str) -> bool:
    try:
        mode = dst.lstat(folder).st_mode
    except FileNotFoundError:
        dst.mkdir(folder, 0o755)
        return True
    if not stat_mod.S_ISDIR(mode):
        return False
    if not mode & stat_mod.S_IWUSR:
        dst.chmod(folder, stat_mod.S_IMODE(mode) | stat_mod.S_IWUSR)
    return True
