"""``deploy --dry-run``: everything a deploy checks and plans, found without taking the
lock or writing anything."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...engine.filters import compile_excludes
from ...engine.index import IndexDamagedError
from ...errors import RefusedError, SpaceportError
from ...formats.marker import DEPLOYED, DEPLOYING, Marker, read_marker, work_id
from ...safety.lock import (
    WorkCopy,
    describe,
    held_error,
    lock_id,
    read_lock,
    validate_status_dir,
)
from ...store.sides import open_primary
from ...wording import count, human_size
from ..folders import folder_is_empty, separate_folders
from ..options import Options
from ..workcopy import pending_changes, scan_primary
from . import preflight
from .linksource import LinkSource, links_to_restore, with_primary_links
from .local_work import UNSAVED_HINT, other_primary
from .report import links_left_out


@dataclass
class DeployPreview:
    """What ``deploy`` would do, found without changing anything (``deploy --dry-run``)."""

    primary: str
    work: str
    holder: object | None = None
    work_note: str = ""
    refused: SpaceportError | None = None  # the deploy would stop with this
    files: int = 0
    nbytes: int = 0
    links: LinkSource | None = None
    exclude: list[str] = field(default_factory=list)  # the filter the deploy would use

    def facts(self) -> dict:
        """What ``deploy --dry-run --json`` says: the plan, in counts and bytes."""
        source = self.links
        manifest = source is not None and source.source == "manifest"
        return {"dry_run": True, "primary": self.primary, "work": self.work,
                "lock_holder": describe(self.holder) if self.holder else None,
                "working_copy": self.work_note, "files": self.files, "bytes": self.nbytes,
                "links": len(source.links) if source is not None else None,
                "links_source": source.source if source is not None else None,
                "legacy": source.legacy.system if source is not None and source.legacy
                else None,
                "unrestored": [str(u) for u in source.unrestored] if manifest else [],
                "exclude": list(self.exclude)}

    def outcome(self) -> SpaceportError | None:
        """The error the deploy would end with: locked (3), refused (5), links left out (1)."""
        if self.refused is not None:
            return self.refused
        return links_left_out(self.links.unrestored if self.links else [],
                              done="everything else would be deployed")

    def lines(self) -> list[str]:
        out = [f"would deploy  {self.primary} -> {self.work}  (dry run: nothing was changed)",
               "lock          " + (describe(self.holder) if self.holder else "none")]
        out.append(f"working copy  {self.work_note}")
        out.append(f"copy          {count(self.files, 'file')}, {human_size(self.nbytes)}")
        source = self.links
        if source is None:
            out.append("links         not known: the deploy is refused before")
        elif source.source == "manifest":
            out.append(f"links         {count(len(source.links), 'link')} from links.jsonl")
        elif source.source == "primary":
            out.append(f"links         {count(len(source.links), 'link')} found in the "
                       "primary folder (no links.jsonl yet)")
        elif source.legacy is not None:
            out += ["old system    " + source.legacy.system]
            out += [("import        " if i == 0 else "              ") + text
                    for i, text in enumerate(source.legacy.describe())]
        else:
            out.append("links         none (no links.jsonl, no old list)")
        if source is not None and source.source == "manifest":
            out += [f"not restored  {u}" for u in source.unrestored]
            out += [f"left out before  {u}" for u in source.carried]
        return out


def preview_deploy(primary_path: str, work_path: str, opts: Options, *, resume: bool = False,
                   discard_local: bool = False) -> DeployPreview:
    """Everything ``deploy`` checks and plans, with no lock taken and nothing written;
    ``resume`` and ``discard_local`` as the deploy would be given them."""
    validate_status_dir(opts.status_dir)
    primary_path, work_path = separate_folders(primary_path, work_path,
                                               ("primary", "working copy"))
    preview = DeployPreview(primary_path, work_path)
    preflight.refuse_swapped(primary_path, work_path, opts.status_dir)
    try:
        preflight.check_access(primary_path, opts.status_dir, opts.retry)
    except preflight.AccessError as exc:
        preview.refused = exc
    marker = read_marker(work_path) if os.path.isdir(work_path) else None
    with open_primary(primary_path, "00000000", opts) as primary:
        preview.holder = holder = read_lock(primary, opts.status_dir)
        own = bool(marker and lock_id(holder) == marker.deployment_id
                   and holder.names(WorkCopy.here(work_path, work_id(work_path))))
        if holder is not None and not own:
            preview.refused = held_error(primary, opts.status_dir, holder)
        preview.work_note, refusal = _work_outlook(work_path, marker, primary_path, own,
                                                   resume=resume, discard_local=discard_local)
        preview.refused = preview.refused or refusal
        try:
            preview.links = links_to_restore(primary, opts)
        except RefusedError as exc:
            preview.refused = preview.refused or exc
        remembered = marker.exclude if marker is not None else []
        preview.exclude = list(opts.exclude if opts.exclude is not None else remembered)
        scan = scan_primary(primary, opts, exclude=compile_excludes(preview.exclude))
        preview.files, preview.nbytes = scan.files, scan.bytes
        if preview.links is not None:
            preview.links = with_primary_links(preview.links, scan, primary.root)
    return preview


def _work_outlook(work: str, marker: Marker | None, primary: str, own: bool, *,
                  resume: bool, discard_local: bool) -> tuple[str, SpaceportError | None]:
    if not os.path.isdir(work):
        return "does not exist yet: it is created", None
    if marker is None:
        if folder_is_empty(work):
            return "empty", None
        return "not empty and not a working copy", preflight.not_a_working_copy(work, primary)
    if os.path.realpath(marker.primary) != os.path.realpath(primary):
        return (f"the working copy of another primary ({marker.primary})",
                other_primary(work, marker))
    if own and marker.phase == DEPLOYED:
        return "already deployed here: the deploy changes nothing", None
    if marker.phase == DEPLOYING:  # what it copied is told from edits by its content
        return ("a deploy that was interrupted: what it copied is compared with the primary, "
                "the rest is copied (edits made meanwhile are refused without --resume)"), None
    try:
        pending = pending_changes(work, marker).pending
    except IndexDamagedError:
        pending = True
    if pending and not own:
        if resume:  # the answer was given: say what it does
            return ("holds changes never saved: --resume saves them first (a primary file "
                    "changed meanwhile is kept beside it as a conflict copy)"), None
        if discard_local:
            return ("holds changes never saved: --discard-local sets them aside in "
                    ".spaceport/discarded/ (moved, not deleted)"), None
        return "holds changes never saved", RefusedError(
            f"{work} holds changes that were never saved to the primary.",
            hint=UNSAVED_HINT)
    return "a working copy of this primary: only what is missing or changed is copied", None
