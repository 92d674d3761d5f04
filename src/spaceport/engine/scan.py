"""Walking a tree into entries: files, directories and symbolic links.

Links are never followed. Special files (fifos, sockets, devices) cannot be stored on the
primary and are skipped with a warning. Our own leftover temporaries are reported so the
caller removes them. On a slow mount every directory listing is a round trip, so the walk
lists several directories at once.
"""

from __future__ import annotations

import gc
import logging
import stat as stat_mod
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import Interrupted
from ..store.base import TEMP_PREFIX, Store, is_our_temp, is_retryable, our_aside
from .filters import NOTHING_EXCLUDED, Exclude

log = logging.getLogger(__name__)


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    LINK = 3


@dataclass(slots=True)
class Entry:
    """One thing in a tree, as much as a save needs to know to tell if it changed."""

    path: str
    kind: Kind
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    ino: int = 0
    target: str | None = None
    # The inode's change time. Every write changes it and nothing can set it back, unlike
    # the mtime (``touch -r``, archive tools): a file rewritten with the same size and its
    # old mtime is still seen as changed, as git sees it. None: not known (an index row of
    # format 1, before its first save under format 2).
    ctime_ns: int | None = 0

    def sig(self) -> tuple:
        """What must be equal for the entry to count as unchanged."""
        return signature(self.kind, self.size, self.mtime_ns, self.mode, self.ino, self.target,
                         self.ctime_ns)


def signature(kind: Kind, size: int, mtime_ns: int, mode: int, ino: int,
              target: str | None, ctime_ns: int | None = 0) -> tuple:
    """:meth:`Entry.sig` of these fields (index rows are compared without making entries)."""
    if kind is Kind.FILE:
        return (Kind.FILE, size, mtime_ns, mode, ino, ctime_ns)
    if kind is Kind.DIR:
        return (Kind.DIR, mode)
    return (Kind.LINK, target)


@dataclass
class ScanResult:
    entries: dict[str, Entry] = field(default_factory=dict)
    special: list[str] = field(default_factory=list)  # skipped fifos, sockets, devices
    temps: list[str] = field(default_factory=list)  # our own leftover temporaries
    asides: list[str] = field(default_factory=list)  # entries a killed removal moved aside
    unreadable: dict[str, OSError] = field(default_factory=dict)  # dirs we could not list
    # What the scan left out on purpose (--exclude): such paths are neither saved nor
    # deleted, whatever the index knows of them (spaceport.engine.filters).
    exclude: Exclude = NOTHING_EXCLUDED

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries.values() if e.kind is Kind.FILE)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.kind is Kind.FILE)

    def under_unreadable(self, path: str) -> bool:
        """True if ``path`` lies in a directory we could not list (its state is unknown)."""
        return any(path == d or path.startswith(d + "/") for d in self.unreadable)

    def excluded(self, path: str, kind: Kind) -> bool:
        """True if ``path`` (an entry of this kind) is left out by the exclude patterns."""
        return bool(self.exclude) and self.exclude.excludes(path, kind is Kind.DIR)


_IFMT, _IFREG, _IFDIR, _IFLNK = 0o170000, stat_mod.S_IFREG, stat_mod.S_IFDIR, stat_mod.S_IFLNK
_FILE, _DIR, _LINK = Kind.FILE, Kind.DIR, Kind.LINK


def _entry(store: Store, path: str, st) -> Entry | None:
    mode = st.st_mode
    if stat_mod.S_ISREG(mode):
        return Entry(path, Kind.FILE, st.st_size, st.st_mtime_ns, stat_mod.S_IMODE(mode),
                     st.st_ino, None, st.st_ctime_ns)
    if stat_mod.S_ISDIR(mode):
        return Entry(path, Kind.DIR, mode=stat_mod.S_IMODE(mode), ino=st.st_ino)
    if stat_mod.S_ISLNK(mode):
        return Entry(path, Kind.LINK, target=store.readlink(path))
    return None


