"""What a working copy leaves out: ``--exclude`` patterns with rsync's and rclone's rules.

The rules a user of rsync or rclone already knows:

- ``*`` matches within one path component, ``**`` across components, ``?`` one character,
  ``[abc]`` a class;
- a pattern with no ``/`` (``*.tmp``, ``Tmp/``) matches a name at any depth;
- a pattern with a ``/`` inside (``Runs/*/tmp/``) is matched against the end of the path,
  at any depth; a leading ``/`` (``/Tmp/``) anchors it to the top of the working copy;
- a trailing ``/`` matches folders only; an excluded folder leaves out all it holds.

The matching is pathspec's ``gitignore`` patterns (git's own rules, a library made for the job).
git and rsync agree on all of the above but one point: git anchors a pattern with a ``/``
inside, rsync and rclone match it at any depth. :func:`_as_gitwildmatch` turns the rsync
form into git's by putting ``**/`` in front of such a pattern; nothing else is rewritten.

Only exclusion: ``!`` (git's negation) and ``+ `` (an rsync or rclone include) are refused
with a message, so that no pattern silently means something else than its author thought.

What excluded means to a save (spaceport.engine.plan): an excluded path is neither uploaded
nor deleted on the primary (what is there already stays, and so do its links in the
manifest), and the deletion guard weighs only what is not excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pathspec

from ..errors import UsageError
from ..wording import quote


@dataclass(frozen=True)
class Exclude:
    """A compiled list of exclude patterns; ``bool(exclude)`` is False when it is empty."""

    patterns: tuple[str, ...]
    spec: pathspec.PathSpec

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excludes(self, path: str, is_dir: bool = False) -> bool:
        """True if ``path`` (relative to the working copy, ``/`` between components) is
        left out, by itself or by a folder above it."""
        return self.spec.match_file(path + "/" if is_dir else path)


NOTHING_EXCLUDED: Exclude  # set below


def check_pattern(pattern: str) -> str:
    """The pattern, or a UsageError saying why it is not one spaceport takes."""
    text = pattern.strip()
    if not text or text == "/":
        raise UsageError(f"--exclude {quote(pattern)}: an empty pattern excludes nothing; "
                         "give a name or a glob such as 'Tmp/' or 'Runs/*/tmp/'.")
    if text.startswith("!") or text.startswith("+ "):
        raise UsageError(f"--exclude {quote(pattern)}: spaceport's filters only exclude "
                         "(no '!' or '+ ' rules): leave the pattern out to save those paths.")
    return text[2:].strip() if text.startswith("- ") else text


def _as_gitwildmatch(pattern: str) -> str:
    """rsync's reading of ``pattern`` in git's syntax (see the module docstring)."""
    if pattern.startswith("/") or pattern.startswith("**/"):
        return pattern
    if "/" in pattern.rstrip("/"):
        return "**/" + pattern  # rsync: matched against the end of the path, at any depth
    return pattern


def _inside(line: str) -> str:
    """git's pattern for what lies inside a folder that ``line`` (git's form) matches.

    git never looks inside an ignored folder, but pathspec matches each path on its own, and
    reads a pattern ending in a ``*`` component (``Runs/*``) as that component only: without
    this line ``Runs/a`` is excluded and ``Runs/a/b.dat`` is not, and a save that finds a
    row of the index there took it for deleted and moved it to the trash of the primary."""
    base = line.rstrip("/")
    return (base if "/" in base else "**/" + base) + "/**"


@lru_cache(maxsize=16)
def _compile(patterns: tuple[str, ...]) -> Exclude:
    lines = [_as_gitwildmatch(p) for p in patterns]
    spec = pathspec.PathSpec.from_lines("gitignore", lines + [_inside(q) for q in lines])
    return Exclude(patterns, spec)


def compile_excludes(patterns) -> Exclude:
    """An :class:`Exclude` of these patterns (checked, in their order, duplicates dropped)."""
    clean = tuple(dict.fromkeys(check_pattern(p) for p in patterns or ()))
    return _compile(clean)


def read_exclude_file(path: str) -> list[str]:
    """The patterns of an ``--exclude-from`` file, one a line; blank lines and lines that
    start with ``#`` or ``;`` are skipped, as rsync does."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"--exclude-from {quote(path)}: {exc.strerror or exc}.") from None
    return [line for line in lines if line.strip() and not line.lstrip().startswith(("#", ";"))]


NOTHING_EXCLUDED = _compile(())
