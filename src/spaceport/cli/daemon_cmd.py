"""``spaceport run`` (the daemon) and ``spaceport wait`` (block until it is ready)."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request

import click
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from ..daemon.logs import setup_daemon_logging
from ..daemon.state import (
    FAILED,
    LOCK_LOST,
    READY_PHASES,
    RELEASED,
    STOPPED,
    DaemonTracker,
    progress_text,
)
from ..errors import UsageError
from .options import (
    cerit_option,
    env_option,
    err,
    exclude_options,
    jobs_option,
    log_to_work,
    make_options,
    parse_rate,
    resolve_space,
    safety_flag,
    space_folder_option,
    stale_after_option,
    status_dir_option,
)

log = logging.getLogger("spaceport")

DEAD_PHASES = frozenset({FAILED, LOCK_LOST, RELEASED, STOPPED})
# --wait-for-lock looks at a held lock this often (or every heartbeat, if that is sooner).
LOCK_RETRY_SECONDS = 10.0


def read_token(token: str | None, token_file: str | None) -> str | None:
    if token and token_file:
        raise UsageError("give --token or --token-file, not both.")
    if token_file:
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {token_file}: {exc.strerror}.") \
                from None
        if not token:
            raise UsageError(f"the token file {token_file} is empty.")
    return token or None


# -- run -----------------------------------------------------------------------------
def daemon_options(fn):
    for decorator in reversed([
        env_option("--primary", required=True, type=click.Path(file_okay=False),
                   help="The project folder on primary storage (a OneData mount)."),
        env_option("--work", required=True, type=click.Path(file_okay=False),
                   help="The working copy the application uses."),
        env_option("--source", type=click.Path(file_okay=False),
                   help="Raw data to clone one way, read-only, onto --source-work."),
        env_option("--source-work", type=click.Path(file_okay=False),
                   help="Where the source is cloned (with --source)."),
        env_option("--source-in-background", is_flag=True,
                   help="Be ready once the project is in; the source's clone goes on behind "
                        "it (the files the project links to first, then the rest in path "
                        "order, each file complete when it appears; a notice at the root of "
                        "--source-work says what is missing). An import sees only what has "
                        "arrived: use streaming imports, or 'spaceport wait --source'."),
        env_option("--interval", type=click.FloatRange(min=0.1), default=300.0,
                   show_default=True, help="Seconds between autosaves."),
        env_option("--listen", default="127.0.0.1:8000", show_default=True,
                   help="HOST:PORT of the progress page, /status, /metrics and probes. Port "
                        "0 picks a free port (see --port-file)."),
        env_option("--port-file", type=click.Path(dir_okay=False),
                   help="Write the port actually listened on into this file, as soon as the "
                        "server is up."),
        env_option("--ready-file", type=click.Path(dir_okay=False),
                   help="Written (JSON) when stage-in is done; removed when staging out."),
        env_option("--instance-status-file", type=click.Path(dir_okay=False),
                   help="Written 'ok' (no newline) when stage-in is done, removed when "
                        "staging out: what CERIT's desktop image waits for "
                        "(/mnt/shared/instance-status)."),
        space_folder_option("--primary (and --source)"),
        cerit_option,
        env_option("--desktop-url", metavar="URL",
                   help="The application's own web page (noVNC, e.g. http://127.0.0.1:5901). "
                        "Until it answers there once stage-in is done, every path shows the "
                        "progress page (HTTP 200); then every path is proxied to it, HTTP and "
                        "WebSocket, and spaceport's pages are under /spaceport/ (/healthz and "
                        "/readyz stay at the root)."),
        env_option("--auth-user", metavar="NAME",
                   help="Ask for HTTP basic auth (this user, the password of "
                        "--auth-password-file) on every path but /healthz and /readyz."),
        env_option("--auth-password-file", type=click.Path(dir_okay=False),
                   help="The basic-auth password, the file's whole content (one trailing "
                        "newline ignored)."),
        env_option("--final-save-deadline", type=click.FloatRange(min=1), default=600.0,
                   show_default=True, help="Seconds the final save may take, retries "
                                           "included, after SIGTERM."),
        env_option("--keep-work", is_flag=True,
                   help="Keep the working copies after the final save."),
        env_option("--token", help="Token for POST /save, /clone and /confirm-deletions (the "
                                   "page's form asks for it; without a token all three are "
                                   "disabled). Prefer --token-file or SPACEPORT_TOKEN: a "
                                   "command line is visible to all users."),
        env_option("--token-file", type=click.Path(dir_okay=False),
                   help="Read the token from this file (a mounted Kubernetes Secret)."),
        env_option("--instance", help="Name of this instance (pod or VM) for the lock."),
        stale_after_option(help="Seconds without a heartbeat change after which the lock "
                                "looks abandoned; the heartbeat beats every quarter of it."),
        safety_flag("--take-over-stale",
                    help="Take over a lock whose holder looks dead: its heartbeat did not "
                         "change for its stale-after time, or its process is provably gone."),
        env_option("--wait-for-lock", metavar="SECONDS", type=click.FloatRange(min=0),
                   default=0, show_default=True,
                   help="When another deployment or CERIT's app holds the project, wait up "
                        "to SECONDS for it instead of refusing (exit 3): the page and /status "
                        "show the phase waiting-for-lock, naming the holder, the lock is "
                        "looked at again every 10 s (every quarter of --stale-after if "
                        "shorter), and stage-in starts once it is free. Nothing is taken "
                        "while waiting: SIGTERM then exits 0. 0 refuses at once; 'inf' waits "
                        "until the holder is gone. A stale lock is handled as without it "
                        "(--take-over-stale)."),
        env_option("--bwlimit", metavar="RATE",
                   help="Limit the file data copied (stage-in, source clone, autosaves) to "
                        "RATE bytes per second, all parallel copies together (e.g. 50M; K, "
                        "M, G are powers of 1024), to spare a shared provider. Lifted for "
                        "the final save."),
        env_option("--linger", type=click.FloatRange(0), default=0.0, show_default=True,
                   help="After a failure, keep serving the page this many seconds so people "
                        "and 'spaceport wait' see why."),
        env_option("--log-format", type=click.Choice(["text", "json"]), default="text",
                   show_default=True, help="One line per event: text for people, json for "
                                           "log collectors."),
        status_dir_option(),
        env_option("--retries", default=5, show_default=True, type=click.IntRange(1, 100),
                   help="Attempts for a storage call that fails transiently."),
        env_option("--retry-delay", default=0.5, show_default=True, type=click.FloatRange(0),
                   help="First backoff delay in seconds."),
        env_option("-v", "--verbose", count=True, help="Debug log output."),
        jobs_option,
        exclude_options,
    ]):
        fn = decorator(fn)
    return fn


@click.command()
@daemon_options
@click.pass_context
def run(ctx, **p):
    """The daemon for containers and VMs: lock, stage in, autosave, save back on SIGTERM.

    \b
    Phases: locking [-> waiting-for-lock, with --wait-for-lock, while another holds the
    project] -> staging-in (source clone and project restore in parallel) -> ready
    (--ready-file written, /readyz 200) -> running (autosave every --interval, lock
    heartbeat) -> staging-out (on SIGTERM/SIGINT: final save with retries within
    --final-save-deadline) -> released (lock removed, work cleaned unless --keep-work).

    \b
    HTTP on --listen: /  progress page, /status JSON, /metrics Prometheus, /healthz, /readyz,
    POST /save, /clone and /confirm-deletions with 'Authorization: Bearer TOKEN' (each also
    under /spaceport/). With --desktop-url, / is the application once it answers, and spaceport's
    pages are /spaceport/, /spaceport/status ...; --auth-user asks for basic auth.
    Every option can be set as SPACEPORT_<OPTION>, e.g. SPACEPORT_PRIMARY.

    Exit codes: 0 released (or stopped before ready), 1 error (a failed final save keeps the
    lock and the working copy), 3 locked by another deployment (at once, or once
    --wait-for-lock is over), 4 lock lost, 5 refused for safety, 6 primary unavailable.
    """
    from ..daemon.access import read_basic_auth
    from ..daemon.config import (
        DaemonConfig,
        check_layout,
        remove_file,
        write_file_atomic,
    )
    from ..daemon.lifecycle import Daemon
    from ..daemon.proxy import DesktopProxy
    from ..daemon.web import WebServer

    if bool(p["source"]) != bool(p["source_work"]):
        raise click.UsageError("give --source and --source-work together.")
    if p["source_in_background"] and not p["source"]:
        raise click.UsageError("--source-in-background needs --source and --source-work.")
    token = read_token(p["token"], p["token_file"])
    auth = read_basic_auth(p["auth_user"], p["auth_password_file"])
    tracker = DaemonTracker(bwlimit=parse_rate(p["bwlimit"]))
    opts = make_options(ctx.params, tracker=tracker)
    setup_daemon_logging(p["log_format"], p["verbose"],
                         [s for s in (token, auth and auth.password) if s])
    log_to_work(p["work"], "run")  # beside the container's log, on the working volume
    opts.live_lock = True
    opts.heartbeat_interval = max(0.5, opts.stale_after / 4)
    for side in ("primary", "source"):
        if p[side]:
            p[side] = resolve_space(p[side], p["space_folder"], f"--{side}", opts)
    paths = {k: p[k] and os.path.abspath(p[k]) for k in (
        "primary", "work", "source", "source_work", "ready_file", "instance_status_file")}
    cfg = DaemonConfig(primary=paths["primary"], work=paths["work"], source=paths["source"],
                       source_work=paths["source_work"], interval=p["interval"],
                       source_in_background=p["source_in_background"],
                       final_save_deadline=p["final_save_deadline"], keep_work=p["keep_work"],
                       take_over_stale=p["take_over_stale"], ready_file=paths["ready_file"],
                       instance_status_file=paths["instance_status_file"], linger=p["linger"],
                       wait_for_lock=p["wait_for_lock"],
                       lock_retry=min(LOCK_RETRY_SECONDS, opts.heartbeat_interval))
    check_layout(cfg)
    daemon = Daemon(cfg, opts, tracker)
    server = WebServer(daemon, p["listen"], token, auth=auth,
                       desktop=DesktopProxy(p["desktop_url"]) if p["desktop_url"] else None)
    daemon.state.url = server.url
    server.start()
    if p["port_file"]:
        write_file_atomic(p["port_file"], f"{server.port}\n")
    log.info("progress page on %s (listening on %s)", server.url, p["listen"],
             extra={"fields": {"event": "listening", "port": server.port}})
    try:
        code = daemon.run()
    finally:
        server.stop()
        remove_file(p["port_file"])
    log.info("exit %d", code, extra={"fields": {"event": "exit", "exit_code": code}})
    raise SystemExit(code)  # cli.main() turns it into the process's exit code


# -- wait ----------------------------------------------------------------------------
@click.command()
@env_option("--url", default="http://127.0.0.1:8000", show_default=True,
            help="Base URL of the daemon (its --listen address), or its progress page's "
                 "URL (.../spaceport/ behind a desktop).")
@env_option("--timeout", type=click.FloatRange(0), default=0.0, show_default=True,
            help="Give up after this many seconds (0: never).")
@env_option("--poll", type=click.FloatRange(0.05), default=1.0, show_default=True,
            help="Seconds between two questions to the daemon.")
@env_option("--gone-after", type=click.FloatRange(0), default=30.0, show_default=True,
            help="Fail if the daemon, once seen, stops answering for this long.")
@env_option("--token-file", type=click.Path(dir_okay=False),
            help="The daemon's API token, for a daemon that asks for basic auth "
                 "(--auth-user): sent as 'Authorization: Bearer'.")
# No SPACEPORT_SOURCE for this flag: in a container that variable is run's --source folder.
@click.option("--source", "source", is_flag=True, allow_from_autoenv=False,
              help="Wait also until the source data is all in (a daemon started with "
                   "--source-in-background is ready before). Exit 0 at once if the daemon "
                   "clones no source.")
@click.pass_context
def wait(ctx, url, timeout, poll, gone_after, token_file, source):
    """Block, with a live progress bar, until the daemon at URL is ready (exit 0).

    Exits 1 if the daemon fails, stops, loses its lock, or is gone (or, with --source, if
    the source's clone fails or stops); while nothing answers yet (the daemon is starting),
    it keeps waiting up to --timeout. What a desktop start script runs instead of polling.
    """
    token = read_token(None, token_file)
    raise SystemExit(Waiter(base_url(url), timeout, poll, gone_after, token,
                            source=source).run())


def base_url(url: str) -> str:
    """The daemon's base URL from what a person was shown: its --listen address, or its
    page's URL, which a daemon in front of a desktop serves under /spaceport/ (the notice of
    an incomplete source names that one)."""
    from ..daemon.web import PREFIX  # the server's module: not imported for other commands

    url = url.rstrip("/")
    return url.removesuffix(PREFIX)


class Waiter:
    def __init__(self, url: str, timeout: float, poll: float, gone_after: float,
                 token: str | None = None, *, source: bool = False):
        self.url, self.timeout, self.poll, self.gone_after = url, timeout, poll, gone_after
        self.token = token
        self.source = source
        self.said_ready = False
        self.progress = Progress(TextColumn("[bold]{task.description:<16}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"),
                                 TextColumn("{task.fields[detail]}"), console=err,
                                 transient=False)
        self.bars: dict[str, TaskID] = {}
        self.phase: str | None = None

    def run(self) -> int:
        start = time.monotonic()
        last_answer: float | None = None
        with self.progress:
            while True:
                now = time.monotonic()
                status = self._ask()
                if status is not None:
                    last_answer = now
                    code = self._show(status)
                    if code is not None:
                        return code
                elif last_answer is not None and now - last_answer > self.gone_after:
                    return self._fail(f"the daemon at {self.url} stopped answering; see its log")
                if self.timeout and now - start > self.timeout:
                    return self._fail(f"not ready after {self.timeout:g} s"
                                      + (f" (phase {self.phase})" if self.phase else
                                         f"; nothing answers at {self.url}"))
                time.sleep(self.poll)

    def _ask(self) -> dict | None:
        # /spaceport/status: spaceport's own whatever else the port serves (--desktop-url)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(self.url + "/spaceport/status", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None  # not up yet, restarting, or busy: ask again

    def _show(self, status: dict) -> int | None:
        phase = status.get("phase")
        if phase != self.phase:
            self.phase = phase
            self.progress.console.print(f"spaceport: {phase}" + (
                f" — {status['message']}" if status.get("message") else ""), markup=False)
        for task in status.get("tasks", []):
            self._bar(task)
        if phase in READY_PHASES:
            if not self.said_ready:
                self.progress.console.print("ready", markup=False)
                self.said_ready = True
            return self._source_done(status) if self.source else 0
        if phase in DEAD_PHASES:
            reason = status.get("health_reason") or status.get("message") or phase
            return self._fail(f"the daemon did not get ready: {phase} ({reason})")
        return None

    def _source_done(self, status: dict) -> int | None:
        """0 once the source is all in, 1 if its clone failed or stopped, None meanwhile."""
        source = status.get("source_progress")
        if source is None:
            self.progress.console.print("no source is cloned by this daemon", markup=False)
            return 0
        if source["complete"]:
            self.progress.console.print("source data complete", markup=False)
            return 0
        if source["stage"] in ("failed", "stopped"):
            return self._fail(f"the source's clone {source['stage']}; see {self.url}")
        return None

    def _bar(self, task: dict) -> None:
        name = task["name"]
        total = max(task["bytes_total"], 1)
        done = total if task["finished"] else task["bytes_done"]
        detail = progress_text(task, share=False).removeprefix(name + " ")  # the bar has it
        if name not in self.bars:
            self.bars[name] = self.progress.add_task(name, total=total, detail=detail)
        self.progress.update(self.bars[name], total=total, completed=done, detail=detail)

    def _fail(self, message: str) -> int:
        self.progress.console.print(f"error: {message}", markup=False, style="red")
        return 1
