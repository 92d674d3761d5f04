"""Undeploy: final save, release the lock, clean the working copy.

If the final save fails, the lock and the working copy are kept and the error propagates
(safety rule 10): the next attempt, or a person, can still bring the work home.

Removing the working copy keeps WORK itself (it may be a mount point) and, in its
``.spaceport/``, the log and what ``--discard-local`` set aside, with a record of the
undeploy in place of the marker: running undeploy again answers "already undeployed".
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field

from .discard import DISCARDED_DIR
from .engine import Options, open_primary
from .errors import RefusedError
from .marker import (MARKER_DIR, UNDEPLOYED, Marker, marker_dir, read_marker,
                     read_undeployed_record, require_marker, write_marker,
                     write_undeployed_record)
from .plan import unsaved_summary
from .save import SaveReport, adopt_lock, pending_changes, save
from .worklock import BUSY_FILE, hold_work

log = logging.getLogger(__name__)

LOG_DIR = "log"  # <work>/.spaceport/log/: see spaceport.worklog
KEPT_IN_MARKER = (LOG_DIR, DISCARDED_DIR)  # what removing a working copy leaves


@dataclass
class UndeployReport:
    save: SaveReport | None  # None: it was undeployed before, nothing was saved now
    work_removed: bool
    already: str | None = None  # when the earlier undeploy happened ("" if not known)
    kept: list[str] = field(default_factory=list)  # what stays in WORK/.spaceport/
    mount_point: bool = False  # WORK is a mount point: the folder itself always stays


def undeploy(work_path: str, opts: Options, *, keep_work: bool = False,
             allow_mass_delete: bool = False) -> UndeployReport:
    work_path = os.path.abspath(work_path)
    done = _already_undeployed(work_path, opts, keep_work)
    if done is not None:
        return done
    require_marker(work_path)
    with hold_work(work_path, "undeploy", wait=opts.busy_wait, say=opts.say):
        return _undeploy_held(work_path, opts, keep_work, allow_mass_delete)


def _undeploy_held(work_path: str, opts: Options, keep_work: bool,
                   allow_mass_delete: bool) -> UndeployReport:
    marker = require_marker(work_path)
    report = save(work_path, opts, allow_mass_delete=allow_mass_delete, task="final save")
    with open_primary(marker.primary, marker.token, opts) as primary:
        adopt_lock(primary, marker, work_path).release()
    marker.phase = UNDEPLOYED
    # Kept copies keep their marker: a later deploy sees an all-saved copy and reuses it.
    write_marker(work_path, marker)
    result = UndeployReport(report, work_removed=not keep_work)
    if not keep_work:
        _remove_working_copy(work_path, marker, result)
    return result


def _already_undeployed(work_path: str, opts: Options, keep_work: bool) -> UndeployReport | None:
    """The answer to a second undeploy, or None if this one has work to do."""
    marker = read_marker(work_path) if os.path.isdir(work_path) else None
    if marker is None:
        record = read_undeployed_record(work_path)
        if record is None:
            return None  # not a working copy at all: require_marker says so
        report = UndeployReport(None, work_removed=True, already=record.get("undeployed", ""))
        report.kept = _kept(work_path)
        report.mount_point = os.path.ismount(work_path)
        return report
    if marker.phase != UNDEPLOYED:
        return None
    with hold_work(work_path, "undeploy", wait=opts.busy_wait, say=opts.say):
        pending = pending_changes(work_path, marker)
        if pending.pending:
            raise RefusedError(
                f"{work_path} was undeployed, and changes made since were never saved: "
                f"{unsaved_summary(pending.summary())}.",
                hint="Nothing was changed. To save them, deploy it again and undeploy: "
                     f"spaceport deploy --resume {marker.primary} {work_path}")
        report = UndeployReport(None, work_removed=not keep_work, already="")
        if not keep_work:  # all saved, as the index proves: the copy may go now
            _remove_working_copy(work_path, marker, report)
    return report


def _remove_working_copy(work_path: str, marker: Marker, report: UndeployReport) -> None:
    """Everything but ``.spaceport/``; in it, all but the log and the discarded files; and
    the record of this undeploy in place of the marker."""
    with os.scandir(work_path) as it:
        for entry in it:
            if entry.name == MARKER_DIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    keep = set(KEPT_IN_MARKER) | {BUSY_FILE}  # the busy file is held by this very command
    with os.scandir(marker_dir(work_path)) as it:
        for entry in it:
            if entry.name in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    write_undeployed_record(work_path, marker)
    report.kept = _kept(work_path)
    report.mount_point = os.path.ismount(work_path)


def _kept(work_path: str) -> list[str]:
    return [name for name in KEPT_IN_MARKER
            if os.path.isdir(os.path.join(marker_dir(work_path), name))]
