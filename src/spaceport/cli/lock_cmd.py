"""``spaceport unlock``: remove the lock of a deployment that died."""

from __future__ import annotations

import sys

import click

from ..engine.progress import Tracker
from ..errors import LockedError, UsageError
from ..safety.lock import (
    LockInfo,
    force_unlock,
    forget_mirror_of,
    read_lock,
    set_aside,
    watch_stale,
)
from ..store.sides import open_primary
from .options import (
    WatchProgress,
    err,
    make_options,
    out,
    safety_flag,
    status_dir_option,
    storage_options,
    verbose_option,
)


@click.command()
@click.argument("primary", envvar="SPACEPORT_PRIMARY", type=click.Path(file_okay=False))
@safety_flag("--force",
             help="Remove the lock even if its holder may be alive. Make doubly sure that "
                  "deployment no longer exists: two live deployments overwrite each other.")
@safety_flag("--yes", "-y", help="Do not ask for confirmation.")
@status_dir_option()
@storage_options
@verbose_option
@click.pass_context
def unlock(ctx, primary, force, yes, **_):
    """Remove the deployment lock of PRIMARY, after a deployment died.

    Without --force only a stale lock is removed: a daemon's lock whose heartbeat does not
    change while this command watches it for the lock's stale-after time (it shows how long),
    or whose process is provably gone on this machine. Other hosts' clocks are never trusted.
    A lock taken from the command line never goes stale. The removed lock is kept beside as
    lock.broken-<time>.
    """
    opts = make_options(ctx.params, tracker=Tracker())
    with open_primary(primary, "00000000", opts) as store:
        holder = read_lock(store, opts.status_dir)
        if holder is None:
            out.print(f"{primary} is not locked.")
            return
        out.print(f"lock held by {holder.describe()}", markup=False)
        stale = None if force else watch_with_bar(store, opts.status_dir, holder)
        if not force and not stale:
            raise LockedError(f"{primary} is held by {holder.describe()}.",
                              hint="It is not stale: its heartbeat changed while watched, or "
                                   "it was deployed from the command line (such a lock never "
                                   "goes stale). If you are sure that deployment is gone, run "
                                   "again with --force.")
        if stale:
            out.print(f"stale: {stale}", markup=False)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to remove the lock without confirmation; "
                                 "add --yes to confirm non-interactively.")
            click.confirm("Remove this lock? Any deployment still using it will be stopped "
                          "at its next save", abort=True)
        if stale and isinstance(holder, LockInfo):
            # Only the lock judged stale: one taken meanwhile is left alone.
            removed = set_aside(store, opts.status_dir, holder.deployment_id)
            if removed is None:
                raise LockedError(f"the lock of {primary} changed while it was watched; it "
                                  "was left in place.", hint="Run unlock again to look anew.")
            forget_mirror_of(store, removed)  # CERIT's lock, if it kept one, goes with it
        else:
            force_unlock(store, opts.status_dir)
    out.print(f"unlocked {primary}")


def watch_with_bar(store, status_dir: str, holder) -> str | None:
    """watch_stale with a progress bar: how long it watches, and how far it is."""
    progress = WatchProgress(err)
    try:
        return watch_stale(store, status_dir, holder, on_tick=progress)
    finally:
        progress.close()
