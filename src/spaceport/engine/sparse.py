"""Sparse files stay sparse: holes are skipped when a file is copied, never written as zeros.

A disk image or a preallocated map of 512 MiB may hold a few KiB of data; written whole it
takes 512 MiB on OneData and in every new working copy (rsync ``-S`` and ``cp`` keep it
sparse). The copier (:mod:`spaceport.engine.transfer`) asks two things of a source:

* :func:`maybe_sparse`: does it have fewer blocks than its size needs? Only such files take
  the sparse path (GNU cp's ``--sparse=auto`` rule); a dense file is copied by the kernel as
  before, with no look at its bytes.
* :func:`data_ranges`: where its data is, from ``SEEK_DATA``/``SEEK_HOLE`` where the
  filesystem answers them (ext4, xfs, tmpfs, btrfs). Only those ranges are copied; the
  holes are seeked over. A filesystem that does not know (a FUSE mount without ``lseek``,
  such as a OneData mount, says the whole file is data) gets the other way:
  :func:`nonzero_runs` finds the all-zero blocks of what is read, and those are not
  written.

Either way the destination is then given its size (``ftruncate``): a hole at the end is a
hole too. The content is the same byte for byte: a hole reads as zeros.
"""

from __future__ import annotations

import errno
import os

BLOCK = 4096  # the granularity of zero detection: a page, the block of most filesystems
_ZERO_BLOCK = bytes(BLOCK)
_NO_SEEK = {errno.EINVAL, errno.ENXIO, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def maybe_sparse(st: os.stat_result, size: int) -> bool:
    """Fewer 512-byte blocks allocated than ``size`` needs: it may hold holes."""
    return size > BLOCK and st.st_blocks * 512 < size


def data_ranges(fd: int, size: int) -> list[tuple[int, int]] | None:
    """The (start, end) ranges of ``fd``'s first ``size`` bytes that hold data, from
    SEEK_DATA/SEEK_HOLE; None if the filesystem does not show a hole (it may not know)."""
    try:
        if os.lseek(fd, 0, os.SEEK_HOLE) >= size:
            return None
        ranges, pos = [], 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                break  # no data after pos: the rest is a hole
            if start >= size:
                break
            pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, pos))
        return ranges
    except OSError as exc:
        if exc.errno in _NO_SEEK:
            return None
        raise


def nonzero_runs(data: bytes, zeros: bytes) -> list[tuple[int, int]]:
    """The (start, end) offsets in ``data`` of its runs of blocks that are not all zero
    (``zeros``: a buffer of zeros at least as long). A chunk without a whole zero block is
    one run, found with one search; an all-zero chunk, none."""
    n = len(data)
    if data == zeros[:n] if n < len(zeros) else data == zeros:
        return []
    if _ZERO_BLOCK not in data:
        return [(0, n)]
    runs: list[tuple[int, int]] = []
    start = None
    for at in range(0, n, BLOCK):
        zero = data[at:at + BLOCK] == _ZERO_BLOCK[:min(BLOCK, n - at)]
        if zero and start is not None:
            runs.append((start, at))
            start = None
        elif not zero and start is None:
            start = at
    if start is not None:
        runs.append((start, n))
    return runs
