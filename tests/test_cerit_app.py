"""spaceport beside CERIT-SC's own Scipion app (issues 19 and 20): CERIT's lock kept as a
mirror of spaceport's, CERIT's ``symlink-dump`` written at the saves (the way back), and
the space as the single folder inside a claim (``--space-folder``).

CERIT's side is its controller's code written again in tests/cerit_controller.py: these
tests ask it, never spaceport's readers, what CERIT's app would do.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import pytest
from cerit_controller import LOCK, ROOT, every_check, parse_dump, restore_links, symlink_search
from conftest import run_cli
from daemon_helpers import read_lock_file
from hypothesis import given, settings
from hypothesis import strategies as st

from spaceport.safety.lock import DEFAULT_STATUS_DIR

STATUS = DEFAULT_STATUS_DIR
DAY = 86400


def project(root: str) -> None:
    """A small Scipion-like project with links of every kind CERIT's format can and cannot
    hold; the absolute ones point into the working copy once it is deployed (see link_up)."""
    os.makedirs(os.path.join(root, "Runs", "000002_Import", "extra"))
    os.makedirs(os.path.join(root, "Logs"))
    with open(os.path.join(root, "project.sqlite"), "wb") as f:
        f.write(b"SQLite format 3\0" + b"x" * 100)
    with open(os.path.join(root, "Logs", "project.log"), "w") as f:
        f.write("log\n")


def link_up(work: str) -> dict[str, str]:
    """Links made in a working copy as Scipion makes them: relative, absolute into the copy
    itself, absolute into the source data, and two CERIT's format cannot hold."""
    extra = os.path.join(work, "Runs", "000002_Import", "extra")
    links = {
        "Runs/000002_Import/extra/rel.mrc": "../../../Logs/project.log",
        "Runs/000002_Import/extra/self.mrc": os.path.join(work, "project.sqlite"),
        "Runs/000002_Import/extra/movie.tif": "/mnt/vol-dataset/movies/m1.tif",
        "Runs/000002_Import/extra/with space.mrc": "../../../Logs/project.log",
        "Runs/000002_Import/extra/to-space.mrc": "/mnt/vol-dataset/my movies/m2.tif",
    }
    for rel, target in links.items():
        os.symlink(target, os.path.join(work, rel))
    assert os.path.isdir(extra)
    return links


def assert_held(space: str) -> None:
    """Every version of CERIT's controller refuses the project: now, and as if 700 s and a
    day had passed with nobody refreshing anything."""
    for later in (0, 700, DAY):
        assert every_check(space, later=later) == {"locked"}, later


def assert_free(space: str) -> None:
    assert every_check(space) == {"free"}


# --- the lock mirror ---------------------------------------------------------------------


def test_the_command_line_keeps_cerits_lock_while_it_holds_the_project(tmp_path):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    assert_free(primary)
    r = run_cli("deploy", "--cerit", primary, work)
    assert r.code == 0, r.err
    assert_held(primary)
    # spaceport's lock records the mirror; the mirror names spaceport's deployment
    info = read_lock_file(primary)
    assert info.cerit_lock == LOCK
    with open(os.path.join(primary, LOCK), "rb") as f:
        mirror = json.loads(f.read())
    assert mirror["deployment_id"] == info.deployment_id and mirror["kind"]
    # no process refreshes anything between commands: nothing in it can age
    stamp = os.stat(os.path.join(primary, LOCK)).st_mtime_ns
    with open(os.path.join(work, "new.txt"), "w") as f:
        f.write("new")
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert os.stat(os.path.join(primary, LOCK)).st_mtime_ns == stamp
    assert_held(primary)
    # spaceport knows it as its own: a status of the working copy finds nothing foreign
    r = run_cli("status", work)
    assert r.code == 0 and "CERIT" not in r.out, r.out
    r = run_cli("undeploy", work)
    assert r.code == 0, r.err
    assert_free(primary)
    assert read_lock_file(primary) is None
    assert os.path.isdir(os.path.join(primary, "scipion-docker"))  # CERIT's folder stays


def test_a_primary_cerits_app_used_gets_the_mirror_without_being_told(tmp_path):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    os.makedirs(os.path.join(primary, "scipion-docker"))  # CERIT's app was here
    assert run_cli("deploy", primary, work).code == 0
    assert_held(primary)
    assert run_cli("undeploy", work).code == 0
    assert_free(primary)


