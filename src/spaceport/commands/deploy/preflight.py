"""What a deploy checks before it creates or copies anything.

* The arguments the right way round: a PRIMARY that is a working copy (it holds the work
  marker ``.spaceport/``), or a WORK that is a primary (it holds a status folder), is the
  classic swap ``spaceport deploy WORK PRIMARY``. Refused with a message that says so.
* A primary it can list, and a status folder it can write in (the lock, the link manifest
  and the trash live there). Refused naming the folder and the permission that is missing,
  rather than failing half-way with an error number.
"""

from __future__ import annotations

import errno
import os
import secrets

from ...errors import SpaceportError, UsageError
from ...formats.marker import MARKER_DIR, MARKER_FILE
from ...safety.lock import DEFAULT_STATUS_DIR
from ...store.retry import RetryPolicy, is_unavailable, retry_call, unavailable


class AccessError(SpaceportError):
    """The primary cannot be read, or its status folder cannot be written."""


def refuse_swapped(primary: str, work: str, status_dir: str) -> None:
    """UsageError (exit 2) if PRIMARY and WORK look given the wrong way round."""
    swap = f"spaceport deploy {work} {primary}"
    if os.path.isdir(os.path.join(primary, MARKER_DIR)):
        own = os.path.exists(os.path.join(primary, MARKER_DIR, MARKER_FILE))
        raise UsageError(
            f"{primary} holds {MARKER_DIR}/, the marker of a spaceport working copy, so it "
            "is not a primary folder: the two folders may have been given the wrong way "
            "round.",
            hint="Nothing was changed. The primary (the project on OneData) comes first, the "
                 "working copy second: spaceport deploy PRIMARY WORK"
                 + (f", e.g. {swap}." if own else
                    f". If {primary} really is the primary, move its {MARKER_DIR} folder "
                    "away (a marker copied there with a working copy) and deploy again."))
    for name in dict.fromkeys((status_dir, DEFAULT_STATUS_DIR)):
        if os.path.isdir(os.path.join(work, name)):
            raise UsageError(
                f"{work} holds {name}/, the status folder of a primary, so it is a primary "
                "folder, not a working copy: the two folders may have been given the wrong "
                "way round.",
                hint="Nothing was changed. The primary (the project on OneData) comes first, "
                     f"the working copy second: spaceport deploy PRIMARY WORK, e.g. {swap}.")


def check_access(primary: str, status_dir: str, retry: RetryPolicy) -> None:
    """AccessError unless ``primary`` can be listed and a file created in its status folder
    (or, before the first deploy, in the primary itself, where that folder will be made).
    The probe file is removed at once."""
    try:
        retry_call(retry, _list_one, primary, what=f"list {primary}")
    except (FileNotFoundError, NotADirectoryError):
        return  # opening the primary says it is missing (exit 6: is the space mounted?)
    except PermissionError:
        raise AccessError(
            f"cannot read the primary folder {primary}: permission denied (reading it needs "
            "read and execute permission on the folder).",
            hint=f"Nothing was changed. Check the folder's permissions ({_who()}), or that "
                 "the space is mounted with access for this user.") from None
    status = os.path.join(primary, status_dir)
    where = status if os.path.isdir(status) else primary
    probe = os.path.join(where, f".spaceport-probe-{secrets.token_hex(4)}")
    try:
        retry_call(retry, _create_and_remove, probe, what=f"create a file in {where}")
    except OSError as exc:
        if is_unavailable(exc):
            raise unavailable(exc, primary) from exc
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        why = ("the file system is read-only" if exc.errno == errno.EROFS
               else "permission denied")
        what = (f"write in the status folder {status}" if where == status else
                f"create the status folder {status} (in {primary})")
        raise AccessError(
            f"cannot {what}: {why}. spaceport keeps the lock, the link manifest and the "
            "trash there, so it needs write permission on that folder.",
            hint=f"Nothing was changed. Mount the space read-write, or give this user "
                 f"({_who()}) write permission on {where}.") from None


def check(primary: str, work: str, status_dir: str, retry: RetryPolicy) -> None:
    """Both checks, in the order a person would want to hear about them."""
    refuse_swapped(primary, work, status_dir)
    check_access(primary, status_dir, retry)


def _list_one(path: str) -> None:
    with os.scandir(path) as it:
        next(it, None)


def _create_and_remove(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.unlink(path)


def _who() -> str:
    try:
        import pwd
        return f"user {pwd.getpwuid(os.getuid()).pw_name}"
    except (ImportError, KeyError):
        return f"uid {os.getuid()}"


def not_a_working_copy(work: str, primary: str) -> SpaceportError:
    """The refusal for a WORK that holds other files: never a hint to delete them."""
    from ...errors import RefusedError  # the exit code of a safety refusal (5)

    home = os.path.realpath(os.path.expanduser("~"))
    what = "your home folder" if os.path.realpath(work) == home else "a folder of other files"
    inside = os.path.join(work, os.path.basename(primary.rstrip("/")) or "project")
    example = (f", e.g. a folder inside it: spaceport deploy {primary} {inside}"
               if not os.path.lexists(inside) else "")
    return RefusedError(
        f"{work} is not empty and is not a spaceport working copy: it is {what}, and a "
        "deploy only copies into an empty folder or a working copy of the same primary.",
        hint=f"Nothing was changed. Deploy into a new or empty folder{example} (it is "
             "created).")
