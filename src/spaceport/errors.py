"""One exception hierarchy for everything spaceport refuses or fails to do.

Each class carries the exit code of the command-line contract (DESIGN.md) so that one
top-level handler in :mod:`spaceport.cli` turns any of them into a message and a code.
Messages say what happened, what was left untouched, and what to do next.
"""

from __future__ import annotations

# Exit codes of the command-line contract.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_LOCK_LOST = 4
EXIT_REFUSED = 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130


class SpaceportError(Exception):
    """Base class: a failure with a user-facing message and an exit code."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message


class UsageError(SpaceportError):
    """Bad input from the user: wrong paths, malformed options."""

    exit_code = EXIT_USAGE


class LockedError(SpaceportError):
    """The primary is held by another live deployment."""

    exit_code = EXIT_LOCKED


class LockLostError(SpaceportError):
    """The lock is not ours (any more): fencing stopped every write."""

    exit_code = EXIT_LOCK_LOST


class RefusedError(SpaceportError):
    """A safety rule refused the operation; nothing was changed."""

    exit_code = EXIT_REFUSED


class StorageUnavailableError(SpaceportError):
    """The primary storage kept failing (ENOTCONN, EIO...) after retries."""

    exit_code = EXIT_UNAVAILABLE


class FormatError(SpaceportError):
    """A file spaceport keeps (lock, manifest, index) is corrupt or of a newer version."""

    exit_code = EXIT_ERROR


class PartialSaveError(SpaceportError):
    """Some files could not be saved; everything else landed and the index knows which."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, failed: list[tuple[str, str]], *, hint: str | None = None,
                 kept_changing: list[str] | None = None):
        super().__init__(message, hint=hint)
        self.failed = failed
        # Files not saved because they changed during every copy (an application writes
        # them): a final save in that state must not give the working copy up.
        self.kept_changing = kept_changing or []


class Interrupted(SpaceportError):
    """The user or the system asked us to stop (SIGINT/SIGTERM)."""

    exit_code = EXIT_INTERRUPTED


class VolumeFullError(SpaceportError):
    """The working volume has no room (space or inodes) for what a command must write."""

    exit_code = EXIT_ERROR


class NotSavedError(SpaceportError):
    """A final save could not prove everything saved: the lock and the working copy stay."""

    exit_code = EXIT_ERROR
