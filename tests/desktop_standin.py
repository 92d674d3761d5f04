"""A stand-in for the desktop's web side (noVNC served by websockify): plain HTTP and a
WebSocket on one port. The WebSocket side is the ``websockets`` library's own protocol
(sans-I/O), so what spaceport's proxy carries is checked by an implementation that is not
spaceport's.

Paths: ``/`` a small page naming the stand-in · ``/big`` ``BIG`` bytes sent with chunked
encoding, the first ``CHUNK`` of them and then, only once ``gate`` is set (or after
``GATE_TIMEOUT``), the rest: a proxy that holds the answer until it is complete makes the
reader wait for the gate's timeout · ``/headers`` the request's headers as JSON · any
WebSocket path: every message echoed back · POST: the body's length and sha256.

In a test: ``StandIn().start()``; as a desktop image's entrypoint (the pod test):
``python desktop_standin.py PORT``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from websockets.frames import Opcode
from websockets.server import ServerProtocol

BIG = 32 * 1024 * 1024 + 12345
CHUNK = 64 * 1024
GATE_TIMEOUT = 20.0
PAGE = b"<!doctype html><title>noVNC stand-in</title><p>the desktop</p>\n"


_PERIOD = bytes(i * 7 % 251 for i in range(251)) * (CHUNK // 251 + 2)


def big_bytes(start: int, n: int) -> bytes:
    """Bytes ``start`` .. ``start + n`` of ``/big`` (n <= CHUNK): a pattern of a prime
    period, so that no lost or doubled buffer goes unseen."""
    return _PERIOD[start % 251:start % 251 + n]


BIG_SHA256 = hashlib.sha256(b"".join(big_bytes(i, min(CHUNK, BIG - i))
                                     for i in range(0, BIG, CHUNK))).hexdigest()


class StandIn:
    def __init__(self, port: int = 0):
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.standin = self
        self.port = self.server.server_address[1]
        self.gate = threading.Event()
        self.requests: list[tuple[str, dict]] = []  # (path, headers) as received
        self.waited_at_gate: bool | None = None
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "StandIn":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    @property
    def standin(self) -> StandIn:
        return self.server.standin

    def do_GET(self) -> None:  # noqa: N802
        self.standin.requests.append((self.path, dict(self.headers.items())))
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
        elif self.path == "/big":
            self._big()
        elif self.path == "/headers":
            self._answer(200, json.dumps(dict(self.headers.items())).encode(),
                         "application/json")
        else:
            self._answer(200, PAGE, "text/html")

    def do_POST(self) -> None:  # noqa: N802
        self.standin.requests.append((self.path, dict(self.headers.items())))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(200, json.dumps({"length": len(body), "sha256":
                                      hashlib.sha256(body).hexdigest()}).encode(),
                     "application/json")

    def _answer(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _big(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, BIG, CHUNK):
            data = big_bytes(start, min(CHUNK, BIG - start))
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            if start == 0:
                self.standin.waited_at_gate = not self.standin.gate.wait(GATE_TIMEOUT)
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def _websocket(self) -> None:
        """The handshake and an echo, by websockets' own protocol object."""
        head = f"GET {self.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        proto = ServerProtocol()
        proto.receive_data(head.encode("latin-1"))
        (request,) = proto.events_received()
        proto.send_response(proto.accept(request))
        sock = self.connection
        sock.sendall(b"".join(proto.data_to_send()))
        pending = b""  # a client sends nothing before the 101 it waits for
        while True:
            if pending:
                proto.receive_data(pending)
            for frame in proto.events_received():
                if frame.opcode is Opcode.TEXT:
                    proto.send_text(frame.data)
                elif frame.opcode is Opcode.BINARY:
                    proto.send_binary(frame.data)
            out = proto.data_to_send()
            if out:
                sock.sendall(b"".join(out))
            if proto.close_expected() or proto.state.name == "CLOSED":
                break
            pending = self.rfile.read1(1 << 16)
            if not pending:
                proto.receive_eof()
                break
        self.close_connection = True


if __name__ == "__main__":  # the desktop image's stand-in entrypoint
    standin = StandIn(int(sys.argv[1]))
    print(f"stand-in desktop on {standin.port}", flush=True)
    standin.server.serve_forever()
