"""What the commands share: options (each readable from ``SPACEPORT_<OPTION>``, except the
safety overrides), the engine's Options built from them, logging, the output consoles, and
signal handling."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from contextlib import contextmanager

import click
from rich.console import Console
from rich.markup import escape

from ..commands.folders import space_folder
from ..commands.options import DEFAULT_JOBS, Options
from ..engine.bandwidth import RateLimit
from ..engine.filters import compile_excludes, read_exclude_file
from ..engine.progress import RichTracker, Tracker
from ..errors import UsageError
from ..formats.links import parse_rebase
from ..formats.marker import find_working_copy
from ..formats.worklog import WorkLogHandler, started_line
from ..safety.lock import DEFAULT_STALE_AFTER, DEFAULT_STATUS_DIR, validate_status_dir
from ..safety.worklock import DEFAULT_WAIT
from ..store.retry import RetryPolicy
from ..wording import quote

# soft_wrap: long messages are one line each; the terminal wraps them, log collectors and
# tests that read them are not given line breaks in the middle of a path.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True, record=True)  # recorded for the work log
log = logging.getLogger("spaceport")
_work_logs: list[WorkLogHandler] = []  # this command's logs in working copies
command_line: list[str] = []  # as given to main(), for the work log
last_error: list[str] = []  # the error this command showed, for the work log
# The same error for --json: "error" (its one-line message) and "hint" (what to do), if any.
error_facts: dict[str, str] = {}
# --json: the one object this command prints on stdout when it ends (see json_result).
json_out: dict | None = None


# Safety overrides (DESIGN.md, rule 12): given on the command line or not at all. One
# exported variable must never switch a safety net off for every later command.
SAFETY_FLAGS = ("allow-mass-delete", "discard-local", "force", "yes", "take-over-stale")


def env_option(*decls, **kwargs):
    """A click option that also reads ``SPACEPORT_<NAME>`` from the environment."""
    name = _long_name(decls)
    if name in SAFETY_FLAGS:
        raise ValueError(f"--{name} is a safety override: declare it with safety_flag()")
    kwargs.setdefault("envvar", "SPACEPORT_" + name.upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def safety_flag(*decls, help: str):  # noqa: A002 - click's name
    """A flag that switches a safety net off: never read from the environment."""
    if _long_name(decls) not in SAFETY_FLAGS:
        raise ValueError(f"{decls[0]} is not listed in SAFETY_FLAGS")
    return click.option(*decls, is_flag=True, envvar=None, allow_from_autoenv=False,
                        help=help + " A flag only: never read from the environment.")


def _long_name(decls) -> str:
    return [d for d in decls if d.startswith("--")][0][2:].split("/")[0]


def ignored_safety_variables(environ=None) -> list[str]:
    """The SPACEPORT_* variables set for a safety override, which are ignored."""
    environ = os.environ if environ is None else environ
    names = ["SPACEPORT_" + flag.upper().replace("-", "_") for flag in SAFETY_FLAGS]
    return [name for name in names if environ.get(name, "") != ""]


def verbose_option(fn):
    return env_option("-v", "--verbose", count=True,
                      help="More log output (-vv for debug).")(fn)


def storage_options(fn):
    """Options of every command that reads or writes the primary storage."""
    fn = env_option("--retry-delay", default=0.5, show_default=True, type=click.FloatRange(0),
                    help="First backoff delay in seconds; it doubles up to 15 s.")(fn)
    fn = env_option("--retries", default=5, show_default=True, type=click.IntRange(1, 100),
                    help="Attempts for every call on the primary storage (the lock, files, "
                         "folders, the trash, manifest and journal) that fails with a "
                         "transient error (EIO, ENOTCONN, ETIMEDOUT, ESTALE...), with "
                         "exponential backoff. Permanent errors are never retried.")(fn)
    return fn


def progress_option(fn):
    """For the commands that copy files, and draw their progress."""
    return env_option("--progress/--no-progress", default=None,
                      help="Show progress bars (default: when stderr is a terminal).")(fn)


def status_dir_option(help: str = "Name of the status folder inside the primary (lock, "  # noqa: A002
                                  "link manifest, journal, trash)."):
    return env_option("--status-dir", default=DEFAULT_STATUS_DIR, show_default=True,
                      help=help)


def common_options(fn):
    """The options of the commands that copy files: retries, verbosity, progress bars."""
    for decorator in reversed([storage_options, verbose_option, progress_option]):
        fn = decorator(fn)
    return fn


def jobs_option(fn=None, *, help: str = "Files copied in parallel. Parallelism pays on "  # noqa: A002
                                         "OneData, where every file costs network round trips."):
    decorator = env_option("--jobs", "-j", default=DEFAULT_JOBS, show_default=True,
                           type=click.IntRange(1, 256), help=help)
    return decorator(fn) if fn is not None else decorator


def stale_after_option(help: str):  # noqa: A002
    """One range for every command that writes a lock: deploy and run."""
    return env_option("--stale-after", type=click.IntRange(2), default=DEFAULT_STALE_AFTER,
                      show_default=True, help=help)


def space_folder_option(what: str):
    """``--space-folder``: the folder given is a claim's root holding one folder, the space."""
    return env_option("--space-folder", is_flag=True,
                      help=f"{what} is the root of a claim holding one folder, the OneData "
                           "space (CERIT's platform mounts a space so): work on that folder. "
                           "None or several folders there: refused (exit 5), naming them.")