def test_negative_control_a_plain_primary_is_not_held_for_cerit(tmp_path):
    # Without the mirror, CERIT's app would open a project spaceport holds: the checks above
    # say "locked" because of the mirror, not because of spaceport's own lock.
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    assert run_cli("deploy", primary, work).code == 0
    assert read_lock_file(primary) is not None
    assert_free(primary)
    assert read_lock_file(primary).cerit_lock is None
    assert run_cli("undeploy", work).code == 0


def test_the_daemon_keeps_cerits_lock_and_releases_it(tmp_path, daemons):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    d = daemons(primary, work, env={"SPACEPORT_CERIT": "1"})
    d.wait_phase("running")
    assert_held(primary)
    d.wait_status(lambda s: s["saves"]["ok"] >= 2, 20, "two autosaves")
    assert_held(primary)
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert_free(primary)
    assert read_lock_file(primary) is None


@pytest.mark.parametrize("content", [b"", b"1700000000", str(int(time.time())).encode(),
                                     b"garbage"])
def test_cerits_own_lock_is_refused_and_nothing_is_left(tmp_path, content):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    os.makedirs(os.path.join(primary, "scipion-docker"))
    with open(os.path.join(primary, LOCK), "wb") as f:
        f.write(content)
    r = run_cli("deploy", "--cerit", primary, work)
    assert r.code == 3, r.err
    assert "CERIT" in r.err
    with open(os.path.join(primary, LOCK), "rb") as f:
        assert f.read() == content  # untouched
    assert read_lock_file(primary) is None and not os.path.exists(work)


def test_cerits_app_taking_the_project_stops_the_saves(tmp_path):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    # CERIT's newer controller after its "take over": a fresh time, written over the file
    with open(os.path.join(primary, LOCK), "w") as f:
        f.write(str(int(time.time())))
    with open(os.path.join(work, "late.txt"), "w") as f:
        f.write("x")
    r = run_cli("save", work)
    assert r.code == 4, r.err
    assert "CERIT's app took" in r.err
    assert not os.path.exists(os.path.join(primary, "late.txt"))  # nothing written


def test_a_mirror_removed_by_hand_is_written_again_at_the_next_save(tmp_path):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    os.unlink(os.path.join(primary, LOCK))
    assert_free(primary)
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert "written again" in r.err
    assert_held(primary)
    assert run_cli("undeploy", work).code == 0


def test_unlock_takes_the_mirror_with_the_lock_and_an_orphan_is_named(tmp_path):
    primary, work, other = (str(tmp_path / n) for n in ("space", "work", "other"))
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    deployment = read_lock_file(primary).deployment_id
    r = run_cli("unlock", "--force", "--yes", primary)
    assert r.code == 0, r.err
    assert_free(primary)
    # a mirror whose spaceport lock is gone (removed by hand) is held, and said to be ours
    assert run_cli("deploy", "--cerit", primary, other).code == 0
    os.rename(os.path.join(primary, STATUS, "lock"), str(tmp_path / "lock-away"))
    r = run_cli("deploy", primary, str(tmp_path / "third"))
    assert r.code == 3
    assert "as spaceport keeps it" in r.err and "whose own lock is not there" in r.err
    assert deployment not in r.err  # the second deployment's, not the first's


def test_a_stale_takeover_makes_the_mirror_its_own(tmp_path, daemons):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    d = daemons(primary, work, "--cerit")
    d.wait_phase("running")
    first = read_lock_file(primary).deployment_id
    d.proc.kill()  # SIGKILL: the lock and its mirror stay
    d.wait_exit()
    assert_held(primary)
    r = run_cli("deploy", "--take-over-stale", "--stale-after", "4", primary,
                str(tmp_path / "work2"), timeout=60)
    assert r.code == 0, r.err
    second = read_lock_file(primary).deployment_id
    with open(os.path.join(primary, LOCK), "rb") as f:
        assert json.loads(f.read())["deployment_id"] == second != first
    assert_held(primary)
    assert run_cli("undeploy", str(tmp_path / "work2")).code == 0
    assert_free(primary)


def locks_left(space: str) -> set[str]:
    """Which of the two locks are on the primary: spaceport's ("ours"), CERIT's ("mirror")."""
    return {name for name, rel in (("ours", os.path.join(STATUS, "lock")), ("mirror", LOCK))
            if os.path.exists(os.path.join(space, rel))}


