"""A working copy's file against the primary's, by content: ``verify --checksum`` and
``undeploy --checksum``.

A plain file is compared byte for byte. A SQLite database is not: it is saved as a snapshot
(:mod:`spaceport.engine.snapshot`), SQLite's backup API writing its pages into a new file,
and that file's header differs from the working copy's in the fields SQLite keeps for
itself: the file change counter (bytes 24-27), the version-valid-for number (92-95) and the
version of the library that wrote it last (96-99). Byte for byte, a saved database never
matched its snapshot: ``undeploy --checksum`` could never pass on a Scipion project.

So a database is compared as a snapshot of it: a fresh snapshot of the working copy's
database (one committed state, its ``-wal`` included, nothing written to the working copy)
against the primary's file, page for page, those twelve header bytes left out. The same
content gives the same pages; a row changed, added or removed changes a page or another
header field (the page count, the schema cookie), and is reported. A database that cannot
be snapshotted now is compared byte for byte (and so reported if it differs at all).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from ..store.base import Store
from .snapshot import SnapshotError, Snapshotter, fd_is_database

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# The header fields a snapshot rewrites (https://sqlite.org/fileformat.html, 1.3).
SQLITE_OWN = ((24, 28), (92, 100))


def same_content(work: Store, primary: Store, rel: str,
                 snapshots: Snapshotter | None = None) -> bool:
    """Does the primary's ``rel`` hold the working copy's content? (See the module
    docstring; ``snapshots``: where databases are snapshotted, None: bytes only.)"""
    fd = work.open_read(rel)
    try:
        if snapshots is not None and fd_is_database(fd, os.fstat(fd).st_size):
            try:
                snap = snapshots.take(work.abspath(rel))
            except SnapshotError as exc:
                log.info("%s: no snapshot to compare (%s); compared byte for byte", rel, exc)
            else:
                try:
                    return _same(snap, primary, rel, masked=SQLITE_OWN)
                finally:
                    os.close(snap)
        return _same(fd, primary, rel)
    finally:
        os.close(fd)


def snapshot_size(work: Store, rel: str, snapshots: Snapshotter) -> int:
    """The size a snapshot of the database ``rel`` has now (what a save would upload); its
    file's size if none can be taken."""
    try:
        snap = snapshots.take(work.abspath(rel))
    except SnapshotError:
        return work.lstat(rel).st_size
    try:
        return os.fstat(snap).st_size
    finally:
        os.close(snap)


@contextmanager
def scratch_snapshots(folder: str) -> Iterator[Snapshotter]:
    """A Snapshotter in a scratch folder of its own inside ``folder`` (a work marker),
    removed afterwards: a comparison never touches a save's scratch files."""
    scratch = tempfile.mkdtemp(prefix="compare-", dir=folder)
    snapshots = Snapshotter(scratch)
    try:
        yield snapshots
    finally:
        snapshots.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _same(fd: int, primary: Store, rel: str, masked=()) -> bool:
    """``fd``'s bytes against the primary's ``rel``, the ``masked`` ranges left out."""
    pfd = primary.open_read(rel)
    try:
        if os.fstat(fd).st_size != os.fstat(pfd).st_size:
            return False
        offset = 0
        while True:
            a, b = os.pread(fd, CHUNK, offset), primary.read_at(rel, pfd, CHUNK, offset)
            if offset == 0 and masked:
                a, b = _mask(a, masked), _mask(b, masked)
            if a != b:
                return False
            if not a:
                return True
            offset += len(a)
    finally:
        os.close(pfd)


def _mask(data: bytes, ranges) -> bytes:
    out = bytearray(data)
    for start, end in ranges:
        out[start:end] = bytes(max(0, min(end, len(out)) - start))
    return bytes(out)
