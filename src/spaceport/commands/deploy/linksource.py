"""Where a deploy's symbolic links come from: the manifest (links.jsonl), else the newest
old tool's list (imported, see :mod:`spaceport.formats.legacy`), else, on a primary that can hold
links (a plain folder, not OneData), the links found in it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ...engine.scan import Kind
from ...errors import RefusedError
from ...formats.legacy import LegacyImport, RootUnknown, read_legacy_links
from ...formats.links import Link, Unrestored, capture, read_manifest_full
from ...store.base import Store
from ...wording import count, show_path
from ..options import Options

log = logging.getLogger(__name__)


@dataclass
class LinkSource:
    """The links a deploy restores, where they come from, and what is known not restored."""

    links: list[Link] = field(default_factory=list)
    source: str = "none"  # manifest, legacy, none
    legacy: LegacyImport | None = None
    unrestored: list[Unrestored] = field(default_factory=list)  # left out now
    carried: list[Unrestored] = field(default_factory=list)  # recorded by earlier saves
    imported_from: dict | None = None


def links_to_restore(primary: Store, opts: Options) -> LinkSource:
    """The manifest's links; without a manifest, the import of the newest old tool's list.

    RefusedError (exit 5) if an old list's working root cannot be told: importing it
    without would put every link in the wrong place."""
    manifest = read_manifest_full(primary, opts.status_dir)
    if manifest is not None:
        return LinkSource(manifest.links, "manifest", unrestored=manifest.refused,
                          carried=manifest.unrestored, imported_from=manifest.imported_from)
    try:
        legacy = read_legacy_links(primary, opts.status_dir, opts.legacy_root)
    except RootUnknown as exc:
        raise RefusedError(
            f"{exc}.", hint="Nothing was copied. Give the folder the old tool worked in, "
                            "e.g. spaceport deploy --legacy-root /data/ScipionUserData ...; "
                            "'spaceport deploy --dry-run' shows what an import will do.") from None
    if legacy is None:
        return LinkSource()
    return LinkSource(legacy.links, "legacy", legacy, unrestored=list(legacy.unrestored),
                      imported_from=legacy.summary())


def with_primary_links(source: LinkSource, scan, root: str) -> LinkSource:
    """A primary that can hold links (a plain folder, not OneData) brings them along: with
    no manifest and no old list, the links found on it are restored like any other entry,
    and the first save records them in the manifest. They are left alone on the primary."""
    found = [capture(e.path, e.target or "", [root, os.path.realpath(root)])
             for e in scan.entries.values() if e.kind is Kind.LINK]
    if source.source != "none":
        listed = {link.path for link in source.links}
        extra = [link.path for link in found if link.path not in listed]
        if extra:
            log.warning("%s on the primary %s not restored: %s is the record of the "
                        "project's links (%s)", count(len(extra), "symbolic link"),
                        "is" if len(extra) == 1 else "are",
                        "links.jsonl" if source.source == "manifest" else "the old list",
                        ", ".join(show_path(p) for p in sorted(extra)[:5])
                        + (", ..." if len(extra) > 5 else ""))
        return source
    if not found:
        return source
    log.info("no links.jsonl yet: %s found in the primary folder %s restored (the first "
             "save records %s in links.jsonl)", count(len(found), "link"),
             "is" if len(found) == 1 else "are", "it" if len(found) == 1 else "them")
    return LinkSource(sorted(found), "primary")
