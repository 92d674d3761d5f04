"""CERIT's controller, the parts spaceport must agree with, written again from its code
(CERIT-SC/scipion-docker ``controller-image/controller/``; the commits are named beside
each function, the pseudo-code is in docs/CERIT.md's sources). Tests ask these, never
spaceport's own readers, whether CERIT's app would see a project as locked and which links
it would restore.
"""

from __future__ import annotations

import os
import time

LOCK = "scipion-docker/project.lock"  # constants.py: f_project_lock, relative to the space
ROOT = "/mnt/vol-project"  # constants.py: d_vol_project, the controller's working root
FRESHNESS = 600  # constants.py @ 28b2d2d2: lock_freshness_threshold = timer_lock_refresh * 5


def lock_check_v1(space: str) -> str:
    """controller.py @ 1dd67205, pre_stage_in: any file at the lock's path is a lock."""
    return "locked" if os.path.exists(os.path.join(space, LOCK)) else "free"


def lock_check_dev(space: str, now: float | None = None) -> str:
    """controller.py @ 28b2d2d2, lock_check: free without a file, free when it holds an
    integer more than 600 s old ("seems to be dead": taken over), locked when it holds a
    fresh integer or anything int() refuses ("damaged")."""
    lock = os.path.join(space, LOCK)
    if not os.path.exists(lock):
        return "free"
    now = int(time.time() if now is None else now)
    try:
        with open(lock) as f:
            t = int(f.read())
        if now - t > FRESHNESS:
            return "free"
    except Exception:  # noqa: BLE001 - the controller's own bare except
        return "locked"
    return "locked"


def every_check(space: str, *, later: float = 0) -> set[str]:
    """What every version of the controller says, ``later`` seconds from now."""
    return {lock_check_v1(space), lock_check_dev(space, time.time() + later)}


def parse_dump(raw: bytes) -> list[tuple[str, str]]:
    """sync.py (SyncRestore), as the controller reads ``<space>/symlink-dump``: text mode,
    each line stripped, split on ' ', field 0 the target, field 1 the link path."""
    out = []
    for line in open_text_lines(raw):
        s = line.strip()
        if s:
            a = s.split(" ")
            out.append((a[0], a[1]))
    return out


def open_text_lines(raw: bytes) -> list[str]:
    """The lines Python's text mode gives for ``raw`` (universal newlines), as
    ``for line in open(path)`` does in the controller."""
    import io

    return list(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))


def restore_links(raw: bytes, root: str) -> list[str]:
    """SyncRestore's loop, with ``/mnt/vol-project`` mapped to ``root`` (the only change):
    a link is made where none is; returns the controller's warnings."""
    warnings = []
    for target, link in parse_dump(raw):
        assert link.startswith(ROOT + "/"), link
        link = root + link[len(ROOT):]
        if not os.path.lexists(link):
            os.symlink(target, link, target_is_directory=os.path.isdir(target))
        elif not os.path.islink(link):
            warnings.append(f"{link} exists and is not a link")
        elif os.readlink(link) != target:
            warnings.append(f"{link} points elsewhere")
    return warnings


def symlink_search(path: str, root: str) -> list[str]:
    """utils.py symlink_search, the dump the controller writes at every save, with
    ``/mnt/vol-project`` mapped to ``root``: walks through links to folders too."""
    out = []
    here, dirs, files = next(os.walk(path))
    for c in dirs + files:
        full = f"{here}/{c}"
        if os.path.islink(full):
            out.append(f"{os.readlink(full)} {ROOT}{full[len(root):]}")
    for d in dirs:
        out += symlink_search(f"{here}/{d}", root)
    return out
