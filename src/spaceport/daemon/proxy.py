"""The application's page behind spaceport's port (``--desktop-url``): a small reverse
proxy, HTTP and WebSocket, so one address shows the progress during the stage-in and the
desktop after it (docs/CONTAINER.md, "One address").

Why a proxy in the daemon, written with the standard library: the pod has one port that the
Service and the Ingress reach, and what it must answer changes at runtime (progress, then
the desktop, then progress again during the final save), which neither a Kubernetes route
nor the ingress's default backend can follow. What it forwards is small: noVNC's static
files and one WebSocket (``/websockify``), to one known upstream on the same pod.
A library made for proxying (aiohttp, mitmproxy) would bring an event loop or a server of
its own beside the daemon's threads; ``http.client`` streams an HTTP response, and a
WebSocket, once the upstream answers the upgrade, is bytes both ways: a tunnel of two
copying loops, with no need to read its frames.

* HTTP: the request (method, path, headers less the hop-by-hop ones and the basic-auth
  ``Authorization`` meant for spaceport, body streamed) goes to the desktop; its answer is
  streamed back as it comes (a response of any size is never held in memory), then the
  connection closes (the end of an answer of unknown length).
* WebSocket (``Upgrade`` requests): the request head goes to the desktop as it came, then
  bytes are copied both ways until either side closes; idle for hours is fine.
* A desktop that does not accept the connection (not started yet, restarting, stopped for
  the final save) is "not answering": nothing was sent to the client, and the caller shows
  the progress page instead.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

from ..errors import UsageError

log = logging.getLogger("spaceport.web")

CONNECT_TIMEOUT = 3.0  # the desktop is on the same pod: it answers at once or not at all
READ_TIMEOUT = 600.0  # an HTTP answer the desktop started may take this long per read
CHUNK = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1) and ours: never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})


class DesktopProxy:
    """Forwards requests to the application at ``url`` (``http://HOST:PORT[/PREFIX]``)."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
            raise UsageError(f"--desktop-url {url!r}: give http://HOST:PORT, e.g. "
                             "http://127.0.0.1:5901")
        try:
            self.port = parts.port or 80
        except ValueError:
            raise UsageError(f"--desktop-url {url!r}: the port is not a number.") from None
        self.host, self.url = parts.hostname, url
        self.prefix = parts.path.rstrip("/")
        self.netloc = f"[{self.host}]:{self.port}" if ":" in self.host else \
            f"{self.host}:{self.port}"

    def forward(self, handler: BaseHTTPRequestHandler, body_length: int) -> bool:
        """Answer ``handler``'s request from the desktop. False if the desktop does not
        answer: nothing was sent to the client (the caller answers instead)."""
        try:
            upstream = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT)
        except OSError:
            return False
        try:
            if _wants_upgrade(handler):
                self._tunnel(handler, upstream)
                return True
            return self._http(handler, upstream, body_length)
        finally:
            upstream.close()

    # -- HTTP ------------------------------------------------------------------------
    def _http(self, h: BaseHTTPRequestHandler, upstream: socket.socket, length: int) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=READ_TIMEOUT)
        conn.sock = upstream
        upstream.settimeout(READ_TIMEOUT)
        try:
            conn.putrequest(h.command, self.prefix + h.path, skip_host=True,
                            skip_accept_encoding=True)
            for name, value in self._headers(h, upgrade=False):
                conn.putheader(name, value)
            conn.endheaders()
            _copy_body(h, conn, length)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            log.debug("desktop at %s did not answer %s %s: %s", self.url, h.command,
                      h.path.split("?", 1)[0], exc)
            return False
        h.send_response(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP | {"date", "server"}:
                h.send_header(name, value)
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        if h.command != "HEAD":
            try:
                while chunk := resp.read1(CHUNK):
                    h.wfile.write(chunk)
            except OSError as exc:  # either side went away mid-answer: nothing to repair
                log.debug("proxied answer to %s cut: %s", h.path.split("?", 1)[0], exc)
        return True

    def _headers(self, h: BaseHTTPRequestHandler, *, upgrade: bool) -> list[tuple[str, str]]:
        named = {n.strip().lower() for n in h.headers.get("Connection", "").split(",")}
        drop = (HOP_BY_HOP | named | {"host", "authorization"}) - (
            {"connection", "upgrade"} if upgrade else set())
        out = [("Host", self.netloc)]
        out += [(n, v) for n, v in h.headers.items() if n.lower() not in drop]
        out += [("X-Forwarded-For", h.client_address[0]),
                ("X-Forwarded-Host", h.headers.get("Host", ""))]
        return out

    # -- WebSocket (any Upgrade) -------------------------------------------------------
    def _tunnel(self, h: BaseHTTPRequestHandler, upstream: socket.socket) -> None:
        head = [f"{h.command} {self.prefix + h.path} HTTP/1.1"]
        head += [f"{n}: {v}" for n, v in self._headers(h, upgrade=True)]
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        upstream.settimeout(None)  # a WebSocket may be idle for hours
        h.connection.settimeout(None)
        h.close_connection = True
        log.debug("%s %s: tunnel to the desktop", h.command, h.path.split("?", 1)[0])
        inbound = threading.Thread(target=_pump_client, args=(h, upstream), daemon=True,
                                   name="proxy-in")
        inbound.start()
        try:
            while data := upstream.recv(CHUNK):
                h.connection.sendall(data)
        except OSError:
            pass
        finally:  # one side ended: end both, so the other loop returns too
            for sock in (upstream, h.connection):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            inbound.join(timeout=5)


def _wants_upgrade(h: BaseHTTPRequestHandler) -> bool:
    named = {n.strip().lower() for n in h.headers.get("Connection", "").split(",")}
    return "upgrade" in named and bool(h.headers.get("Upgrade"))


def _copy_body(h: BaseHTTPRequestHandler, conn: http.client.HTTPConnection, length: int):
    left = length
    while left > 0:
        chunk = h.rfile.read(min(CHUNK, left))
        if not chunk:
            raise http.client.IncompleteRead(b"", left)
        conn.send(chunk)
        left -= len(chunk)


def _pump_client(h: BaseHTTPRequestHandler, upstream: socket.socket) -> None:
    """Client to desktop: what the handler's buffered reader holds first, then the socket."""
    try:
        while data := h.rfile.read1(CHUNK):
            upstream.sendall(data)
    except (OSError, ValueError):
        pass
    finally:
        try:
            upstream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
