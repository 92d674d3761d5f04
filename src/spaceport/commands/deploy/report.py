"""What a deploy did, and the error of a deploy that completed but left links out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import SpaceportError
from ...formats.legacy import LegacyImport
from ...formats.links import Unrestored
from ...wording import count
from ..save import SaveReport
from .discard import Discard


@dataclass
class DeployReport:
    deployment_id: str = ""
    resumed_own: bool = False
    saved_first: bool = False
    files: int = 0
    copied: int = 0
    copied_bytes: int = 0
    already_current: int = 0
    removed_from_work: int = 0
    links: int = 0
    links_source: str = "none"  # manifest, legacy, none
    legacy: LegacyImport | None = None  # what the import of an old tool's list found
    unrestored: list[Unrestored] = field(default_factory=list)  # left out by this deploy
    carried: list[Unrestored] = field(default_factory=list)  # left out at an earlier one
    special: list[str] = field(default_factory=list)
    discarded: Discard | None = None  # what --discard-local set aside, and where
    trashed: int = 0  # versions of this copy the primary had lost, kept in its trash
    kept: list[str] = field(default_factory=list)  # the user's, left where they are
    saved: SaveReport | None = None  # --resume: what was saved first (conflicts kept)

    def incomplete(self) -> SpaceportError | None:
        """The error (exit 1) for a deploy that completed but left links out, or None."""
        return links_left_out(self.unrestored)


class LinksLeftOut(SpaceportError):
    """Everything was deployed except some links, which are named."""


def links_left_out(unrestored: list[Unrestored], *, done: str = "everything else was "
                   "deployed") -> LinksLeftOut | None:
    if not unrestored:
        return None
    shown = "\n".join(f"  {u}" for u in unrestored[:50])
    more = f"\n  ... and {len(unrestored) - 50} more" if len(unrestored) > 50 else ""
    return LinksLeftOut(
        f"{count(len(unrestored), 'link')} {'was' if len(unrestored) == 1 else 'were'} not "
        f"restored; {done}:\n{shown}{more}",
        hint="The lists on the primary are left as they are, and every links.jsonl a save "
             "writes keeps these lines in its header, so 'spaceport status --primary' keeps "
             "showing them. Re-create those links by hand where they are needed.")
