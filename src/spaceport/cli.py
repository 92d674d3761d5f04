"""The command line: ``spaceport deploy|save|undeploy|status|unlock|verify|trash|demo``.

Every option can also be set through an environment variable ``SPACEPORT_<OPTION>``
(containers use them). One handler at the top turns spaceport's exceptions into a message
and the exit code of the contract in DESIGN.md.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from contextlib import contextmanager

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from . import __version__
from .errors import (EXIT_INTERRUPTED, EXIT_USAGE, Interrupted, LockedError, SpaceportError,
                     UsageError)
from .engine import DEFAULT_JOBS, Options, open_primary
from .legacy import DEFAULT_LEGACY_ROOT
from .links import parse_rebase
from .lock import DEFAULT_STATUS_DIR, LockInfo, force_unlock, read_lock, validate_status_dir
from .progress import RichTracker, Tracker
from .retry import RetryPolicy, is_unavailable, unavailable

# soft_wrap: long messages are one line each; the terminal wraps them, log collectors and
# tests that read them are not given line breaks in the middle of a path.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("spaceport")


def env_option(*decls, **kwargs):
    """A click option that also reads ``SPACEPORT_<NAME>`` from the environment."""
    name = [d for d in decls if d.startswith("--")][0][2:].split("/")[0]
    kwargs.setdefault("envvar", "SPACEPORT_" + name.upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def common_options(fn):
    """Options every command that touches storage takes."""
    for decorator in reversed([
        env_option("--status-dir", default=DEFAULT_STATUS_DIR, show_default=True,
                   help="Name of the status folder inside the primary (lock, link manifest, "
                        "journal, trash)."),
        env_option("--retries", default=5, show_default=True, type=click.IntRange(1, 100),
                   help="Attempts for a storage call that fails with a transient error "
                        "(EIO, ENOTCONN...), with exponential backoff."),
        env_option("--retry-delay", default=0.5, show_default=True, type=click.FloatRange(0),
                   help="First backoff delay in seconds; it doubles up to 15 s."),
        env_option("-v", "--verbose", count=True, help="More log output (-vv for debug)."),
        env_option("--progress/--no-progress", default=None,
                   help="Show progress bars (default: when stderr is a terminal)."),
    ]):
        fn = decorator(fn)
    return fn


def jobs_option(fn):
    return env_option("--jobs", "-j", default=DEFAULT_JOBS, show_default=True,
                      type=click.IntRange(1, 256),
                      help="Files copied in parallel. Parallelism pays on OneData, where "
                           "every file costs network round trips.")(fn)


def make_options(ctx_params: dict, *, tracker: Tracker | None = None) -> Options:
    setup_logging(ctx_params.get("verbose") or 0)
    status_dir = validate_status_dir(ctx_params.get("status_dir") or DEFAULT_STATUS_DIR)
    show = ctx_params.get("progress")
    if show is None:
        show = err.is_terminal
    opts = Options(status_dir=status_dir,
                   retry=RetryPolicy(attempts=ctx_params.get("retries") or 5,
                                     initial_delay=ctx_params.get("retry_delay") or 0.5),
                   tracker=tracker or (RichTracker(err) if show else Tracker()))
    for key in ("jobs", "instance", "mass_delete_threshold", "trash_retention_days",
                "legacy_root", "stale_after"):
        if ctx_params.get(key) is not None:
            setattr(opts, key, ctx_params[key])
    if ctx_params.get("rebase"):
        opts.rebase = parse_rebase(ctx_params["rebase"])
    if ctx_params.get("no_fsync"):
        opts.fsync = False
    return opts


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=err, show_path=False, show_time=verbose > 0))
    root.setLevel(level)


@contextmanager
def stopping_on_sigterm():
    """SIGTERM behaves like Ctrl-C: the running copies stop cleanly, the index keeps what
    landed, and the command exits 130."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spaceport")
def cli():
    """Deploy a project folder from primary storage (a OneData space or any folder) onto a
    fast working copy, save it back safely while you work, and bring it home.

    \b
    Typical use:
      spaceport deploy /mnt/onedata/project /scratch/project   # lock + copy + links
      spaceport save /scratch/project                          # upload what changed
      spaceport status /scratch/project                        # lock, last save, pending
      spaceport undeploy /scratch/project                      # final save, unlock, clean

    Exit codes: 0 ok, 1 error, 2 usage, 3 locked by another deployment, 4 lock lost or not
    ours, 5 refused for safety, 6 primary storage unavailable, 130 interrupted.
    Run 'spaceport demo' to see the whole story on a generated sample project.
    """


