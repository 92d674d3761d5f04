"""The link manifest: symbolic links kept in a file, because OneData cannot hold them.

``<primary>/<status>/links.jsonl`` is one JSON object per line. The first line is a header
(format version, the work root the links were captured under, how many links follow), so a
truncated manifest is detected instead of silently restoring half the links. Each link is::

    {"path": "run 1/in.mrc", "target": "../data/in.mrc"}
    {"path": "run 1/abs", "target": "data/x", "anchor": "root"}   # was /old/work/data/x
    {"path_b64": "...", "target_b64": "..."}                      # names not valid UTF-8

JSON escapes quotes, newlines, tabs and backslashes; names that are not valid UTF-8 are
stored as base64 of their bytes, so any name a POSIX filesystem allows round-trips byte for
byte. Absolute targets inside the work root are stored relative to it (``anchor: root``) and
re-created under whatever root the next deployment uses.

An entry whose path is absolute or has a ``..`` (or empty, ``.``) component is refused: it is
not restored, it is reported, and it is kept in the header's ``unrestored`` list, which every
later save carries forward (with the lines of the old tools' lists that could not be
imported), so ``status --primary`` keeps showing them. Readers of format 1 ignore header keys
they do not know.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import FormatError, UsageError
from ..store.base import Store, join, relative_path_problem
from ..wording import quote
from .statusfile import named_if_unusable

MANIFEST_NAME = "links.jsonl"
MANIFEST_FORMAT = 1
MANIFEST_TYPE = "spaceport-links"
NOTES_META = "manifest_notes"  # index meta: the header notes the next manifest carries
# Index meta: "ok" while the manifest on the primary is the one this working copy wrote. A
# deploy that found none, or a final check that found it gone or different, clears it, and
# the next save writes it again from the working copy, which has every link.
MANIFEST_STATE = "manifest_state"


@dataclass(frozen=True, order=True)
class Link:
    """One symbolic link: where it is (relative to the root) and what it points to."""

    path: str
    target: str
    anchored: bool = False  # target is relative to the deployment root, not verbatim
    # Where the link was read (file, line number or None, the line's text), to report it.
    origin: tuple | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Unrestored:
    """A link that was listed but not restored: the line, and why."""

    file: str  # relative to the primary
    line: int | None
    text: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {quote(self.text)}: {self.reason}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, **_encode("text", self.text),
                "reason": self.reason}

    @classmethod
    def from_json(cls, obj: dict) -> "Unrestored":
        return cls(str(obj["file"]), obj.get("line"), _decode(obj, "text"), str(obj["reason"]))


def unrestored_from(link: Link, reason: str, manifest: str) -> Unrestored:
    """The record for ``link`` that could not be created (``manifest``: its file if the link
    has no origin of its own)."""
    if link.origin:
        file, line, text = link.origin
        return Unrestored(file, line, text, reason)
    return Unrestored(manifest, None, f"{link.path} -> {link.target}", reason)


def capture(path: str, target: str, roots: list[str]) -> Link:
    """Record a link found at ``path``; anchor absolute targets inside any of ``roots``."""
    if target.startswith("/"):
        for root in roots:
            root = root.rstrip("/")
            if not root:
                continue
            if target == root or target == root + "/":
                return Link(path, "", anchored=True)
            if target.startswith(root + "/"):
                return Link(path, target[len(root) + 1:], anchored=True)
    return Link(path, target)


def parse_rebase(specs: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``OLD=NEW`` prefix rewrites for absolute targets outside the tree."""
    rules = []
    for spec in specs:
        old, sep, new = spec.partition("=")
        if not sep or not old.startswith("/") or not new.startswith("/"):
            raise UsageError(f"--rebase {quote(spec)}: expected OLD=NEW with two absolute paths, "
                             "e.g. --rebase /mnt/old-data=/mnt/data")
        rules.append((old.rstrip("/") or "/", new.rstrip("/") or "/"))
    return rules


def resolve_target(link: Link, root: str, rebase: list[tuple[str, str]] = ()) -> str:
    """The target to create for ``link`` under the deployment root ``root``."""
    if link.anchored:
        return join(root.rstrip("/"), link.target) if link.target else root
    target = link.target
    for old, new in rebase:
        if target == old or target.startswith(old + "/"):
            return new + target[len(old):]
    return target


def _encode(key: str, value: str) -> dict:
    try:
        value.encode("utf-8")
        return {key: value}
    except UnicodeEncodeError:  # surrogate escapes: bytes that are not UTF-8
        return {f"{key}_b64": base64.b64encode(os.fsencode(value)).decode("ascii")}


def _decode(obj: dict, key: str) -> str:
    if key in obj:
        value = obj[key]
        if not isinstance(value, str):
            raise ValueError(f"{key} is not a string")
        return value
    return os.fsdecode(base64.b64decode(obj[f"{key}_b64"], validate=True))


