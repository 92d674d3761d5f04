"""Time as spaceport writes it: UTC, to the second, in ISO 8601 or as a compact stamp.

Times in lock files, heartbeats, journals and markers are for people and for ordering
records written on one host; staleness is never judged by comparing them across hosts
(docs/LOCKING.md).
"""

from __future__ import annotations

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
