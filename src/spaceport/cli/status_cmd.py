"""``spaceport status`` and ``spaceport verify``: what a working copy or a primary holds."""

from __future__ import annotations

import json
import sys

import click

from ..engine.progress import Tracker
from ..errors import EXIT_UNAVAILABLE
from ..wording import count
from .options import (
    env_option,
    jobs_option,
    log_to_work,
    make_options,
    out,
    status_dir_option,
    storage_options,
    verbose_option,
)


@click.command()
@click.argument("work", required=False, type=click.Path(file_okay=False))
@env_option("--primary", type=click.Path(file_okay=False),
            help="Show the status of a primary folder instead (lock, saves, trash).")
@env_option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@status_dir_option(help="With --primary: the name of its status folder. (A working copy "
                        "knows its own.)")
@storage_options
@verbose_option
@click.pass_context
def status(ctx, work, primary, as_json, **_):
    """Show the lock holder and heartbeat, the last save and the unsaved changes of WORK,
    or (with --primary) who holds a primary folder, its recent saves and its trash.

    Exits 1 if WORK is not a spaceport working copy, 6 if its primary cannot be reached
    (what the working copy alone shows is shown all the same)."""
    from ..commands.status import format_status, primary_status, work_status

    if bool(work) == bool(primary):
        raise click.UsageError("give either WORK or --primary PRIMARY.")
    opts = make_options(ctx.params, tracker=Tracker())
    facts = work_status(work, opts) if work else primary_status(primary, opts)
    if as_json:
        out.print_json(json.dumps(facts, default=str))
    else:
        out.print(format_status(facts), markup=False)
    if work and not facts.get("deployed", True):
        sys.exit(1)
    if facts.get("primary_unreachable"):
        sys.exit(EXIT_UNAVAILABLE)


@click.command()
@click.argument("work", envvar="SPACEPORT_WORK", type=click.Path(file_okay=False))
@env_option("--checksum", is_flag=True, help="Compare file contents (SHA-256), not only sizes.")
@jobs_option(help="Folders of the primary listed in parallel (each listing costs network "
                  "round trips on OneData).")
@storage_options
@verbose_option
@click.pass_context
def verify(ctx, work, checksum, **_):
    """Compare WORK with its primary, file by file, and its links with the manifest.
    Reads the whole primary (slow on OneData, on purpose). Exits 1 on any difference."""
    from ..commands.status import verify as run_verify

    opts = make_options(ctx.params, tracker=Tracker())
    log_to_work(work, "verify")
    report = run_verify(work, opts, checksum=checksum)
    for line in report.differences:
        out.print(line, markup=False)
    out.print(f"checked {count(report.checked_files, 'file')} and "
              f"{count(report.checked_links, 'link')}: "
              + ("identical" if report.ok else count(len(report.differences), "difference")),
              markup=False)
    if not report.ok:
        sys.exit(1)
