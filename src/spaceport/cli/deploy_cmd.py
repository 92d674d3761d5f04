"""``spaceport deploy``, ``save`` and ``undeploy``: a working copy's life, by hand."""

from __future__ import annotations

import click

from ..stopping import stop_on_signals
from .options import (common_options, env_option, err, jobs_option, make_options, out,
                      wait_option)


@click.command()
@click.argument("primary", envvar="SPACEPORT_PRIMARY", type=click.Path(file_okay=False))
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
@wait_option
@env_option("--resume", is_flag=True,
            help="The working copy holds changes never saved: save them to the primary first "
                 "(a primary file changed meanwhile goes to the trash), then deploy.")
@env_option("--discard-local", is_flag=True,
            help="The working copy holds changes never saved, or unknown files: delete them "
                 "and deploy afresh.")
@env_option("--allow-mass-delete", is_flag=True,
            help="With --resume: allow the save of the unsaved work to delete more than half "
                 "of the files on the primary (the working copy lost them on purpose).")
@env_option("--take-over-stale", is_flag=True,
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
@env_option("--stale-after", type=click.IntRange(10), default=600, show_default=True,
            help="Seconds without heartbeat after which the lock counts as stale.")
@click.pass_context
def deploy(ctx, primary, work, resume, discard_local, take_over_stale, dry_run,
           allow_mass_delete, **_):
    """Lock PRIMARY and copy it onto WORK, re-creating its symbolic links.

    PRIMARY is the project folder on primary storage (e.g. a OneData mount). WORK is the
    local working copy; it must be empty, or a working copy of PRIMARY (the deploy then
    resumes and copies only what is missing). Only one deployment of PRIMARY can exist at a
    time: if another holds it, this exits 3 naming host, instance and last heartbeat.
    """
    from ..deploy import deploy as run_deploy, preview_deploy

    if resume and discard_local:
        raise click.UsageError("--resume and --discard-local exclude each other.")
    opts = make_options(ctx.params)
    if dry_run:
        preview = preview_deploy(primary, work, opts)
        out.print("\n".join(preview.lines()), markup=False)
        if preview.outcome():
            raise preview.outcome()
        return
    with stop_on_signals(restore=False) as stop:
        try:
            report = run_deploy(primary, work, opts, resume=resume,
                                discard_local=discard_local, take_over_stale=take_over_stale,
                                allow_mass_delete=allow_mass_delete, stop=stop)
        finally:
            opts.tracker.close()
    how = "resumed" if report.resumed_own else "deployed"
    out.print(f"{how} {primary} -> {work} (deployment {report.deployment_id[:8]}): "
              f"{report.files} files ({report.copied} copied, {_mib(report.copied_bytes)}; "
              f"{report.already_current} already in place), {report.links} links "
              f"from {report.links_source}"
              + (", unsaved local work saved first" if report.saved_first else ""))
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
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
@wait_option
@env_option("--dry-run", "-n", is_flag=True, help="Show what would be saved; change nothing.")
@env_option("--allow-mass-delete", is_flag=True,
            help="Allow a save that deletes more than --mass-delete-threshold of the files "
                 "on the primary.")
@env_option("--mass-delete-threshold", type=click.FloatRange(0, 1), default=0.5,
            show_default=True, help="Share of the primary's files a save may delete.")
@env_option("--trash-retention-days", type=click.FloatRange(0), default=7.0, show_default=True,
            help="Trash batches older than this are purged by saves.")
@env_option("--no-fsync", is_flag=True,
            help="Do not fsync files on the primary before renaming them into place "
                 "(faster, less safe against a crash of the storage).")
@click.pass_context
def save(ctx, work, dry_run, allow_mass_delete, **_):
    """Save WORK to its primary: upload new and changed files, move deleted ones to the
    trash, rewrite the link manifest. Only what changed is touched; a save with no change
    makes no per-file call on the primary.

    Refuses (exit 5) if WORK has no work marker (an unmounted volume looks like that) or if
    the save would delete more than half the primary's files. Exits 4 if the lock is not
    held by this working copy.
    """
    from ..save import save as run_save

    opts = make_options(ctx.params)
    with stop_on_signals(restore=False) as stop:
        try:
            report = run_save(work, opts, dry_run=dry_run, allow_mass_delete=allow_mass_delete,
                              stop=stop)
        finally:
            opts.tracker.close()
    plan = report.plan
    if dry_run:
        out.print(f"would upload {plan['files_to_upload']} file(s) ({_mib(plan['bytes_to_upload'])}), "
                  f"create {plan['new_dirs']} folder(s), delete {plan['entries_to_delete']} "
                  f"entr(y/ies), links changed: {plan['links_changed']}")
        return
    out.print(f"saved {work}: {report.uploaded} file(s) uploaded ({_mib(report.uploaded_bytes)}), "
              f"{report.dirs_created} folder(s) created, {report.deleted} moved to trash"
              + (f" ({report.trash_batch})" if report.trash_batch else "")
              + (", link manifest written" if report.manifest_written else "")
              + f", {plan['unchanged']} unchanged, in {report.seconds:.2f} s")
    for path, kept_as in report.conflicts:
        err.print(f"conflict: {path} changed on the primary too; the primary's version is "
                  f"kept as {kept_as}", markup=False)
    if report.deletes_skipped:
        err.print("[yellow]warning:[/] deletions were skipped because some uploads failed")
    for path in report.kept_dirs:
        err.print(f"[yellow]note:[/] folder {path} kept on the primary: it holds files "
                  "spaceport never saw")


@click.command()
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
@wait_option
@env_option("--keep-work", is_flag=True, help="Keep the working copy after the final save.")
@env_option("--allow-mass-delete", is_flag=True, help="As for save.")
@env_option("--checksum", is_flag=True,
            help="Before the working copy is removed, compare every file's content with the "
                 "primary's (reads both sides). Catches what no change of size or time shows: "
                 "writes through a long-lived mmap.")
@click.pass_context
def undeploy(ctx, work, keep_work, allow_mass_delete, checksum, **_):
    """Final save of WORK, release the lock, remove the working copy.

    If the final save fails, the lock and the working copy are kept and the command exits
    non-zero with the reason: nothing is given up until the work is safe.
    """
    from ..undeploy import undeploy as run_undeploy

    opts = make_options(ctx.params)
    with stop_on_signals(restore=False) as stop:
        try:
            report = run_undeploy(work, opts, keep_work=keep_work, checksum=checksum,
                                  allow_mass_delete=allow_mass_delete, stop=stop)
        finally:
            opts.tracker.close()
    for path in report.resaved:
        err.print(f"note: {path} was not on the primary as saved (changed there, or its "
                  "content differed); it was saved again", markup=False)
    out.print(f"undeployed {work}: final save uploaded {report.save.uploaded} file(s), lock "
              f"released, working copy {'removed' if report.work_removed else 'kept'}")


def _notes(report) -> None:
    """What the deploy kept that a person should know about (nothing was lost)."""
    for path, kept_as in report.saved.conflicts if report.saved else ():
        err.print(f"conflict: {path} changed on the primary too; the primary's version is "
                  f"kept as {kept_as}", markup=False)
    if report.trashed:
        err.print(f"note: {report.trashed} file(s) of this working copy had been changed or "
                  "deleted on the primary meanwhile; this copy's versions are in the trash "
                  "('spaceport trash list')", markup=False)
    for path in report.kept:
        err.print(f"kept: {path} holds changes never saved; it was left as it is (the next "
                  "save uploads it)", markup=False)


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"