@cli.command()
@click.argument("primary", envvar="SPACEPORT_PRIMARY", type=click.Path(file_okay=False))
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
@env_option("--resume", is_flag=True,
            help="The working copy holds changes never saved: save them to the primary first "
                 "(a primary file changed meanwhile goes to the trash), then deploy.")
@env_option("--discard-local", is_flag=True,
            help="The working copy holds changes never saved, or unknown files: delete them "
                 "and deploy afresh.")
@env_option("--take-over-stale", is_flag=True,
            help="If the lock's holder looks dead (no heartbeat for --stale-after seconds, or "
                 "its process is gone on this host), take the lock over.")
@env_option("--rebase", multiple=True, metavar="OLD=NEW",
            help="Rewrite absolute link targets starting with OLD to start with NEW (e.g. a "
                 "data mount that moved). Repeatable.")
@env_option("--legacy-root", default=DEFAULT_LEGACY_ROOT, show_default=True,
            help="Working root used by the old scripts, to import their link lists "
                 "(linklist, symlink-dump) when the space has no links.jsonl yet.")
@env_option("--instance", help="Name of this instance (pod or VM) written into the lock. "
                               "Default: the host name.")
@env_option("--stale-after", type=click.IntRange(10), default=600, show_default=True,
            help="Seconds without heartbeat after which the lock counts as stale.")
@click.pass_context
def deploy(ctx, primary, work, resume, discard_local, take_over_stale, **_):
    """Lock PRIMARY and copy it onto WORK, re-creating its symbolic links.

    PRIMARY is the project folder on primary storage (e.g. a OneData mount). WORK is the
    local working copy; it must be empty, or a working copy of PRIMARY (the deploy then
    resumes and copies only what is missing). Only one deployment of PRIMARY can exist at a
    time: if another holds it, this exits 3 naming host, instance and last heartbeat.
    """
    from .deploy import deploy as run_deploy

    if resume and discard_local:
        raise click.UsageError("--resume and --discard-local exclude each other.")
    opts = make_options(ctx.params)
    try:
        report = run_deploy(primary, work, opts, resume=resume, discard_local=discard_local,
                            take_over_stale=take_over_stale)
    finally:
        opts.tracker.close()
    how = "resumed" if report.resumed_own else "deployed"
    out.print(f"{how} {primary} -> {work} (deployment {report.deployment_id[:8]}): "
              f"{report.files} files ({report.copied} copied, {_mib(report.copied_bytes)}; "
              f"{report.already_current} already in place), {report.links} links "
              f"from {report.links_source}"
              + (", unsaved local work saved first" if report.saved_first else ""))
    for line in report.legacy_skipped:
        err.print(f"[yellow]warning:[/] legacy link line not restored: {line}")


@cli.command()
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
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
    from .save import save as run_save

    opts = make_options(ctx.params)
    with stopping_on_sigterm():
        try:
            report = run_save(work, opts, dry_run=dry_run, allow_mass_delete=allow_mass_delete)
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
    if report.deletes_skipped:
        err.print("[yellow]warning:[/] deletions were skipped because some uploads failed"
                  + (" or databases wait for the next save" if report.databases_held else ""))
    for path in report.kept_dirs:
        err.print(f"[yellow]note:[/] folder {path} kept on the primary: it holds files "
                  "spaceport never saw")


@cli.command()
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
@env_option("--keep-work", is_flag=True, help="Keep the working copy after the final save.")
@env_option("--allow-mass-delete", is_flag=True, help="As for save.")
@click.pass_context
def undeploy(ctx, work, keep_work, allow_mass_delete, **_):
    """Final save of WORK, release the lock, remove the working copy.

    If the final save fails, the lock and the working copy are kept and the command exits
    non-zero with the reason: nothing is given up until the work is safe.
    """
    from .undeploy import undeploy as run_undeploy

    opts = make_options(ctx.params)
    with stopping_on_sigterm():
        try:
            report = run_undeploy(work, opts, keep_work=keep_work,
                                  allow_mass_delete=allow_mass_delete)
        finally:
            opts.tracker.close()
    out.print(f"undeployed {work}: final save uploaded {report.save.uploaded} file(s), lock "
              f"released, working copy {'removed' if report.work_removed else 'kept'}")


