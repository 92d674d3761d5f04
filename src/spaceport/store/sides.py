"""The two sides of a deployment, opened as stores: the primary and the working copy."""

from __future__ import annotations

from typing import Protocol

from ..errors import StorageUnavailableError, UsageError
from .posix import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore
from .retry import RetryPolicy, retry_call, unavailable
from .retrying import RetryingStore

PRIMARY, WORK = "primary", "work"  # sides of the index's inflight table


class OpenOptions(Protocol):
    """What opening the primary needs of a command's options."""

    retry: RetryPolicy
    fsync: bool  # fsync files on the primary before their rename


def open_primary(path: str, token: str, opts: OpenOptions) -> RetryingStore:
    """Open the primary folder; a missing or broken mount is exit 6, not a traceback. Every
    call on it is retried on transient errors (``opts.retry``: see :mod:`.retrying`)."""
    try:
        store = retry_call(opts.retry, PosixStore, path, PRIMARY_CAPABILITIES,
                           temp_token=token, fsync=opts.fsync, what=f"open {path}")
    except FileNotFoundError:
        raise StorageUnavailableError(
            f"the primary folder {path} does not exist.",
            hint="Is the OneData space mounted? Nothing was changed.") from None
    except NotADirectoryError:
        raise UsageError(f"the primary {path} is not a folder.") from None
    except OSError as exc:
        raise unavailable(exc, path) from exc
    return RetryingStore(store, opts.retry)


def open_work(path: str, token: str) -> PosixStore:
    return PosixStore(path, WORK_CAPABILITIES, temp_token=token, fsync=False)
