"""What the two older systems left in existing spaces: their link lists and their locks.

The facts, from the old tools' code and from running it (README, "legacy import"):

westlife-cloudify-scipion (VMs; a puppet module around rsync)
  * working root ``/data/ScipionUserData`` (early versions: ``/scratch``); Scipion also
    reached it as ``~scipion/ScipionUserData``, so targets may start with that alias.
  * ``<status>/linklist``: ``find "$ROOT/" -type l -printf '"%h" "%f" "%l"\\n'``. DIR is the
    root or ``root/sub/dirs`` (GNU find prints no doubled and no trailing slash); names are
    raw bytes. A name or target holding ``" "`` or a line break cannot be read back.
  * ``<status>/lock``: a ``#`` comment line, then ``HOST:``, ``MOUNT:``, ``DIR:``, ``USER:``,
    ``DATE:`` (``date --rfc-3339=seconds``) with no space after the colon. The earliest
    version wrote free text ("This folder was deployed on machine ...").

CERIT-SC scipion-docker (Kubernetes; a sync controller)
  * working root ``/mnt/vol-project``, reached from the desktop as
    ``/home/scipionuser/ScipionUserData/projects``; raw data in ``/mnt/vol-dataset``.
  * ``<space>/symlink-dump``: lines ``TARGET LINKPATH``. The Python controller writes
    LINKPATH absolute under the root and recurses into links to folders, so the dump also
    holds *phantom* entries found through such a link (even inside other volumes). The
    older bash cloner (2022) wrote LINKPATH relative, ``./Runs/x``, and appended to the old
    dump, so its lines repeat.
  * ``<space>/scipion-docker/project.lock``: empty (master) or a unix timestamp without a
    newline (dev; refreshed every 120 s). The controller keeps its files in that folder.
    spaceport keeps a mirror of its own lock there (:mod:`spaceport.formats.cerit`): read
    here as held too, and named as spaceport's.

Nothing here guesses: a line that cannot be read unambiguously is reported by file and line
and not restored; phantoms are skipped and reported once.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..store.base import Store, join, relative_path_problem
from ..wording import count, duration, quote
from .cerit import CERIT_DIR, CERIT_LOCK, CERIT_ROOT, SYMLINK_DUMP_NAME, parse_mirror
from .links import Link, Unrestored, capture

log = logging.getLogger(__name__)

WESTLIFE = "westlife-cloudify-scipion"
CERIT = "CERIT-SC scipion-docker"
CERIT_PYTHON = f"{CERIT} (Python controller)"
CERIT_BASH = f"{CERIT} (bash cloner, 2022)"

LINKLIST_NAME = "linklist"  # in the status folder
WESTLIFE_LOCK_NAME = "lock"  # in the status folder, when it is not a spaceport lock
# The old tools' own files at the top of a space: not project data, never copied into a
# working copy, never saved over nor deleted.
TOP_LEVEL_NAMES = frozenset({SYMLINK_DUMP_NAME, CERIT_DIR})

WESTLIFE_ROOTS = {"/data/ScipionUserData": "the working root of westlife-cloudify-scipion",
                  "/scratch": "the working root of early westlife versions"}
WESTLIFE_ALIASES = ("/home/scipion/ScipionUserData",)
CERIT_ALIASES = ("/home/scipionuser/ScipionUserData/projects",)

# Why a line is not imported.
FRAGMENT = "not a complete line: part of a name or target with a line break"
NEIGHBOUR = ("next to an unreadable line: a name or target with a line break may run "
             "into it")
OUTSIDE = "outside the old working root {root}"
CONFLICT = "the same link is listed again with another target (lines {lines})"
UNDER_UNREADABLE = ("it lies under {path}, whose own line could not be read: it may have "
                    "been found through a link to a folder")


@dataclass
class LegacyImport:
    """What importing one old list gives: links, skipped phantoms, lines left out."""

    system: str
    file: str  # relative to the primary
    lines: int = 0
    root: str | None = None
    root_reason: str = ""
    aliases: tuple[str, ...] = ()
    links: list[Link] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)  # link paths found through a link
    through: list[str] = field(default_factory=list)  # the folder links they came through
    repeated: int = 0  # lines repeating another one exactly (the bash cloner appended)
    unrestored: list[Unrestored] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # other, older lists in the space

    def summary(self) -> dict:
        """The record kept in the manifest header (``imported_from``)."""
        return {"system": self.system, "file": self.file, "root": self.root,
                "links": len(self.links), "phantoms_skipped": len(self.phantoms),
                "lines_not_imported": len(self.unrestored),
                "imported": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def as_dict(self) -> dict:
        return {"system": self.system, "file": self.file, "lines": self.lines,
                "root": self.root, "root_reason": self.root_reason,
                "aliases": list(self.aliases), "links": len(self.links),
                "phantoms_skipped": len(self.phantoms), "phantoms_through": self.through,
                "repeated_lines": self.repeated, "ignored_lists": self.ignored,
                "not_imported": [str(u) for u in self.unrestored]}

    def describe(self, with_lines: bool = True) -> list[str]:
        """What the import does, as lines a person reads (``with_lines``: and each line
        that cannot be imported)."""
        root = f"{self.root} ({self.root_reason})" if self.root else "unknown"
        out = [f"{count(len(self.links), 'link')} from {self.file} ({self.system}, "
               f"{count(self.lines, 'line')}); old working root {root}"]
        if self.root:
            out.append("absolute targets under " + " or ".join((self.root,) + self.aliases)
                       + " are re-created under the working copy")
        if self.phantoms:
            out.append(f"{count(len(self.phantoms), 'entry')} found through "
                       f"links to folders ({', '.join(self.through)}) skipped: they are "
                       "not links of the project")
        if self.repeated:
            out.append(f"{count(self.repeated, 'line')} "
                       f"{'repeats' if self.repeated == 1 else 'repeat'} another one exactly "
                       "and count once")
        for other in self.ignored:
            out.append(f"{other} is older and is not read")
        if self.unrestored:
            out.append(f"{count(len(self.unrestored), 'line')} cannot be imported and "
                       f"{'is' if len(self.unrestored) == 1 else 'are'} not restored"
                       + (":" if with_lines else ""))
            if with_lines:
                out += [f"  {u}" for u in self.unrestored]
        return out


class RootUnknown(Exception):
    """Where the old working root is in a list's paths cannot be told."""

    @classmethod
    def under(cls, file: str, sample: str) -> "RootUnknown":
        return cls(f"cannot tell the old working root from {file} (its links lie under "
                   f"{sample}, which is none of the known roots, and the primary's folders "
                   "do not show where the project starts)")


