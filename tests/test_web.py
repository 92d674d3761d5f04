"""The daemon's HTTP side: page, /status, /metrics, probes, token-protected actions,
``spaceport wait``, and the page as a person sees it in a browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from conftest import run_cli
from daemon_helpers import make_tree
from prometheus_client.parser import text_string_to_metric_families

from spaceport.daemon.config import DaemonConfig
from spaceport.daemon.page import render_page
from spaceport.daemon.state import DaemonTracker, RateLimit, State
from spaceport.daemon.web import parse_listen
from spaceport.errors import UsageError

TOKEN = "tok-9a7c3e-web-tests-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}



@pytest.fixture
def slow_project(tmp_path):
    """A project and a source that take several seconds to stage in at 2 MiB/s."""
    primary, source = str(tmp_path / "primary"), str(tmp_path / "source")
    make_tree(primary, 10, 1_000_000)
    make_tree(source, 10, 1_000_000, prefix="raw")
    return {"primary": primary, "work": str(tmp_path / "work"), "source": source,
            "source_work": str(tmp_path / "source_work")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def staging(status: dict) -> bool:
    return status["phase"] == "staging-in" and sum(t["bytes_done"] for t in status["tasks"]) > 0


# -- endpoints ---------------------------------------------------------------------------
def test_endpoints_during_stage_in_and_when_running(slow_project, daemons):
    p = slow_project
    d = daemons(p["primary"], p["work"], "--source", p["source"], "--source-work",
                p["source_work"], "--bwlimit", "4M", "--token", TOKEN)
    d.wait_status(staging, 30, "the stage-in")
    code, body, headers = d.request("/readyz")
    assert code == 503 and json.loads(body) == {"ready": False, "phase": "staging-in"}
    code, body, _ = d.request("/healthz")
    assert code == 200 and json.loads(body)["health"] == "ok"
    code, page, headers = d.request("/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"staging-in" in page and b"Project restore" in page and b"Source clone" in page
    assert b'http-equiv="refresh"' in page
    assert d.request("/nothing-here")[0] == 404
    status = d.wait_phase("running")
    assert d.request("/readyz")[0] == 200
    assert {t["name"] for t in status["tasks"]} >= {"deploy", "clone"}
    for task in status["tasks"]:
        assert {"bytes_total", "bytes_done", "files_total", "files_done", "rate", "eta"} \
            <= task.keys()
    d.wait_status(lambda s: s["last_successful_save"], 20, "an autosave")
    _, text, headers = d.request("/metrics")
    assert headers["Content-Type"].startswith("text/plain")
    metrics = {m.name: m for m in text_string_to_metric_families(text.decode())}
    for name in ("spaceport_transferred_bytes", "spaceport_transferred_files",
                 "spaceport_last_successful_save_timestamp_seconds",
                 "spaceport_save_duration_seconds", "spaceport_errors", "spaceport_phase",
                 "spaceport_saves", "spaceport_ready"):
        assert name in metrics, name
    moved = {s.labels["task"]: s.value for s in metrics["spaceport_transferred_bytes"].samples
             if s.name.endswith("_total")}
    assert moved["deploy"] == 10_000_000 and moved["clone"] == 10_000_000
    phase = {s.labels["phase"]: s.value for s in metrics["spaceport_phase"].samples}
    assert phase["running"] == 1 and sum(phase.values()) == 1
    assert metrics["spaceport_last_successful_save_timestamp_seconds"].samples[0].value > 0


def test_post_actions_need_the_token(slow_project, daemons, tmp_path):
    d = daemons(slow_project["primary"], slow_project["work"], "--token", TOKEN)
    d.wait_phase("running")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        code, body, answer = d.request("/save", "POST", headers)
        assert code == 401 and answer["WWW-Authenticate"].startswith("Bearer"), headers
    code, body, _ = d.request("/save", "POST", AUTH)
    assert code == 202 and json.loads(body)["ok"]
    code, body, _ = d.request("/clone", "POST", AUTH)  # no source configured
    assert code == 409 and b"no source" in body
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    other = daemons(slow_project["primary"], str(tmp_path / "work2"))  # started without token
    other.wait_phase("running")
    assert other.request("/save", "POST", AUTH)[0] == 403


def test_no_secret_in_any_response_or_log(slow_project, daemons, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    d = daemons(slow_project["primary"], slow_project["work"], "--token-file", str(token_file),
                "-v", env={"SPACEPORT_LOG_FORMAT": "json"})
    d.wait_phase("running")
    answers = [d.request(path) for path in ("/", "/status", "/metrics", "/healthz", "/readyz",
                                            f"/?token={TOKEN}", "/missing")]
    answers += [d.request(path, "POST", headers)
                for path in ("/save", "/clone", "/confirm-deletions", "/nope")
                for headers in ({}, AUTH, {"Authorization": f"Bearer {TOKEN}x"})]
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    for _, body, headers in answers:
        assert TOKEN.encode() not in body and TOKEN not in json.dumps(headers)
    log = d.log()
    assert "POST /save" in log and "GET /status" in log  # requests are logged, -v
    assert TOKEN not in log


def test_page_escapes_everything_it_shows():
    evil = "<script>alert(1)</script>"
    cfg = DaemonConfig(primary=f"/p/{evil}", work="/w/<b>bold</b>", source=f"/s/{evil}",
                       source_work="/sw")
    tracker = DaemonTracker()
    tracker.start(evil, files=3, nbytes=300)
    tracker.advance(evil, files=1, nbytes=100)
    state = State(cfg, tracker)
    state.set_phase("staging-in", f"message {evil}")
    state.problem("save", f"error with {evil} and \"quotes\" & ampersands")
    page = render_page(state.snapshot())
    assert "<script>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&amp; ampersands" in page
    assert "33%" in page


def test_page_lists_held_deletions_and_special_files_escaped():
    from spaceport.commands.save import SaveReport

    evil = "<script>alert(1)</script>"
    state = State(DaemonConfig(primary="/p", work="/w"), DaemonTracker())
    assert "Deletions held" not in render_page(state.snapshot())
    held = {"count": 25, "files": 20, "reason": f"2 of the 3 top-level entries ({evil})",
            "since": "2026-11-29T10:00:00Z", "top_level": {evil: 20},
            "sample": [f"Runs/{evil}/{i}" for i in range(20)]}
    state.record_save(0, report=SaveReport(held=held, held_new=True, special=[f"Tmp/{evil}"]))
    snap = state.snapshot()
    assert snap["held_deletions"]["count"] == 25 and snap["special"] == [f"Tmp/{evil}"]
    page = render_page(snap)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Deletions held" in page and "25 deletions" in page and "… and 15 more" in page
    assert 'action="confirm-deletions"' in page and "1 special file" in page  # relative
    assert "deletions held" in page  # the badge says it too
    state.record_save(0, report=SaveReport())  # a later save held nothing
    assert "Deletions held" not in render_page(state.snapshot())


HELD = {"count": 21, "files": 13, "reason": "none of the 13 files the index knows is left",
        "since": "2026-11-29T10:00:00Z", "top_level": {"Runs": 20}, "sample": ["Runs"]}


def pending(deletions: int, uploads: int = 0) -> dict:
    return {"new_dirs": 0, "files_to_upload": uploads, "bytes_to_upload": 1024 * uploads,
            "files_to_delete": deletions, "entries_to_delete": deletions, "links": 0,
            "links_changed": False, "unchanged": 0, "moves": 0, "last_change_ns": None,
            "recent": []}


def test_unsaved_changes_count_held_deletions_apart():
    from spaceport.commands.save import SaveReport

    state = State(DaemonConfig(primary="/p", work="/w"), DaemonTracker())
    state.record_pending(pending(21))
    page = render_page(state.snapshot())  # nothing held: the next save takes them
    assert "21 deletions</b>" in page and "the next save takes them" in page
    state.record_save(0, report=SaveReport(held=HELD, held_new=True))
    page = render_page(state.snapshot())
    assert "Unsaved changes: <b>21 deletions held until you confirm them</b>" in page
    assert "the next save takes them" not in page and "nothing else is unsaved" in page
    state.record_pending(pending(23, uploads=1))  # more deleted since, and a new file
    page = render_page(state.snapshot())
    assert ("1 file to upload (1.0 KiB), 2 other deletions (the deletion guard weighs them "
            "at the next save), 21 deletions held until you confirm them") in page
    assert "the next save takes the rest" in page
    state.record_confirmed(21)  # confirmed: the save that starts now takes them
    assert "21 deletions confirmed, for the save under way" in render_page(state.snapshot())


def test_page_without_a_token_has_no_form_and_says_what_confirms():
    from spaceport.commands.save import SaveReport

    state = State(DaemonConfig(primary="/p/<x>", work="/w"), DaemonTracker())
    state.record_save(0, report=SaveReport(held=HELD, held_new=True))
    with_token = render_page(state.snapshot(), has_token=True)
    assert '<form method="post" action="confirm-deletions">' in with_token
    assert "confirm below with the daemon's token" in with_token
    assert "started without" not in with_token
    page = render_page(state.snapshot(), has_token=False)
    assert "<form" not in page and 'name="token"' not in page and "confirm below" not in page
    assert "started without <code>--token</code>, so they cannot be confirmed" in page
    assert "<code>spaceport deploy /p/&lt;x&gt; /w</code>" in page  # escaped
    assert "<code>spaceport save --allow-mass-delete /w</code>" in page
    assert 'content="2"' in page and 'content="60"' in with_token  # time to type a token


def test_the_log_says_how_held_deletions_are_confirmed_by_this_daemon(caplog):
    from spaceport.commands.save import SaveReport

    said = {}
    for has_token in (True, False):
        state = State(DaemonConfig(primary="/p", work="/w"), DaemonTracker())
        state.has_token = has_token
        caplog.clear()
        with caplog.at_level("WARNING", logger="spaceport.daemon"):
            state.record_save(0, report=SaveReport(held=HELD, held_new=True))
        said[has_token] = " ".join(r.getMessage() for r in caplog.records
                                   if "held" in r.getMessage())
    assert "confirm them on the daemon's page (its form asks for the token) or with POST " \
        "/confirm-deletions (token)" in said[True]
    assert "without --token" not in said[True]
    assert "form" not in said[False] and "POST /confirm-deletions" not in said[False]
    assert "this daemon cannot confirm them (it was started without --token, and a command " \
        "beside it is refused)" in said[False]
    assert "start it again with --token or --token-file" in said[False]
    assert "'spaceport deploy /p /w', delete them again, and run 'spaceport save " \
        "--allow-mass-delete /w'" in said[False]


def test_page_says_source_data_only_when_there_is_a_source():
    for source, expected in ((None, "Copying the project onto this machine"),
                             ("/s", "Copying the project and the source data onto")):
        cfg = DaemonConfig(primary="/p", work="/w", source=source,
                           source_work="/sw" if source else None)
        state = State(cfg, DaemonTracker())
        state.set_phase("staging-in")
        page = render_page(state.snapshot())
        assert expected in page
        assert ("source data" in page) == bool(source)


def test_page_names_a_requested_save_and_speaks_one_unit_of_time(slow_project, daemons):
    d = daemons(slow_project["primary"], slow_project["work"], "--token", TOKEN,
                "--interval", "300")
    d.wait_phase("running")
    assert d.request("/save", "POST", AUTH)[0] == 202
    status = d.wait_status(lambda s: s["last_save"], 20, "the requested save")
    assert status["last_save"]["task"] == "requested save"
    page = d.request("/")[1].decode()
    assert "Save on request (POST /save)" in page and "Autosave" not in page
    assert page.count("autosave every 5 min") == 2  # the phase's line and the saves table
    assert "300 s" not in page and "300.0" not in page


def test_wait_shows_each_percentage_once():
    from spaceport.cli.daemon_cmd import Waiter

    waiter = Waiter("http://127.0.0.1:1", 0, 1, 1)
    task = {"name": "deploy", "bytes_total": 1000, "bytes_done": 520, "files_total": 10,
            "files_done": 5, "finished": None, "rate": 100.0, "eta": 4.8}
    waiter._bar(task)
    detail = waiter.progress.tasks[0].fields["detail"]
    assert "%" not in detail and "5 of 10 files" in detail and "about 4.8 s left" in detail
    assert waiter.progress.tasks[0].percentage == 52.0  # the bar's own column shows it


def test_health_goes_503_only_when_the_main_loop_is_stuck():
    state = State(DaemonConfig(primary="/p", work="/w"), DaemonTracker())
    assert state.health()[0] == "ok"
    state.problem("save", "the primary storage is not reachable")
    assert state.health() == ("degraded", "save: the primary storage is not reachable")
    state.solved("save")
    state._tick -= 3600  # as if the main loop had hung an hour ago
    assert state.health()[0] == "stalled"


def test_listen_addresses():
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen(":9000") == ("0.0.0.0", 9000)
    for bad in ("8000", "host:", "host:http", "h:70000"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_rate_limit_spreads_bytes_over_time():
    limit = RateLimit(1_000_000)
    start = time.monotonic()
    for _ in range(3):
        limit.take(100_000)
    assert time.monotonic() - start >= 0.25  # 300 kB at 1 MB/s: at least 0.3 s, less jitter
    limit.lift()
    start = time.monotonic()
    limit.take(10_000_000)
    assert time.monotonic() - start < 1


# -- spaceport wait ----------------------------------------------------------------------
def test_wait_keeps_waiting_for_a_daemon_not_started_yet_then_exits_0(slow_project, daemons):
    port = free_port()
    waiter = subprocess.Popen([sys.executable, "-m", "spaceport", "wait", "--url",
                               f"http://127.0.0.1:{port}", "--poll", "0.2", "--timeout", "90"],
                              stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    time.sleep(1)  # connection refused meanwhile: wait must not give up
    assert waiter.poll() is None
    d = daemons(slow_project["primary"], slow_project["work"], "--bwlimit", "4M", "--listen",
                f"127.0.0.1:{port}")
    _, err = waiter.communicate(timeout=90)
    assert waiter.returncode == 0, err.decode()
    assert d.status()["ready"]
    text = err.decode()
    assert "staging-in" in text and "ready" in text


def test_wait_exits_1_when_the_daemon_fails(slow_project, daemons, tmp_path):
    assert run_cli("deploy", slow_project["primary"], str(tmp_path / "elsewhere")).code == 0
    port = free_port()
    d = daemons(slow_project["primary"], slow_project["work"], "--linger", "10", "--listen",
                f"127.0.0.1:{port}")
    r = run_cli("wait", "--url", f"http://127.0.0.1:{port}", "--poll", "0.2", "--timeout", "60")
    assert r.code == 1 and "failed" in r.err and "already deployed" in r.err
    d.signal(signal.SIGTERM)  # ends the linger
    assert d.wait_exit() == 3


def test_wait_exits_1_when_the_daemon_vanishes_or_never_answers(slow_project, daemons):
    d = daemons(slow_project["primary"], slow_project["work"], "--bwlimit", "1M")
    d.wait_status(staging, 30, "the stage-in")
    waiter = subprocess.Popen([sys.executable, "-m", "spaceport", "wait", "--url", d.url,
                               "--poll", "0.2", "--gone-after", "1"], stderr=subprocess.PIPE)
    time.sleep(1)
    d.signal(signal.SIGKILL)
    _, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1 and b"stopped answering" in err
    r = run_cli("wait", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1",
                "--poll", "0.2")
    assert r.code == 1 and "nothing answers" in r.err


# -- what a person sees --------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") \
    or shutil.which("google-chrome")


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                    "chromium)")
def test_a_person_can_watch_the_stage_in_in_a_browser(slow_project, daemons, tmp_path):
    p = slow_project
    d = daemons(p["primary"], p["work"], "--source", p["source"], "--source-work",
                p["source_work"], "--bwlimit", "1M")
    d.wait_status(lambda s: staging(s) and all(t["bytes_done"] for t in s["tasks"]), 30,
                  "both copies under way")
    shot = tmp_path / "stage-in.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={shot}",
         "--window-size=1200,900", d.url + "/"],
        capture_output=True, timeout=120)
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    assert png_size(shot) == (1200, 900)
    assert os.path.getsize(shot) > 20_000  # a rendered page, not a blank one
    assert d.status()["phase"] == "staging-in"  # the picture shows the stage-in
    print(f"screenshot of the stage-in: {shot}")


def test_the_token_option_names_every_action_it_guards():
    """`spaceport run --help`: the token guards POST /save, /clone and /confirm-deletions
    (web.py's actions), not the first two only."""
    import inspect

    from spaceport.cli.daemon_cmd import run
    from spaceport.daemon import web

    actions = ("/save", "/clone", "/confirm-deletions")
    assert all(f'"{a}"' in inspect.getsource(web._Handler._action) for a in actions)
    (help_text,) = [p.help for p in run.params if p.name == "token"]
    assert "POST /save, /clone and /confirm-deletions" in help_text
