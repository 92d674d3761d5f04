"""Reading the link lists that the older shell scripts left in existing spaces.

Two formats exist, both read only when a space has no ``links.jsonl`` yet:

* ``<status>/linklist`` — lines ``"DIR" "NAME" "TARGET"``; DIR is absolute under the old
  working root, which the scripts wrote with a trailing slash, so DIR looks like
  ``/mnt/vol-project//sub/dir`` or ``/mnt/vol-project/``.
* ``<primary>/symlink-dump`` — lines ``TARGET LINKPATH``, LINKPATH absolute under
  ``/mnt/vol-project``.

Neither format can hold a double quote or a newline in a name (the old documentation asked
users to avoid them). Lines that cannot be read unambiguously are reported, never guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .links import Link, capture
from .store.base import Store, join

log = logging.getLogger(__name__)

DEFAULT_LEGACY_ROOT = "/mnt/vol-project"
LINKLIST_NAME = "linklist"
SYMLINK_DUMP_NAME = "symlink-dump"


@dataclass
class LegacyLinks:
    links: list[Link] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # files that were read
    skipped: list[str] = field(default_factory=list)  # lines that could not be read


def relative_under(path: str, root: str) -> str | None:
    """``path`` relative to ``root``, tolerating doubled slashes; None if outside."""
    root = root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    return "/".join(part for part in path[len(root):].split("/") if part)


def parse_linklist(text: str, legacy_root: str, skipped: list[str]) -> list[Link]:
    links = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        parts = line[1:-1].split('" "') if line.startswith('"') and line.endswith('"') else []
        directory = relative_under(parts[0], legacy_root) if len(parts) == 3 else None
        if len(parts) != 3 or directory is None or not parts[1] or "/" in parts[1]:
            skipped.append(f"{LINKLIST_NAME}:{number}: {line!r}")
            continue
        links.append(capture(join(directory, parts[1]), parts[2], [legacy_root]))
    return links


def parse_symlink_dump(text: str, legacy_root: str, skipped: list[str]) -> list[Link]:
    links = []
    marker = " " + legacy_root.rstrip("/") + "/"
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        # The link path is the first " /root/..." on the line: the target precedes it and
        # may contain spaces; an absolute target inside the root starts the line without
        # a leading space, so it is not mistaken for the separator.
        cut = line.find(marker)
        path = relative_under(line[cut + 1:], legacy_root) if cut > 0 else None
        if not path:
            skipped.append(f"{SYMLINK_DUMP_NAME}:{number}: {line!r}")
            continue
        links.append(capture(path, line[:cut], [legacy_root]))
    return links


def read_legacy_links(store: Store, status_dir: str,
                      legacy_root: str = DEFAULT_LEGACY_ROOT) -> LegacyLinks | None:
    """Links from the old formats, or None if the space has neither file."""
    found = LegacyLinks()
    by_path: dict[str, Link] = {}
    for rel, parse in ((join(status_dir, LINKLIST_NAME), parse_linklist),
                       (SYMLINK_DUMP_NAME, parse_symlink_dump)):
        try:
            raw = store.read_bytes(rel)
        except FileNotFoundError:
            continue
        found.sources.append(rel)
        text = raw.decode("utf-8", "surrogateescape")
        for link in parse(text, legacy_root, found.skipped):
            by_path.setdefault(link.path, link)  # linklist wins over symlink-dump
    if not found.sources:
        return None
    found.links = sorted(by_path.values())
    for line in found.skipped:
        log.warning("legacy link list: cannot read line %s; that link is not restored", line)
    return found
