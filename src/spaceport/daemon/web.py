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
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..errors import SpaceportError, UsageError
from ..wording import quote
from .metrics import DaemonCollector
from .page import render_page
from .state import Backend

log = logging.getLogger("spaceport.web")  # its name from before the package

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
        form = self._drain()
        actions = {"/save": self.server.backend.request_save,
                   "/clone": self.server.backend.request_clone,
                   "/confirm-deletions": self.server.backend.request_confirm_deletions}
        if path not in actions:
            self._json(404, {"error": "not found"})
            return
        refused = self._refuse_unauthorised(form.get("token"))
        if refused:
            return
        code, message = actions[path]()
        log.info("POST %s: %s", path, message)
        if form:  # the page's form: back to the page (relative), which shows the outcome
            self._send(303, b"", "text/plain", {"Location": "./"})
            return
        self._json(code, {"ok": code < 300, "message": message})

    def _refuse_unauthorised(self, form_token: str | None = None) -> bool:
        token = self.server.token
        if not token:
            self._json(403, {"ok": False, "message": "disabled: the daemon was started without "
                                                     "--token or --token-file"})
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        value = value.strip() if scheme.lower() == "bearer" else (form_token or "")
        if not hmac.compare_digest(value.encode(), token.encode()):
            self._send(401, json.dumps({"ok": False, "message": "a valid token is required "
                                        "(Authorization: Bearer <token>)"}).encode(),
                       "application/json", {"WWW-Authenticate": 'Bearer realm="spaceport"'})
            return True
        return False

    def _drain(self) -> dict:
        """Read the body; a form's fields (the page's token form), else {}."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if 0 < length <= 1 << 16 else b""
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        return {}

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
