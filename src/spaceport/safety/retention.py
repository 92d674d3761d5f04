"""Trash retention that no clock can shorten (DESIGN.md, safety rule 5).

A trash batch holds the only copy of what a save deleted. It used to be purged as soon as
its name (the clock of the host that made it) was older than the retention by the clock of
the host saving now: one node 8 days ahead purged minutes-old batches, and a batch named on
a clock 30 days behind was purged by the next save on a correct one.

A save now purges a batch only when **both** of these say it is older than the retention:

1. the saving host's clock, against the batch's name (as before);
2. the time spaceport has *watched the batch exist*, on the kernel's boot clock
   (:func:`~spaceport.clock.boot_seconds`): each save records when its deployment first saw
   each batch (boot id, seconds since boot) and adds, boot after boot, the time between
   its first and latest sight. Nothing can set that clock: a wrong, reset or faked wall
   clock does not move it. The gap across a reboot is not counted (it is unknown), nor the
   time no deployment holds the primary. At a deployment's final save the watched seconds
   are written beside the trash (:data:`WATCH_FILE`); the next deployment starts from them,
   so a batch's watched time adds up over the sessions that saw it.

Why not another second measure: the number of later saves in the journal counts activity,
not time (a daemon saves every few minutes: hundreds of saves a day); the storage's own
timestamps are this very host's clock when the primary is a local folder. The price of the
boot clock is that trash stays longer, never shorter: a batch made by short sessions is
purged once those sessions together watched it for the retention period, or by
``spaceport trash purge``, which a person runs knowing what it lists.

And a clock that disagrees with the batch names by more than a day (:data:`SKEW`) purges
nothing, said once: a batch named more than a day after this host's now (this clock is
behind the one that named it), or a wall clock that moved more than a day away from the boot
clock since the previous save of this deployment (it was set, or was wrong then).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..clock import boot_seconds, utcnow
from ..engine.index import Index
from ..formats.trash import batch_time, list_batches, purge
from ..hostinfo import boot_id
from ..store.base import Store, join

log = logging.getLogger(__name__)

WATCH_META = "trash_watch"  # index meta: {batch: {"boot", "since", "carried"}}
CLOCK_META = "trash_clock"  # index meta: the readings of the previous save (boot, up, wall)
WARNED_META = "trash_clock_warned"  # index meta: the clock problem said last (said once)
WATCH_FILE = "trash-watch.json"  # <status>/: seconds watched, carried to the next deployment
WATCH_TYPE = "spaceport-trash-watch"
SKEW = timedelta(days=1)


@dataclass
class Retention:
    """What a save's look at the trash decided."""

    purge: list[str]
    problem: str | None = None  # the clock disagrees: nothing is purged
    key: str | None = None  # what makes the problem news (it is said once)
    say: bool = False  # the problem is news


class Watch:
    """How long this deployment (and those before it) watched each batch exist, on the boot
    clock. ``records``: batch -> {"boot": id, "since": seconds since boot at the first sight
    in that boot, "carried": seconds watched before that boot (or by earlier deployments)}."""

    def __init__(self, records: dict, boot: str, up: float):
        self.records, self.boot, self.up = records, boot, up

    def observe(self, names: list[str]) -> None:
        """Start watching new batches, carry the time of an earlier boot, forget the gone."""
        for name in names:
            rec = self.records.get(name)
            if rec is None:
                self.records[name] = {"boot": self.boot, "since": self.up, "carried": 0.0}
            elif rec.get("boot") != self.boot:  # rebooted: what that boot saw is kept
                rec["carried"] = float(rec.get("carried", 0)) + max(
                    0.0, float(rec.get("last", rec["since"])) - float(rec["since"]))
                rec.update(boot=self.boot, since=self.up)
            self.records[name]["last"] = self.up
        for gone in set(self.records) - set(names):
            del self.records[gone]

    def seconds(self, name: str) -> float:
        rec = self.records.get(name)
        if rec is None:
            return 0.0
        here = self.up - float(rec["since"]) if rec.get("boot") == self.boot else 0.0
        return float(rec.get("carried", 0)) + max(0.0, here)


