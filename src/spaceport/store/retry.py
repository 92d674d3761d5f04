"""Retries with exponential backoff for calls on a storage that may hiccup.

OneData over FUSE returns EIO or ENOTCONN when the network or the provider stumbles; most of
those go away within seconds. Permanent errors (disk full, permission denied) are never
retried: they are reported at once with what they mean.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

from .. import stopping
from ..errors import StorageUnavailableError
from .base import UNAVAILABLE_ERRNOS, is_retryable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, first delay, longest delay (seconds)."""

    attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 15.0

    @classmethod
    def none(cls) -> "RetryPolicy":
        return cls(attempts=1)


def retry_call(policy: RetryPolicy, fn: Callable[..., T], *args, what: str = "",
               **kwargs) -> T:
    """Call ``fn``; retry transient storage errors with backoff; re-raise the last one."""

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s), retrying in %.1fs (attempt %d of %d)", what or fn.__name__,
                    exc, state.next_action.sleep if state.next_action else 0,
                    state.attempt_number + 1, policy.attempts)

    retryer = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=tenacity.wait_exponential_jitter(multiplier=policy.initial_delay,
                                              max=policy.max_delay, jitter=policy.initial_delay),
        retry=tenacity.retry_if_exception(is_retryable),
        before_sleep=log_retry,
        sleep=stopping.sleep,  # a signal ends the backoff at once
        reraise=True,
    )
    return retryer(fn, *args, **kwargs)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in UNAVAILABLE_ERRNOS


def unavailable(exc: OSError, where: str) -> StorageUnavailableError:
    """The error for a storage that stayed unreachable after retries."""
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return StorageUnavailableError(
        f"the primary storage at {where} is not reachable ({name}: {exc.strerror}).",
        hint="Nothing more was written. The working copy and the lock are kept. Check the "
             "OneData mount (oneclient), then run the same command again.",
    )
