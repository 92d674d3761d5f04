"""Fencing: bound what a deployment writes once its lock is no longer its own.

Without compare-and-swap on the storage, nothing can stop a write that was already decided
when another deployment took the lock. What can be bounded is how many: every *commit* on
the primary (a rename into place, a move into the trash, the manifest, the journal, a new
folder) must be preceded by a verification of the lock that *started after the same
worker's previous commit finished*, and by one at most a second old. Once the lock is lost,
a verification that starts afterwards fails, so each worker commits at most once more: the
commit whose verification had started before the loss (docs/LOCKING.md, the model in
docs/lock-model/).

Workers that need a fresh verification at the same moment share one read of the lock, so
a save of many small files costs one lock read per round of commits, not one per file.

A commit that failed with a transient error is retried (spaceport.store.retrying), and the
attempt that failed may have landed all the same (its answer was lost). So a failed attempt
counts as a commit of its worker (:meth:`Fence.attempted`): the retry waits for a
verification that started after it, and the attempt is named among what may have landed
after a loss. The bound stays one commit per worker after the loss, attempts included.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..store.retry import commit_gate

MAX_AGE = 1.0  # seconds: a commit never relies on a verification older than this


class Fence:
    """Gate for commits on the primary. ``verify`` raises if the lock is not ours."""

    def __init__(self, verify: Callable[[], object], max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.monotonic):
        self._verify = verify
        self.max_age = max_age
        self._clock = clock
        self._cond = threading.Condition()
        self._verified_at = float("-inf")  # start time of the newest verification that passed
        self._verifying = False
        self._lost: BaseException | None = None
        self._local = threading.local()
        self.verifications = 0
        # What was committed since the newest passed verification started: if the lock turns
        # out lost, these are the writes that may have landed after the loss.
        self._unconfirmed: list[tuple[float, str]] = []
        self.after_loss: list[str] = []

    @property
    def lost(self) -> BaseException | None:
        return self._lost

    def check(self) -> None:
        """Cheap: raise if the lock is known lost (called between chunks of a copy)."""
        if self._lost is not None:
            raise self._lost

    def lose(self, exc: BaseException) -> None:
        """Someone else (the heartbeat) found the lock lost: stop every worker."""
        with self._cond:
            if self._lost is None:
                self._lost = exc
                self.after_loss = _unique(what for _, what in self._unconfirmed)
            self._cond.notify_all()

    def before_commit(self) -> None:
        """Block until a verification fresh enough for this worker's next commit passed;
        raise the lock-lost error if it failed (or had failed)."""
        previous = getattr(self._local, "committed_at", float("-inf"))
        while True:
            with self._cond:
                need = max(previous, self._clock() - self.max_age)
                while True:
                    self.check()
                    if self._verified_at > need:
                        return
                    if not self._verifying:
                        self._verifying = True
                        break
                    self._cond.wait()
            self._run_verification()

    def refresh(self) -> None:
        """Verify now unless a verification passed within ``max_age`` or one is running:
        the lock is read at least once a second while work goes on, commits or not."""
        with self._cond:
            self.check()
            if self._verifying or self._verified_at > self._clock() - self.max_age:
                return
            self._verifying = True
        self._run_verification()

    def _run_verification(self) -> None:
        started = self._clock()
        try:
            self._verify()
        except BaseException as exc:
            with self._cond:
                self._verifying = False
                self.verifications += 1
                if self._lost is None:
                    self._lost = exc
                    self.after_loss = _unique(what for _, what in self._unconfirmed)
                self._cond.notify_all()
            raise
        with self._cond:
            self._verifying = False
            self.verifications += 1
            if started > self._verified_at:
                self._verified_at = started
                # Commits that finished before this verification started are confirmed.
                self._unconfirmed = [(t, w) for t, w in self._unconfirmed if t >= started]
            self._cond.notify_all()

    def committed(self, what: str) -> None:
        """Record that this worker's commit of ``what`` finished."""
        now = self._clock()
        self._local.committed_at = now
        with self._cond:
            if self._lost is None:
                self._unconfirmed.append((now, what))
            elif what not in self.after_loss:
                self.after_loss.append(what)  # only possible for the commit already decided

    def attempted(self, what: str) -> None:
        """This worker's commit of ``what`` failed, and may have landed all the same: it
        counts as a commit (the next one waits for a newer verification)."""
        self.committed(what)

    def retry_gate(self, what: str) -> None:
        """Before a retry of the commit of ``what``: the failed attempt counts as a commit,
        and the retry needs a verification that started after it (raises if the lock is
        lost: a retry never turns a lost lock into a success)."""
        self.attempted(what)
        self.before_commit()

    def commit(self, what: str, action: Callable[[], object]):
        """before_commit(), action(), committed(what): one fenced commit; each retry of a
        call on the primary inside ``action`` is fenced again (:meth:`retry_gate`)."""
        self.before_commit()
        with commit_gate(lambda: self.retry_gate(what)):
            result = action()
        self.committed(what)
        return result


def _unique(names) -> list[str]:
    """In order, each once (a commit retried is one write that may have landed)."""
    return list(dict.fromkeys(names))
