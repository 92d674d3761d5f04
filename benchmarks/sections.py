"""Sections of docs/BENCHMARKS.md that a benchmark of its own writes.

Each benchmark beside the main run (``benchmarks.snapshots``, ``.renames``, ``.appends``)
owns one section between ``<!-- benchmarks.NAME: begin -->`` and ``... end -->``: it
rewrites only that section, and ``python -m benchmarks.run``, which writes the rest of the
file, keeps every such section as it was.
"""

from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "BENCHMARKS.md")
SECTION = re.compile(r"<!-- benchmarks\.(?P<name>[A-Za-z0-9_]+): begin -->.*?"
                     r"<!-- benchmarks\.(?P=name): end -->", re.S)


def markers(name: str) -> tuple[str, str]:
    """The first and last line of benchmark ``name``'s section."""
    return f"<!-- benchmarks.{name}: begin -->", f"<!-- benchmarks.{name}: end -->"


def write_section(name: str, text: str, path: str = DOC) -> str:
    """Put ``text`` (which starts and ends with ``markers(name)``) in place of the section,
    or at the end of the file if it has none yet; returns the file's path."""
    begin, end = markers(name)
    with open(path) as f:
        doc = f.read()
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + text.rstrip("\n") + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(doc)
    return path


def kept_sections(path: str = DOC) -> str:
    """Every benchmark's own section in ``path``, in the order they are in, to append to a
    rewritten file."""
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        return ""
    return "".join("\n" + m.group(0) + "\n" for m in SECTION.finditer(doc))
