"""``spaceport deploy``, ``save`` and ``undeploy``: a working copy's life, by hand."""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.markup import escape

from ..engine.plan import save_listing
from ..engine.scan import Kind
from ..errors import RefusedError, UsageError
from ..formats.marker import read_marker
from ..safety.deletion_guard import held_warning
from ..stopping import stop_on_signals
from ..wording import count, human_size, show_path
from . import options
from .options import (
    bwlimit_option,
    cerit_option,
    common_options,
    env_option,
    err,
    exclude_options,
    jobs_option,
    json_option,
    json_result,
    log_to_work,
    make_options,
    out,
    resolve_space,
    resolve_work,
    safety_flag,
    space_folder_option,
    stale_after_option,
    start_json,
    status_dir_option,
    wait_option,
    warn,
    work_argument,
)


@click.command()
@click.argument("primary", envvar="SPACEPORT_PRIMARY", type=click.Path(file_okay=False))
@work_argument
@jobs_option
@common_options
@bwlimit_option
@exclude_options
@json_option
@wait_option
@status_dir_option()
@env_option("--resume", is_flag=True,
            help="The working copy holds changes never saved: save them to the primary first "
                 "(a primary file changed meanwhile is kept beside it as a conflict copy), "
                 "then deploy.")
@safety_flag("--discard-local",
             help="Only for a working copy of PRIMARY that holds changes never saved: set "
                  "them aside in WORK/.spaceport/discarded/<time>/ (moved, not deleted) and "
                  "deploy what the primary holds. Asks for confirmation unless --yes.")
@safety_flag("--yes", "-y", help="Do not ask before --discard-local sets files aside.")
@safety_flag("--allow-mass-delete",
             help="With --resume: let the save of the unsaved work carry out the deletions "
                  "the deletion guard holds (the working copy lost them on purpose).")
@safety_flag("--take-over-stale",
             help="If a daemon holds the lock, watch its heartbeat for the lock's stale-after "
                 "time (on this machine's clock) and take the lock over if it never changes, or "
                 "at once if its process is provably gone here. A command-line deployment's "
                 "lock is never taken over.")
@env_option("--rebase", multiple=True, metavar="OLD=NEW",
            help="Rewrite absolute link targets starting with OLD to start with NEW (e.g. a "
                 "data mount that moved). Repeatable.")
@env_option("--legacy-root",
            help="The folder the old tools worked in, for a space without links.jsonl yet "
                 "whose old link list (westlife linklist, CERIT symlink-dump) does not show "
                 "it. Default: found from the list itself.")
@env_option("--dry-run", "-n", is_flag=True,
            help="Show what the deploy would do (lock, files, links, the import of an old "
                 "tool's list) and change nothing; exit with the code the deploy would.")
@env_option("--instance", help="Name of this instance (pod or VM) written into the lock. "
                               "Default: the host name.")
@stale_after_option(help="Written into the lock. A command-line deployment's lock never goes "
                         "stale (no process beats between commands); while a command runs, "
                         "its heartbeat beats every quarter of this.")
