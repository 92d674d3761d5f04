"""A file of the status folder that cannot be read or written: said by its name.

The status folder holds files only spaceport writes: the lock, the heartbeats, the link
manifest, the journal. When one of those paths is a folder (someone made one there, a sync
tool put one back) or cannot be read, the raw error names whatever call failed, often a
temporary (``Is a directory (.../.spaceport-tmp-…)``), and says nothing of what to do.
:func:`status_file_error` turns it into a message naming the file, what it is for, what that
means for the command, and what to do; each caller decides whether the command can go on
(the heartbeat and the journal are no reason to stop saving files; the manifest is: links
are project data).
"""

from __future__ import annotations

import errno as errno_mod
import logging
import threading
from contextlib import contextmanager

from ..errors import SpaceportError
from ..store.base import Store, is_retryable

log = logging.getLogger(__name__)
_said: set[str] = set()
_said_lock = threading.Lock()


class StatusFileError(SpaceportError, OSError):
    """A status-folder file that cannot be read or written, for good. An OSError too, so
    that a step which already goes on past a failed call on the primary (the journal) goes
    on past this one, saying it in these words."""

    def __init__(self, message: str, *, hint: str, cause: OSError):
        super().__init__(message, hint=hint)
        self.errno = cause.errno
        self.strerror = cause.strerror
        self.filename = cause.filename


def is_status_file_problem(exc: BaseException) -> bool:
    """An error of the file itself (a folder in its place, no permission), not of the
    storage (transient errors are retried, a vanished mount is exit 6)."""
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) \
        and not is_retryable(exc) and exc.errno not in (errno_mod.ENOTCONN, errno_mod.ENODEV,
                                                         errno_mod.ESHUTDOWN)


def what_is_wrong(exc: OSError) -> str:
    if exc.errno == errno_mod.EISDIR:
        return "is a folder, not a file"
    if exc.errno in (errno_mod.EACCES, errno_mod.EPERM):
        return "cannot be read or written (permission denied)"
    if exc.errno == errno_mod.ENOTDIR:
        return "cannot be reached (something on its path is not a folder)"
    return f"cannot be read or written ({exc.strerror or exc})"


def status_file_error(store: Store, rel: str, what: str, exc: OSError, *, meaning: str,
                      todo: str | None = None) -> StatusFileError:
    """The error for ``rel`` (``what``: "the heartbeat file", ...) that ``exc`` showed to
    be unusable. ``meaning``: what that does to the command; ``todo``: what to do, where
    ``{where}`` stands for the file's path (by default: move that entry away; only
    spaceport writes at that path)."""
    where = store.abspath(rel) if hasattr(store, "abspath") else rel
    return StatusFileError(
        f"{what} {where} {what_is_wrong(exc)}: {meaning}",
        hint=todo.format(where=where) if todo else default_todo(exc, where), cause=exc)


def default_todo(exc: OSError, where: str) -> str:
    """What to do about the status file at ``where`` that ``exc`` showed unusable. A file
    spaceport may not read is still spaceport's, and may hold the only record of a
    project's links: moving it away would lose them (a deploy then restores none), so the
    way out is to give the permission back."""
    if exc.errno in (errno_mod.EACCES, errno_mod.EPERM):
        return (f"Check who may read and write {where} (its owner and mode, 'ls -l'; on "
                "OneData, the space's permissions): spaceport must be able to read and write "
                "its status folder. Once it can, run the command again.")
    return (f"Look at what is at {where}, and move it out of the status folder (nothing "
            "but spaceport should write there); then run the command again, which writes "
            "that file anew.")


@contextmanager
def named_if_unusable(store: Store, rel: str, what: str, *, meaning: str,
                      todo: str | None = None):
    """Around a call on the status file ``rel``: an error of the file itself becomes
    :func:`status_file_error`'s; storage errors (transient, a vanished mount) and a
    missing file pass through unchanged, for the caller's own handling."""
    try:
        yield
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        raise status_file_error(store, rel, what, exc, meaning=meaning, todo=todo) from exc


def say_once(text: str) -> None:
    """A warning about the status folder, once per process: a daemon saves every few
    minutes, and a folder in place of its heartbeat must not fill its log (its page shows
    the problem for as long as it lasts)."""
    with _said_lock:
        if text in _said:
            return
        _said.add(text)
    log.warning("%s", text)