def cerit_option(fn):
    return env_option("--cerit", is_flag=True,
                      help="Also keep CERIT's app lock (<primary>/scipion-docker/project.lock) "
                           "while the project is held, and write CERIT's symlink-dump at "
                           "every save that changes links, so CERIT's own Scipion app neither "
                           "opens the project meanwhile nor loses links later. Automatic on a "
                           "primary CERIT's app has used.")(fn)


def resolve_space(path: str, given: bool, what: str, opts: Options) -> str:
    """``path`` itself, or with ``--space-folder`` the one folder inside it."""
    return space_folder(os.path.abspath(path), what, opts.retry) if given else path


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


def bwlimit_option(fn):
    """``--bwlimit RATE``: one meaning for every command that moves file data."""
    return env_option("--bwlimit", metavar="RATE",
                      help="Limit the file data this command copies to RATE bytes per "
                           "second, all parallel copies together (e.g. 50M; K, M, G are "
                           "powers of 1024). Default: no limit.")(fn)


def exclude_options(fn):
    """``--exclude``, ``--exclude-from``, ``--no-exclude``: the working copy's filter."""
    fn = env_option("--no-exclude", is_flag=True,
                    help="Forget the working copy's remembered exclude patterns: from now on "
                         "everything is saved again.")(fn)
    fn = env_option("--exclude-from", multiple=True, metavar="FILE",
                    type=click.Path(dir_okay=False),
                    help="Read exclude patterns from FILE, one a line (blank lines and lines "
                         "starting with # or ; are skipped). Repeatable.")(fn)
    return env_option("--exclude", multiple=True, metavar="PATTERN",
                      help="Leave out paths matching PATTERN, with rsync's rules: * within a "
                           "name, ** across folders, a trailing / for folders only, a leading "
                           "/ anchors at the top (e.g. 'Runs/*/tmp/', '/Tmp/'). Excluded "
                           "paths are neither saved nor deleted on the primary. Remembered by "
                           "the working copy (later saves and the daemon use them; status "
                           "shows them); given again, they replace the remembered ones. "
                           "Repeatable.")(fn)


def excludes_given(ctx_params: dict) -> list[str] | None:
    """The exclude patterns given to this command (checked), [] for --no-exclude, or None
    when none were given (the working copy's remembered ones stay)."""
    def given(key: str) -> tuple:
        value = ctx_params.get(key)
        return tuple(value) if isinstance(value, (list, tuple)) else ()

    patterns = list(given("exclude"))
    for path in given("exclude_from"):
        patterns += read_exclude_file(path)
    if ctx_params.get("no_exclude") is True:
        if patterns:
            raise UsageError("--no-exclude forgets the exclude patterns: give it without "
                             "--exclude or --exclude-from.")
        return []
    if not patterns and not given("exclude_from"):
        return None
    return list(compile_excludes(patterns).patterns)


def json_option(fn):
    """``--json``: one JSON object on stdout when the command ends, nothing else there."""
    return env_option("--json", "as_json", is_flag=True,
                      help="Print one JSON object on stdout when the command ends (its "
                           "outcome, counts, bytes, warnings and exit_code), and nothing "
                           "else there: messages and progress go to stderr.")(fn)


def start_json(command: str, enabled: bool) -> None:
    """Begin this command's JSON result (with --json): stdout is kept for it alone."""
    global json_out
    json_out = {"command": command} if enabled else None
    out.quiet = enabled


def json_result(**facts) -> None:
    """Add facts to the JSON result, if --json was given (else nothing)."""
    if json_out is not None:
        json_out.update(facts)


def warn(text: str, *, markup: str = "[yellow]warning:[/] ") -> None:
    """A warning on stderr, and in the JSON result's ``warnings``."""
    err.print(markup + escape(text))
    if json_out is not None:
        json_out.setdefault("warnings", []).append(text)


def record_error(message: str, hint: str | None = None) -> None:
    """The error this command ends with: one line for the work log, and the ``error`` and
    ``hint`` of its JSON result."""
    last_error[:] = [message + (f" | {hint}" if hint else "")]
    error_facts.clear()
    error_facts["error"] = message
    if hint:
        error_facts["hint"] = hint


