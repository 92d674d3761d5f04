"""CERIT-SC's files, as spaceport writes them for CERIT's own Scipion app: its lock, kept as a
mirror of spaceport's while spaceport holds a project, and its link list, ``symlink-dump``,
so the old app can open a project spaceport saved (the way back).

What CERIT's controller does with them (scipion-docker ``controller-image/controller/``,
``controller.py``, ``sync.py``, ``utils.py``, ``constants.py``; docs/CERIT.md lists the
commits):

* ``<space>/scipion-docker/project.lock``. The v1.0 controller refuses a project when the
  file exists, whatever it holds. The newer one reads it with ``int(open(lock).read())``:
  a time more than 600 s old is "dead" and taken over; any content ``int()`` refuses is
  "damaged", which it reads as locked. A command-line deployment has no process that could
  refresh a time every 120 s, so the mirror holds no time at all: a JSON record naming the
  deployment, which no version of the controller can read as free, however long its
  holder is silent. It also lets spaceport know the file as its own (the deployment id).
* ``<space>/symlink-dump``: one ``TARGET LINKPATH`` per line, TARGET as ``readlink`` gives
  it, LINKPATH absolute under ``/mnt/vol-project`` (the controller's root, whatever path the
  working copy has here). The restore does ``line.strip().split(' ')`` and takes fields 0
  and 1, in text mode, so a name or target holding a space, a line break (``\\n`` or
  ``\\r``), bytes that are not UTF-8, or whitespace at the line's ends cannot be expressed:
  such links are left out and named (a line that splits wrongly would make a wrong link).

Reading the old tools' files (an import) is :mod:`spaceport.formats.legacy`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .links import Link

SYMLINK_DUMP_NAME = "symlink-dump"
CERIT_DIR = "scipion-docker"
CERIT_LOCK = f"{CERIT_DIR}/project.lock"
CERIT_ROOT = "/mnt/vol-project"  # the working root of CERIT's controller
MIRROR_KIND = "spaceport-cerit-lock"
# The header note of links.jsonl naming the dump the same save wrote (see dump_digest).
DUMP_NOTE = "cerit_dump"


# -- the lock mirror -------------------------------------------------------------------

@dataclass(frozen=True)
class Mirror:
    """CERIT's lock as spaceport keeps it: whose deployment holds the project."""

    deployment_id: str
    host: str
    instance: str
    since: str

    def to_bytes(self) -> bytes:
        record = {
            "kind": MIRROR_KIND,
            "deployment_id": self.deployment_id, "host": self.host,
            "instance": self.instance, "since": self.since,
            "note": ("CERIT-SC scipion-docker's project lock, kept by spaceport while it holds "
                     "this project (its own lock: .deployment_status_do_not_delete/lock). "
                     "CERIT's app reads this file as 'locked'. spaceport removes it when it "
                     "releases the project; do not remove it by hand (see 'spaceport unlock')."),
        }
        return (json.dumps(record, indent=2) + "\n").encode()

    def describe(self) -> str:
        return (f"spaceport deployment {self.deployment_id[:8]} (host {self.host}, instance "
                f"{self.instance}, since {self.since})")


def parse_mirror(raw: bytes) -> Mirror | None:
    """The mirror record in CERIT's lock file, or None if spaceport did not write it."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != MIRROR_KIND:
        return None
    try:
        return Mirror(str(data["deployment_id"]), str(data.get("host", "")),
                      str(data.get("instance", "")), str(data.get("since", "")))
    except KeyError:
        return None


# -- symlink-dump ----------------------------------------------------------------------

@dataclass(frozen=True)
class Unexpressed:
    """A link CERIT's format cannot hold, and why."""

    path: str
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path!r} -> {self.target!r}: {self.reason}"


def _problem(text: str, what: str, *, head: bool, tail: bool) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"its {what} is not valid UTF-8"
    for char, name in ((" ", "a space"), ("\n", "a line break"), ("\r", "a carriage return")):
        if char in text:
            return f"its {what} holds {name}"
    # str.strip() takes any whitespace off the line's two ends (text mode splits lines
    # only at \n, \r and \r\n, checked above).
    if (head and text[:1].isspace()) or (tail and text[-1:].isspace()):
        return f"its {what} {'starts' if head else 'ends'} with whitespace"
    return None


def dump_line(link: Link, root: str = CERIT_ROOT) -> tuple[str | None, str | None]:
    """(line without its newline, None) for ``link``, or (None, why it cannot be written).
    An anchored target (absolute inside the working copy) is written under ``root``, where
    CERIT's app mounts the working copy."""
    target = (f"{root}/{link.target}" if link.target else root) if link.anchored \
        else link.target
    linkpath = f"{root}/{link.path}"
    why = _problem(target, "target", head=True, tail=False) \
        or _problem(link.path, "name", head=False, tail=True)
    if why is None and not target:
        why = "its target is empty"
    return (None, why) if why else (f"{target} {linkpath}", None)


def render_dump(links: list[Link], root: str = CERIT_ROOT) -> tuple[bytes, list[Unexpressed]]:
    """The bytes of ``symlink-dump`` for ``links`` (sorted: equal sets, equal files), and
    the links it cannot hold."""
    lines, left_out = [], []
    for link in sorted(links):
        line, why = dump_line(link, root)
        if line is None:
            left_out.append(Unexpressed(link.path, link.target, why or ""))
        else:
            lines.append(line + "\n")
    return "".join(lines).encode("utf-8"), left_out


def dump_digest(data: bytes) -> str:
    """What links.jsonl records of the dump written with it: a dump with another digest was
    written by someone else (CERIT's app, after spaceport)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
