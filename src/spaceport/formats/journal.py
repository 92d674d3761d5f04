"""The save journal: ``<status>/journal.jsonl``, one JSON line per save that changed something.

Appended, never rewritten: each line says when, by which deployment and host, what was
uploaded, deleted and moved, which trash batch took the deletions, and (when they change, and
at a final save) which deletions the deletion guard held. ``status --primary`` shows its
tail. A line torn by a crash is skipped when read; the lines before it still count.
"""

from __future__ import annotations

import json

from ..store.base import Store, join

JOURNAL_NAME = "journal.jsonl"


def append_entry(store: Store, status_dir: str, entry: dict) -> None:
    """Append one line; the caller fences it like any commit on the primary."""
    store.append_bytes(join(status_dir, JOURNAL_NAME), (json.dumps(entry) + "\n").encode())


def read_tail(store: Store, status_dir: str, count: int = 5) -> list[dict]:
    """The last ``count`` entries, oldest first."""
    try:
        lines = store.read_bytes(join(status_dir, JOURNAL_NAME)).splitlines()[-count:]
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line from a crash; the rest is still worth showing
    return out
