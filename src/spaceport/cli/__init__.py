"""The command line: ``spaceport deploy|save|undeploy|status|unlock|verify|clone|trash|run|
wait|demo``.

Every option can also be set through an environment variable ``SPACEPORT_<OPTION>``
(containers use them), except the safety overrides (``--allow-mass-delete``,
``--discard-local``, ``--force``, ``--yes``, ``--take-over-stale``): one exported variable
must never switch a safety net off for every later command. One handler at the top turns
spaceport's exceptions (and click's usage errors) into a message and the exit code of the
contract in DESIGN.md; with ``--json``, every exit, a usage error included, also ends with
the command's one JSON object on stdout, its ``error`` and ``hint`` in it.

This module builds the group, names every command in it and holds that handler. The
commands live one family per module, named after them (``deploy_cmd``: deploy, save,
undeploy; ...); what they share is in ``options``. A command's module is imported only when
that command runs (or ``--help`` lists them all): a save must not pay, at every start, for
importing the daemon, its HTTP client, the demo and rich's live widgets (a third of a second
here); ``tests/test_cli_imports.py`` holds that.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import click
from rich.markup import escape

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, Interrupted, SpaceportError
from ..stopping import SIGNALS
from ..store.retry import is_unavailable, unavailable
from . import options
from .options import err, ignored_safety_variables

# Command name -> (module of this package, attribute), in the order --help lists them.
COMMANDS = {
    "deploy": ("deploy_cmd", "deploy"), "save": ("deploy_cmd", "save"),
    "undeploy": ("deploy_cmd", "undeploy"), "status": ("status_cmd", "status"),
    "verify": ("status_cmd", "verify"), "unlock": ("lock_cmd", "unlock"),
    "clone": ("clone_cmd", "clone_command"), "trash": ("trash_cmd", "trash"),
    "run": ("daemon_cmd", "run"), "wait": ("daemon_cmd", "wait"), "demo": ("demo_cmd", "demo"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when asked for (click's documented pattern for
    lazily loaded subcommands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS) + [n for n in self.commands if n not in COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)  # one added with add_command
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
      cd /scratch/project/Runs && spaceport save               # WORK found from inside it

    Exit codes: 0 ok, 1 error, 2 usage, 3 locked by another deployment, 4 lock lost or not
    ours, 5 refused for safety, 6 primary storage unavailable, 130 interrupted.
    Options can be set as SPACEPORT_<OPTION> environment variables, except the safety
    overrides (--allow-mass-delete, --discard-local, --force, --yes, --take-over-stale).
    Run 'spaceport demo' to see the whole story on a generated sample project.
    """
    for name in ignored_safety_variables():
        flag = "--" + name.removeprefix("SPACEPORT_").lower().replace("_", "-")
        err.print(f"[yellow]warning:[/] {name} is set in the environment and ignored: safety "
                  f"overrides are given on the command line only ({flag}).")


def _interrupted() -> int:
    err.print("[red]interrupted[/]: what was copied is recorded; run the same command again "
              "to continue.")
    options.record_error("interrupted (Ctrl-C or SIGTERM)",
                         "Run the same command again to continue.")
    return EXIT_INTERRUPTED


def main(argv: list[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run the command line; returns the exit code (callable from tests). Deploy, save and
    undeploy handle SIGINT, SIGTERM and SIGHUP until the process ends (a signal while they
    print their report changes nothing); called as a library, the handlers are given back."""
    options.command_line[:] = sys.argv[1:] if argv is None else list(argv)
    options.last_error.clear()
    options.error_facts.clear()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        code = _main(argv)
    finally:
        for sig, handler in previous.items() if restore_signals else ():
            signal.signal(sig, handler)
    options.finish_work_logs(code, options.last_error[0] if options.last_error else None)
    if code and options.json_out is None:  # stopped before the command began its result
        command = _json_asked(options.command_line)
        if command is not None:
            options.start_json(command, True)
    options.finish_json(code)  # --json: the one object on stdout, whatever happened
    return code


def _json_asked(args: list[str]) -> str | None:
    """The command asked for with --json (on the command line, or SPACEPORT_JSON), if it
    takes --json: read from the arguments themselves, for a command that click stopped
    before it ran (a usage error) and that must still answer with its one JSON object."""
    args = args[:args.index("--")] if "--" in args else args
    name = next((arg for arg in args if not arg.startswith("-")), None)
    if name not in COMMANDS:
        return None
    try:
        asked = "--json" in args or click.BOOL.convert(
            os.environ.get("SPACEPORT_JSON") or "false", None, None)
    except click.BadParameter:
        asked = False
    if not asked:
        return None
    command = cli.get_command(click.Context(cli), name)
    return name if any(param.name == "as_json" for param in command.params) else None


def _say_error(message: str, hint: str | None = None) -> None:
    err.print("[red]error:[/] " + escape(message))
    if hint:
        err.print(hint, markup=False)
    options.record_error(message, hint)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="spaceport", standalone_mode=False)
        return 0
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # click wraps Ctrl-C / SIGTERM
            return _interrupted()
        err.print("aborted; nothing was changed.")
        options.record_error("aborted at the question; nothing was changed")
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()  # click's usage message, on stderr
        ctx = getattr(exc, "ctx", None)
        options.record_error(exc.format_message(),
                             f"Try '{ctx.command_path} --help' for help." if ctx else None)
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except (KeyboardInterrupt, Interrupted):
        return _interrupted()
    except SpaceportError as exc:
        _say_error(exc.message, exc.hint)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except OSError as exc:
        where = exc.filename or "the storage"
        if is_unavailable(exc):
            error = unavailable(exc, where)
            _say_error(error.message, error.hint)
            return error.exit_code
        _say_error(f"{exc.strerror or exc} ({where})",
                   "The command stopped there. What was written before is complete and "
                   "recorded; run the same command again once the cause is fixed.")
        return 1

