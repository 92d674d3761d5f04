"""``deploy --discard-local``: set aside what a working copy holds that was never saved.

Nothing is deleted. What the deploy would otherwise overwrite or remove -- files and links
that are new or changed since the last save, folders the index never saw -- is moved (one
rename each, on the same disk) into ``<work>/.spaceport/discarded/<time>/``, keeping its
path, and the deploy then brings the working copy back to what the primary holds, copying
only what is missing. A mistaken ``--discard-local`` costs nothing: the message says where
the files are and how to get one back, and undeploy keeps that folder.

It is only for a working copy of this very primary (its work marker names it); a folder
without a marker, or the working copy of another primary, is refused before anything moves.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ...engine.index import Index, IndexDamagedError, Known
from ...engine.scan import Entry, Kind
from ...errors import RefusedError, SpaceportError
from ...formats.marker import MARKER_DIR, Marker, index_path, marker_dir
from ...store.sides import open_work
from ...wording import count, human_size, show_path
from ..folders import volume_artifacts
from ..workcopy import scan_work

DISCARDED_DIR = "discarded"


def discarded_root(work: str) -> str:
    return os.path.join(marker_dir(work), DISCARDED_DIR)


@dataclass
class Discard:
    """What ``--discard-local`` sets aside in one working copy, before it is done."""

    work: str
    moves: list[str] = field(default_factory=list)  # top-most entries to set aside
    files: int = 0  # files among them, folders' contents included
    links: int = 0
    nbytes: int = 0
    restores: int = 0  # saved entries deleted or changed in mode: the deploy brings them back
    everything: bool = False  # the index is damaged: nothing is known saved, all moves
    folder: str | None = None  # where they went, once done

    @property
    def needed(self) -> bool:
        return bool(self.moves or self.restores)

    def describe(self, limit: int | None = 20) -> list[str]:
        """Lines for the person who is asked to confirm."""
        head = (f"{self.what()} ({human_size(self.nbytes)}) in {self.work} "
                + ("cannot be proven saved (the state index is damaged)" if self.everything
                   else "were never saved to the primary"))
        lines = [head + ":"] if self.moves else []
        shown = self.moves if limit is None else self.moves[:limit]
        lines += [f"  {show_path(path)}" for path in shown]
        if len(self.moves) > len(shown):
            lines.append(f"  ... and {len(self.moves) - len(shown)} more")
        if self.restores:
            lines.append(f"{count(self.restores, 'saved entry', 'saved entries')} deleted or "
                         "changed here will be brought back from the primary.")
        return lines

    def what(self) -> str:
        """"3 files and 1 link": what is set aside."""
        return count(self.files, "file") + (f" and {count(self.links, 'link')}"
                                             if self.links else "")

    def carry_out(self) -> str | None:
        """Move the entries into ``.spaceport/discarded/<time>/``; returns that folder."""
        if not self.moves:
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = os.path.join(discarded_root(self.work), stamp)
        n = 1
        while os.path.lexists(folder):  # two discards within a second
            n += 1
            folder = os.path.join(discarded_root(self.work), f"{stamp}-{n}")
        for rel in self.moves:
            dest = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(os.path.join(self.work, rel), dest)
        if self.everything:  # the damaged index describes what was moved: set it aside too
            Index.set_aside(index_path(self.work), stamp)
        self.folder = folder
        return folder

    def how_to_get_back(self) -> str:
        example = show_path(self.moves[0]) if self.moves else "PATH"
        return (f"Nothing was deleted: {self.what()} set aside in "
                f"{self.folder}/. To get one back, copy it into the working copy, e.g. "
                f"cp -a {self.folder}/{example} {self.work}/{example} (the next save uploads "
                "it). Undeploy keeps that folder; remove it yourself when you no longer "
                "need it.")


def prepare_discard(work: str, marker: Marker | None, primary: str, *,
                    blocked: SpaceportError | None = None,
                    confirm: Callable[[Discard], None] | None = None) -> Discard:
    """What ``--discard-local`` would set aside in ``work``, confirmed by ``confirm`` (which
    raises to stop). Refused unless ``work`` is a working copy of ``primary``; ``blocked``
    is raised first (the primary is held by another deployment: nothing may move)."""
    if marker is None:
        raise RefusedError(
            f"--discard-local is only for a working copy of {primary}, and {work} is not a "
            "spaceport working copy.",
            hint="Nothing was changed. Deploy into a new or empty folder instead.")
    if os.path.realpath(marker.primary) != os.path.realpath(primary):
        raise RefusedError(
            f"--discard-local is only for a working copy of {primary}; {work} is the "
            f"working copy of another primary ({marker.primary}).",
            hint="Nothing was changed. Deploy into a new or empty folder instead.")
    if blocked is not None:
        raise blocked
    discard = Discard(os.path.abspath(work))
    try:
        index = Index(index_path(work))
    except IndexDamagedError:
        _everything(discard)
    else:
        try:
            known = index.load()
        finally:
            index.close()
        with open_work(work, marker.token) as store:
            scan = scan_work(store, marker)
        _changed(discard, scan, known)
    if discard.needed and confirm is not None:
        confirm(discard)
    return discard


def _changed(discard: Discard, scan, known: dict[str, Known]) -> None:
    """The entries not proven saved by the index, top-most first; and what the deploy
    brings back (saved entries deleted here, folders whose mode changed)."""
    moved_dirs: set[str] = set()
    for path in sorted(scan.entries):
        entry: Entry = scan.entries[path]
        if _inside(path, moved_dirs):
            _tally(discard, entry)
            continue
        old = known.get(path)
        same = old is not None and old.entry.kind is entry.kind
        if entry.kind is Kind.DIR:
            if not same:
                discard.moves.append(path)
                moved_dirs.add(path)
            elif old.entry.mode != entry.mode:
                discard.restores += 1
            continue
        if not same or old.entry.sig() != entry.sig():
            discard.moves.append(path)
            _tally(discard, entry)
    discard.restores += sum(1 for path in known if path not in scan.entries
                            and not scan.under_unreadable(path))


def _inside(path: str, folders: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in folders for i in range(1, len(parts)))


def _tally(discard: Discard, entry: Entry) -> None:
    if entry.kind is Kind.LINK:
        discard.links += 1
    elif entry.kind is Kind.FILE:
        discard.files += 1
        discard.nbytes += entry.size or 0


def _everything(discard: Discard) -> None:
    """Every top-level entry but the marker and the volume's own (lost+found)."""
    discard.everything = True
    skip = {MARKER_DIR} | volume_artifacts(discard.work)
    for name in sorted(os.listdir(discard.work)):
        if name in skip:
            continue
        discard.moves.append(name)
        path = os.path.join(discard.work, name)
        if os.path.isdir(path) and not os.path.islink(path):
            for root, dirs, files in os.walk(path):
                for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                    _count_path(discard, os.path.join(root, f))
        else:
            _count_path(discard, path)


def _count_path(discard: Discard, path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        discard.links += 1
    else:
        discard.files += 1
        discard.nbytes += st.st_size
