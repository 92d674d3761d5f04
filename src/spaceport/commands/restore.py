"""``trash restore``: what a trash batch kept, brought back as it was.

A batch holds the files a save deleted, the folders it removed (empty ones included), and,
when that save took links out of the link manifest, the manifest as it was before
(:mod:`spaceport.formats.trash`). Restoring a batch (or the PATHs given, files, folders or
links, and everything under them) brings back all three:

* into a working copy: files are copied (a file there is replaced only with
  ``--overwrite`` and only if proven saved: :func:`~spaceport.safety.invariant.may_write`),
  folders made with their mode, and each link of the kept manifest whose name is free in
  the working copy made again (never through a link: safety rule 11). The next save
  uploads the files and folders and records the links in the manifest.
* into the primary (``--primary``, not deployed): files are moved back, folders made, and
  the links whose name the current manifest does not have are added to it.

Links whose name is taken (by a link, a file or a folder) are skipped and counted: a batch
never changes what is there now. The kept manifest holds every link the project had before
that save, so restoring a whole batch also makes again links removed later by other saves;
name PATHs to bring back only some.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..engine.index import Index
from ..engine.transfer import Copier, CopyJob, run_copies
from ..errors import FormatError, UsageError
from ..formats.links import (
    Link,
    parse_manifest,
    read_manifest_full,
    resolve_target,
    write_manifest,
)
from ..formats.marker import index_path
from ..formats.trash import TRASH_DIR, batch_content, batch_manifest
from ..safety.invariant import GuardedWork, may_write
from ..safety.worklock import hold_work
from ..store import WORK_CAPABILITIES
from ..store.base import Store, UnsafePathError, join, parent_of, temp_name
from ..wording import quote
from .options import Options


@dataclass
class Chosen:
    """What of a batch is to be restored."""

    files: list[tuple[str, int]]  # (path, size)
    folders: list[tuple[str, int]]  # (path, mode), parents first
    links: list[Link]


@dataclass
class Restored:
    """What a restore did."""

    files: int = 0
    folders: int = 0
    links: int = 0
    skipped: int = 0  # there already (use --overwrite for files)
    links_skipped: int = 0  # their name is taken
    refused: list[str] = field(default_factory=list)  # files with unsaved changes in the way
    failed: list[tuple[str, BaseException]] = field(default_factory=list)


def choose(store: Store, status_dir: str, batch: str, paths: tuple[str, ...]) -> Chosen:
    """The files, folders and kept links of ``batch`` under ``paths`` (all if none);
    UsageError if there is no such batch or nothing matches."""
    try:
        content = batch_content(store, status_dir, batch)
    except FileNotFoundError:
        raise UsageError(f"there is no trash batch named {quote(batch)}; 'spaceport trash "
                         "list' shows them.") from None
    wanted = [q.strip("/") for q in paths]

    def under(p: str) -> bool:
        return not wanted or any(p == q or p.startswith(q + "/") for q in wanted)

    raw = batch_manifest(store, status_dir, batch) if content.manifest else None
    try:
        links = parse_manifest(raw, f"{batch}/{status_dir}/links.jsonl").links if raw else []
    except FormatError as exc:
        raise UsageError(f"the link manifest kept in {batch} cannot be read: {exc.message}",
                         hint="Nothing was restored. Name the files or folders to restore "
                              "without its links.") from None
    chosen = Chosen([f for f in content.files if under(f[0])],
                    sorted((d for d in content.folders if under(d[0])),
                           key=lambda d: (d[0].count("/"), d[0])),
                    [link for link in links if under(link.path)])
    if not (chosen.files or chosen.folders or chosen.links):
        raise UsageError("nothing in that batch matches the paths given.")
    return chosen


def restore_into_work(store: Store, work_path: str, token: str, status_dir: str, batch: str,
                      chosen: Chosen, overwrite: bool, opts: Options) -> Restored:
    """Bring ``chosen`` back into the working copy (see the module docstring)."""
    # Writes into the working copy: one command at a time (a save running meanwhile would
    # see half-restored folders, a deploy would remove our temporaries). --overwrite
    # replaces only files proven saved (spaceport.safety.invariant); unsaved ones are named.
    done = Restored()
    with hold_work(work_path, "trash restore", wait=opts.busy_wait, say=opts.say), \
            GuardedWork(work_path, WORK_CAPABILITIES, temp_token=token) as work:
        for path, mode in chosen.folders:
            if not work.exists(path):
                work.makedirs(path)
                work.chmod(path, mode)
                done.folders += 1
        _copy_files(store, work, token, join(status_dir, TRASH_DIR, batch), chosen.files,
                    overwrite, opts, done)
        for link in chosen.links:
            if _taken(work, path := link.path):
                done.links_skipped += 1
                continue
            try:
                work.symlink(resolve_target(link, work.root), path, parents=True)
                done.links += 1
            except (UnsafePathError, FileExistsError, NotADirectoryError) as exc:
                done.failed.append((path, exc))
    return done


def _taken(store: Store, path: str) -> bool:
    """Something (a link too, even a dangling one) is at ``path``, or a file is where a
    folder on its way should be."""
    try:
        store.lstat(path)
        return True
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return True


def _copy_files(store: Store, work: GuardedWork, token: str, src_root: str,
                files: list[tuple[str, int]], overwrite: bool, opts: Options,
                done: Restored) -> None:
    index = Index(index_path(work.root))
    try:
        names, _, done.refused = may_write(work, index, [p for p, _ in files],
                                           overwrite=overwrite)
    finally:
        index.close()
    todo = [(p, s) for p, s in files if p in set(names)]
    done.skipped = len(files) - len(todo) - len(done.refused)
    for path, _ in todo:
        work.makedirs(parent_of(path))
    jobs = [CopyJob(p, s, temp_name(token), src=join(src_root, p)) for p, s in todo]
    opts.tracker.start("restore", files=len(jobs), nbytes=sum(s for _, s in todo))
    copier = Copier(store, work, tracker=opts.tracker, task="restore", retry=opts.retry,
                    stop=threading.Event())

    def landed(d) -> None:
        if d.error is not None:
            done.failed.append((d.job.path, d.error))
        else:
            done.files += 1

    run_copies(copier, jobs, opts.jobs, landed)


def restore_into_primary(store: Store, status_dir: str, batch: str, chosen: Chosen,
                         overwrite: bool) -> Restored:
    """Move ``chosen`` back into a primary nobody has deployed (the caller checked)."""
    done = Restored()
    src_root = join(status_dir, TRASH_DIR, batch)
    for path, mode in chosen.folders:
        if not store.exists(path):
            store.makedirs(path)
            store.chmod(path, mode)
            done.folders += 1
    for path, _ in chosen.files:
        if store.exists(path) and not overwrite:
            done.skipped += 1
            continue
        store.makedirs(parent_of(path))
        store.rename(join(src_root, path), path)
        done.files += 1
    if chosen.links:
        _add_links(store, status_dir, chosen.links, done)
    return done


def _add_links(store: Store, status_dir: str, links: list[Link], done: Restored) -> None:
    """Add the links whose name is free to the primary's manifest (written atomically)."""
    current = read_manifest_full(store, status_dir)
    have = {link.path: link for link in (current.links if current else [])}
    added = []
    for link in links:
        if link.path in have or store.exists(link.path):
            done.links_skipped += 1
        else:
            added.append(link)
    if not added:
        return
    notes = {"unrestored": [u.to_json() for u in current.unrestored],
             "imported_from": current.imported_from} if current else None
    root = (current.root if current else None) or ""
    write_manifest(store, status_dir, list(have.values()) + added, root, notes)
    done.links += len(added)
