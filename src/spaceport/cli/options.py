"""What the commands share: options (each readable from ``SPACEPORT_<OPTION>``), the
engine's Options built from them, logging, the output consoles, and signal handling."""

from __future__ import annotations

import logging
import re
import signal
from contextlib import contextmanager

import click
from rich.console import Console
from rich.logging import RichHandler

from ..engine import DEFAULT_JOBS, Options
from ..errors import UsageError
from ..links import parse_rebase
from ..lock import DEFAULT_STATUS_DIR, validate_status_dir
from ..progress import RichTracker, Tracker
from ..retry import RetryPolicy
from ..worklock import DEFAULT_WAIT

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


def wait_option(fn):
    """``--wait SECONDS`` / ``--no-wait``: how long to wait for another command that works
    on the same working copy (one command at a time, safety rule 9)."""
    fn = env_option("--no-wait", is_flag=True,
                    help="If another spaceport command works on this working copy, exit at "
                         "once (exit 1, naming it) instead of waiting.")(fn)
    return env_option("--wait", "busy_wait", type=click.FloatRange(0), metavar="SECONDS",
                      default=DEFAULT_WAIT, show_default=True,
                      help="Wait up to SECONDS for another spaceport command working on this "
                           "working copy to finish, then exit 1 naming it.")(fn)


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
    opts.say = lambda line: err.print(line, markup=False)
    if ctx_params.get("busy_wait") is not None:
        opts.busy_wait = ctx_params["busy_wait"]
    if ctx_params.get("no_wait"):
        opts.busy_wait = 0.0
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


def parse_rate(text: str | None) -> float | None:
    """'50M' -> 52428800 bytes per second (K, M, G, T: powers of 1024); None: no limit."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?(?:/S)?\s*", text.upper())
    if not m:
        raise UsageError(f"--bwlimit {text!r}: give bytes per second, e.g. 50M or 1.5G")
    value = float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")
    if value <= 0:
        raise UsageError("--bwlimit must be more than 0")
    return value
