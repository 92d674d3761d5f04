"""The save journal: ``<status>/journal.jsonl``, one JSON line per save that changed something.

Appended, never rewritten: each line has its own random ``id`` and says when, by which
deployment and host, what was uploaded, deleted and moved, which trash batch took the
deletions, and (when they change, and at a final save) which deletions the deletion guard
held. ``status --primary`` shows its
tail. A line torn by a crash is skipped when read; the lines before it still count.
"""

from __future__ import annotations

import json
import secrets

from ..store.base import Store, join
from .statusfile import named_if_unusable

JOURNAL_NAME = "journal.jsonl"


def append_entry(store: Store, status_dir: str, entry: dict) -> None:
    """Append one line; the caller fences it like any commit on the primary. A journal
    that cannot be written for good is StatusFileError (an OSError: a save goes on).

    The line starts with a random ``id``: a failed append is retried only if the file does
    not already end with the line (spaceport.store.retrying), and two saves within one second
    that did the same wrote the same line, so a retry took the save before for its own and
    the line was lost."""
    rel = join(status_dir, JOURNAL_NAME)
    entry = {"id": secrets.token_hex(8), **entry}
    with named_if_unusable(
            store, rel, "the save journal",
            meaning="this save is not on its record ('status --primary' lists the saves "
                    "from it); the files themselves are saved.",
            todo="Move what is at {where} out of the status folder (only spaceport writes "
                 "there): the next save that changes something starts the journal anew."):
        store.append_bytes(rel, (json.dumps(entry) + "\n").encode())


def read_tail(store: Store, status_dir: str, count: int = 5) -> list[dict]:
    """The last ``count`` entries, oldest first."""
    rel = join(status_dir, JOURNAL_NAME)
    try:
        with named_if_unusable(store, rel, "the save journal",
                               meaning="the saves recorded in it cannot be shown."):
            lines = store.read_bytes(rel).splitlines()[-count:]
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line from a crash; the rest is still worth showing
    return out
