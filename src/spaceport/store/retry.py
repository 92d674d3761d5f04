"""Retries with exponential backoff for calls on a storage that may hiccup.

OneData over FUSE returns EIO or ENOTCONN when the network or the provider stumbles; most of
those go away within seconds. Permanent errors (disk full, permission denied) are never
retried: they are reported at once with what they mean.

Two things ride along with every retry:

* **The commit gate.** A commit on the primary is fenced (spaceport.safety.fence): it may
  land only after a fresh check that the lock is ours. A retry is a new attempt at the
  commit, seconds later, and the attempt that failed may have landed all the same: before
  each retry the gate of the commit under way in this thread (:func:`commit_gate`) is
  called, which records the failed attempt and checks the lock again (raising stops the
  retries: a retry never turns a lost lock into a success).
* **No retries inside retries.** A call made inside :func:`retry_call` is not retried again
  by the retrying store (:mod:`.retrying`): attempts would multiply (5 x 5, minutes of
  backoff for a file that keeps failing).
"""

from __future__ import annotations

import errno
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

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


_local = threading.local()  # per thread: the commit gate, and how deep in retry_call we are


@contextmanager
def commit_gate(before_retry: Callable[[], None]) -> Iterator[None]:
    """While in this block, every retry of a call on the primary made by this thread first
    calls ``before_retry`` (the fence's check: see the module docstring)."""
    previous = getattr(_local, "gate", None)
    _local.gate = before_retry
    try:
        yield
    finally:
        _local.gate = previous


def before_retry() -> None:
    """Call the commit gate of this thread, if a commit is under way."""
    gate = getattr(_local, "gate", None)
    if gate is not None:
        gate()


def inside_retry() -> bool:
    """True inside :func:`retry_call`: the caller retries the whole action already."""
    return getattr(_local, "depth", 0) > 0


def retrying(policy: RetryPolicy, what: str, *, retry_if=is_retryable,
             failed_before: int = 0) -> tenacity.Retrying:
    """The retry loop of ``policy``: backoff with jitter, transient errors only, the gate
    before each retry, a signal ends the backoff at once. ``failed_before``: attempts that
    already failed before this loop (each attempt of the loop is then a retry, gated; its
    backoff goes on from theirs)."""
    total = policy.attempts + failed_before

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s), retrying in %.1fs (attempt %d of %d)", what, exc,
                    state.next_action.sleep if state.next_action else 0,
                    state.attempt_number + 1 + failed_before, total)

    def gate(state: tenacity.RetryCallState) -> None:
        if state.attempt_number > 1 or failed_before:
            before_retry()

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=tenacity.wait_exponential_jitter(
            multiplier=policy.initial_delay * 2 ** failed_before, max=policy.max_delay,
            jitter=policy.initial_delay),
        retry=tenacity.retry_if_exception(retry_if),
        before=gate,
        before_sleep=log_retry,
        sleep=stopping.sleep,  # a signal ends the backoff at once
        reraise=True,
    )


def after_first_failure(policy: RetryPolicy, what: str, exc: OSError) -> RetryPolicy:
    """The first attempt of a call failed with ``exc``, a transient error: say so, wait
    the first backoff, and return the policy of the attempts left (see :func:`retrying`,
    ``failed_before=1``). A call that succeeds at once never builds a retry loop: a scan
    or a stage-in makes 10^5 calls on the primary."""
    log.warning("%s failed (%s), retrying in %.1fs (attempt 2 of %d)", what, exc,
                policy.initial_delay, policy.attempts)
    stopping.sleep(policy.initial_delay)
    return RetryPolicy(policy.attempts - 1, policy.initial_delay, policy.max_delay)


def retry_call(policy: RetryPolicy, fn: Callable[..., T], *args, what: str = "",
               **kwargs) -> T:
    """Call ``fn``; retry transient storage errors with backoff; re-raise the last one.
    Calls on the primary inside ``fn`` are not retried again (see the module docstring)."""

    def attempt() -> T:
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _local.depth -= 1

    return retrying(policy, what or getattr(fn, "__name__", "call"))(attempt)


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
