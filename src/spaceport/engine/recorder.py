"""The index kept in step with a copy: rows recorded in batches, only after each rename.

Shared by the stage-in (files copied to the working copy), the save and the clone.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import time

from ..store.base import Store
from .index import Index, Known
from .scan import Entry, Kind

log = logging.getLogger(__name__)


def file_known(src_st: os.stat_result, dst_st: os.stat_result, path: str, *,
               work_is_src: bool) -> Known:
    """The index row for a file just copied, from the two stats the copy already has. The
    primary's ctime is known when the primary was the source (its file as read); an upload's
    stat is taken before its rename, which changes the ctime: its caller says it, if read."""
    work_st, primary_st = (src_st, dst_st) if work_is_src else (dst_st, src_st)
    entry = Entry(path, Kind.FILE, work_st.st_size, work_st.st_mtime_ns,
                  stat_mod.S_IMODE(work_st.st_mode), work_st.st_ino, None, work_st.st_ctime_ns)
    return Known(entry, primary_st.st_size, primary_st.st_mtime_ns,
                 pctime_ns=None if work_is_src else primary_st.st_ctime_ns)


class IndexRecorder:
    """Batches index writes: one transaction per few hundred files or per second.

    Rows are handed over only after the file's rename succeeded; if the process dies before
    a flush, those files are simply copied again by the next run.
    """

    def __init__(self, index: Index, side: str, batch: int = 512, seconds: float = 1.0):
        self.index, self.side = index, side
        self.batch, self.seconds = batch, seconds
        self._rows: list[Known] = []
        self._forget: list[str] = []
        self._tmps: list[tuple[str, str]] = []
        self._last = time.monotonic()

    def done(self, known: Known | None = None, *, tmp: str | None = None) -> None:
        if known is not None:
            self._rows.append(known)
        if tmp is not None:
            self._tmps.append((self.side, tmp))
        self._maybe_flush()

    def forget(self, path: str) -> None:
        self._forget.append(path)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        pending = len(self._rows) + len(self._forget) + len(self._tmps)
        if pending >= self.batch or time.monotonic() - self._last > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self._rows or self._forget or self._tmps:
            self.index.record(self._rows, forget=self._forget, finished_tmps=self._tmps)
            self._rows, self._forget, self._tmps = [], [], []
        self._last = time.monotonic()


def remove_leftover_temps(index: Index, store: Store, side: str) -> int:
    """Remove temporaries a killed run left behind (known from the index, no listing)."""
    tmps = index.inflight(side)
    for tmp in tmps:
        try:
            store.unlink(tmp)
        except FileNotFoundError:
            pass
    if tmps:
        index.drop_inflight(side, tmps)
        log.info("removed %d leftover temporary files on the %s side", len(tmps), side)
    return len(tmps)
