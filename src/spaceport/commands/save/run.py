"""One save being carried out: what its steps share, and the checks before each write.

Every step of a save (:mod:`.moves`, :mod:`.removals`, :mod:`.folders`, :mod:`.uploads`,
:mod:`.manifest`, :mod:`.finish`) takes a :class:`SaveRun`: the opened working copy, the
report it fills, the index recorder (rows only after each rename), the fence that gates every
commit on the primary, and the failures so far. A failure of one entry is named and the save
goes on (:meth:`SaveRun.entry_step`); only a lost lock or a storage that is gone stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from ...clock import utcnow
from ...engine.recorder import IndexRecorder
from ...engine.scan import Entry
from ...engine.snapshot import Snapshotter
from ...errors import Interrupted, LockLostError, StorageUnavailableError
from ...formats.trash import TrashBin
from ...safety.fence import Fence
from ...safety.lock import LockKeeper
from ...store.base import DetachedError
from ...store.retry import is_unavailable, unavailable
from ...store.sides import PRIMARY
from ...wording import count
from ..workcopy import WorkingCopy
from .report import SaveReport

log = logging.getLogger(__name__)

ATTACH_CHECK_SECONDS = 1.0  # at most one stat of the primary's root a second


class SaveRun:
    """The state one save's steps share; see the module docstring."""

    def __init__(self, copy: WorkingCopy, report: SaveReport, task: str,
                 stop: threading.Event | None, snapshots: Snapshotter):
        assert copy.lock is not None, "a save runs under the lock"
        self.copy, self.report, self.task = copy, report, task
        self.primary, self.work, self.index = copy.primary, copy.work, copy.index
        self.lock, self.marker, self.opts = copy.lock, copy.marker, copy.opts
        self.stop = stop or threading.Event()
        self.snapshots = snapshots
        self.keeper: LockKeeper | None = None
        self.now = utcnow()
        self.recorder = IndexRecorder(self.index, PRIMARY)
        self.fence = Fence(self.lock.verify)  # gates every commit on the primary
        self.failed: list[tuple[str, BaseException]] = []
        self.vanished: list[str] = []  # gone between the scan and their upload
        self.vanished_new: list[str] = []  # of those, the ones the primary never had
        self.unreadable: dict[str, OSError] = {}  # folders the scan could not list
        self.unsettled: set[str] = set()  # databases without an early snapshot: they wait
        self.entries: dict[str, Entry] = {}  # the scan the plan was made from
        self._trash: TrashBin | None = None
        self._attached_at = time.monotonic()
        self._detached: StorageUnavailableError | None = None

    def retry(self, fn, *args, what: str):
        """``fn(*args)``: each of its calls on the primary is retried by the primary's
        store (spaceport.store.retrying), which knows, call by call, when an attempt that
        failed did land, and fences each retry of a commit again. Retrying ``fn`` as a whole
        here as well would multiply the attempts."""
        return fn(*args)

    @property
    def trash(self) -> TrashBin:
        """This save's trash batch, named at its first use."""
        if self._trash is None:
            self._trash = TrashBin(self.primary, self.marker.status_dir, self.now)
            self.report.trash_batch = self._trash.name
        return self._trash

    def check(self) -> None:
        """Before each write: the lock is still ours and the mount still attached."""
        if self.keeper:
            self.keeper.check()
        if self._detached is not None:
            raise self._detached
        now = time.monotonic()
        if now - self._attached_at >= ATTACH_CHECK_SECONDS:
            # One stat of the primary's root, at most once a second (and the kernel caches
            # it): a lazy unmount stops the writers within a second, not at the end.
            self._attached_at = now
            try:
                self.primary.check_attached()
            except DetachedError as exc:
                self._detached = unavailable(exc, self.primary.root)
                raise self._detached from exc

    def stopped(self) -> None:
        """Between steps: a signal (or the daemon) asked to stop; what landed is recorded."""
        if self.stop.is_set():
            raise Interrupted("the save was stopped; what landed is recorded, and the same "
                              "command run again saves the rest")

    @contextmanager
    def entry_step(self, path: str):
        """One entry's step: its failure is reported by name and the save goes on; only a
        storage that is gone (or a lost lock) stops everything."""
        try:
            yield
        except OSError as exc:
            if is_unavailable(exc):
                raise
            self.failed.append((path, exc))
            log.error("could not save %s: %s", path, exc)

    def raise_if_fatal(self) -> None:
        """Lock lost or storage gone: stop now, nothing further is written."""
        for _, exc in self.failed:
            if isinstance(exc, (LockLostError, StorageUnavailableError)):
                raise exc
        for _, exc in self.failed:
            if is_unavailable(exc):
                raise unavailable(exc, self.primary.root)


def lost_during_save(exc: LockLostError, fence: Fence) -> LockLostError:
    """The lock-lost error of a save, naming what may have landed after the loss."""
    written = fence.after_loss
    if not written:
        return LockLostError(exc.message, hint="Nothing more was written to the primary. "
                                               "Your working copy is untouched. Find out who "
                                               "unlocked or took the folder before saving again.")
    names = "\n".join(f"  {w}" for w in written[:50])
    more = f"\n  … and {len(written) - 50} more" if len(written) > 50 else ""
    return LockLostError(
        f"{exc.message}\n{count(len(written), 'write')} landed on the primary after the last check "
        f"that found the lock ours (at most one per worker), and may have gone to the new "
        f"holder's project:\n{names}{more}",
        hint="Nothing else was written. Your working copy is untouched; tell the new holder "
             "which files above to check.")
