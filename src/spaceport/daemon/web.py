"""The daemon's HTTP face: a page for people, JSON for scripts, metrics for Prometheus, and,
with ``--desktop-url``, the application itself behind the same port.

spaceport's own paths, at the root and under ``/spaceport/``: ``/`` progress page
(auto-refresh) · ``/status`` JSON · ``/metrics`` Prometheus text · ``POST /save``,
``POST /clone``, ``POST /confirm-deletions`` (the deletions the deletion guard holds are
carried out by the next save; 409 when none are held) with ``Authorization: Bearer
<token>`` (or the page's form, a ``token`` field); all three 403 on a daemon started
without a token, whose page then shows no form but says how held deletions are carried
out. The probes stay at the root, always open: ``/healthz`` 200 while the daemon lives
(even with OneData unreachable; 503 only if its main loop is stuck), ``/readyz`` 200 only
when stage-in is done; each says a word and the phase, never why (a holder, a path).

With ``--desktop-url`` every other path belongs to the application (:mod:`.proxy`): once
the daemon has been ready and the application answers, it is proxied there, HTTP and
WebSocket; before (and whenever it does not answer) a GET shows the progress page with 200,
never a 5xx (CERIT's ingress replaces 500 and 503 with a page of its own). spaceport's pages
are then only under ``/spaceport/``.

With ``--auth-user`` every path but the probes asks for basic auth (:mod:`.access`); the
API token is accepted in its place, so a script needs one credential.

Every request gets an answer: a malformed request line or header 400, a body with no length
(``Transfer-Encoding``) 411, one too big for spaceport's own paths 413, a client that sends
nothing is dropped after ``REQUEST_TIMEOUT``; no input ever puts a traceback in the log.

The standard library's ThreadingHTTPServer is enough for a page refreshed by a few people,
one desktop session and a kubelet. Everything shown comes from :meth:`State.snapshot`, which
holds no secret; no credential is ever logged, nor are request headers.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..errors import SpaceportError, UsageError
from ..wording import quote
from .access import BasicAuth, bearer_accepts
from .metrics import DaemonCollector
from .page import render_page
from .proxy import DesktopProxy
from .state import Backend

log = logging.getLogger("spaceport.web")  # its name from before the package

PREFIX = "/spaceport"  # spaceport's own pages, whatever else the port serves
PROBES = frozenset({"/healthz", "/readyz"})
MAX_BODY = 1 << 16  # spaceport's own POSTs carry nothing; a proxied body is streamed
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT", "[V6]:PORT" or ":PORT" (all interfaces); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {quote(text)}: give HOST:PORT, e.g. 127.0.0.1:8000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class WebServer:
    """The HTTP server in a background thread."""

    def __init__(self, backend: Backend, listen: str, token: str | None, *,
                 auth: BasicAuth | None = None, desktop: DesktopProxy | None = None):
        host, port = parse_listen(listen)
        server_class = _Server6 if ":" in host else _Server
        try:
            self.httpd = server_class((host, port), _Handler)
        except OSError as exc:
            raise SpaceportError(f"cannot listen on {listen}: {exc.strerror}.",
                                 hint="Give another --listen HOST:PORT (port 0 picks a free "
                                      "one).") from exc
        self.httpd.backend, self.httpd.token = backend, token
        # Whether held deletions can be confirmed here (the page's form, the log's advice);
        # a flag, never the token.
        backend.state.has_token = bool(token)
        self.httpd.auth, self.httpd.desktop = auth, desktop
        self.httpd.registry = CollectorRegistry(auto_describe=True)
        self.httpd.registry.register(DaemonCollector(backend))
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.2,),
                                        name="http", daemon=True)

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        base = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        return base + (PREFIX + "/" if self.httpd.desktop else "/")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: Backend
    token: str | None
    auth: BasicAuth | None
    desktop: DesktopProxy | None
    registry: CollectorRegistry

    def handle_error(self, request, client_address) -> None:
        """A connection's failure: a client gone is one debug line; anything else is a bug
        of ours, logged with its traceback (the connection is closed either way)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("http: connection from %s ended: %s", client_address[0], exc)
        else:
            log.error("http: error while answering %s", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "spaceport"
    sys_version = ""
    # HTTP/1.1: every answer has a length (a proxied one of unknown length closes the
    # connection after it), and a WebSocket client accepts a refusal only in 1.1.
    protocol_version = "HTTP/1.1"
    # A line that is not a request would be taken for HTTP/0.9, whose answers have no status
    # line: the client would get an error page it cannot tell from a page. Nobody speaks 0.9.
    default_request_version = "HTTP/1.0"
    timeout = REQUEST_TIMEOUT  # applies while a request is read; a tunnel lifts it

    # -- routing ----------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._route()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # noqa: N815

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        length = self._body_length()
        if length is None:
            return  # answered (400, 411)
        if path in PROBES:
            self._probe(path, length)
            return
        if not self._authenticated():
            self._drain(length)
            self._send(401, b'{"error": "credentials required"}\n', "application/json",
                       {"WWW-Authenticate": self.server.auth.challenge()})
            return
        own = self._own_path(path)
        if own is not None:
            self._own(own, length)
        elif not (self.server.backend.state.been_ready
                  and self.server.desktop.forward(self, length)):
            self._before_desktop(length)

    def _own_path(self, path: str) -> str | None:
        """spaceport's path for ``path`` ('/status'...), or None if it is the desktop's."""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return path[len(PREFIX):] or "/"
        return None if self.server.desktop else path

    def _before_desktop(self, length: int) -> None:
        """The desktop's path while it does not answer: the progress page (200, never a
        5xx: an ingress may put its own error page in place of one)."""
        self._drain(length)
        if self.command in ("GET", "HEAD"):
            self._page()
        else:
            self._json(409, {"ok": False, "message": "the application is not ready yet; "
                                                     f"see {PREFIX}/"})

    def _probe(self, path: str, length: int) -> None:
        self._drain(length)
        state = self.server.backend.state
        if path == "/healthz":
            # The probes answer anyone: a word and a phase, never the reason (it names the
            # lock's holder, paths, errors); /status, behind the password, gives it.
            health, _why = state.health()
            self._json(503 if health == "stalled" else 200,
                       {"health": health, "phase": state.phase})
        else:
            snap = state.snapshot()
            self._json(200 if snap["ready"] else 503, {"ready": snap["ready"],
                                                       "phase": snap["phase"]})

    def _own(self, path: str, length: int) -> None:
        if self.command == "POST":
            self._action(path, length)
            return
        self._drain(length)
        backend = self.server.backend
        if self.command not in ("GET", "HEAD"):
            self._json(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD, POST"})
        elif path in ("/", "/index.html"):
            self._page()
        elif path == "/status":
            self._json(200, backend.state.snapshot())
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in PROBES:
            self._probe(path, 0)
        else:
            self._json(404, {"error": "not found"})

    def _page(self) -> None:
        page = render_page(self.server.backend.state.snapshot(),
                           has_token=bool(self.server.token))
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def _action(self, path: str, length: int) -> None:
        backend = self.server.backend
        actions = {"/save": backend.request_save, "/clone": backend.request_clone,
                   "/confirm-deletions": backend.request_confirm_deletions}
        if length > MAX_BODY:
            self._refuse(413, f"a request body is at most {MAX_BODY} bytes here")
            return
        form = self._read_form(length)
        if form is None:
            return  # answered 400: a request cut short is never carried out
        if path not in actions:
            self._json(404, {"error": "not found"})
            return
        if self._refuse_unauthorised(form.get("token")):
            return
        code, message = actions[path]()
        log.info("POST %s: %s", path, message)
        if form:  # the page's form: back to the page (relative), which shows the outcome
            self._send(303, b"", "text/plain", {"Location": "./"})
            return
        self._json(code, {"ok": code < 300, "message": message})

    # -- credentials ------------------------------------------------------------------
    def _authenticated(self) -> bool:
        """Basic auth, if the daemon asks for it; the API token counts as well."""
        auth = self.server.auth
        given = self.headers.get("Authorization")
        return auth is None or auth.accepts(given) or bearer_accepts(given, self.server.token)

    def _refuse_unauthorised(self, form_token: str | None = None) -> bool:
        """An action needs the API token: as a Bearer header, or (the page's form) a field."""
        token = self.server.token
        if not token:
            self._json(403, {"ok": False, "message": "disabled: the daemon was started without "
                                                     "--token or --token-file"})
            return True
        form_ok = form_token is not None and hmac.compare_digest(form_token.encode(),
                                                             token.encode())
        if not (bearer_accepts(self.headers.get("Authorization"), token) or form_ok):
            self._send(401, json.dumps({"ok": False, "message": "a valid token is required "
                                        "(Authorization: Bearer <token>)"}).encode(),
                       "application/json", {"WWW-Authenticate": 'Bearer realm="spaceport"'})
            return True
        return False

    # -- the request's body -----------------------------------------------------------
    def _body_length(self) -> int | None:
        """The body's length from Content-Length (0 without one, as HTTP says of a request);
        None once a 400 (not a length) or a 411 (Transfer-Encoding: a body of unknown length,
        which this server does not read) was answered."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse(411, "send the body with a Content-Length")
            return None
        values = {v.strip() for v in self.headers.get_all("Content-Length") or ()}
        if not values:
            return 0
        if len(values) > 1 or not next(iter(values)).isdigit():
            self._refuse(400, "Content-Length is not one number")
            return None
        return int(next(iter(values)))

    def _read_form(self, length: int) -> dict | None:
        """Read an action's body: a form's fields (the page's token form), else {}; None once
        a 400 was answered for a body that ended before its Content-Length."""
        body = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
        if len(body) < length:
            self._refuse(400, f"the body ended after {len(body)} of its {length} bytes")
            return None
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        return {}

    def _drain(self, length: int) -> None:
        """Read a body nobody needs, so the client sees its answer (at most MAX_BODY: a
        bigger one is cut by closing the connection after the answer)."""
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    # -- answers ----------------------------------------------------------------------
    def _refuse(self, code: int, message: str) -> None:
        self.close_connection = True
        self._json(code, {"ok": False, "message": message}, {"Connection": "close"})

    def _json(self, code: int, data, headers: dict | None = None) -> None:
        self._send(code, (json.dumps(data, default=str) + "\n").encode(), "application/json",
                   headers)

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
        # Method, path without the query, status: never headers (credentials are in one).
        # A request that could not be read has neither command nor path.
        command = getattr(self, "command", None) or "-"
        path = (getattr(self, "path", None) or "-").split("?", 1)[0]
        log.debug("%s %s %s", command, path, code)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the http.server API
        log.debug("http: " + format, *args)
