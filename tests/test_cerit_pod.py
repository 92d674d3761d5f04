"""The chart's pod in CERIT mode, run, not only rendered (issue 19): the spaceport container's
command and environment from the rendered chart as a real process on this machine, and the
desktop container's wrapper with a stand-in for the image's entrypoint.

Each volume of the pod becomes a folder: a claim is the folder named after the claim (so a
reinstall that names the same claim finds the same folder, as a kept volume is found), an
emptyDir a folder of its own, the Secret a folder holding its items. The environment is the
rendered one with each mount path replaced by its folder; besides paths, only the ports
(free ones instead of 8000 and 5901, which other tests may hold) and the autosave interval
(1 s instead of 120, to see autosaves in a test) are changed, and the pod's name is given
for its fieldRef.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cerit_controller import ROOT, every_check, parse_dump

from chart_helpers import CHART, env_of, helm, merged, portal_values, render

websockets = pytest.importorskip("websockets", reason="the websockets package is not installed")
from websockets.sync.client import connect  # noqa: E402

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
POD = "scipion-spaceport-7d9f6c5b8-x2k4p"


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, proc=None, log=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}" + (f"; log:\n{log()}" if log else ""))


class Pod:
    """One rendering of the chart, its volumes as folders under ``root``."""

    def __init__(self, rendered, root: Path):
        self.rendered, self.root = rendered, root
        self.volumes = {v["name"]: v for v in rendered.pod["volumes"]}
        self.secret = rendered.decoded(rendered.main_secret)
        self.spaceport_port, self.desktop_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        self.extra_env: dict[str, str] = {}  # what a test adds, said where it does

    def folder(self, volume: str) -> Path:
        spec = self.volumes[volume]
        if "persistentVolumeClaim" in spec:
            path = self.root / "claims" / spec["persistentVolumeClaim"]["claimName"]
        elif "emptyDir" in spec:
            path = self.root / "emptydir" / volume
        elif "secret" in spec:
            path = self.root / "secrets" / volume
            path.mkdir(parents=True, exist_ok=True)
            for item in spec["secret"]["items"]:
                (path / item["path"]).write_text(self.secret[item["key"]])
        else:
            raise AssertionError(f"a volume of a kind this test does not map: {spec}")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mapping(self, container: dict) -> list[tuple[str, str]]:
        """(mount path, folder) of a container, the longest mount path first."""
        pairs = [(m["mountPath"], str(self.folder(m["name"])))
                 for m in container.get("volumeMounts", [])]
        return sorted(pairs, key=lambda p: -len(p[0]))

    def environment(self, container: dict) -> dict[str, str]:
        env = {}
        mapping = self.mapping(container)
        for name, item in env_of(container).items():
            if "value" not in item:
                ref = item["valueFrom"]
                if "fieldRef" in ref:
                    assert ref["fieldRef"]["fieldPath"] == "metadata.name"
                    env[name] = POD
                else:
                    env[name] = self.secret[ref["secretKeyRef"]["key"]]
                continue
            value = item["value"]
            for mount, folder in mapping:
                if value == mount or value.startswith(mount + "/"):
                    value = folder + value[len(mount):]
                    break
            env[name] = value
        return env

    def start_spaceport(self, log: Path) -> subprocess.Popen:
        container = self.rendered.container("spaceport")
        env = self.environment(container)
        assert env["SPACEPORT_LISTEN"] == "0.0.0.0:8000"
        env["SPACEPORT_LISTEN"] = f"127.0.0.1:{self.spaceport_port}"
        assert env["SPACEPORT_DESKTOP_URL"] == "http://127.0.0.1:5901"
        env["SPACEPORT_DESKTOP_URL"] = f"http://127.0.0.1:{self.desktop_port}"
        assert env["SPACEPORT_INTERVAL"] == "120"
        env["SPACEPORT_INTERVAL"] = "1"
        env.update(self.extra_env)
        # the image's entrypoint is `spaceport` (deploy/docker/Dockerfile), its args the pod's
        argv = [sys.executable, "-m", "spaceport", *container["args"]]
        full = {"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC), "COLUMNS": "200", **env}
        proc = subprocess.Popen(argv, env=full, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.root)
        self.procs.append(proc)
        return proc

    def start_desktop(self, log: Path) -> subprocess.Popen:
        container = self.rendered.container("desktop")
        command = container["command"]
        assert command[:2] == ["/bin/sh", "-c"] and command[-1] == "/docker-entrypoint.sh"
        stand_in = self.root / "docker-entrypoint.sh"
        stand_in.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TESTS}/desktop_standin.py"'
                            f' {self.desktop_port}\n')
        stand_in.chmod(0o755)
        env = self.environment(container)
        env.update({"PATH": os.environ["PATH"], "READY_POLL_SECONDS": "0.2"})
        proc = subprocess.Popen(["/bin/sh", *command[1:-1], str(stand_in)], env=env,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def ask(self, path: str, auth: bool = True, method: str = "GET"):
        import http.client

        headers = {}
        if auth:
            pair = f"user:{self.secret['vnc-password']}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.spaceport_port, timeout=10)
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError:
            return None, b""
        finally:
            conn.close()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def space(claim: Path, name: str, files: int = 3) -> Path:
    """A claim as csi-onedata mounts it: one folder, named after the space."""
    folder = claim / name
    (folder / "Runs" / "000002_Import").mkdir(parents=True)
    for i in range(files):
        (folder / "Runs" / "000002_Import" / f"mic{i}.mrc").write_bytes(os.urandom(20_000))
    (folder / "project.sqlite").write_bytes(b"SQLite format 3\0" + bytes(2000))
    return folder


@pytest.fixture
def pods(tmp_path):
    started = []

    def make(chart, values) -> Pod:
        pod = Pod(render(chart, values), tmp_path)
        started.append(pod)
        return pod

    yield make
    for pod in started:
        pod.stop()


def test_the_cerit_pod_runs_stages_in_proxies_keeps_cerits_lock_and_saves_on_sigterm(
        chart, pods, tmp_path):
    pod = pods(chart, portal_values())
    # Slowed down (the only variable added) so that the stage-in lasts long enough to be
    # watched: 4 MB of source at 1 MB/s.
    pod.extra_env["SPACEPORT_BWLIMIT"] = "1M"
    project_claim = pod.folder("onedata-project")
    source_claim = pod.folder("onedata-source")
    assert project_claim.name.startswith("pvc-") and "od-project" in project_claim.name
    primary = space(project_claim, "ribosome-2024")
    space(source_claim, "raw-movies", files=200)
    shared = pod.folder("shared")
    status_file = shared / "instance-status"
    spaceport_log, desktop_log = tmp_path / "spaceport.log", tmp_path / "desktop.log"
    spaceport = pod.start_spaceport(spaceport_log)
    desktop = pod.start_desktop(desktop_log)
    log = spaceport_log.read_text
    # before ready: the desktop waits, the address shows progress (with the password only)
    code, body = wait_for(lambda: (lambda a: a if b"staging-in" in a[1] else None)(
        pod.ask("/")), 30, "the progress page during the stage-in", spaceport, log)
    assert code == 200
    assert pod.ask("/", auth=False)[0] == 401
    assert pod.ask("/readyz", auth=False)[0] == 503
    assert not status_file.exists() and b"stand-in" not in desktop_log.read_bytes()
    wait_for(lambda: status_file.exists(), 60, "the ready signal", spaceport, log)
    assert status_file.read_bytes() == b"ok"
    assert pod.ask("/readyz", auth=False)[0] == 200
    # the desktop's wrapper saw it and started the image's entrypoint, now behind the proxy
    wait_for(lambda: b"stand-in desktop on" in desktop_log.read_bytes(), 20,
             "the desktop's entrypoint", desktop)
    code, body = wait_for(lambda: (lambda a: a if b"noVNC stand-in" in a[1] else None)(
        pod.ask("/")), 20, "the desktop through the proxy", spaceport, log)
    with connect(f"ws://127.0.0.1:{pod.spaceport_port}/websockify",
                 additional_headers={"Authorization": "Basic " + base64.b64encode(
                     f"user:{pod.secret['vnc-password']}".encode()).decode()}) as ws:
        ws.send("vnc bytes")
        assert ws.recv(timeout=10) == "vnc bytes"
    status = json.loads(pod.ask("/spaceport/status")[1])
    assert status["primary"].endswith("/ribosome-2024") and status["phase"] == "running"
    # both working volumes filled, at the paths the desktop uses
    work = pod.folder("work-project")
    assert (work / "project.sqlite").is_file()
    assert len(list((pod.folder("work-source") / "Runs" / "000002_Import").iterdir())) == 200
    # the space is the folder in the claim: nothing was created at the claim's root
    assert os.listdir(project_claim) == ["ribosome-2024"]
    assert os.listdir(source_claim) == ["raw-movies"]
    # CERIT's app would refuse the project, now and after 700 s without a refresh
    assert every_check(str(primary)) == {"locked"}
    assert every_check(str(primary), later=700) == {"locked"}
    # the desktop works: an edit and a link are autosaved, with CERIT's link list
    (work / "Runs" / "000002_Import" / "edited.txt").write_text("from the desktop")
    os.symlink("/mnt/vol-dataset/Runs/000002_Import/mic0.mrc",
               work / "Runs" / "000002_Import" / "movie.mrc")
    wait_for(lambda: (primary / "Runs" / "000002_Import" / "edited.txt").exists()
             and (primary / "symlink-dump").exists(), 30, "an autosave", spaceport, log)
    assert parse_dump((primary / "symlink-dump").read_bytes()) == [
        ("/mnt/vol-dataset/Runs/000002_Import/mic0.mrc",
         f"{ROOT}/Runs/000002_Import/movie.mrc")]
    # the pod is deleted: the desktop stops first, then spaceport saves and releases
    (work / "last.txt").write_text("the last edit")
    desktop.send_signal(signal.SIGTERM)
    desktop.wait(timeout=10)
    code, body = pod.ask("/")
    assert code == 200 and b"noVNC stand-in" not in body  # progress again, never an error
    spaceport.send_signal(signal.SIGTERM)
    assert spaceport.wait(timeout=60) == 0, log()
    assert (primary / "last.txt").read_text() == "the last edit"
    assert not status_file.exists()
    assert every_check(str(primary)) == {"free"}
    assert not (primary / ".deployment_status_do_not_delete" / "lock").exists()
    assert (work / "last.txt").exists()  # keepWork: the volume keeps the working copy
    assert "Traceback" not in log()


def test_a_kept_working_copy_serves_its_space_again_and_never_another(chart, pods, tmp_path):
    values = portal_values()
    first = pods(chart, values)
    primary = space(first.folder("onedata-project"), "ribosome-2024")
    space(first.folder("onedata-source"), "raw-movies")
    proc = first.start_spaceport(tmp_path / "first.log")
    wait_for(lambda: (first.folder("shared") / "instance-status").exists(), 60, "ready", proc,
             (tmp_path / "first.log").read_text)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    # the app deleted and installed again, same release, same spaces: the same claims
    again = pods(chart, values)
    assert again.rendered.pod["volumes"] == first.rendered.pod["volumes"]
    (primary / "added-meanwhile.txt").write_text("new on the space")
    proc = again.start_spaceport(tmp_path / "again.log")
    wait_for(lambda: (again.folder("shared") / "instance-status").exists(), 60, "ready", proc,
             (tmp_path / "again.log").read_text)
    log = (tmp_path / "again.log").read_text()
    assert re.search(r"project restored: \d+ files \(1 copied", log), log  # only what changed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    # another project space: the chart names other working volumes ...
    other_id = "0123456789abcdef0123456789abcdef"
    values_b = merged(values, {"od": {"project": {"spaceId": other_id,
                                                  "spaceIdShort": other_id[:8]}}})
    other = pods(chart, values_b)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in other.rendered.pod["volumes"] if "persistentVolumeClaim" in v}
    claims_a = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in first.rendered.pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims["work-project"] != claims_a["work-project"]
    assert claims["work-source"] == claims_a["work-source"]  # same source space
    # ... and were the first one's mounted there all the same, spaceport refuses it
    space(other.folder("onedata-project"), "other-project")
    other.volumes["work-project"] = first.volumes["work-project"]
    proc = other.start_spaceport(tmp_path / "other.log")
    assert proc.wait(timeout=60) == 5
    text = (tmp_path / "other.log").read_text()
    assert "is the working copy of another primary" in text and "ribosome-2024" in text
    assert sorted(os.listdir(other.folder("onedata-project") / "other-project")) == [
        "Runs", "project.sqlite"]  # nothing written on the other space
