"""The save journal: ``<status>/journal.jsonl``, one JSON line per save that changed something.

Appended, never rewritten: each line says when, by which deployment and host, what was
uploaded, deleted and moved, which trash batch took the deletions, and (when they change, and
at a final save) which deletions the deletion guard held. ``status --primary`` shows its
tail. A line torn by a crash is skipped when read; the lines before it still count.
"""

from __future__ import annotations

import json

from ..store.base import Store, join
from .statusfile import is_status_file_problem, status_file_error

JOURNAL_NAME = "journal.jsonl"


def append_entry(store: Store, status_dir: str, entry: dict) -> None:
    """Append one line; the caller fences it like any commit on the primary. A journal
    that cannot be written for good is StatusFileError (an OSError: a save goes on)."""
    rel = join(status_dir, JOURNAL_NAME)
    try:
        store.append_bytes(rel, (json.dumps(entry) + "\n").encode())
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        raise status_file_error(
            store, rel, "the save journal", exc,
            meaning="this save is not on its record ('status --primary' lists the saves "
                    "from it); the files themselves are saved.",
            todo=f"Move what is at {store.abspath(rel) if hasattr(store, 'abspath') else rel} "
                 "out of the status folder (only spaceport writes there): the next save "
                 "that changes something starts the journal anew.") from exc


def read_tail(store: Store, status_dir: str, count: int = 5) -> list[dict]:
    """The last ``count`` entries, oldest first."""
    rel = join(status_dir, JOURNAL_NAME)
    try:
        lines = store.read_bytes(rel).splitlines()[-count:]
    except FileNotFoundError:
        return []
    except OSError as exc:
        if not is_status_file_problem(exc):
            raise
        raise status_file_error(store, rel, "the save journal", exc,
                                meaning="the saves recorded in it cannot be shown.") from exc
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line from a crash; the rest is still worth showing
    return out
