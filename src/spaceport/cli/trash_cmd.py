"""``spaceport trash list|restore|purge``: the deleted files a save kept on the primary."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import click
from rich.markup import escape
from rich.table import Table

from ..commands.restore import choose, restore_into_primary, restore_into_work
from ..engine.progress import Tracker
from ..errors import LockedError, UsageError
from ..formats.marker import find_working_copy
from ..formats.trash import batch_content, list_batches, purge, select_batches
from ..safety.lock import read_lock
from ..safety.worklock import require_working_copy
from ..store.sides import open_primary
from ..wording import count, human_size, quote, show_path
from .options import (
    bwlimit_option,
    common_options,
    env_option,
    err,
    jobs_option,
    log_to_work,
    make_options,
    out,
    safety_flag,
    status_dir_option,
    storage_options,
    verbose_option,
    wait_option,
)


def _found(work: str | None, primary: str | None) -> str | None:
    """WORK, or (neither WORK nor --primary given) the working copy the current folder is
    in, or (given) the working copy WORK is inside."""
    if primary:
        return work
    found = find_working_copy(work if work else os.getcwd())
    return found or work


def _where(work: str | None, primary: str | None, status_dir: str):
    """(primary path, status folder, work path or None) from WORK or --primary."""
    if bool(work) == bool(primary):
        raise click.UsageError("give either WORK or --primary PRIMARY (or run it inside a "
                               "working copy).")
    if work:
        marker = require_working_copy(os.path.abspath(work))
        return marker.primary, marker.status_dir, os.path.abspath(work), marker.token
    return primary, status_dir, None, "00000000"


def primary_options(fn):
    """--primary instead of WORK, and the name of its status folder."""
    fn = status_dir_option(help="With --primary: the name of its status folder. (A working "
                                "copy knows its own.)")(fn)
    fn = env_option("--primary", type=click.Path(file_okay=False),
                    help="Use the trash of this primary folder instead of WORK's.")(fn)
    return fn


def work_argument(fn):
    return click.argument("work", required=False, type=click.Path(file_okay=False))(fn)


@click.group()
def trash():
    """Files deleted by saves, kept on the primary in <status>/trash/<save-time>/.

    Each save that deletes files moves them there (a cheap rename) instead of removing them.
    Batches older than the retention period (7 days by default) are purged by later saves:
    older by the saving host's clock and by the time spaceport watched them on the kernel's
    boot clock, so that no wrong clock purges young trash. 'trash purge' purges by the
    clock alone, as a person asks.
    Every subcommand takes a working copy (WORK) or --primary PRIMARY; with neither, the
    working copy the current folder is in.
    """


@trash.command("list")
@work_argument
@primary_options
@env_option("--batch", help="List the files of this batch instead of the batches.")
@storage_options
@verbose_option
@click.pass_context
def trash_list(ctx, work, primary, batch, **_):
    """List the trash batches of WORK's primary (time, files, size), or the files of one
    batch."""
    opts = make_options(ctx.params, tracker=Tracker())
    primary, status_dir, _, token = _where(_found(work, primary), primary, opts.status_dir)
    with open_primary(primary, token, opts) as store:
        if batch:
            try:
                content = batch_content(store, status_dir, batch)
            except FileNotFoundError:
                raise UsageError(f"there is no trash batch named {quote(batch)}; 'spaceport "
                                 "trash list' shows them.") from None
            listed = [(path, human_size(size)) for path, size in content.files] + \
                [(path + "/", "folder") for path, _ in content.folders]
            for path, what in sorted(listed):
                out.print(f"{what:>10}  {show_path(path)}", markup=False)
            if content.manifest:
                out.print(f"{'links':>10}  the link manifest as it was before that save "
                          "(trash restore makes its links again where their name is free)",
                          markup=False)
            return
        batches = list_batches(store, status_dir)
    if not batches:
        out.print("the trash is empty")
        return
    table = Table("batch", "deleted at (UTC)", "files", "size", "folders", "links")
    for b in batches:
        table.add_row(b.name, b.time.strftime("%Y-%m-%d %H:%M:%S") if b.time else "?",
                      str(b.files), human_size(b.bytes), str(b.folders),
                      "manifest kept" if b.manifest else "")
    out.print(table)


@trash.command("restore")
@click.argument("args", nargs=-1, required=True, metavar="[WORK] BATCH [PATH]...")
@primary_options
@env_option("--overwrite", is_flag=True, help="Replace files that exist at the same path.")
@jobs_option
@bwlimit_option
@common_options
@wait_option
@click.pass_context
def trash_restore(ctx, args, primary, overwrite, **_):
    """Bring back what BATCH kept (all of it, or the PATHs given): files, folders (empty
    ones too), and the links of the manifest it kept.

    \b
      spaceport trash restore WORK BATCH [PATH]...
      spaceport trash restore --primary PRIMARY BATCH [PATH]...

    Into WORK, files are copied, folders made, and links made again where their name is
    free; the next save uploads them and records the links. With --primary, files are moved
    back into the primary folder and links added to its manifest; that is refused while the
    primary is deployed (restore into its working copy instead). A batch never replaces a
    link or an unsaved file. --bwlimit holds the files copied into WORK to RATE, as on
    deploy and save (a restore with --primary moves files and copies none).
    """
    work, batch, paths = _restore_arguments(args, primary)
    opts = make_options(ctx.params)
    if work:
        log_to_work(work, "trash restore")
    primary_path, status_dir, work_path, token = _where(work, primary, opts.status_dir)
    try:
        with open_primary(primary_path, token, opts) as store:
            chosen = choose(store, status_dir, batch, paths)
            if work_path:
                done = restore_into_work(store, work_path, token, status_dir, batch, chosen,
                                         overwrite, opts)
            else:
                holder = read_lock(store, status_dir)
                if holder is not None:
                    raise LockedError(f"{primary_path} is deployed ({holder.describe()}).",
                                      hint="Nothing was restored. Restore into its working "
                                           "copy instead: spaceport trash restore WORK "
                                           f"{batch} ...")
                done = restore_into_primary(store, status_dir, batch, chosen, overwrite)
    finally:
        opts.tracker.close()
    _say_restored(batch, done, bool(work_path))


def _say_restored(batch: str, done, into_work: bool) -> None:
    for path in done.refused:
        err.print(f"[yellow]not overwritten[/] {escape(show_path(path))}: it holds changes "
                  "never saved (save it, or move it away, then restore again)")
    for path, exc in done.failed:
        err.print(f"[red]could not restore[/] {escape(show_path(path))}: {escape(str(exc))}")
    parts = [count(done.files, "file")]
    if done.folders:
        parts.append(count(done.folders, "folder"))
    if done.links or done.links_skipped:
        parts.append(count(done.links, "link"))
    said = f"restored {', '.join(parts)} from {batch}"
    if done.skipped:
        said += (f"; {count(done.skipped, 'file')} skipped because "
                 f"{'it exists' if done.skipped == 1 else 'they exist'} (use --overwrite)")
    if done.links_skipped:
        said += f"; {count(done.links_skipped, 'link')} skipped: the name is taken"
    if done.links and into_work:
        said += "; the next save records the links"
    out.print(said, markup=False)
    if done.failed or done.refused:
        sys.exit(1)


def _restore_arguments(args: tuple[str, ...], primary: str | None):
    """(work or None, batch, paths) from ``[WORK] BATCH [PATH]...``: WORK is there unless
    --primary is given."""
    if primary:
        return None, args[0], args[1:]
    if not os.path.isdir(args[0]):  # BATCH first: WORK is the copy the current folder is in
        here = find_working_copy(os.getcwd())
        if here is not None:
            return here, args[0], args[1:]
    if len(args) < 2:
        raise click.UsageError("give WORK and BATCH (or --primary PRIMARY and BATCH); "
                               "'spaceport trash list WORK' shows the batches.")
    return _found(args[0], None), args[1], args[2:]


@trash.command("purge")
@work_argument
@primary_options
@env_option("--older-than", type=click.FloatRange(0), metavar="DAYS",
            help="Purge batches older than DAYS (default: the retention period, 7).")
@env_option("--batch", "batches", multiple=True, help="Purge this batch (repeatable).")
@env_option("--all", "purge_all", is_flag=True, help="Purge every batch.")
@env_option("--dry-run", "-n", is_flag=True,
            help="List the batches the purge would delete (files, size) and delete nothing.")
@safety_flag("--yes", "-y", help="Do not ask for confirmation.")
@storage_options
@verbose_option
@click.pass_context
def trash_purge(ctx, work, primary, older_than, batches, purge_all, dry_run, yes, **_):
    """Delete trash batches of WORK's primary for good: those older than the retention
    period (7 days), or the ones named with --batch, or --all.

    The batches are listed first, and the purge asks before it deletes anything (--yes:
    without asking; without a terminal, --yes is needed). --dry-run lists them and stops."""
    opts = make_options(ctx.params, tracker=Tracker())
    work = _found(work, primary)
    if work:
        log_to_work(work, "trash purge")
    primary_path, status_dir, _, token = _where(work, primary, opts.status_dir)
    with open_primary(primary_path, token, opts) as store:
        names = list(batches) if batches else None
        older = None
        if purge_all:
            names = [b.name for b in list_batches(store, status_dir, sizes=False)]
        elif not batches:
            older = timedelta(days=older_than if older_than is not None
                              else opts.trash_retention_days)
        chosen = select_batches(store, status_dir, older_than=older, names=names, sizes=True)
        if not chosen:
            out.print("nothing to purge: no trash batch matches", markup=False)
            return
        _show_batches(chosen, "would purge" if dry_run else "to purge")
        if dry_run:
            out.print("dry run: nothing was deleted", markup=False)
            return
        _confirm_purge(chosen, yes)
        removed = purge(store, status_dir, older_than=None, names=[b.name for b in chosen])
    out.print(f"purged {count(len(removed), 'batch')}"
              + (": " + ", ".join(removed) if removed else ""), markup=False)


def _show_batches(chosen, what: str) -> None:
    files, size = sum(b.files for b in chosen), sum(b.bytes for b in chosen)
    out.print(f"{what}: {count(len(chosen), 'batch')}, {count(files, 'file')}, "
              f"{human_size(size)}", markup=False)
    for b in chosen:
        out.print(f"  {b.name}  {count(b.files, 'file')}, {human_size(b.bytes)}", markup=False)


def _confirm_purge(chosen, yes: bool) -> None:
    """Deleting from the trash is for good: asked every time, unless --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("a purge deletes these files for good and needs a confirmation: "
                         "add --yes to purge without being asked (--dry-run lists them).",
                         hint="Nothing was deleted.")
    click.confirm(f"Delete {count(len(chosen), 'batch')} for good?", abort=True, err=True)
