"""Issue 21: the daemon's page tells the truth, as a person sees it in Chromium.

One real daemon on the OneData-like FUSE mount goes through the states a person must be
able to tell apart: all saved (green), a save that failed with work left unsaved (red, the
unsaved changes counted), deletions held by the guard (amber, a form that asks for the token,
the held deletions counted apart from what the next save takes), and the held deletions
confirmed from that form and moved to the trash (named on the page). A daemon started without
a token holds deletions too: its page has no form (its POSTs are disabled) and says what
carries them out instead, as its log does. Each state is checked in the HTML and photographed
with headless Chromium; the screenshots are kept in the test's folder (their paths are
printed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import run_cli, write
from test_faults import Mount, needs_fuse
from test_web import CHROMIUM, png_size

TOKEN = "tok-page-truth-3c1f"

pytestmark = [needs_fuse,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                 "(apt-get install chromium)")]


def screenshot(url: str, shot, tmp_path) -> None:
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={shot}",
         "--window-size=1100,1300", url],
        capture_output=True, timeout=120)
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    assert png_size(shot) == (1100, 1300) and os.path.getsize(shot) > 20_000
    print(f"screenshot: {shot}")


def page(d) -> str:
    code, body, _ = d.request("/")
    assert code == 200
    return body.decode()


def post_form(d, path: str, fields: dict) -> tuple[int, dict]:
    """A browser's form post: urlencoded, no Authorization header, no redirect followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(d.url + path, data=data, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_the_page_tells_each_state_in_words_and_colour(tmp_path, daemons):
    m = Mount(tmp_path, meta_delay_ms=0.2)
    work = str(tmp_path / "work")
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        for i in range(6):
            write(m.backing, f"Runs/00{i}/extra/out{i}.mrc", os.urandom(20_000 + i))
        write(m.backing, "project.sqlite", b"not really a database")
        d = daemons(m.path, work, "--interval", "1", "--token", TOKEN)
        d.wait_status(lambda s: s["saves"]["ok"] >= 1 and s["pending"] is not None
                      and not s["pending"]["files_to_upload"], 60, "a save, all saved")
        html = page(d)
        assert '<span class="phase good">running</span>' in html
        assert "Unsaved changes: none" in html
        screenshot(d.url + "/", shots / "1-running-all-saved.png", tmp_path)

        # A save that fails (the primary refuses one file for good): red, and the file
        # waits, counted, among the unsaved changes.
        m.fs.inject(op="rename", path="*blocked*", errno="EACCES")
        write(work, "Runs/000/extra/blocked.dat", os.urandom(300_000))
        d.wait_status(lambda s: s["last_save"] and not s["last_save"]["ok"]
                      and s["pending"] and s["pending"]["files_to_upload"] == 1, 60,
                      "a failed save with the file still unsaved")
        html = page(d)
        assert '<span class="phase bad">running · last save failed</span>' in html
        assert "the last save FAILED" in html
        assert "1 file to upload (293.0 KiB)" in html  # binary units, as everywhere
        assert "stopped short" in html  # its bar is not a green "done"
        screenshot(d.url + "/", shots / "2-last-save-failed.png", tmp_path)
        m.fs.clear_faults()
        d.wait_status(lambda s: s["last_save"]["ok"] and s["pending"]
                      and not s["pending"]["files_to_upload"], 60, "the file saved")
        assert os.path.exists(os.path.join(m.backing, "Runs/000/extra/blocked.dat"))

        # An emptied working copy: the guard holds the deletions; amber, and a form.
        for name in os.listdir(work):
            if name != ".spaceport":
                target = os.path.join(work, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
        held = d.wait_status(lambda s: s["held_deletions"] and s["pending"]
                             and s["pending"]["entries_to_delete"]
                             >= s["held_deletions"]["count"], 60, "deletions held, seen")
        html = page(d)
        assert '<span class="phase warn">running · deletions held</span>' in html
        assert '<form method="post" action="confirm-deletions">' in html
        assert 'name="token"' in html and TOKEN not in html
        # The unsaved changes count them apart: the next save does not take them.
        n = held["held_deletions"]["count"]
        assert f"{n} deletions held until you confirm them" in html
        assert "the next save takes them" not in html and "nothing else is unsaved" in html
        assert "started without" not in html
        # The log says the way that works for this daemon: its page's form.
        assert "confirm them on the daemon's page (its form asks for the token)" in d.log()
        assert "started without --token" not in d.log()
        screenshot(d.url + "/", shots / "3-deletions-held.png", tmp_path)
        assert os.path.exists(os.path.join(m.backing, "project.sqlite"))  # held: still there

        # The form, as a browser sends it: a wrong token is refused, the right one confirms
        # and sends the browser back to the page (a relative Location).
        code, _ = post_form(d, "/confirm-deletions", {"token": "wrong"})
        assert code == 401
        assert d.status()["held_deletions"]
        code, headers = post_form(d, "/confirm-deletions", {"token": TOKEN})
        assert code == 303 and headers["Location"] == "./"
        d.wait_status(lambda s: not s["held_deletions"] and s["last_save"]["ok"]
                      and s["last_save"]["deleted"] >= 8, 60, "the deletions carried out")
        assert not os.path.exists(os.path.join(m.backing, "project.sqlite"))
        html = page(d)
        assert '<span class="phase good">running</span>' in html
        assert "to the trash on primary storage" in html and "project.sqlite" in html
        screenshot(d.url + "/", shots / "4-deletions-moved-to-trash.png", tmp_path)
    finally:
        m.stop()


def test_a_daemon_without_token_shows_no_form_and_says_what_confirms(tmp_path, daemons):
    """Without --token the POSTs are disabled, and a command beside the daemon is refused:
    the page has no form, and it (and the log) say what does carry the deletions out."""
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    for i in range(4):
        write(primary, f"Runs/00{i}/out{i}.mrc", os.urandom(5_000 + i))
    write(primary, "project.sqlite", b"not really a database")
    d = daemons(primary, work, "--interval", "1")
    d.wait_status(lambda s: s["saves"]["ok"] >= 1, 60, "a save")
    for name in os.listdir(work):
        if name != ".spaceport":
            target = os.path.join(work, name)
            shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
    held = d.wait_status(lambda s: s["held_deletions"] and s["pending"]
                         and s["pending"]["entries_to_delete"]
                         >= s["held_deletions"]["count"], 60, "deletions held, seen")
    html = page(d)
    assert '<span class="phase warn">running · deletions held</span>' in html
    assert "<form" not in html and 'name="token"' not in html
    assert 'http-equiv="refresh" content="2"' in html  # no token to type: the usual refresh
    assert "started without <code>--token</code>, so they cannot be confirmed" in html
    assert "a command beside a running daemon is refused" in html
    assert "<code>--token</code> or <code>--token-file</code>" in html
    assert f"<code>spaceport deploy {primary} {work}</code>" in html
    assert f"<code>spaceport save --allow-mass-delete {work}</code>" in html
    assert "confirm below" not in html  # no "below": there is nothing to confirm with
    n = held["held_deletions"]["count"]
    assert f"{n} deletions held until you confirm them" in html
    assert "the next save takes them" not in html
    screenshot(d.url + "/", tmp_path / "deletions-held-without-token.png", tmp_path)

    # What the page says is so: the POST is disabled, and the command line is refused
    # beside the daemon (exit 4), which left everything on the primary.
    code, body, _ = d.request("/confirm-deletions", "POST")
    assert code == 403 and b"started without --token" in body
    r = run_cli("save", "--allow-mass-delete", work)
    assert r.code == 4 and "kept by a running spaceport daemon" in r.err
    assert os.path.exists(os.path.join(primary, "project.sqlite"))
    log = d.log()
    assert "its form asks for the token" not in log
    assert "know that this daemon cannot confirm them (it was started without --token" in log
    assert f"'spaceport save --allow-mass-delete {work}'" in log
