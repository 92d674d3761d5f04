"""Time as spaceport writes it: UTC, to the second, in ISO 8601 or as a compact stamp.

Times in lock files, heartbeats, journals and markers are for people and for ordering
records written on one host; staleness is never judged by comparing them across hosts
(docs/LOCKING.md).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def stamp() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%SZ")


def parse_iso(text: str) -> datetime:
    # Python 3.10's fromisoformat does not accept a trailing "Z".
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def boot_seconds() -> float:
    """Seconds since this machine booted, suspend included: a clock nobody can set.

    Read from the kernel's ``/proc/uptime`` rather than through the C library: a wrong or
    reset wall clock never moves it, and neither can a library that fakes time in one
    process (libfaketime fakes CLOCK_MONOTONIC and CLOCK_BOOTTIME too, which no wrong
    system clock ever does). ``CLOCK_BOOTTIME`` where there is no ``/proc``."""
    try:
        with open("/proc/uptime", "rb") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))
