"""The daemon's HTTP face: a page for people, JSON for scripts, metrics for Prometheus.

``/`` progress page (auto-refresh) · ``/status`` JSON · ``/metrics`` Prometheus text ·
``/healthz`` 200 while the daemon lives (even with OneData unreachable; 503 only if its main
loop is stuck) · ``/readyz`` 200 only when stage-in is done · ``POST /save``, ``POST /clone``,
``POST /confirm-deletions`` (the deletions the deletion guard holds are carried out by the
next save; 409 when none are held) with ``Authorization: Bearer <token>``.

The standard library's ThreadingHTTPServer is enough for a page refreshed by a few people
and probed by a kubelet. Everything shown comes from :meth:`State.snapshot`, which holds no
secret; the token is compared in constant time and never logged, nor are request headers.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)

from ..errors import SpaceportError, UsageError
from ..wording import count, duration, quote
from .state import PHASES, DaemonTracker, State, human_bytes

log = logging.getLogger("spaceport.web")  # its name from before the package

REFRESH_SECONDS = 2


class Backend(Protocol):
    state: State
    tracker: DaemonTracker

    def request_save(self) -> tuple[int, str]: ...

    def request_clone(self) -> tuple[int, str]: ...

    def request_confirm_deletions(self) -> tuple[int, str]: ...


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT", "[V6]:PORT" or ":PORT" (all interfaces); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {quote(text)}: give HOST:PORT, e.g. 127.0.0.1:8000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class WebServer:
    """The HTTP server in a background thread."""

    def __init__(self, backend: Backend, listen: str, token: str | None):
        host, port = parse_listen(listen)
        server_class = _Server6 if ":" in host else _Server
        try:
            self.httpd = server_class((host, port), _Handler)
        except OSError as exc:
            raise SpaceportError(f"cannot listen on {listen}: {exc.strerror}.",
                                 hint="Give another --listen HOST:PORT (port 0 picks a free "
                                      "one).") from exc
        self.httpd.backend, self.httpd.token = backend, token
        self.httpd.registry = CollectorRegistry(auto_describe=True)
        self.httpd.registry.register(DaemonCollector(backend))
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.2,),
                                        name="http", daemon=True)

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend
    token: str | None
    registry: CollectorRegistry


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "spaceport"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        backend = self.server.backend
        if path in ("/", "/index.html"):
            self._send(200, render_page(backend.state.snapshot()).encode(),
                       "text/html; charset=utf-8")
        elif path == "/status":
            self._json(200, backend.state.snapshot())
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            health, why = backend.state.health()
            self._json(503 if health == "stalled" else 200, {"health": health, "reason": why,
                                                             "phase": backend.state.phase})
        elif path == "/readyz":
            snap = backend.state.snapshot()
            self._json(200 if snap["ready"] else 503, {"ready": snap["ready"],
                                                       "phase": snap["phase"]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        self._drain()
        actions = {"/save": self.server.backend.request_save,
                   "/clone": self.server.backend.request_clone,
                   "/confirm-deletions": self.server.backend.request_confirm_deletions}
        if path not in actions:
            self._json(404, {"error": "not found"})
            return
        refused = self._refuse_unauthorised()
        if refused:
            return
        code, message = actions[path]()
        log.info("POST %s: %s", path, message)
        self._json(code, {"ok": code < 300, "message": message})

    def _refuse_unauthorised(self) -> bool:
        token = self.server.token
        if not token:
            self._json(403, {"ok": False, "message": "disabled: the daemon was started without "
                                                     "--token or --token-file"})
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        value = value.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(value.encode(), token.encode()):
            self._send(401, json.dumps({"ok": False, "message": "a valid token is required "
                                        "(Authorization: Bearer <token>)"}).encode(),
                       "application/json", {"WWW-Authenticate": 'Bearer realm="spaceport"'})
            return True
        return False

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 16:
            self.rfile.read(length)

    def _json(self, code: int, data) -> None:
        self._send(code, (json.dumps(data, default=str) + "\n").encode(), "application/json")

    def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        # Method, path without the query, status: never headers (the token is in one).
        log.debug("%s %s %s", self.command, self.path.split("?", 1)[0], code)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the http.server API
        log.debug("http: " + format, *args)


class DaemonCollector:
    """Turns the daemon's state into Prometheus metrics at each scrape."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self):
        snap = self.backend.state.snapshot()
        moved_bytes, moved_files = self.backend.tracker.totals()
        yield _labelled(CounterMetricFamily, "spaceport_transferred_bytes",
                        "Bytes copied, by task (deploy, clone, autosave, final save...).",
                        "task", moved_bytes)
        yield _labelled(CounterMetricFamily, "spaceport_transferred_files",
                        "Files copied, by task.", "task", moved_files)
        saves = snap["saves"]
        yield _labelled(CounterMetricFamily, "spaceport_saves", "Saves to the primary, by "
                        "result.", "result", {"ok": saves["ok"], "failed": saves["failed"]})
        yield SummaryMetricFamily("spaceport_save_duration_seconds", "Time spent in saves.",
                                  count_value=saves["ok"] + saves["failed"],
                                  sum_value=saves["seconds_total"])
        last = snap["last_save"]
        yield GaugeMetricFamily("spaceport_last_save_duration_seconds", "Duration of the "
                                "last save.", value=last["seconds"] if last else 0)
        yield GaugeMetricFamily("spaceport_last_successful_save_timestamp_seconds",
                                "Unix time of the last successful save (0: none yet).",
                                value=snap["last_successful_save"] or 0)
        yield _labelled(CounterMetricFamily, "spaceport_errors", "Errors, by where they "
                        "happened (save, lock, clone, daemon).", "where", snap["error_counts"])
        yield _labelled(GaugeMetricFamily, "spaceport_phase", "1 for the current phase.",
                        "phase", {p: int(p == snap["phase"]) for p in PHASES})
        yield GaugeMetricFamily("spaceport_ready", "1 when stage-in is done.",
                                value=int(snap["ready"]))
        yield GaugeMetricFamily("spaceport_healthy", "1 when nothing is failing.",
                                value=int(snap["health"] == "ok"))
        for key, doc in (("bytes_total", "Bytes to copy"), ("bytes_done", "Bytes copied")):
            yield _labelled(GaugeMetricFamily, f"spaceport_task_{key}",
                            f"{doc} by the latest run of each task.", "task",
                            {t["name"]: t[key] for t in snap["tasks"]})