@pytest.mark.fuse
@pytest.mark.parametrize("fails, left", [
    # the mirror's removal fails: nothing else was done, both locks stay
    (dict(op="unlink", path=f"/{LOCK}"), {"ours", "mirror"}),
    # the mirror is gone, then moving spaceport's lock aside fails: ours stays, alone
    (dict(op="rename", path=f"/{STATUS}/lock"), {"ours"}),
], ids=["mirror-removal-fails", "our-lock-removal-fails"])
def test_a_release_stopped_between_the_two_locks_never_leaves_the_mirror_alone(
        tmp_path, onedata, fails, left):
    """docs/LOCKING.md, "CERIT's lock", "The order": the mirror goes first, while
    spaceport's lock still holds. A release that fails at either step leaves both locks or
    spaceport's alone, never a mirror without its lock (a project CERIT's app refuses for
    ever, since nothing in the mirror ages, and no spaceport lock to release it with); the
    undeploy run again removes both. With the two steps swapped (spaceport's lock first),
    the first case leaves the mirror alone, and the second both."""
    backing, primary, work = onedata.backing, onedata.mountpoint, str(tmp_path / "work")
    project(backing)
    fast = {"SPACEPORT_RETRIES": "2", "SPACEPORT_RETRY_DELAY": "0.01"}
    assert run_cli("deploy", "--cerit", primary, work, env=fast).code == 0
    assert locks_left(backing) == {"ours", "mirror"}
    onedata.inject(errno="EIO", **fails)
    r = run_cli("undeploy", work, env=fast)
    assert r.code != 0, r.err
    assert any(rule["fired"] for rule in onedata.faults()), "the fault was never reached"
    found = locks_left(backing)
    assert found != {"mirror"}, "CERIT's lock was left without spaceport's: " + r.err
    assert found == left, r.err
    if "mirror" in left:
        assert_held(backing)
    else:  # every save is done: the project is final for a CERIT app that starts now
        assert_free(backing)
    onedata.clear_faults()
    r = run_cli("undeploy", work, env=fast)
    assert r.code == 0, r.err
    assert locks_left(backing) == set()
    assert_free(backing)
    assert os.path.isfile(os.path.join(backing, "project.sqlite"))  # the project is whole


# --- symlink-dump: the way back ----------------------------------------------------------


