"""Stalls for the OneData-like test filesystem: delayed calls, and calls held at a gate.

A race test has to hold a window open on purpose: stop one process inside a storage call,
let another one act, then let the first go on. :class:`StallRule` picks calls the way a
fault rule does (operation and path globs, `after`, `times`) and either delays each of them
by `delay_ms`, or holds each of them at a named gate until the test releases the gate (or a
safety timeout passes, so that a broken test never hangs for ever).

:class:`Stalls` keeps the rules and gates of one filesystem process. A held call waits in its
own FUSE handler thread, so the rest of the mount and the control socket go on serving (up to
the mount's `max_threads` handler threads in all).

What a held call cannot free is what the kernel locked before sending it, on its mount. A
held `rename`, `create`, `mkdir`, `unlink` or `rmdir` keeps its folder locked (the VFS
i_rwsem): other namespace calls in that folder wait; a held rename between two folders
blocks every other such rename on the mount. A held `read` or `write` keeps its file locked:
renaming or unlinking that file waits. Those calls wait in the kernel and never reach the
filesystem. Another mount of the same backing folder shares none of these locks, as another
node of a OneData space does: let the process that acts inside the window use a second
mount (a second OneDataFS on the same backing folder), or hold a call on a file that the
other process does not rename or unlink.
"""

from __future__ import annotations

import errno as errno_mod
import fnmatch
import itertools
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

log = logging.getLogger(__name__)

WHEN = ("before", "after")


def _errno(value: int | str) -> int:
    code = getattr(errno_mod, value.upper(), None) if isinstance(value, str) else value
    if isinstance(code, int) and code in errno_mod.errorcode:
        return code
    raise ValueError(f"unknown errno {value!r}; use a name such as 'ETIMEDOUT' or 'EIO'")


@dataclass
class Selector:
    """Which calls a rule acts on: `op` and `path` are fnmatch globs (`*` also matches `/`);
    the first `after` matching calls are let through, then `times` are acted on (None =
    all). `seen` and `fired` count matching calls and calls acted on."""

    op: str = "*"
    path: str = "*"
    after: int = 0
    times: Optional[int] = None
    seen: int = 0
    fired: int = 0

    def check_selector(self, known_ops: Iterable[str]) -> None:
        if not any(fnmatch.fnmatchcase(op, self.op) for op in known_ops):
            raise ValueError(f"op {self.op!r} matches no operation; known: "
                             f"{', '.join(known_ops)}")
        if self.after < 0 or (self.times is not None and self.times < 0):
            raise ValueError("after and times must be >= 0")

    def hit(self, op: str, paths: tuple[str, ...]) -> bool:
        """Count a call; True if the rule acts on it."""
        if not fnmatch.fnmatchcase(op, self.op):
            return False
        if not any(fnmatch.fnmatchcase(p, self.path) for p in paths):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@dataclass
class StallRule(Selector):
    """Delay the calls it selects by `delay_ms`, or hold them at the gate named `gate`.

    A held call waits until the gate is released, or for `timeout` seconds at most; then it
    fails with `on_timeout` (an errno name), or goes on if `on_timeout` is None.
    `when`: "before" the call reaches the backing folder, or "after" it was done there (the
    answer is held back: a read that already got the old content, a rename already done)."""

    delay_ms: float = 0.0
    gate: Optional[str] = None
    timeout: float = 60.0
    on_timeout: Optional[str] = "ETIMEDOUT"
    when: str = "before"

    def validate(self, known_ops: Iterable[str]) -> "StallRule":
        self.check_selector(tuple(known_ops))
        if (self.delay_ms > 0) == (self.gate is not None):
            raise ValueError("a stall rule either delays (delay_ms > 0) or holds (gate)")
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if self.when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}, not {self.when!r}")
        if not self.timeout > 0:
            raise ValueError("timeout must be > 0 seconds")
        if self.on_timeout is not None:
            _errno(self.on_timeout)
        return self


@dataclass
class Gate:
    """A gate's state: `waiting` calls blocked now, `held` in all, `timed_out` in all."""

    name: str
    open: bool = False
    waiting: int = 0
    held: int = 0
    timed_out: int = 0


