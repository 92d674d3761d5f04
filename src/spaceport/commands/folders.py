"""Folders a command is given: checked apart, found empty, wiped, told from a volume's own."""

from __future__ import annotations

import os
import shutil

from ..errors import UsageError
from ..formats.marker import MARKER_DIR


def wipe_folder(path: str) -> None:
    """Remove everything inside ``path`` (not ``path`` itself: it may be a mount point)."""
    with os.scandir(path) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def separate_folders(first: str, second: str, names: tuple[str, str]) -> tuple[str, str]:
    """Absolute paths of two folders that must not overlap (one inside the other), the
    second of which must be a folder if it exists; UsageError otherwise."""
    first, second = os.path.abspath(first), os.path.abspath(second)
    real_a, real_b = os.path.realpath(first), os.path.realpath(second)
    for a, b in ((real_a, real_b), (real_b, real_a)):
        if a == b or a.startswith(b.rstrip("/") + "/"):
            raise UsageError(f"the {names[0]} {first} and the {names[1]} {second} overlap; "
                             "give two separate folders.")
    if os.path.lexists(second) and not os.path.isdir(second):
        raise UsageError(f"the {names[1]} {second} exists and is not a folder.")
    return first, second


def volume_artifacts(path: str) -> frozenset[str]:
    """Names at the top of a volume that belong to its filesystem, not to the project:
    ``lost+found`` at the root of a fresh ext4 volume (a Kubernetes working volume)."""
    return frozenset({"lost+found"}) if os.path.ismount(path) else frozenset()


def folder_is_empty(path: str) -> bool:
    ignore = {MARKER_DIR} | volume_artifacts(path)
    with os.scandir(path) as it:
        return not any(e.name not in ignore for e in it)