def test_the_dump_holds_every_link_cerits_app_can_restore(tmp_path):
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    links = link_up(work)
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert "symlink-dump written" in r.out
    # the two it cannot hold are named in the save's warnings
    assert "with space.mrc" in r.err and "my movies" in r.err and "cannot be written" in r.err
    with open(os.path.join(primary, "symlink-dump"), "rb") as f:
        raw = f.read()
    # CERIT's parser gives exactly the working copy's links it can express, at CERIT's root;
    # the absolute link into the copy now points under /mnt/vol-project
    expected = {(ROOT + "/project.sqlite" if t.startswith(work) else t, f"{ROOT}/{p}")
                for p, t in links.items() if " " not in p + t}
    assert set(parse_dump(raw)) == expected and len(parse_dump(raw)) == len(expected)
    # restored by CERIT's own loop into a copy of the project, every link is as it was
    cerit = str(tmp_path / "cerit-vol-project")
    os.makedirs(os.path.join(cerit, "Runs", "000002_Import", "extra"))
    assert restore_links(raw, cerit) == []
    for p, t in links.items():
        if " " in p + t:
            assert not os.path.lexists(os.path.join(cerit, p))
        else:
            want = ROOT + "/project.sqlite" if t.startswith(work) else t
            assert os.readlink(os.path.join(cerit, p)) == want
    # the manifest written with it records it: spaceport knows its own dump
    with open(os.path.join(primary, STATUS, "links.jsonl"), "rb") as f:
        header = json.loads(f.readline())
    assert header["cerit_dump"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert not [n for n in os.listdir(primary) if "tmp" in n]  # written atomically
    # a save that changes no link rewrites neither
    stamp = os.stat(os.path.join(primary, "symlink-dump")).st_mtime_ns
    with open(os.path.join(work, "Logs", "project.log"), "a") as f:
        f.write("more\n")
    r = run_cli("save", work)
    assert r.code == 0 and "symlink-dump written" not in r.out
    assert os.stat(os.path.join(primary, "symlink-dump")).st_mtime_ns == stamp


def test_spaceports_own_dump_is_never_taken_for_cerits(tmp_path):
    primary, work, again = (str(tmp_path / n) for n in ("space", "work", "again"))
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    links = link_up(work)
    assert run_cli("undeploy", work).code == 0
    # even with the dump the newer file, the manifest's links come back, those with spaces too
    later = time.time() + 60
    os.utime(os.path.join(primary, "symlink-dump"), (later, later))
    r = run_cli("deploy", primary, again)
    assert r.code == 0, r.err
    assert "written after spaceport's last save" not in r.err
    for p in links:
        assert os.path.islink(os.path.join(again, p)), p
    assert os.readlink(os.path.join(again, "Runs/000002_Import/extra/self.mrc")) == \
        os.path.join(again, "project.sqlite")
    assert run_cli("undeploy", again).code == 0


def test_after_cerits_app_its_dump_brings_its_links_and_keeps_what_it_could_not_see(tmp_path):
    primary, work, again = (str(tmp_path / n) for n in ("space", "work", "again"))
    project(primary)
    assert run_cli("deploy", "--cerit", primary, work).code == 0
    link_up(work)
    assert run_cli("undeploy", work).code == 0
    # CERIT's app opens the project: it restores the links from the dump, the user makes a
    # link and removes one, and its save writes a new dump (rsync keeps links.jsonl's time)
    cerit = str(tmp_path / "cerit-vol-project")
    os.makedirs(os.path.join(cerit, "Runs", "000002_Import", "extra"))
    with open(os.path.join(primary, "symlink-dump"), "rb") as f:
        restore_links(f.read(), cerit)
    os.unlink(os.path.join(cerit, "Runs/000002_Import/extra/movie.tif"))
    os.symlink("../../../project.sqlite", os.path.join(cerit, "Runs/000002_Import/made-in-cerit"))
    lines = symlink_search(cerit, cerit)
    with open(os.path.join(primary, "symlink-dump"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    later = time.time() + 5
    os.utime(os.path.join(primary, "symlink-dump"), (later, later))
    r = run_cli("deploy", primary, again)
    assert r.code == 0, r.err
    assert "written after spaceport's last save" in r.err
    made = os.path.join(again, "Runs/000002_Import/made-in-cerit")
    assert os.readlink(made) == "../../../project.sqlite"
    assert not os.path.lexists(os.path.join(again, "Runs/000002_Import/extra/movie.tif"))
    # the links CERIT's app could never see are still there, from the manifest
    assert os.path.islink(os.path.join(again, "Runs/000002_Import/extra/with space.mrc"))
    assert os.path.islink(os.path.join(again, "Runs/000002_Import/extra/to-space.mrc"))
    # the absolute link into CERIT's root is re-created under this working copy
    assert os.readlink(os.path.join(again, "Runs/000002_Import/extra/self.mrc")) == \
        os.path.join(again, "project.sqlite")
    assert run_cli("undeploy", again).code == 0


def test_status_names_cerits_app_only_for_what_that_app_wrote(tmp_path):
    """spaceport keeps CERIT's lock folder and dump for that app: status --primary must not
    take them for the app's use of the space, and must name the app once it did use it."""
    primary, work = str(tmp_path / "space"), str(tmp_path / "work")
    project(primary)

    def old_system():
        r = run_cli("status", "--primary", primary, "--json")
        assert r.code == 0, r.err
        return json.loads(r.out)["old_system"]

    assert run_cli("deploy", "--cerit", primary, work).code == 0
    link_up(work)
    assert run_cli("save", work).code == 0
    assert os.path.exists(os.path.join(primary, "symlink-dump"))
    assert old_system() is None  # the mirror and the dump are spaceport's
    assert run_cli("undeploy", work).code == 0
    assert old_system() is None  # the mirror removed after the last save, the folder kept
    later = time.time() + 5
    # CERIT's app opens the project: its lock is the newest trace
    with open(os.path.join(primary, LOCK), "w") as f:
        f.write(str(int(time.time())))
    os.utime(os.path.join(primary, "scipion-docker"), (later, later))
    assert old_system()["file"] == "scipion-docker"
    # ... and saves: its dump, newer still, is not the one the manifest names
    with open(os.path.join(primary, "symlink-dump"), "a") as f:
        f.write("../../../project.sqlite /mnt/vol-project/Runs/made-in-cerit\n")
    os.utime(os.path.join(primary, "symlink-dump"), (later + 1, later + 1))
    assert old_system() == {**old_system(), "system": "CERIT-SC scipion-docker",
                            "file": "symlink-dump"}


# --- the space folder in a claim ---------------------------------------------------------


def test_space_folder_one_folder_is_the_primary(tmp_path):
    claim, work = tmp_path / "claim", str(tmp_path / "work")
    claim.mkdir()
    project(str(claim / "ribosome-2024"))
    r = run_cli("deploy", "--space-folder", str(claim), work)
    assert r.code == 0, r.err
    assert sorted(os.listdir(claim)) == ["ribosome-2024"]  # nothing at the claim's root
    assert os.path.isdir(claim / "ribosome-2024" / STATUS)
    assert os.path.isfile(os.path.join(work, "project.sqlite"))
    assert read_lock_file(str(claim / "ribosome-2024")).primary == str(claim / "ribosome-2024")
    assert run_cli("undeploy", work).code == 0


@pytest.mark.parametrize("layout", ["none", "empty", "two", "files-only"])
def test_space_folder_refuses_none_or_several_and_names_them(tmp_path, layout):
    claim, work = tmp_path / "claim", str(tmp_path / "work")
    if layout != "none":
        claim.mkdir()
    if layout == "two":
        (claim / "space-a").mkdir()
        (claim / "space-b").mkdir()
    if layout == "files-only":
        (claim / "README").write_text("x")
    before = sorted(os.listdir(claim)) if claim.exists() else None
    r = run_cli("deploy", "--space-folder", str(claim), work)
    if layout == "none":
        assert r.code == 2 and "not a folder" in r.err
        return
    assert r.code == 5, r.err
    assert "should hold exactly one folder" in r.err
    expected = {"empty": "it is empty", "two": "it holds 2 folders: 'space-a/', 'space-b/'",
                "files-only": "it holds 0 folders: 'README'"}[layout]
    assert expected in r.err
    assert sorted(os.listdir(claim)) == before and not os.path.exists(work)


def test_run_with_space_folders_from_the_environment(tmp_path, daemons):
    claims = {side: tmp_path / f"claim-{side}" for side in ("project", "source")}
    for side, claim in claims.items():
        claim.mkdir()
    project(str(claims["project"] / "my-project"))
    os.makedirs(claims["source"] / "raw-data" / "movies")
    (claims["source"] / "raw-data" / "movies" / "m1.tif").write_bytes(b"m" * 1000)
    env = {"SPACEPORT_SPACE_FOLDER": "1", "SPACEPORT_SOURCE": str(claims["source"]),
           "SPACEPORT_SOURCE_WORK": str(tmp_path / "vol-dataset")}
    d = daemons(str(claims["project"]), str(tmp_path / "vol-project"), env=env)
    status = d.wait_phase("running")
    assert status["primary"] == str(claims["project"] / "my-project")
    assert status["source"] == str(claims["source"] / "raw-data")
    assert os.path.isfile(tmp_path / "vol-dataset" / "movies" / "m1.tif")
    assert sorted(os.listdir(claims["project"])) == ["my-project"]
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    # a second folder in the claim: the daemon refuses at once, naming both
    (claims["project"] / "other").mkdir()
    d = daemons(str(claims["project"]), str(tmp_path / "vol-project2"), env=env)
    assert d.wait_exit() == 5
    assert "it holds 2 folders: 'my-project/', 'other/'" in d.log()
    assert sorted(os.listdir(claims["project"])) == ["my-project", "other"]


def test_cerits_app_in_the_instant_between_our_two_locks(tmp_path, opts):
    """CERIT's app writes its lock after spaceport took its own and before the mirror: the
    deploy is refused (exit 3), CERIT's lock is left as it is, and ours is released."""
    from spaceport.errors import LockedError
    from spaceport.safety.lock import DeploymentLock, WorkCopy
    from spaceport.store.sides import open_primary

    primary = tmp_path / "space"
    project(str(primary))
    with open_primary(str(primary), "00000000", opts) as store:
        makedirs = store.makedirs

        def cerit_app_starts_now(rel, *args, **kwargs):
            makedirs(rel, *args, **kwargs)
            if rel == "scipion-docker":  # the instant before our exclusive create
                (primary / LOCK).write_text("1700000000")

        store.makedirs = cerit_app_starts_now
        with pytest.raises(LockedError) as refused:
            DeploymentLock.acquire(store, STATUS, deployment_id="d" * 32,
                                   work=WorkCopy.here(str(tmp_path / "work"), None), cerit=True)
    assert "CERIT's app" in refused.value.message
    assert (primary / LOCK).read_text() == "1700000000"
    assert read_lock_file(str(primary)) is None
    assert not [n for n in os.listdir(primary / STATUS) if n.startswith("heartbeat.")]


_names = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1,
                 max_size=12).filter(lambda n: n not in (".", "..")) \
    | st.sampled_from(["a b", "tab\tin", "end\t", " lead", "cr\r", "nl\n", "nbsp\xa0",
                       "\udcff-not-utf8", "x\x85y", "u\u2028v"])


def _at_w(target: str) -> str:
    """A target as a deploy into /W re-creates it from CERIT's root."""
    return "/W" + target[len(ROOT):] if target == ROOT or target.startswith(ROOT + "/") \
        else target


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, _names, st.booleans()), min_size=1, max_size=8,
                unique_by=lambda t: t[0]))