@space_folder_option("PRIMARY")
@cerit_option
@click.pass_context
def deploy(ctx, primary, work, resume, discard_local, yes, take_over_stale, dry_run,
           allow_mass_delete, space_folder, as_json, **_):
    """Lock PRIMARY and copy it onto WORK, re-creating its symbolic links.

    PRIMARY is the project folder on primary storage (e.g. a OneData mount). WORK is the
    local working copy; it must be empty, or a working copy of PRIMARY (the deploy then
    resumes and copies only what is missing); left out, the working copy the current folder
    is in. Only one deployment of PRIMARY can exist at a time: if another holds it, this
    exits 3 naming host, instance and last heartbeat. With --exclude, matching paths of
    PRIMARY are not copied (and never saved back).
    """
    from ..commands.deploy import deploy as run_deploy
    from ..commands.deploy import preview_deploy

    if resume and discard_local:
        raise click.UsageError("--resume and --discard-local exclude each other.")
    start_json("deploy", as_json)
    work = work if work is not None else _work_from_here()
    opts = make_options(ctx.params)
    primary = resolve_space(primary, space_folder, "PRIMARY", opts)
    log_to_work(work, "deploy")
    if dry_run:
        preview = preview_deploy(primary, work, opts, resume=resume,
                                 discard_local=discard_local)
        json_result(**preview.facts())
        out.print("\n".join(preview.lines()), markup=False)
        if preview.outcome():
            raise preview.outcome()
        return
    with stop_on_signals(restore=False) as stop:
        try:
            report = run_deploy(primary, work, opts, resume=resume,
                                discard_local=discard_local, take_over_stale=take_over_stale,
                                allow_mass_delete=allow_mass_delete, stop=stop,
                                confirm=None if yes else confirm_discard)
        except RefusedError as exc:  # --resume's save held deletions: say what it saved
            if getattr(exc, "save_report", None) is not None:
                json_result(primary=os.path.abspath(primary), work=os.path.abspath(work),
                            saved_first=True, **save_facts(exc.save_report))
            raise
        finally:
            opts.tracker.close()
            opts.on_watch.close()
    if report.discarded is not None:
        if report.discarded.folder:
            err.print(report.discarded.how_to_get_back(), markup=False)
        elif not report.discarded.needed:
            err.print(f"note: nothing to discard: {work} held no change that was never "
                      "saved.", markup=False)
    how = "resumed" if report.resumed_own else "deployed"
    marker = read_marker_quietly(work)  # the filter the copy uses: remembered or given
    json_result(primary=os.path.abspath(primary), work=os.path.abspath(work),
                exclude=list(marker.exclude) if marker is not None else opts.exclude,
                **deploy_facts(report))
    out.print(f"{how} {primary} -> {work} (deployment {report.deployment_id[:8]}): "
              f"{count(report.files, 'file')} ({report.copied} copied, "
              f"{human_size(report.copied_bytes)}; {report.already_current} already in place), "
              f"{links_phrase(report.links, report.links_source, report.legacy)}"
              + (", unsaved local work saved first" if report.saved_first else ""),
              markup=False)
    if report.legacy:
        for line in report.legacy.describe(with_lines=False):
            out.print(f"  {line}", markup=False)
    for item in report.carried:
        err.print(f"note: not restored at an earlier deploy (kept in links.jsonl): {item}",
                  markup=False)
    _notes(report)
    if report.incomplete():
        raise report.incomplete()


@click.command()
@work_argument
@jobs_option
@common_options
@bwlimit_option
@exclude_options
@json_option
@wait_option
@env_option("--dry-run", "-n", is_flag=True,
            help="Show every path the save would upload, create, move to the trash or "
                 "remove (the first 20 of each kind; all with -v), and the deletions the "
                 "deletion guard would hold; change nothing. Exits 5 if the real save would "
                 "be refused, and says why.")
@safety_flag("--allow-mass-delete",
             help="Carry out the deletions the deletion guard holds (the working copy looked "
                  "wrong to it): you deleted them on purpose.")
@env_option("--mass-delete-threshold", type=click.FloatRange(0, 1), default=0.5,
            show_default=True,
            help="The deletion guard holds a save's deletions (the rest is saved) when more "
                 "than this share of the top-level files and folders the index knows are "
                 "gone, and with them more than this share of its files; or when none of its "
                 "files is left. A cleaned tmp/ or a deleted run never trips it.")
@env_option("--trash-retention-days", type=click.FloatRange(0), default=7.0, show_default=True,
            help="Trash batches older than this are purged by saves: older by this host's "
                 "clock and by the time spaceport watched them on the kernel's boot clock, "
                 "which no wrong clock can shorten.")
@env_option("--no-fsync", is_flag=True,
            help="Do not fsync files on the primary before renaming them into place "
                 "(faster, less safe against a crash of the storage).")