def finish_json(code: int) -> None:
    """Print the JSON result, with the exit code and, if the command failed, its ``error``
    (never left out: a failure without a recorded message says its exit code) and ``hint``."""
    global json_out
    if json_out is None:
        return
    result, json_out = json_out, None
    out.quiet = False
    result["exit_code"] = code
    result["ok"] = code == 0
    if code:
        result.setdefault("error", error_facts.get("error") or result.get("message")
                          or f"{result.get('command') or 'spaceport'} ended with exit code "
                             f"{code}")
        if error_facts.get("hint"):
            result.setdefault("hint", error_facts["hint"])
    sys.stdout.write(json.dumps(result, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def work_argument(fn=None, *, required: bool = False):
    """WORK, or, left out, the working copy the current folder is in (found as git finds
    its repository: see formats.marker.find_working_copy)."""
    decorator = click.argument("work", required=required, envvar="SPACEPORT_WORK",
                               type=click.Path(file_okay=False))
    return decorator(fn) if fn is not None else decorator


def resolve_work(work: str | None, *, walk_given: bool = True) -> str:
    """The working copy a command works on: WORK (or a folder inside a working copy, given
    as WORK), else the one the current folder is in. Not inside one: the path as given (or
    the current folder), and the command's own message says it is not a working copy."""
    start = work if work is not None else os.getcwd()
    if work is not None and not walk_given:
        return work
    found = find_working_copy(start)
    if found is None:
        return start
    if os.path.realpath(found) != os.path.realpath(start):
        err.print(f"working copy: {found} ({'the current folder' if work is None else start} "
                  "is inside it)", markup=False)
    return found


def make_options(ctx_params: dict, *, tracker: Tracker | None = None) -> Options:
    setup_logging(ctx_params.get("verbose") or 0)
    status_dir = validate_status_dir(ctx_params.get("status_dir") or DEFAULT_STATUS_DIR)
    if tracker is None:  # --progress is read only where it decides something
        show = ctx_params.get("progress")
        limit = RateLimit(parse_rate(ctx_params.get("bwlimit")))
        tracker = RichTracker(err, limit) if (err.is_terminal if show is None else show) \
            else Tracker(limit)
    opts = Options(status_dir=status_dir,
                   retry=RetryPolicy(attempts=ctx_params.get("retries") or 5,
                                     initial_delay=ctx_params.get("retry_delay") or 0.5),
                   tracker=tracker)
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
    opts.cerit = bool(ctx_params.get("cerit"))
    opts.exclude = excludes_given(ctx_params)
    opts.say = lambda text: err.print(text, markup=False)
    opts.on_watch = WatchProgress(err)
    return opts


class WatchProgress:
    """How long a stale-looking lock's heartbeat is watched, and how far: a bar on the
    terminal (unlock, deploy --take-over-stale). Called as on_tick(done, total)."""

    def __init__(self, console):
        self.console = console
        self.bar = None  # a rich Progress, made (and imported) once there is something to show
        self.task = None

    def __call__(self, done: float, total: float) -> None:
        if self.bar is None:
            self.console.print(f"watching the holder's heartbeat for up to {total:g} s: a lock "
                               "is stale only if its heartbeat stops changing", markup=False)
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
            self.bar = Progress(TextColumn("watching its heartbeat"), BarColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("watch", total=total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    from rich.logging import (
        RichHandler,  # with rich's traceback machinery: only when used
    )

    root = logging.getLogger()
    terminal = next((h for h in root.handlers if isinstance(h, RichHandler)), None)
    if terminal is None:
        terminal = RichHandler(console=err, show_path=False, show_time=verbose > 0)
        root.addHandler(terminal)
    terminal.setLevel(level)  # the terminal shows what -v asks for; the work log gets INFO
    root.setLevel(level)


def log_to_work(work: str, command: str) -> None:
    """Also log this command into WORK's ``.spaceport/log/`` (see spaceport.formats.worklog)."""
    handler = WorkLogHandler(work, command)
    log.addHandler(handler)
    log.setLevel(min(log.getEffectiveLevel(), logging.INFO))
    _work_logs.append(handler)
    _to_work_logs(logging.INFO, started_line(command_line), [handler])


def finish_work_logs(code: int, error: str | None = None) -> None:
    """What the command told the person, and how it ended, into the work logs."""
    said = out.export_text(clear=True).splitlines()
    if not _work_logs:
        return
    for line in said[:200]:
        _to_work_logs(logging.INFO, "said: " + line)
    if len(said) > 200:
        _to_work_logs(logging.INFO, f"said: ... and {len(said) - 200} more lines")
    if error:
        _to_work_logs(logging.ERROR, f"ended with exit code {code}: {error}")
    else:
        _to_work_logs(logging.INFO, f"ended with exit code {code}")
    for handler in _work_logs:
        log.removeHandler(handler)
        handler.close()
    _work_logs.clear()


def _to_work_logs(level: int, text: str, handlers=None) -> None:
    """A line for the work logs only (the terminal has it already, or must not)."""
    record = log.makeRecord(log.name, level, __file__, 0, text, (), None)
    for handler in handlers or _work_logs:
        handler.handle(record)


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
        raise UsageError(f"--bwlimit {quote(text)}: give bytes per second, e.g. 50M or 1.5G")
    value = float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")
    if value <= 0:
        raise UsageError("--bwlimit must be more than 0")
    return value