def test_every_dump_line_reads_back_exactly_through_cerits_parser(items):
    """Whatever the names: a link is written only if CERIT's parser reads it back exactly,
    and every link left out is said to be left out."""
    from spaceport.formats.cerit import render_dump
    from spaceport.formats.links import Link

    links = [Link(f"Runs/{name}", target, anchored) for name, target, anchored in items]
    data, left_out = render_dump(links)
    parsed = parse_dump(data)
    written = {(t, p) for t, p in parsed}
    assert len(parsed) + len(left_out) == len(links)
    for link in links:
        target = f"{ROOT}/{link.target}" if link.anchored else link.target
        if (target, f"{ROOT}/{link.path}") not in written:
            assert link.path in {u.path for u in left_out}, link
    if not parsed:
        return
    # spaceport's own import of such a dump (formats/legacy.py) reads the same links
    from spaceport.formats.legacy import parse_symlink_dump
    from spaceport.formats.links import resolve_target

    imported = parse_symlink_dump(data, "symlink-dump")
    assert not imported.unrestored and not imported.phantoms
    out = {u.path for u in left_out}
    assert {(k.path, resolve_target(k, "/W")) for k in imported.links} == \
        {(k.path, _at_w(resolve_target(k, ROOT))) for k in links if k.path not in out}


