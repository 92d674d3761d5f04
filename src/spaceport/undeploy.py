"""Undeploy: final save, release the lock, clean the working copy.

If the final save fails, the lock and the working copy are kept and the error propagates
(safety rule 10): the next attempt, or a person, can still bring the work home.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .engine import Options, open_primary, wipe_folder
from .marker import UNDEPLOYED, require_marker, write_marker
from .save import SaveReport, adopt_lock, save
from .worklock import hold_work

log = logging.getLogger(__name__)


@dataclass
class UndeployReport:
    save: SaveReport
    work_removed: bool


def undeploy(work_path: str, opts: Options, *, keep_work: bool = False,
             allow_mass_delete: bool = False) -> UndeployReport:
    work_path = os.path.abspath(work_path)
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
    if not keep_work:
        wipe_folder(work_path)
    return UndeployReport(report, work_removed=not keep_work)
