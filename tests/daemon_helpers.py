"""Running ``spaceport run`` as a real process in tests: start, ask, signal, wait.

Every wait is bounded; on a timeout the daemon's log is part of the failure message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from spaceport.safety.lock import DEFAULT_STATUS_DIR, LockInfo

# Small numbers so that a test sees several beats and saves in a few seconds.
FAST = ["--interval", "0.5", "--stale-after", "4", "--retries", "2", "--retry-delay", "0.05",
        "--final-save-deadline", "20", "--jobs", "2"]


class DaemonProcess:
    """One ``spaceport run`` subprocess; its log goes to a file next to the test's data."""

    count = 0

    def __init__(self, tmp_path: Path, primary: str | None, work: str | None, *args: str,
                 env: dict | None = None, fast: bool = True):
        DaemonProcess.count += 1
        n = DaemonProcess.count
        self.port_file = tmp_path / f"port-{n}"
        self.log_path = tmp_path / f"daemon-{n}.log"
        cmd = [sys.executable, "-m", "spaceport", "run", "--listen", "127.0.0.1:0",
               "--port-file", str(self.port_file)]
        if primary:
            cmd += ["--primary", primary]
        if work:
            cmd += ["--work", work]
        cmd += (FAST if fast else []) + list(args)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the daemon writes it; stop() closes it
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={**os.environ, "COLUMNS": "200", **(env or {})})
        self._port: int | None = None
        self.status_headers: dict = {}  # credentials, for a daemon that asks for them

    # -- asking ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            self.wait_for(lambda: self.port_file.exists() and self.port_file.read_text().strip(),
                          20, "the port file")
            self._port = int(self.port_file.read_text())
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path: str, method: str = "GET", headers: dict | None = None):
        """(status code, body bytes, headers); HTTP errors are answers too."""
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {},
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def status(self) -> dict:
        # spaceport's own path whatever else the port serves (--desktop-url)
        code, body, _ = self.request("/spaceport/status", headers=self.status_headers)
        assert code == 200, body
        return json.loads(body)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    # -- waiting ---------------------------------------------------------------------
    def wait_for(self, predicate, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            exited = self.proc.poll() is not None
            try:
                value = predicate()
            except OSError:  # not listening (yet, or any more)
                value = None
            if value:
                return value
            if exited:
                break
            time.sleep(0.05)
        raise AssertionError(f"gave up waiting for {what} (limit {timeout} s); exit code "
                             f"{self.proc.poll()}; log:\n{self.log()}")

    def wait_phase(self, *phases: str, timeout: float = 30) -> dict:
        def check():
            status = self.status()
            return status if status["phase"] in phases else None
        self.port  # noqa: B018 - waits for the server
        return self.wait_for(check, timeout, f"phase {phases}")

    def wait_status(self, predicate, timeout: float, what: str) -> dict:
        def check():
            status = self.status()
            return status if predicate(status) else None
        return self.wait_for(check, timeout, what)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon did not exit within {timeout} s; log:\n"
                                 f"{self.log()}") from None

    def stop(self) -> None:
        """Teardown: whatever state the test left it in."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def read_lock_file(primary: str) -> LockInfo | None:
    path = os.path.join(primary, DEFAULT_STATUS_DIR, "lock")
    try:
        with open(path, "rb") as f:
            return LockInfo.from_json(f.read())
    except FileNotFoundError:
        return None


def read_heartbeat_file(primary: str) -> dict | None:
    """The heartbeat file of the deployment that holds the lock (format 2)."""
    info = read_lock_file(primary)
    if info is None:
        return None
    path = os.path.join(primary, DEFAULT_STATUS_DIR, f"heartbeat.{info.deployment_id}")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def make_tree(root: str, files: int, size: int, prefix: str = "f") -> None:
    os.makedirs(root, exist_ok=True)
    for i in range(files):
        sub = os.path.join(root, f"run{i % 3}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{prefix}{i}.mrc"), "wb") as f:
            f.write(os.urandom(size))
