"""The digest the index keeps of a saved file's bytes, so that an append can be proven.

A save that uploads a big plain file also hashes it (sha256) from the same source
descriptor, between the copy and the stat that proves the source held still: a copy that is
committed is then a copy of exactly the hashed bytes. A stage-in hashes the bytes as they
pass through its buffer on their way from the primary (engine.transfer): no second read of
the primary, and the first growth of a file after a deploy is an append too. The next save of that file, if it only
grew, hashes its first ``saved size`` bytes again (a local read, nothing on the primary) and,
if they are the same, writes only the rest (:mod:`spaceport.engine.append`).

Which files get one: plain files of at least :data:`DIGEST_MIN_SIZE`. Below that, uploading
the file whole costs about the same round trips on OneData as appending to it (create,
write, rename against open, write, close) and a few milliseconds of data, while the digest
costs a local read of every uploaded file: small files are cheaper to upload whole. Never a
SQLite database or its companions: a database is saved as a snapshot (spaceport.engine.snapshot),
and SQLite rewrites pages anywhere in the file, so it never only grows.
"""

from __future__ import annotations

import hashlib
import os

from .snapshot import companion_base

# 1 MiB: see the module docstring. The logs Scipion appends to (Logs/project.log, each run's
# run.log and run.stdout) pass it within minutes of a long run; most other files never do.
DIGEST_MIN_SIZE = 1 << 20
_READ = 1 << 20  # bytes per pread while hashing: one reused buffer


def wants_digest(path: str, size: int) -> bool:
    """Whether a file of this path and size, uploaded as a plain file, gets a digest."""
    return size >= DIGEST_MIN_SIZE and companion_base(path) is None


def new_hash():
    return hashlib.sha256()  # 1.7 GB/s with the CPU's SHA instructions; blake2b is half that


def hash_range(fd: int, start: int, end: int, hasher=None):
    """Feed bytes ``start`` to ``end`` of ``fd`` to ``hasher`` (a new one if None) and
    return it; EOFError if the file ends before ``end`` (it shrank: nothing to prove)."""
    hasher = hasher if hasher is not None else new_hash()
    buf = bytearray(min(_READ, max(end - start, 1)))
    view = memoryview(buf)
    offset = start
    while offset < end:
        want = min(len(buf), end - offset)
        n = os.preadv(fd, [view[:want]], offset)
        if n == 0:
            raise EOFError(f"the file ended at {offset} bytes, before {end}")
        hasher.update(view[:n])
        offset += n
    return hasher


def digest_of(fd: int, size: int) -> bytes:
    """The digest of the first ``size`` bytes of ``fd``."""
    return hash_range(fd, 0, size).digest()
