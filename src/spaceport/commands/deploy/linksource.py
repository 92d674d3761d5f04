"""Where a deploy's symbolic links come from: the manifest (links.jsonl), else the newest
old tool's list (imported, see :mod:`spaceport.formats.legacy`), else, on a primary that can hold
links (a plain folder, not OneData), the links found in it.

One exception to the manifest first: a ``symlink-dump`` that CERIT's app wrote after
spaceport's last save (the project went back to that app and came again) is newer than the
manifest, and its links are the project's now. spaceport's own dump is never taken for it:
the manifest written with it records its digest (:mod:`spaceport.commands.save.cerit_dump`)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from ...engine.scan import Kind
from ...errors import RefusedError
from ...formats.cerit import SYMLINK_DUMP_NAME, dump_digest, dump_line
from ...formats.legacy import (
    LegacyImport,
    RootUnknown,
    read_legacy_links,
    read_symlink_dump,
)
from ...formats.links import (
    MANIFEST_NAME,
    Link,
    Unrestored,
    capture,
    read_manifest_full,
)
from ...store.base import Store, join
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
        later = _unknown_cerit_dump(primary, opts, manifest)
        if later is not None:
            return _after_cerit(later, manifest)
        return LinkSource(manifest.links, "manifest", unrestored=manifest.refused,
                          carried=manifest.unrestored, imported_from=manifest.imported_from)
    with _root_known():
        legacy = read_legacy_links(primary, opts.status_dir, opts.legacy_root)
    if legacy is None:
        return LinkSource()
    return LinkSource(legacy.links, "legacy", legacy, unrestored=list(legacy.unrestored),
                      imported_from=legacy.summary())


@contextmanager
def _root_known():
    try:
        yield
    except RootUnknown as exc:
        raise RefusedError(
            f"{exc}.", hint="Nothing was copied. Give the folder the old tool worked in, "
                            "e.g. spaceport deploy --legacy-root /data/ScipionUserData ...; "
                            "'spaceport deploy --dry-run' shows what an import will do.") from None


def _unknown_cerit_dump(primary: Store, opts: Options, manifest) -> LegacyImport | None:
    """CERIT's ``symlink-dump``, if another app wrote it after spaceport's last manifest:
    newer than the manifest, and not the dump that manifest records as written with it (a
    dump spaceport wrote is never taken for an old tool's list). Two stats, and a read only
    when the dump is the newer file."""
    try:
        dump_mtime = primary.lstat(SYMLINK_DUMP_NAME).st_mtime
        manifest_mtime = primary.lstat(join(opts.status_dir, MANIFEST_NAME)).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    if dump_mtime <= manifest_mtime:
        return None
    raw = primary.read_bytes(SYMLINK_DUMP_NAME)
    if dump_digest(raw) == manifest.cerit_dump:
        return None
    with _root_known():
        return read_symlink_dump(primary, raw, opts.legacy_root)


def _after_cerit(found: LegacyImport, manifest) -> LinkSource:
    """CERIT's app saved the project after spaceport: its dump is the newer record of the
    links. The manifest's links CERIT's format cannot hold (a space in a name...) could not
    have reached that app, so they cannot have been changed there: they are kept."""
    listed = {link.path for link in found.links}
    kept = [link for link in manifest.links
            if dump_line(link)[0] is None and link.path not in listed]
    log.warning("%s was written after spaceport's last save, by another app (CERIT's): the "
                "links come from it (%s), not from %s%s", SYMLINK_DUMP_NAME,
                count(len(found.links), "link"), MANIFEST_NAME,
                f", with {count(len(kept), 'link')} of the manifest that its format cannot "
                "hold" if kept else "")
    return LinkSource(sorted(found.links + kept), "legacy", found,
                      unrestored=list(found.unrestored), carried=manifest.unrestored,
                      imported_from=found.summary())


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
