"""Folders a command is given: checked apart, found empty, wiped, told from a volume's own."""

from __future__ import annotations

import os
import shutil

from ..errors import RefusedError, UsageError
from ..formats.marker import MARKER_DIR
from ..store.retry import RetryPolicy, is_unavailable, retry_call, unavailable
from ..wording import count, quote


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


def space_folder(claim: str, what: str, retry: RetryPolicy | None = None) -> str:
    """The one folder inside ``claim``, the root of a claim that holds one OneData space
    (``--space-folder``): CERIT's platform mounts a space as a claim whose root holds a
    single folder named after the space. Links and files there are not folders; none or
    several folders: refused (exit 5), naming what is there, and nothing is created in the
    claim's root (it is oneclient's, read-only)."""
    try:
        entries = retry_call(retry or RetryPolicy.none(), _list, claim, what=f"list {claim}")
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{what} {claim} is not a folder (with --space-folder it must be "
                         "the root of a claim holding one space folder).") from None
    except OSError as exc:
        if is_unavailable(exc):
            raise unavailable(exc, claim) from exc
        raise
    folders = [name for name, is_dir in entries if is_dir]
    if len(folders) == 1:
        return os.path.join(claim, folders[0])
    shown = ", ".join(quote(n + ("/" if d else "")) for n, d in entries[:10]) \
        + (f" and {len(entries) - 10} more" if len(entries) > 10 else "")
    found = f"it holds {count(len(folders), 'folder')}: {shown}" if entries else "it is empty"
    hint = ("Nothing was read or written. If the claim was just mounted, its space may not "
            "be there yet (OneData not reachable, a wrong token or space id): check the "
            "mount, then start again.") if not folders else \
        ("Nothing was read or written. Give the space folder itself (without "
         "--space-folder), or remove what does not belong in the claim's root.")
    raise RefusedError(f"{what} {claim} should hold exactly one folder, the space "
                       f"(--space-folder); {found}.", hint=hint)


def _list(path: str) -> list[tuple[str, bool]]:
    with os.scandir(path) as it:
        return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