@click.pass_context
def save(ctx, work, dry_run, allow_mass_delete, as_json, **_):
    """Save WORK to its primary: upload new and changed files, move deleted ones to the
    trash, rewrite the link manifest. Only what changed is touched; a save with no change
    makes no per-file call on the primary.

    Refuses (exit 5) if WORK has no work marker (an unmounted volume looks like that).
    If WORK looks wrong (most of its top level gone, or nothing left), the deletions are
    held and everything else is saved: exit 0 with a warning naming them; --allow-mass-delete
    carries them out. Exits 4 if the lock is not held by this working copy. WORK left out:
    the working copy the current folder is in.
    """
    from ..commands.save import save as run_save

    start_json("save", as_json)
    work = resolve_work(work)
    opts = make_options(ctx.params)
    log_to_work(work, "save")
    with stop_on_signals(restore=False) as stop:
        try:
            report = run_save(work, opts, dry_run=dry_run, allow_mass_delete=allow_mass_delete,
                              stop=stop)
        except RefusedError as exc:
            if dry_run:
                json_result(work=os.path.abspath(work), dry_run=True)
                would_be_refused(exc)
            raise
        finally:
            opts.tracker.close()
    if dry_run:
        json_result(work=os.path.abspath(work),
                    **plan_facts(report.planned, report.held, report.held_paths,
                                 None if ctx.params.get("verbose") else 20))
        out.print(f"would save {work} (dry run: nothing was changed)", markup=False)
        limit = None if ctx.params.get("verbose") else 20
        for line in save_listing(report.planned, limit):
            out.print(line, markup=False)
        if report.held:
            held_lines(report.held, report.held_paths, limit)
        if report.refused is not None:
            would_be_refused(report.refused)
        return
    json_result(work=os.path.abspath(work), **save_facts(report))
    out.print(saved_line(work, report), markup=False)
    for path, kept_as in report.conflicts:
        warn(f"conflict: {path} changed on the primary too; the primary's version is "
             f"kept as {kept_as}", markup="")
    if report.deletes_skipped:
        warn("deletions were skipped because some uploads failed"
             + (" or databases wait for the next save" if report.databases_held else ""))
    for path in report.kept_dirs:
        warn(f"folder {path} kept on the primary: it holds files spaceport never saw",
             markup="[yellow]note:[/] ")
    if report.held:
        warn_held(report.held, f"run: spaceport save --allow-mass-delete {work}")


def _work_from_here() -> str:
    """deploy PRIMARY, without WORK: the working copy the current folder is in."""
    work = resolve_work(None)
    if read_marker_quietly(work) is None:
        raise click.UsageError("give WORK: the current folder is not inside a working copy.")
    return work


def deploy_facts(report) -> dict:
    """What --json says of a deploy."""
    return {"deployment_id": report.deployment_id, "resumed": report.resumed_own,
            "files": report.files, "copied": report.copied,
            "copied_bytes": report.copied_bytes, "already_current": report.already_current,
            "links": report.links, "links_source": report.links_source,
            "saved_first": report.saved_first, "trashed": report.trashed,
            "held_deletions": report.saved.held if report.saved is not None else None,
            "kept": list(report.kept), "unrestored": [str(u) for u in report.unrestored]}


def save_facts(report) -> dict:
    """What --json says of a save (or an undeploy's final save): counts and bytes."""
    return {"uploaded": report.uploaded, "uploaded_bytes": report.uploaded_bytes,
            "appended": report.appended, "moved": report.moved,
            "dirs_created": report.dirs_created, "deleted": report.deleted,
            "trash_batch": report.trash_batch, "manifest_written": report.manifest_written,
            "unchanged": report.plan.get("unchanged", 0) if report.plan else 0,
            "conflicts": [{"path": p, "kept_as": k} for p, k in report.conflicts],
            "held_deletions": report.held, "deletes_skipped": report.deletes_skipped,
            "special": list(report.special), "seconds": round(report.seconds, 3)}


def plan_facts(plan, held: dict | None, held_paths: list[str], limit: int | None) -> dict:
    """What --json says of a save's dry run: what it would do, in counts and bytes, with the
    paths of each kind (the first ``limit`` of each, as the listing shows them)."""
    trashed = [k for k in plan.deletes if k.entry.kind is not Kind.DIR] + plan.replaced
    removed = [k.entry.path for k in plan.deletes if k.entry.kind is Kind.DIR]

    def first(items) -> list:
        items = list(items)
        return items if limit is None else items[:limit]

    return {
        "dry_run": True, "pending": plan.pending,
        "to_upload": len(plan.uploads), "to_upload_bytes": plan.upload_bytes,
        "to_append": len(plan.appends), "to_create": len(plan.mkdirs),
        "to_change_mode": len(plan.chmods), "to_move": len(plan.moves),
        "to_trash": len(trashed), "to_trash_files": plan.deleted_files,
        "to_remove_folders": len(removed), "links_to_record": len(plan.changed_links),
        "links_to_forget": len(plan.removed_links), "unchanged": plan.unchanged,
        "held_deletions": held,
        "paths": {
            "upload": first(sorted(e.path for e in plan.uploads)),
            "create": first(sorted(e.path for e in plan.mkdirs)),
            "change_mode": first(sorted(e.path for e in plan.chmods)),
            "move": first({"from": m.old, "to": m.new} for m in plan.moves),
            "trash": first(sorted(k.entry.path for k in trashed)),
            "remove_folders": first(sorted(removed)),
            "record_link": first(sorted(plan.changed_links)),
            "forget_link": first(sorted(k.entry.path for k in plan.removed_links)),
            "held": first(held_paths) if held else [],
        }}


