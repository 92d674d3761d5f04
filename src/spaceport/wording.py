"""Words for people: counted nouns with the right plural, and paths shown safely.

Messages are read by scientists, not programmers: "1 file", "3 entries", never "file(s)",
"True" or a Python repr.
"""

from __future__ import annotations

import re

_IRREGULAR = {"copy": "copies", "entry": "entries", "batch": "batches", "was": "were",
              "is": "are", "has": "have", "it": "they", "this": "these"}


def plural(word: str) -> str:
    """The plural of an English noun as spaceport uses them (file, folder, entry, batch)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def count(n: int, word: str, many: str | None = None) -> str:
    """``count(1, "file")`` is "1 file", ``count(3, "entry")`` is "3 entries"."""
    return f"{n} {word if n == 1 else (many or plural(word))}"


def duration(seconds: float | None) -> str:
    """A length of time in one unit system everywhere: "0.5 s", "90 s", "5 min",
    "2 h 5 min", "3 d 4 h"."""
    seconds = max(0.0, seconds or 0.0)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def human_size(n: float) -> str:
    """Bytes as a person reads them: 1 B, 12.3 KiB, 4.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# Characters that would break a line of output or hide what a name really is.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff\\\"]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", '"': '\\"'}


def _escape(m: re.Match) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    return f"\\x{code - 0xdc00:02x}" if code >= 0xdc80 else f"\\x{code:02x}"


def show_path(path: str) -> str:
    """A path as one line a person can read: as it is when it is plain, else in double
    quotes with newlines, tabs and bytes that are not UTF-8 written as escapes (\\n, \\t,
    \\xe9). Leading or trailing spaces are quoted so they can be seen."""
    if not _UNSAFE.search(path) and path == path.strip() and path:
        return path
    return '"' + _UNSAFE.sub(_escape, path) + '"'


_CONTROL = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")


def quote(text: str) -> str:
    """``text`` between single quotes, for a line of an old list or a name inside a
    sentence; newlines, tabs and bytes that are not UTF-8 are written as escapes."""
    return "'" + _CONTROL.sub(_escape, text) + "'"