def _list_one(store: Store, rel: str, skip_top: frozenset[str], temp_token: str | None,
              exclude: Exclude | None = None):
    # The inner loop of every save, once per file of the working copy (10^5-10^6): what
    # _entry() does, inlined, with the file type tested on the mode bits directly.
    entries, subdirs, special, temps, asides = [], [], [], [], []
    prefix = rel + "/" if rel else ""
    skip = skip_top if not rel else ()
    for name, st in store.listdir(rel):
        if name in skip:
            continue
        path = prefix + name
        if name.startswith(TEMP_PREFIX) and temp_token:
            if is_our_temp(name, temp_token):
                temps.append(path)
                continue
            if our_aside(name, temp_token) is not None:
                asides.append(path)  # never a temporary: see spaceport.safety.invariant
                continue
        mode = st.st_mode
        if exclude and exclude.excludes(path, mode & _IFMT == _IFDIR):
            continue  # left out; an excluded folder is never listed
        fmt = mode & _IFMT
        if fmt == _IFREG:
            entries.append(Entry(path, _FILE, st.st_size, st.st_mtime_ns, mode & 0o7777,
                                 st.st_ino, None, st.st_ctime_ns))
        elif fmt == _IFDIR:
            # The folder's inode is not part of its signature: it only tells a folder
            # moved in the working copy (spaceport.engine.renames).
            entries.append(Entry(path, _DIR, mode=mode & 0o7777, ino=st.st_ino))
            subdirs.append(path)
        elif fmt == _IFLNK:
            entries.append(Entry(path, _LINK, target=store.readlink(path)))
        else:
            special.append(path)
    return entries, subdirs, special, temps, asides


# What _list_one returns for a folder with nothing to list: entries, subdirs, special, temps,
# asides (one constant, so that a new kind of finding cannot be forgotten on one path).
_NOTHING: tuple[list, list, list, list, list] = ((), (), (), (), ())  # type: ignore[assignment]


@contextmanager
def paused_gc():
    """No cyclic garbage collection while 10^5 small objects are made that all stay alive:
    each collection would walk them all again, for nothing (a third of a scan's time).
    Only the outermost user turns it back on; it is never left off."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def scan_tree(store: Store, *, skip_top: set[str] | frozenset[str] = frozenset(),
              temp_token: str | None = None, jobs: int = 1,
              stop: threading.Event | None = None, warn_special: bool = True,
              exclude: Exclude = NOTHING_EXCLUDED) -> ScanResult:
    """Walk ``store`` from its root; ``skip_top`` names are ignored at the top level only.
    ``warn_special=False``: the caller says what it skipped (a save, once per deployment).
    ``exclude``: paths left out (never listed below an excluded folder); the result keeps
    it, for the plan to tell an excluded path from a deleted one.

    ``stop.set()`` ends the walk at the next folder with Interrupted (a scan of a large
    primary over a slow mount takes minutes; SIGTERM must not wait for it)."""
    result = ScanResult(exclude=exclude)
    skip = frozenset(skip_top)
    found = result.entries

    def absorb(rel: str, outcome) -> list[str]:
        entries, subdirs, special, temps, asides = outcome
        for entry in entries:
            found[entry.path] = entry
        result.special.extend(special)
        result.temps.extend(temps)
        result.asides.extend(asides)
        return subdirs

    def list_or_note(rel: str):
        if stop is not None and stop.is_set():
            raise Interrupted("stopped while scanning")
        try:
            return _list_one(store, rel, skip, temp_token, exclude or None)
        except FileNotFoundError:
            if not rel:
                raise
            return _NOTHING  # removed since its parent was listed: it is empty now
        except OSError as exc:
            if is_retryable(exc):
                raise  # the storage stumbled: that is not a property of this folder
            result.unreadable[rel] = exc  # EACCES, ENAMETOOLONG, ELOOP...: report it
            return _NOTHING

    if jobs <= 1:
        stack = [""]
        with paused_gc():
            while stack:
                rel = stack.pop()
                stack.extend(absorb(rel, list_or_note(rel)))
    else:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="scan") as pool, \
                paused_gc():
            pending: dict[Future, str] = {pool.submit(list_or_note, ""): ""}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    rel = pending.pop(future)
                    for sub in absorb(rel, future.result()):
                        pending[pool.submit(list_or_note, sub)] = sub
    for path in result.special if warn_special else ():
        log.warning("skipping %s: special files (fifo, socket, device) cannot be saved", path)
    for rel, exc in result.unreadable.items():
        log.warning("cannot list %s: %s; nothing below it is saved or deleted", rel or ".", exc)
    return result