def saved_line(work: str, report) -> str:
    """The one line a save ends with: what it wrote, moved, trashed, and kept."""
    return (f"saved {work}: {count(report.uploaded, 'file')} uploaded "
            f"({human_size(report.uploaded_bytes)}"
            + (f"; {count(report.appended, 'file')} appended to, only the new bytes written"
               if report.appended else "") + ")"
            + (f", {report.moved} moved" if report.moved else "")
            + (f", {count(report.dirs_created, 'folder')} created"
               if report.dirs_created else "")
            + (f", {count(report.deleted, 'file')} moved to the trash"
               if report.deleted else "")
            + (f" (batch {report.trash_batch})" if report.trash_batch and report.deleted
               else "")
            + (", link manifest written" if report.manifest_written else "")
            + (", CERIT's symlink-dump written" if report.cerit_dump_written else "")
            + (f" (the previous one, with {count(report.links_dropped, 'link')} no longer "
               f"there, kept in trash batch {report.trash_batch})"
               if report.links_dropped > 0 else
               f" (the previous one, unreadable, kept in trash batch {report.trash_batch})"
               if report.links_dropped < 0 else "")
            + f", {count(report.plan['unchanged'], 'entry')} unchanged, in "
              f"{report.seconds:.2f} s")


def warn_held(summary: dict, how_to_confirm: str) -> None:
    """A save that held deletions: a yellow warning, exit 0 (everything else was saved, and
    the primary lost nothing; status lists them until they are confirmed or come back)."""
    text = held_warning(summary, how_to_confirm)
    warn(text)
    options._to_work_logs(logging.WARNING, text)  # the terminal has it; the work log too


def held_lines(summary: dict, paths: list[str], limit: int | None) -> None:
    """A dry run's listing of what the deletion guard would hold."""
    out.print(f"{'hold:':<15}{count(summary['count'], 'deletion')} (the deletion guard: "
              f"{summary['reason']}; --allow-mass-delete carries them out)", markup=False)
    shown = paths if limit is None else paths[:limit]
    for path in shown:
        out.print(f"  {show_path(path)}", markup=False)
    if len(paths) > len(shown):
        out.print(f"  ... and {len(paths) - len(shown)} more (-v lists them all)", markup=False)


@click.command()
@work_argument
@jobs_option
@common_options
@bwlimit_option
@exclude_options
@json_option
@wait_option
@env_option("--keep-work", is_flag=True, help="Keep the working copy after the final save.")
@safety_flag("--allow-mass-delete",
             help="Let the final save carry out the deletions the deletion guard holds (the "
                  "working copy looked wrong to it). Without it, an undeploy whose final save "
                  "held deletions saves everything else, then stops (exit 5) keeping the lock "
                  "and the working copy.")
@env_option("--checksum", is_flag=True,
            help="Before the working copy is removed, compare every file's content with the "
                 "primary's (reads both sides). Catches what no change of size or time shows: "
                 "writes through a long-lived mmap.")