def _labelled(family, name: str, doc: str, label: str, values: dict):
    metric = family(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric


# -- the page ------------------------------------------------------------------------
TASK_LABELS = {"deploy": "Project restore", "clone": "Source clone", "autosave": "Autosave",
               "requested save": "Save on request (POST /save)", "final save": "Final save",
               "save unsaved work": "Saving earlier work"}
PHASE_TEXT = {
    "starting": "Starting up.",
    "locking": "Checking that nobody else has this project open.",
    "staging-in": "Copying the project onto this machine. The application starts when "
                  "this is done.",
    "ready": "Everything is in place.",
    "running": "The application can run. Your work is saved to primary storage regularly.",
    "staging-out": "Saving your work to primary storage one last time.",
    "released": "All work is saved and the project is free to be opened elsewhere.",
    "stopped": "Stopped before the project was ready; nothing needed saving.",
    "failed": "Something went wrong; see the errors below and the log.",
    "lock-lost": "Another deployment took this project: nothing is saved any more.",
}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  background:#f4f6f9;color:#1c2230}
main{max-width:62rem;margin:0 auto;padding:1.5rem 1rem}
h1{font-size:1.5rem;margin:0}h2{font-size:1.05rem;margin:0 0 .8rem}
.sub{color:#596275;margin:.2rem 0 1.2rem;word-break:break-all}
section{background:#fff;border:1px solid #dfe3ea;border-radius:.6rem;padding:1rem 1.2rem;
  margin-bottom:1rem}
.phase{display:inline-block;padding:.3rem .8rem;border-radius:1rem;font-weight:700;
  background:#e2e7f0;margin-right:.6rem}
.good{background:#d5f3de;color:#15612f}.busy{background:#fff1c7;color:#6d4f00}
.bad{background:#fcdcdc;color:#8c1717}
.task{margin-bottom:1rem}.task:last-child{margin-bottom:0}
.row{display:flex;justify-content:space-between;gap:1rem;flex-wrap:wrap}
.name{font-weight:600}
.bar{height:1.2rem;background:#e7ebf1;border-radius:.6rem;overflow:hidden;margin:.35rem 0}
.fill{height:100%;background:#3474e0}.fill.done{background:#25a25a}
.facts{color:#4a5366;font-size:.92rem}
table{border-collapse:collapse}td{padding:.2rem 1.2rem .2rem 0;vertical-align:top}
td:first-child{color:#596275}
.err{color:#8c1717}.muted{color:#6a7386}footer{color:#6a7386;font-size:.85rem}
"""


def e(value) -> str:
    return html.escape("" if value is None else str(value))


def render_page(s: dict) -> str:
    """The progress page; every value from the state goes through html.escape."""
    phase = s["phase"]
    tone = {"ready": "good", "running": "good", "released": "good", "failed": "bad",
            "lock-lost": "bad", "stopped": "bad"}.get(phase, "busy")
    health = "" if s["health"] == "ok" else \
        f'<p class="err">Health: {e(s["health"])} — {e(s["health_reason"])}</p>'
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>spaceport · {e(phase)}</title><style>{STYLE}</style></head>
<body><main>
<h1>spaceport</h1>
<div class="sub">{e(s["primary"])} → {e(s["work"])}{_source_line(s)}</div>
<section><span class="phase {tone}">{e(phase)}</span>{e(_phase_text(s))}
<p class="muted">{e(s["message"])} · since {e(_ago(s["now"] - s["phase_since"]))}</p>{health}
</section>
<section><h2>Progress</h2>{_tasks(s)}</section>
<section><h2>Saves</h2>{_saves(s)}</section>{_held(s)}
<section><h2>Errors</h2>{_errors(s)}</section>
<footer>Updated {e(_clock(s["now"]))} · refreshes every {REFRESH_SECONDS} s · spaceport
{e(s["version"])}{_deployment(s)}</footer>
</main></body></html>
"""
    return body


def _phase_text(s: dict) -> str:
    text = PHASE_TEXT.get(s["phase"], "")
    if s["phase"] == "staging-in" and s.get("source"):
        text = text.replace("the project onto", "the project and the source data onto")
    return text


def _source_line(s: dict) -> str:
    if not s.get("source"):
        return ""
    return f'<br>source {e(s["source"])} → {e(s["source_work"])} (read-only copy)'


def _deployment(s: dict) -> str:
    if not s.get("deployment_id"):
        return ""
    return f' · deployment {e(s["deployment_id"][:8])}' + (" (resumed)" if s["resumed"] else "")


def _tasks(s: dict) -> str:
    if not s["tasks"]:
        return '<p class="muted">Nothing copied yet.</p>'
    parts = []
    for t in s["tasks"]:
        label = TASK_LABELS.get(t["name"], t["name"].capitalize())
        done = t["finished"] is not None
        scanning = not done and not t["bytes_total"] and not t["files_total"]
        if done or scanning:
            share = 1.0 if done else 0.0
        elif t["bytes_total"]:
            share = t["bytes_done"] / t["bytes_total"]
        else:  # only empty files to copy
            share = t["files_done"] / t["files_total"]
        if scanning:
            state, facts = "listing files…", "finding out what to copy"
        else:
            state = "done" if done else f"{share:.0%}"
            facts = (f"{human_bytes(t['bytes_done'])} of {human_bytes(t['bytes_total'])} · "
                     f"{t['files_done']} of {t['files_total']} files · "
                     f"{human_bytes(t['rate'])}/s")
            if not done and t.get("eta"):
                facts += f" · about {_ago(t['eta'])} left"
            if done:
                facts += f" · took {_ago(t['finished'] - t['started'])}"
        parts.append(
            f'<div class="task"><div class="row"><span class="name">{e(label)}</span>'
            f'<span>{e(state)}</span></div><div class="bar"><div class="fill'
            f'{" done" if done else ""}" style="width:{share * 100:.1f}%"></div></div>'
            f'<div class="facts">{e(facts)}</div></div>')
    return "".join(parts)


def _saves(s: dict) -> str:
    rows = []
    last = s["last_save"]
    if last:
        result = "succeeded" if last["ok"] else f"FAILED: {last.get('error', '')}"
        label = TASK_LABELS.get(last["task"], last["task"])
        what = f"{label} {_ago(s['now'] - last['time'])} ago, {result}"
        if last["ok"]:
            what += (f" ({count(last.get('uploaded', 0), 'file')}, "
                     f"{human_bytes(last.get('bytes', 0))} uploaded in {last['seconds']:.1f} s)")
        rows.append(("Last save", what))
    else:
        rows.append(("Last save", "none yet"))
    if s["last_successful_save"] and not (last and last["ok"]):
        rows.append(("Last good save", f"{_ago(s['now'] - s['last_successful_save'])} ago"))
    if s["next_save_in"] is not None:
        rows.append(("Next save", f"in {_ago(s['next_save_in'])}"))
    rows.append(("Saves", f"{s['saves']['ok']} succeeded, {s['saves']['failed']} failed; "
                          f"autosave every {_ago(s['interval'])}"))
    if s.get("last_clone"):
        c = s["last_clone"]
        rows.append(("Last clone", f"{_ago(s['now'] - c['time'])} ago, "
                                   + ("succeeded" if c["ok"] else "failed")))
    return "<table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows) \
        + "</table>"


def _held(s: dict) -> str:
    """Deletions the deletion guard holds, and special files not saved: a section only when
    there are any."""
    parts = []
    held = s.get("held_deletions")
    if held:
        paths = "".join(f"<li>{e(p)}</li>" for p in held["sample"][:10])
        more = held["count"] - min(len(held["sample"]), 10)
        parts.append(
            f'<section><h2>Deletions held</h2><p class="err">{e(count(held["count"], "deletion"))}'
            f' held since {e(held.get("since"))}: the working copy looks wrong: '
            f'{e(held["reason"])}.</p><p>Everything else is saved; these files stay on primary '
            f'storage. If they were deleted on purpose, confirm with <code>POST '
            f'/confirm-deletions</code> (token).</p><ul>{paths}</ul>'
            + (f'<p class="muted">… and {e(more)} more</p>' if more > 0 else "") + "</section>")
    special = s.get("special") or []
    if special:
        items = "".join(f"<li>{e(p)}</li>" for p in special[:20])
        parts.append(f'<section><h2>Not saved</h2><p>{e(count(len(special), "special file"))} '
                     f'(fifo, socket, device) cannot be saved:</p><ul>{items}</ul></section>')
    return "".join(parts)


def _errors(s: dict) -> str:
    if not s["errors"]:
        return '<p class="muted">None.</p>'
    items = "".join(f'<li><span class="muted">{e(_clock(x["time"]))} {e(x["where"])}:</span> '
                    f'<span class="err">{e(x["message"])}</span></li>' for x in s["errors"][:10])
    return f"<ul>{items}</ul>"


def _ago(seconds: float | None) -> str:
    return duration(seconds)  # the same units as the daemon's messages and log


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t))
