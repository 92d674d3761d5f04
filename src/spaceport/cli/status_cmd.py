"""``spaceport status`` and ``spaceport verify``: what a working copy or a primary holds."""

from __future__ import annotations

import sys

import click

from ..engine.progress import Tracker
from ..errors import EXIT_UNAVAILABLE
from ..wording import count
from .options import (
    env_option,
    jobs_option,
    json_option,
    json_result,
    log_to_work,
    make_options,
    out,
    record_error,
    resolve_work,
    start_json,
    status_dir_option,
    storage_options,
    verbose_option,
    work_argument,
)


@click.command()
@work_argument
@env_option("--primary", type=click.Path(file_okay=False),
            help="Show the status of a primary folder instead (lock, saves, trash).")
@json_option
@status_dir_option(help="With --primary: the name of its status folder. (A working copy "
                        "knows its own.)")
@storage_options
@verbose_option
@click.pass_context
def status(ctx, work, primary, as_json, **_):
    """Show the lock holder and heartbeat, the last save and the unsaved changes of WORK,
    or (with --primary) who holds a primary folder, its recent saves and its trash.

    WORK left out (and no --primary): the working copy the current folder is in.
    Exits 1 if WORK is not a spaceport working copy, 6 if its primary cannot be reached
    (what the working copy alone shows is shown all the same)."""
    from ..commands.status import format_status, primary_status, work_status

    if work and primary:
        raise click.UsageError("give either WORK or --primary PRIMARY.")
    start_json("status", as_json)
    if not primary:
        work = resolve_work(work)
    opts = make_options(ctx.params, tracker=Tracker())
    facts = work_status(work, opts) if work else primary_status(primary, opts)
    json_result(**facts)
    out.print(format_status(facts), markup=False)
    if work and not facts.get("deployed", True):
        record_error(f"{facts['work']} {facts['message']}")
        sys.exit(1)
    if facts.get("primary_unreachable"):
        record_error(facts["primary_unreachable"])
        sys.exit(EXIT_UNAVAILABLE)


@click.command()
@work_argument
@env_option("--checksum", is_flag=True, help="Compare file contents (SHA-256), not only sizes.")
@json_option
@jobs_option(help="Folders of the primary listed in parallel (each listing costs network "
                  "round trips on OneData).")
@storage_options
@verbose_option
@click.pass_context
def verify(ctx, work, checksum, as_json, **_):
    """Compare WORK with its primary, file by file, and its links with the manifest.
    Reads the whole primary (slow on OneData, on purpose). Exits 1 on any difference.
    What the working copy excludes (--exclude) is compared on neither side. WORK left out:
    the working copy the current folder is in."""
    from ..commands.status import verify as run_verify

    start_json("verify", as_json)
    work = resolve_work(work)
    opts = make_options(ctx.params, tracker=Tracker())
    log_to_work(work, "verify")
    report = run_verify(work, opts, checksum=checksum)
    json_result(work=work, checksum=checksum, checked_files=report.checked_files,
                checked_links=report.checked_links, identical=report.ok,
                differences=list(report.differences))
    for line in report.differences:
        out.print(line, markup=False)
    out.print(f"checked {count(report.checked_files, 'file')} and "
              f"{count(report.checked_links, 'link')}: "
              + ("identical" if report.ok else count(len(report.differences), "difference")),
              markup=False)
    if not report.ok:
        record_error(f"{work} differs from its primary: "
                     f"{count(len(report.differences), 'difference')}")
        sys.exit(1)