@click.pass_context
def undeploy(ctx, work, keep_work, allow_mass_delete, checksum, as_json, **_):
    """Final save of WORK, release the lock, remove the working copy.

    If the final save fails, the lock and the working copy are kept and the command exits
    non-zero with the reason: nothing is given up until the work is safe. The folder WORK
    itself stays (it may be a mount point) with only .spaceport/: the log, what
    --discard-local set aside, and the record of the undeploy (run again, undeploy answers
    "already undeployed"). WORK left out: the working copy the current folder is in.
    What the working copy's --exclude patterns leave out is never saved: it is left in WORK.
    """
    from ..commands.undeploy import undeploy as run_undeploy

    start_json("undeploy", as_json)
    work = resolve_work(work)
    opts = make_options(ctx.params)
    log_to_work(work, "undeploy")
    with stop_on_signals(restore=False) as stop:
        try:
            report = run_undeploy(work, opts, keep_work=keep_work, checksum=checksum,
                                  allow_mass_delete=allow_mass_delete, stop=stop)
        except RefusedError as exc:  # the final save held deletions: what it saved, and them
            if getattr(exc, "save_report", None) is not None:
                json_result(work=os.path.abspath(work), work_removed=False,
                            **save_facts(exc.save_report))
            raise
        finally:
            opts.tracker.close()
    for path in report.resaved:
        warn(f"{path} was not on the primary as saved (changed there, or its content "
             "differed); it was saved again", markup="note: ")
    json_result(work=os.path.abspath(work), work_removed=report.work_removed,
                already_undeployed=report.already is not None, left=list(report.left),
                resaved=list(report.resaved),
                **(save_facts(report.save) if report.save is not None else {}))
    if report.already:  # the working copy was removed then
        out.print(f"{work} is already undeployed (on {report.already}): its work was saved "
                  "and its lock released. Nothing to do.", markup=False)
    elif report.already is not None and not report.work_removed:
        out.print(f"{work} is already undeployed: everything in it is saved and it holds no "
                  "lock. Nothing to do; the working copy is kept.", markup=False)
    elif report.already is not None:
        out.print(f"{work} is already undeployed and everything in it is saved: the working "
                  "copy is removed now.", markup=False)
    else:
        out.print(f"undeployed {work}: the final save uploaded "
                  f"{count(report.save.uploaded, 'file')}, the lock is released, and the "
                  f"working copy is {'removed' if report.work_removed else 'kept'}.",
                  markup=False)
    if report.work_removed:
        out.print(what_stays(work, report), markup=False)


def what_stays(work: str, report) -> str:
    """Why a folder is left where the working copy was, and what is in it."""
    kept = {"log": "the log of what was done (.spaceport/log/)",
            "discarded": "the files --discard-local set aside (.spaceport/discarded/)"}
    held = [kept[name] for name in report.kept]
    if report.left:  # never project data: named one by one in the warnings above
        held.append(f"{count(len(report.left), 'entry')} never saved (named above)")
    if report.mount_point:
        return (f"The folder {work} stays: it is a mount point, and the volume is not "
                "spaceport's to remove" + (f". In it, {' and '.join(held)}." if held else "."))
    if held:
        return (f"The folder {work} stays, holding only {' and '.join(held)}; remove it when "
                "you no longer need that.")
    return f"The folder {work} stays, empty but for .spaceport/; remove it when you like."


def would_be_refused(exc: RefusedError) -> None:
    """A dry run's answer when the real command would be refused: the reason, exit 5."""
    err.print(f"[red]the save would be refused:[/] {escape(exc.message)}")
    if exc.hint:
        err.print(exc.hint, markup=False)
    options.record_error(f"the save would be refused: {exc.message}", exc.hint)
    raise SystemExit(exc.exit_code)


def confirm_discard(discard) -> None:
    """Show what --discard-local sets aside and ask; without a terminal, --yes is needed."""
    for line in discard.describe():
        err.print(line, markup=False)
    if not sys.stdin.isatty():
        raise UsageError("--discard-local needs a confirmation: add --yes to set these files "
                         "aside without being asked.",
                         hint="Nothing was changed.")
    if not click.confirm(f"Move them into {discard.work}/.spaceport/discarded/ and deploy "
                         "what the primary holds?", err=True):
        raise click.Abort()


def read_marker_quietly(work: str):
    try:
        return read_marker(work)
    except Exception:  # noqa: BLE001 - a damaged marker: the deploy says so itself
        return None


def links_phrase(n: int, source: str, legacy=None) -> str:
    """"3 links from links.jsonl", "no links": where the links of a deploy came from."""
    if not n:
        return "no links"
    where = {"manifest": "links.jsonl", "primary": "the primary folder"}.get(source, source)
    if source == "legacy" and legacy is not None:
        where = f"the old list {legacy.file}"
    return f"{count(n, 'link')} from {where}"


def _notes(report) -> None:
    """What the deploy kept that a person should know about (nothing was lost)."""
    for path, kept_as in report.saved.conflicts if report.saved else ():
        warn(f"conflict: {path} changed on the primary too; the primary's version is "
             f"kept as {kept_as}", markup="")
    if report.trashed:
        warn(f"{count(report.trashed, 'file')} of this working copy had been changed or "
             "deleted on the primary meanwhile; this copy's versions are in the trash "
             "('spaceport trash list')", markup="note: ")
    for path in report.kept:
        warn(f"kept: {path} holds changes never saved; it was left as it is (the next "
             "save uploads it)", markup="")