def judge(names: list[str], watch: Watch, now: datetime, retention: timedelta,
          previous: dict | None) -> Retention:
    """Which of the batches ``names`` to purge (see the module docstring). ``previous``:
    the boot and wall readings of this deployment's previous save, to see a clock that
    moved."""
    watch.observe(names)
    problem = clock_problem(names, now, watch, previous)
    if problem is not None:
        return Retention([], problem[1], problem[0])
    old = [n for n in names if (t := batch_time(n)) is not None and now - t > retention
           and watch.seconds(n) > retention.total_seconds()]
    return Retention(old)


def clock_problem(names: list[str], now: datetime, watch: Watch,
                  previous: dict | None) -> tuple[str, str] | None:
    """(what makes it news, why) this host's wall clock cannot be trusted to purge now."""
    ahead = [(t - now, n) for n in names if (t := batch_time(n)) is not None and t - now > SKEW]
    if ahead:
        gap, name = max(ahead)
        return (f"ahead:{name}", f"the trash batch {name} is named {_days(gap)} after this "
                f"host's clock ({now:%Y-%m-%d %H:%M} UTC): one of the two clocks is wrong")
    if previous and previous.get("boot") == watch.boot:
        try:
            expected = datetime.fromisoformat(previous["wall"]) + timedelta(
                seconds=watch.up - float(previous["up"]))
        except (KeyError, ValueError, TypeError):
            return None  # a damaged reading: the next save has a good one
        if abs(now - expected) > SKEW:
            way = "ahead" if now > expected else "back"
            return (f"moved:{now.isoformat()}", f"this host's clock moved "
                    f"{_days(abs(now - expected))} {way} since the previous save, by its boot "
                    "clock: it was set, or it was wrong then")
    return None


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days"


# -- a save's purge ------------------------------------------------------------------------
def purge_old_trash(primary: Store, status_dir: str, index: Index, retention: timedelta,
                    *, final: bool = False, commit=lambda what, fn: fn()) -> Retention:
    """Look at the trash at the end of a save: purge what both measures call old, record
    what was watched (and, at a deployment's ``final`` save, write it beside the trash for
    the next one). ``commit(what, fn)`` runs a write on the primary (the save's fence)."""
    names = [b.name for b in list_batches(primary, status_dir, sizes=False)]
    now, up, boot = utcnow(), boot_seconds(), boot_id() or "unknown"
    stored = index.get_meta(WATCH_META)
    if stored is None and not names:
        return Retention([])
    records = _load(stored) if stored is not None else \
        read_watch_file(primary, status_dir, up, boot)
    watch = Watch(records if isinstance(records, dict) else {}, boot, up)
    previous = _load(index.get_meta(CLOCK_META) or "null")
    previous = previous if isinstance(previous, dict) else None
    verdict = judge(names, watch, now, retention, previous)
    index.set_meta(CLOCK_META, json.dumps({"boot": boot, "up": up, "wall": now.isoformat()}))
    verdict.say = verdict.key is not None and verdict.key != index.get_meta(WARNED_META)
    index.set_meta(WARNED_META, verdict.key)
    if verdict.say:
        log.warning("no trash was purged: %s. Batches are purged only when this host's "
                    "clock and the time spaceport watched them both say they are older "
                    "than %s (said once)", verdict.problem, _days(retention))
    if verdict.purge:
        verdict.purge = purge(primary, status_dir, older_than=None, names=verdict.purge)
        watch.observe([n for n in names if n not in verdict.purge])
    index.set_meta(WATCH_META, json.dumps(watch.records))
    if final and watch.records:
        data = json.dumps({"format": 1, "type": WATCH_TYPE, "written": now.isoformat(),
                           "seconds": {n: round(watch.seconds(n), 1) for n in watch.records}},
                          indent=1).encode()
        commit(WATCH_FILE, lambda: primary.write_bytes_atomic(join(status_dir, WATCH_FILE),
                                                              data))
    return verdict


def _load(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def read_watch_file(primary: Store, status_dir: str, up: float, boot: str) -> dict:
    """What earlier deployments watched, as records that start now (a new deployment)."""
    try:
        raw = json.loads(primary.read_bytes(join(status_dir, WATCH_FILE)))
        seconds = raw["seconds"] if raw.get("type") == WATCH_TYPE else {}
        return {str(n): {"boot": boot, "since": up, "carried": float(s)}
                for n, s in seconds.items() if float(s) >= 0}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s is damaged (%s); the trash's watched time starts again from now",
                    join(status_dir, WATCH_FILE), exc)
        return {}