# -- reading lists --------------------------------------------------------------------

@dataclass
class _Line:
    number: int
    text: str
    path: str | None = None  # relative to the root; None if the line is not a record
    target: str = ""
    reason: str | None = None  # why it is not imported
    fragment: bool = False  # not a complete line: taints its neighbours
    candidates: tuple[str, ...] = ()  # possible link paths of an ambiguous line


def _split_lines(raw: bytes) -> list[tuple[int, str]]:
    """Lines split on newline only (names may hold any other byte); the file's last
    newline ends the last line, any other empty line is a fragment."""
    parts = raw.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    return [(n, p.decode("utf-8", "surrogateescape")) for n, p in enumerate(parts, 1)]


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` ("" for the root itself), or None if outside."""
    if path == root:
        return ""
    if root == "/":
        return path[1:] if path.startswith("/") else None
    return path[len(root) + 1:] if path.startswith(root + "/") else None


def _is_dir(store: Store, rel: str) -> bool:
    try:
        return stat.S_ISDIR(store.lstat(rel).st_mode)
    except OSError:
        return False


def infer_root(folders: list[str], is_dir) -> str | None:
    """The old root, from absolute folders that held links: the shortest prefix (at least
    one component) below which the folders exist on the primary. At most 8 folders are
    checked per candidate (each check is a round trip on OneData); None without evidence."""
    split = [f.strip("/").split("/") for f in folders if f.startswith("/")]
    if not split:
        return None
    common = split[0]
    for parts in split[1:]:
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    sample = sorted({"/".join(p) for p in split}, key=lambda f: -f.count("/"))[:8]
    for k in range(1, len(common) + 1):
        root = "/" + "/".join(common[:k])
        rests = [_under("/" + f, root) for f in sample]
        rests = [r for r in rests if r]
        if rests and all(is_dir(r) for r in rests):
            return root
    return None


def _occurrences(text: str, sub: str) -> int:
    """How often ``sub`` occurs in ``text``, overlapping ones included."""
    return sum(1 for _ in re.finditer(f"(?={re.escape(sub)})", text))


def _westlife_lines(lines: list[tuple[int, str]]) -> list[_Line]:
    out = []
    for number, text in lines:
        line = _Line(number, text)
        out.append(line)
        if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
            line.fragment, line.reason = True, FRAGMENT
            continue
        inner = text[1:-1]
        parts = inner.split('" "')
        # Exactly two '" "' (counted overlapping) are the two separators; any more, and a
        # field holds one or ends in '"'/' ' next to a separator: no reading is certain.
        if _occurrences(inner, '" "') > 2 and text.startswith('"/'):
            line.reason = ("a name or target holds '\" \"' or ends next to one: where its "
                           "fields end cannot be told")
        elif len(parts) != 3 or not parts[0].startswith("/"):
            line.fragment, line.reason = True, FRAGMENT
        else:
            line.path, line.target = join(parts[0], parts[1]), parts[2]
            line.candidates = (parts[0],)  # the folder, absolute until the root is known
            if not parts[1] or "/" in parts[1] or parts[1] in (".", ".."):
                line.path, line.reason = None, f"'{parts[1]}' is not a file name"
            elif not parts[2]:
                line.path, line.reason = None, "the target is empty"
    return out


def _anchor_paths(parsed: list[_Line], root: str) -> None:
    """Make absolute link paths relative to ``root``; lines outside it are not imported."""
    for line in parsed:
        if line.path is None:
            continue
        rel = _under(line.path, root)
        problem = relative_path_problem(rel) if rel else "the path is the root itself"
        if rel is None:
            line.path, line.reason = None, OUTSIDE.format(root=root)
        elif problem:
            line.path, line.reason = None, f"not a path inside the working root ({problem})"
        else:
            line.path = rel


def parse_linklist(raw: bytes, file: str, root: str | None = None,
                   is_dir=lambda rel: False) -> LegacyImport:
    """A westlife ``linklist``. ``root`` overrides the detection; ``is_dir(rel)`` says if
    the primary holds that folder (to infer a root none of the known ones)."""
    found = LegacyImport(WESTLIFE, file, aliases=WESTLIFE_ALIASES)
    lines = _split_lines(raw)
    parsed = _westlife_lines(lines)
    found.lines = len(lines)
    folders = [line.candidates[0] for line in parsed if line.path is not None]
    if root:
        found.root, found.root_reason = root.rstrip("/") or "/", "given with --legacy-root"
    elif folders:
        counts = {r: sum(1 for f in folders if _under(f, r) is not None) for r in WESTLIFE_ROOTS}
        best = max(counts, key=counts.get)
        if counts[best]:
            found.root, found.root_reason = best, WESTLIFE_ROOTS[best]
        else:
            found.root = infer_root(folders, is_dir)
            found.root_reason = "found from the list: the primary holds its folders below it"
            if found.root is None:
                raise RootUnknown.under(file, folders[0])
    if found.root:
        _anchor_paths(parsed, found.root)
    _assemble(found, parsed)
    return found


def _dump_root(lines: list[tuple[int, str]], root: str | None, is_dir, file: str):
    """(root, why, relative form?) of a symlink dump."""
    given = (root.rstrip("/") or "/") if root else None
    absolute = sum(1 for _, t in lines if f" {(given or CERIT_ROOT).rstrip('/')}/" in t)
    relative = sum(1 for _, t in lines if " ./" in t)
    if (absolute or relative) and absolute == relative:
        # All lines of one dump have one form; a tie cannot be read without a guess.
        raise RootUnknown(f"cannot tell whether {file} holds absolute or './' link paths "
                          f"({count(absolute, 'line')} look like each)")
    if given:
        return given, "given with --legacy-root", relative > absolute
    if absolute or relative:
        return CERIT_ROOT, "the working root of scipion-docker", relative > absolute
    # Neither form: a root none of the known ones. Lines with a single " /" show their
    # link path; the primary's folders show where the project starts in it.
    folders = []
    for _, text in lines:
        if text.count(" /") == 1:
            folders.append(text[text.index(" /") + 1:].rpartition("/")[0] or "/")
    inferred = infer_root(folders, is_dir)
    if inferred is None:
        raise RootUnknown.under(file, folders[0] if folders else "no recognisable path")
    return inferred, "found from the list: the primary holds its folders below it", False


def _dump_lines(lines: list[tuple[int, str]], root: str, relative: bool) -> list[_Line]:
    sep = " ./" if relative else " " + root.rstrip("/") + "/"
    out = []
    for number, text in lines:
        line = _Line(number, text)
        out.append(line)
        cuts = [m.start() for m in re.finditer(f"(?={re.escape(sep)})", text)]
        if len(cuts) > 1:
            line.reason = (f"'{sep.strip()}' occurs {len(cuts)} times: where the target "
                           "ends cannot be told")
            line.candidates = tuple(text[c + len(sep):] for c in cuts)
        elif not cuts or cuts[0] == 0:
            line.fragment, line.reason = True, FRAGMENT
        else:
            line.path, line.target = text[cuts[0] + len(sep):], text[:cuts[0]]
            problem = relative_path_problem(line.path)
            if problem:
                line.path, line.reason = None, f"not a path inside the working root ({problem})"
    return out


def parse_symlink_dump(raw: bytes, file: str, root: str | None = None,
                       is_dir=lambda rel: False) -> LegacyImport:
    """A CERIT ``symlink-dump``, from the Python controller or the bash cloner."""
    lines = _split_lines(raw)
    root, why, relative = _dump_root(lines, root, is_dir, file)
    found = LegacyImport(CERIT_BASH if relative else CERIT_PYTHON, file, lines=len(lines),
                         root=root, root_reason=why, aliases=CERIT_ALIASES)
    _assemble(found, _dump_lines(lines, root, relative))
    return found


def _assemble(found: LegacyImport, parsed: list[_Line]) -> None:
    """Links from parsed lines: taint the neighbours of fragments, drop exact repeats,
    refuse conflicting ones, skip phantoms, refuse what lies under an unreadable line."""
    by_number = {line.number: line for line in parsed}
    for line in parsed:
        if line.fragment:
            for near in (by_number.get(line.number - 1), by_number.get(line.number + 1)):
                if near is not None and near.path is not None:
                    near.candidates, near.path, near.reason = (near.path,), None, NEIGHBOUR
    uncertain = set()
    records: dict[str, list[_Line]] = {}
    for line in parsed:
        if line.path is None:
            uncertain.update(c for c in line.candidates if not c.startswith("/"))
        else:
            records.setdefault(line.path, []).append(line)
    for path, group in records.items():
        if len({line.target for line in group}) > 1:
            numbers = ", ".join(str(line.number) for line in group)
            for line in group:
                line.path, line.reason = None, CONFLICT.format(lines=numbers)
            uncertain.add(path)
        else:
            found.repeated += len(group) - 1
    paths = {path for path, group in records.items() if group[0].path is not None}
    through = set()
    roots = [found.root, *found.aliases] if found.root else []
    for path in sorted(paths):
        line = records[path][0]
        ancestors = [path[:i] for i, ch in enumerate(path) if ch == "/"]
        via = next((a for a in ancestors if a in paths), None)
        if via is not None:
            found.phantoms.append(path)
            through.add(via)
            continue
        shadow = next((a for a in ancestors if a in uncertain), None)
        if shadow is not None:
            for repeat in records[path]:
                repeat.reason = UNDER_UNREADABLE.format(path=shadow)
            continue
        link = capture(path, line.target, roots)
        found.links.append(Link(link.path, link.target, link.anchored,
                                origin=(found.file, line.number, line.text)))
    found.through = sorted(through)
    found.unrestored = [Unrestored(found.file, line.number, line.text, line.reason)
                        for line in parsed if line.reason]


def legacy_lists(store: Store, status_dir: str) -> list[tuple[str, float]]:
    """The old link lists in a space, newest first: (path relative to the primary, mtime)."""
    found = []
    for rel in (join(status_dir, LINKLIST_NAME), SYMLINK_DUMP_NAME):
        try:
            st = store.lstat(rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((rel, st.st_mtime))
    return sorted(found, key=lambda item: -item[1])


def read_legacy_links(store: Store, status_dir: str,
                      root: str | None = None) -> LegacyImport | None:
    """The import of the newest old list in the space (the system that used it last), or
    None if there is none. RootUnknown if its old working root cannot be told."""
    lists = legacy_lists(store, status_dir)
    if not lists:
        return None
    rel = lists[0][0]
    parse = parse_symlink_dump if rel == SYMLINK_DUMP_NAME else parse_linklist
    found = parse(store.read_bytes(rel), rel, root, lambda d: _is_dir(store, d))
    found.ignored = [other for other, _ in lists[1:]]
    return found


def read_symlink_dump(store: Store, raw: bytes, root: str | None = None) -> LegacyImport:
    """The import of CERIT's ``symlink-dump`` (its bytes ``raw``, read from ``store``)."""
    return parse_symlink_dump(raw, SYMLINK_DUMP_NAME, root, lambda d: _is_dir(store, d))


def last_system(store: Store, status_dir: str,
                mine: Callable[[str, float], bool] = lambda rel, mtime: False,
                ) -> tuple[str, str, float] | None:
    """(old system, the file that shows it, its mtime) of the old tool that last wrote the
    space, judged by the mtimes of their files on the primary (one clock: the storage's).
    ``mine(rel, mtime)`` says a file is spaceport's own writing (it keeps CERIT's lock and
    dump for that app) or older than spaceport's last save: not a sign of the old tool."""
    evidence = []
    for rel, system in ((join(status_dir, LINKLIST_NAME), WESTLIFE),
                        (SYMLINK_DUMP_NAME, CERIT), (CERIT_DIR, CERIT)):
        try:
            mtime = store.lstat(rel).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not mine(rel, mtime):
            evidence.append((mtime, rel, system))
    if not evidence:
        return None
    mtime, rel, system = max(evidence)
    return system, rel, mtime


# -- locks ----------------------------------------------------------------------------

@dataclass
class LegacyLock:
    """A lock left by one of the old tools. It counts as held: a deploy is refused."""

    system: str
    file: str  # relative to the primary
    form: str  # westlife, westlife-early, cerit-empty, cerit-timestamp, cerit-other
    raw: str
    host: str | None = None
    mount: str | None = None
    directory: str | None = None
    user: str | None = None
    date: str | None = None  # as the lock says it (westlife) or in UTC (CERIT timestamp)
    timestamp: int | None = None
    mirror_of: str | None = None  # spaceport's mirror of its lock: that deployment's id

    def describe(self) -> str:
        if self.form == "westlife":
            parts = [f"host {self.host or 'unknown'}", f"user {self.user or 'unknown'}",
                     f"working folder {self.directory or 'unknown'}",
                     f"OneData mount {self.mount or 'unknown'}", f"since {self.date or 'unknown'}"]
            return f"a lock of {self.system} ({self.file}): " + ", ".join(parts)
        if self.form == "westlife-early":
            first = self.raw.strip().splitlines()[0] if self.raw.strip() else ""
            return (f"an early lock of {self.system} ({self.file}), host "
                    f"{self.host or 'unknown'}: {quote(first)}")
        if self.form == "cerit-timestamp":
            return (f"a lock of a {self.system} instance ({self.file}), last refreshed "
                    f"{self.date} (unix {self.timestamp}; {self._age()}; the instance "
                    "refreshes it every 120 s while it runs)")
        if self.form == "spaceport-mirror":
            return (f"CERIT's lock ({self.file}) as spaceport keeps it for deployment "
                    f"{(self.mirror_of or '')[:8]} (host {self.host}, instance {self.directory}, "
                    f"since {self.date}), whose own lock is not there: it was unlocked by "
                    "force, or died between its two locks")
        if self.form == "cerit-empty":
            return (f"a lock of a {self.system} instance ({self.file}; empty: that version "
                    "writes neither host nor time, and removes the file when it ends)")
        return f"a lock of a {self.system} instance ({self.file}): {quote(self.raw[:80])}"

    def _age(self) -> str:

        delta = datetime.now(timezone.utc).timestamp() - (self.timestamp or 0)
        when = "ago" if delta >= 0 else "ahead"
        return f"{duration(abs(delta))} {when} by this host's clock"

    def facts(self) -> dict:
        return {"kind": "legacy", "system": self.system, "file": self.file,
                "form": self.form, "host": self.host, "mount": self.mount,
                "dir": self.directory, "user": self.user, "date": self.date,
                "timestamp": self.timestamp, "description": self.describe()}


_WESTLIFE_KEYS = ("HOST", "MOUNT", "DIR", "USER", "DATE")


def parse_westlife_lock(file: str, text: str) -> LegacyLock | None:
    """The westlife lock in either form, or None if ``text`` is neither."""
    fields = {}
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key in _WESTLIFE_KEYS and key not in fields:
            fields[key] = value
    if fields:
        return LegacyLock(WESTLIFE, file, "westlife", text, host=fields.get("HOST"),
                          mount=fields.get("MOUNT"), directory=fields.get("DIR"),
                          user=fields.get("USER"), date=fields.get("DATE"))
    early = re.search(r"deployed on machine\s+(\S+)", text)
    if early:
        return LegacyLock(WESTLIFE, file, "westlife-early", text,
                          host=early.group(1).rstrip(".,;:"))
    return None


def parse_cerit_lock(file: str, raw: bytes) -> LegacyLock:
    """CERIT's ``project.lock``: it is held because it exists, whatever it holds."""
    text = raw.decode("utf-8", "replace")
    mirror = parse_mirror(raw)
    if mirror is not None:  # spaceport's own (formats/cerit.py); held all the same
        return LegacyLock(CERIT, file, "spaceport-mirror", text, host=mirror.host,
                          directory=mirror.instance, date=mirror.since,
                          mirror_of=mirror.deployment_id)
    if not raw:
        return LegacyLock(CERIT, file, "cerit-empty", text)
    if raw.strip().isdigit():
        stamp = int(raw.strip())
        try:
            date = datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):
            date = "an impossible time"
        return LegacyLock(CERIT, file, "cerit-timestamp", text, date=date, timestamp=stamp)
    return LegacyLock(CERIT, file, "cerit-other", text)


def read_legacy_lock(store: Store, status_dir: str) -> LegacyLock | None:
    """An old tool's lock on the primary: westlife's ``<status>/lock`` (when it is not a
    spaceport lock) or CERIT's ``scipion-docker/project.lock``; None if there is neither."""
    rel = join(status_dir, WESTLIFE_LOCK_NAME)
    try:
        found = parse_westlife_lock(rel, store.read_bytes(rel).decode("utf-8", "replace"))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        found = None
    if found is not None:
        return found
    try:
        return parse_cerit_lock(CERIT_LOCK, store.read_bytes(CERIT_LOCK))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        return LegacyLock(CERIT, CERIT_LOCK, "cerit-other", "(a folder)")


def set_aside_legacy_lock(store: Store, lock: LegacyLock, stamp: str) -> str:
    """Rename an old tool's lock to ``<name>.broken-<stamp>`` beside it (kept for the
    record; the old tools see no lock any more). Returns the new path."""
    aside = f"{lock.file}.broken-{stamp}"
    store.rename(lock.file, aside)
    return aside
