"""``spaceport unlock``: remove the lock of a deployment that died."""

from __future__ import annotations

import sys

import click

from ..engine import open_primary
from ..errors import LockedError, UsageError
from ..lock import LockInfo, force_unlock, read_lock
from ..progress import Tracker
from .options import common_options, env_option, make_options, out


@click.command()
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