class Stalls:
    """The stall rules and gates of one filesystem. Thread-safe: FUSE handler threads call
    :meth:`select` and :meth:`apply`, control threads call the rest, concurrently."""

    def __init__(self, known_ops: Iterable[str]) -> None:
        self._ops = tuple(known_ops)
        self._cond = threading.Condition()
        self._rules: list[StallRule] = []
        self._gates: dict[str, Gate] = {}
        self._names = itertools.count(1)

    # -- from the FUSE handler threads
    def select(self, op: str, paths: tuple[str, ...]) -> list[StallRule]:
        """The rules that act on this call (each matching rule counts it)."""
        with self._cond:
            return [r for r in self._rules
                    if not (r.gate and self._gates[r.gate].open) and r.hit(op, paths)]

    def apply(self, rules: list[StallRule], op: str, paths: tuple[str, ...]) -> Optional[int]:
        """Sleep and wait as the rules say, in the calling thread. Returns an errno if a held
        call timed out and its rule says to fail it, else None."""
        failure = None
        for rule in rules:
            if rule.delay_ms > 0:
                time.sleep(rule.delay_ms / 1000.0)
            elif rule.gate is not None and not self._wait(rule, op, paths):
                if rule.on_timeout is not None and failure is None:
                    failure = _errno(rule.on_timeout)
        return failure

    def _wait(self, rule: StallRule, op: str, paths: tuple[str, ...]) -> bool:
        """Block at the rule's gate; False if the timeout passed first."""
        deadline = time.monotonic() + rule.timeout
        with self._cond:
            gate = self._gates.get(rule.gate)
            if gate is None or gate.open:  # released or cleared since select()
                return True
            gate.waiting += 1
            gate.held += 1
            self._cond.notify_all()  # wake wait_held()
            try:
                while not gate.open:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        gate.timed_out += 1
                        log.warning("onedatafs: %s %s held at gate %r timed out after %s s",
                                    op, paths, gate.name, rule.timeout)
                        return False
                    self._cond.wait(left)
                return True
            finally:
                gate.waiting -= 1

    # -- from the control threads
    def add(self, rule: StallRule) -> Optional[str]:
        """Add a validated rule; a hold gets its gate (named, or "gate-N"). Returns the name."""
        rule.validate(self._ops)
        with self._cond:
            if rule.delay_ms > 0:
                self._rules.append(rule)
                return None
            if rule.gate in self._gates:
                raise ValueError(f"a gate named {rule.gate!r} exists already")
            while not rule.gate or rule.gate in self._gates:
                rule.gate = f"gate-{next(self._names)}"
            self._gates[rule.gate] = Gate(rule.gate)
            self._rules.append(rule)
            return rule.gate

    def gate(self, name: str) -> Gate:
        with self._cond:
            if name not in self._gates:
                raise KeyError(f"no gate named {name!r}; gates: {sorted(self._gates)}")
            return Gate(**asdict(self._gates[name]))  # a copy: the caller reads it unlocked

    def release(self, name: str) -> int:
        """Open the gate for good: calls held there go on, later ones pass. Returns how many
        calls were waiting."""
        with self._cond:
            gate = self._gates.get(name)
            if gate is None:
                raise KeyError(f"no gate named {name!r}; gates: {sorted(self._gates)}")
            gate.open = True
            self._cond.notify_all()
            return gate.waiting

    def wait_held(self, name: str, count: int, timeout: float) -> int:
        """Block until at least `count` calls wait at the gate; how many wait. TimeoutError
        if that does not happen within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if name not in self._gates:
                raise KeyError(f"no gate named {name!r}; gates: {sorted(self._gates)}")
            gate = self._gates[name]
            while gate.waiting < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{gate.waiting} of {count} call(s) held at gate "
                                       f"{name!r} after {timeout} s ({gate.held} held in all)")
                self._cond.wait(left)
            return gate.waiting

    def clear(self) -> int:
        """Remove every rule and gate, letting held calls go; how many were held."""
        with self._cond:
            waiting = sum(g.waiting for g in self._gates.values())
            for gate in self._gates.values():
                gate.open = True  # the held calls keep a reference to their gate
            self._rules.clear()
            self._gates.clear()
            self._cond.notify_all()
            return waiting

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {"stalls": [asdict(r) for r in self._rules],
                    "gates": {n: asdict(g) for n, g in self._gates.items()}}