@pytest.mark.fuse
def test_cerits_lock_costs_a_save_with_nothing_changed_a_few_calls_whatever_the_tree(tmp_path):
    """Counted on the OneData-like FUSE filesystem, kernel caches off: keeping CERIT's lock
    adds the mirror's read and the stat of symlink-dump (is the dump on the primary still
    the one written? tests/test_cerit_dump.py) to a save that has nothing to do, the same
    for 100 or 1000 files, and neither symlink-dump nor the manifest is written again."""
    from dataclasses import replace

    from spaceport.commands.deploy import deploy
    from spaceport.commands.options import Options
    from spaceport.commands.save import save
    from spaceport.store.retry import RetryPolicy
    from spaceport.testing.onedatafs import OneDataFS, fuse_available, metadata_calls

    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    plain = Options(jobs=4, retry=RetryPolicy(attempts=1))
    calls, writes = {}, {}
    with OneDataFS(backing, mnt, attr_timeout=0.0) as fs:
        for name, files, opts in (("plain", 100, plain), ("cerit", 100, replace(plain, cerit=True)),
                                  ("cerit-big", 1000, replace(plain, cerit=True))):
            primary, work = os.path.join(fs.mountpoint, name), str(tmp_path / f"w-{name}")
            os.mkdir(primary)
            deploy(primary, work, opts)
            for i in range(files):
                os.makedirs(os.path.join(work, f"run{i % 10}"), exist_ok=True)
                with open(os.path.join(work, f"run{i % 10}", f"f{i}"), "wb") as f:
                    f.write(b"x" * 100)
            os.symlink("run0/f0", os.path.join(work, "link"))
            save(work, opts)
            fs.settled_counts()  # the first save's late releases are not the second's
            fs.reset_counts()
            save(work, opts)
            counts = fs.settled_counts()
            calls[name] = metadata_calls(counts)
            writes[name] = (counts.get("write", 0), counts.get("create", 0))
    # the heartbeat only, in every case: neither the dump nor the manifest written again
    assert writes["plain"] == writes["cerit"] == writes["cerit-big"] == (1, 1), writes
    extra = calls["cerit"] - calls["plain"]
    print(f"metadata calls of a save with nothing changed: {calls} (CERIT's files: +{extra})")
    assert calls["cerit"] == calls["cerit-big"]
    # The mirror's read: lookups of the folder and the file, open, getattr, flush, release
    # (8 here). The dump's stat: its lookup and getattr (2), since a dump removed from the
    # primary is written again by the next save, not only when the links change.
    assert 0 < extra <= 10