def encode_manifest(links: list[Link], root: str, notes: dict | None = None) -> bytes:
    """The manifest bytes for ``links``, sorted so equal sets give equal files. ``notes``
    (``unrestored``, ``imported_from``) go into the header when they hold anything."""
    links = sorted(links)
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    header = {"format": MANIFEST_FORMAT, "type": MANIFEST_TYPE, "links": len(links),
              **_encode("root", root), "written": written}
    header.update({key: value for key, value in (notes or {}).items() if value})
    lines = [json.dumps(header, ensure_ascii=False)]
    for link in links:
        obj = {**_encode("path", link.path), **_encode("target", link.target)}
        if link.anchored:
            obj["anchor"] = "root"
        lines.append(json.dumps(obj, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass
class Manifest:
    """A manifest as read: the links to restore, the entries refused (paths that would lead
    out of the root), and the notes its header carries."""

    links: list[Link] = field(default_factory=list)
    refused: list[Unrestored] = field(default_factory=list)
    unrestored: list[Unrestored] = field(default_factory=list)  # recorded by earlier saves
    imported_from: dict | None = None
    cerit_dump: str | None = None  # the digest of the symlink-dump written with it (cerit.py)
    root: str | None = None  # the work root the links were captured under


def decode_manifest(raw: bytes, where: str = MANIFEST_NAME) -> list[Link]:
    """The links of manifest bytes (entries that would lead out of the root left out)."""
    return parse_manifest(raw, where).links


def parse_manifest(raw: bytes, where: str = MANIFEST_NAME, file: str = MANIFEST_NAME) -> Manifest:
    """Parse manifest bytes; FormatError with the line number for anything wrong. ``where``
    names the file in messages, ``file`` (relative to the primary) in refused entries."""
    # Split on \n only: JSON escapes it inside strings, and str.splitlines() would also
    # split on U+2028 and friends, which may appear raw in names.
    lines = [line for line in raw.split(b"\n") if line.strip()]
    if not lines:
        raise FormatError(f"{where} is empty (expected at least a header line).",
                          hint="Nothing was restored from it. If a working copy with the links "
                               "still exists, a save from it rewrites the manifest.")
    try:
        header = json.loads(lines[0])
    except ValueError as exc:
        raise FormatError(f"{where}: line 1 is not a manifest header ({exc}).") from exc
    if not isinstance(header, dict) or header.get("type") != MANIFEST_TYPE:
        raise FormatError(f"{where}: line 1 is not a spaceport link manifest header.")
    version = int(header.get("format", 0))
    if version > MANIFEST_FORMAT:
        raise FormatError(f"{where} was written by a newer spaceport (format {version}; this "
                          f"version reads up to {MANIFEST_FORMAT}).", hint="Upgrade spaceport.")
    found = Manifest()
    count = 0
    for number, line in enumerate(lines[1:], start=2):
        try:
            obj = json.loads(line)
            link = Link(_decode(obj, "path"), _decode(obj, "target"),
                        anchored=obj.get("anchor") == "root")
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"{where}: line {number} is damaged ({exc}).",
                              hint="Nothing was restored from it. The working copy still has "
                                   "its links; a save rewrites the manifest.") from exc
        count += 1
        problem = relative_path_problem(link.path)
        if problem:
            found.refused.append(Unrestored(file, number,
                                            line.decode("utf-8", "surrogateescape"),
                                            f"refused: {problem}"))
        else:
            found.links.append(link)
    if count != header.get("links"):
        raise FormatError(f"{where} is truncated: the header announces {header.get('links')} "
                          f"links, {count} are there.",
                          hint="Nothing was restored from it. If a working copy with the links "
                               "still exists, a save from it rewrites the manifest.")
    try:
        found.unrestored = [Unrestored.from_json(o) for o in header.get("unrestored") or ()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"{where}: the header's list of links not restored is damaged "
                          f"({exc}).") from exc
    found.imported_from = header.get("imported_from")
    found.cerit_dump = header.get("cerit_dump")
    try:
        found.root = _decode(header, "root")
    except (ValueError, KeyError, TypeError):
        found.root = None  # only said to a person; the links do not depend on it
    return found


def write_manifest(store: Store, status_dir: str, links: list[Link], root: str,
                   notes: dict | None = None) -> None:
    """Atomically replace the manifest (temporary file, then rename). A manifest that cannot
    be written for good (a folder in its place) stops the save there, named: the links are
    project data (StatusFileError, exit 1)."""
    rel = join(status_dir, MANIFEST_NAME)
    with named_if_unusable(
            store, rel, "the link manifest",
            meaning="the links of this working copy could not be recorded on the primary. "
                    "Everything else of the save is there, and the links are kept in the "
                    "working copy; the lock and the working copy are kept until they are "
                    "recorded (an undeploy does not remove the copy before)."):
        store.write_bytes_atomic(rel, encode_manifest(links, root, notes))


def read_manifest_full(store: Store, status_dir: str) -> Manifest | None:
    """The manifest with its refused entries and header notes; None if there is none."""
    rel = join(status_dir, MANIFEST_NAME)
    try:
        with named_if_unusable(
                store, rel, "the link manifest",
                meaning="the links recorded on the primary cannot be read, so they cannot "
                        "be restored or compared; nothing was changed."):
            raw = store.read_bytes(rel)
    except FileNotFoundError:
        return None
    return parse_manifest(raw, os.path.join(store.root, rel), rel)


def read_manifest(store: Store, status_dir: str) -> list[Link] | None:
    """The manifest's links, or None if there is no manifest."""
    manifest = read_manifest_full(store, status_dir)
    return None if manifest is None else manifest.links


def notes_for_index(unrestored: list[Unrestored], imported_from: dict | None) -> str:
    """What a deploy keeps in the index for the saves to write into the manifest header."""
    seen: dict = {}
    for item in unrestored:
        seen.setdefault((item.file, item.line, item.text, item.reason), item)
    return json.dumps({"unrestored": [u.to_json() for u in seen.values()],
                       "imported_from": imported_from})


def manifest_notes(index) -> dict:
    """The header notes a save writes (kept in the index by the deploy)."""
    try:
        notes = json.loads(index.get_meta(NOTES_META) or "{}")
    except ValueError:
        return {}
    return notes if isinstance(notes, dict) else {}