@cli.command()
@click.argument("work", required=False, type=click.Path(file_okay=False))
@env_option("--primary", type=click.Path(file_okay=False),
            help="Show the status of a primary folder instead (lock, saves, trash).")
@env_option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@common_options
@click.pass_context
def status(ctx, work, primary, as_json, **_):
    """Show the lock holder and heartbeat, the last save and the unsaved changes of WORK,
    or (with --primary) who holds a primary folder, its recent saves and its trash."""
    from .status import format_status, primary_status, work_status

    if bool(work) == bool(primary):
        raise click.UsageError("give either WORK or --primary PRIMARY.")
    opts = make_options(ctx.params, tracker=Tracker())
    facts = work_status(work, opts) if work else primary_status(primary, opts)
    if as_json:
        out.print_json(json.dumps(facts, default=str))
    else:
        out.print(format_status(facts), markup=False)


@cli.command()
@click.argument("primary", envvar="SPACEPORT_PRIMARY", type=click.Path(file_okay=False))
@env_option("--force", is_flag=True,
            help="Remove the lock even if its holder may be alive. Make doubly sure that "
                 "deployment no longer exists: two live deployments overwrite each other.")
@env_option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
@click.pass_context
def unlock(ctx, primary, force, yes, **_):
    """Remove the deployment lock of PRIMARY, after a deployment died.

    Without --force only a stale lock (no heartbeat for its stale-after time, or its process
    gone on this host) is removed. The removed lock is kept beside as lock.broken-<time>.
    """
    opts = make_options(ctx.params, tracker=Tracker())
    with open_primary(primary, "00000000", opts) as store:
        holder = read_lock(store, opts.status_dir)
        if holder is None:
            out.print(f"{primary} is not locked.")
            return
        stale = holder.stale_reason() if isinstance(holder, LockInfo) else None
        if not force and not stale:
            raise LockedError(f"{primary} is held by {holder.describe()}.",
                              hint="It does not look stale. If you are sure that deployment is "
                                   "gone, run again with --force.")
        out.print(f"lock held by {holder.describe()}" + (f"\nlooks stale: {stale}" if stale else ""))
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to remove the lock without confirmation; "
                                 "add --yes to confirm non-interactively.")
            click.confirm("Remove this lock? Any deployment still using it will be stopped "
                          "at its next save", abort=True)
        force_unlock(store, opts.status_dir)
    out.print(f"unlocked {primary}")


@cli.command()
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@env_option("--checksum", is_flag=True, help="Compare file contents (SHA-256), not only sizes.")
@jobs_option
@common_options
@click.pass_context
def verify(ctx, work, checksum, **_):
    """Compare WORK with its primary, file by file, and its links with the manifest.
    Reads the whole primary (slow on OneData, on purpose). Exits 1 on any difference."""
    from .status import verify as run_verify

    opts = make_options(ctx.params, tracker=Tracker())
    report = run_verify(work, opts, checksum=checksum)
    for line in report.differences:
        out.print(line, markup=False)
    out.print(f"checked {report.checked_files} files and {report.checked_links} links: "
              + ("identical" if report.ok else f"{len(report.differences)} difference(s)"))
    if not report.ok:
        sys.exit(1)


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def _interrupted() -> int:
    err.print("[red]interrupted[/]: what was copied is recorded; run the same command again "
              "to continue.")
    return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (callable from tests)."""
    from . import trash_cli, demo, daemon_cli  # noqa: F401 - they register their commands

    try:
        cli.main(args=argv, prog_name="spaceport", standalone_mode=False)
        return 0
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # click wraps Ctrl-C / SIGTERM
            return _interrupted()
        err.print("aborted; nothing was changed.")
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except (KeyboardInterrupt, Interrupted):
        return _interrupted()
    except SpaceportError as exc:
        err.print("[red]error:[/] " + escape(exc.message))
        if exc.hint:
            err.print(exc.hint, markup=False)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except OSError as exc:
        where = exc.filename or "the storage"
        if is_unavailable(exc):
            error = unavailable(exc, where)
            err.print("[red]error:[/] " + escape(error.message))
            err.print(error.hint, markup=False)
            return error.exit_code
        err.print("[red]error:[/] " + escape(f"{exc.strerror or exc} ({where})"))
        err.print("The command stopped there. What was written before is complete and "
                  "recorded; run the same command again once the cause is fixed.", markup=False)
        return 1

