"""``spaceport clone``: a one-way, read-only copy of raw data (the daemon's --source)."""

from __future__ import annotations

import click

from ..wording import count, human_size
from .options import (
    bwlimit_option,
    common_options,
    err,
    jobs_option,
    make_options,
    out,
    resolve_space,
    safety_flag,
    space_folder_option,
    stopping_on_sigterm,
)


@click.command("clone")
@click.argument("source", envvar="SPACEPORT_SOURCE", type=click.Path(file_okay=False))
@click.argument("dest", envvar="SPACEPORT_SOURCE_WORK", type=click.Path(file_okay=False))
@jobs_option
@common_options
@bwlimit_option
@safety_flag("--allow-mass-delete",
             help="Allow a clone that removes more than half of the copy's files (the source "
                  "really lost them, it is not just unmounted).")
@space_folder_option("SOURCE")
@click.pass_context
def clone_command(ctx, source, dest, allow_mass_delete, space_folder, **_):
    """Make DEST a one-way, read-only copy of SOURCE (e.g. raw data on OneData).

    A re-run copies only new and changed files (size or mtime differ) and removes what
    vanished from SOURCE. Files and folders of DEST get no write bits. Symbolic links and
    special files in SOURCE are skipped with a warning. DEST must be empty or an earlier
    clone (it holds .spaceport/clone.json).
    """
    from ..commands.clone import clone

    opts = make_options(ctx.params)
    tracker = opts.tracker
    source = resolve_space(source, space_folder, "SOURCE", opts)
    with stopping_on_sigterm():
        try:
            report = clone(source, dest, opts, allow_mass_delete=allow_mass_delete)
        finally:
            tracker.close()
    out.print(f"cloned {source} -> {dest}: {count(report.files, 'file')} ({report.copied} "
              f"copied, {human_size(report.copied_bytes)}; {report.current} already current), "
              f"{report.removed} removed, in {report.seconds:.2f} s", markup=False)
    if report.links_skipped:
        err.print(f"[yellow]note:[/] {count(len(report.links_skipped), 'symbolic link')} "
                  "skipped: a clone copies files and folders only")
