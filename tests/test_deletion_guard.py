"""The deletion guard (issue 12): deletions wait only when the working copy looks wrong, and a
refusal never blocks the rest of a save, nor leaves a daemon stuck.

Real trees, real commands and daemons; the primary and its trash are checked on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from conftest import run_cli, snapshot, write
from daemon_helpers import read_lock_file
from test_faults import AVAILABLE as FUSE
from test_faults import Mount

from spaceport.commands.deploy import deploy
from spaceport.commands.save import save
from spaceport.engine.index import Index
from spaceport.errors import RefusedError
from spaceport.formats.marker import index_path
from spaceport.safety.deletion_guard import HELD_META, held_paths
from spaceport.safety.lock import DEFAULT_STATUS_DIR

S = DEFAULT_STATUS_DIR
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def project(root: str, tmp_files: int = 0) -> None:
    """A Scipion-like project: three runs, a project log and database, an optional tmp/."""
    for run in ("000001_Import", "000002_Crop", "000003_Mics"):
        for i in range(4):
            write(root, f"Runs/{run}/extra/out{i}.mrc", f"{run}-{i}".encode())
        write(root, f"Runs/{run}/logs/run.stdout", f"{run} log".encode())
    for i in range(tmp_files):
        write(root, f"Runs/000002_Crop/tmp/part{i:05d}.mrc", b"t%d" % i)
    write(root, "Logs/project.log", b"log")
    write(root, "project.conf", b"conf")


def files_under(root: str, skip=(S, ".spaceport")) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def trashed(primary: str) -> dict[str, bytes]:
    """Every file in the primary's trash, by its path in the project."""
    out = {}
    root = os.path.join(primary, S, "trash")
    for batch in os.listdir(root) if os.path.isdir(root) else ():
        for rel, data in files_under(os.path.join(root, batch), skip=()).items():
            out[rel] = data
    return out


def journal(primary: str) -> list[dict]:
    with open(os.path.join(primary, S, "journal.jsonl")) as f:
        return [json.loads(line) for line in f]


def meta(work: str) -> tuple[dict | None, set[str]]:
    index = Index(index_path(work))
    try:
        text = index.get_meta(HELD_META)
        return (json.loads(text) if text else None), held_paths(index)
    finally:
        index.close()


@pytest.fixture
def deployed(dirs, opts):
    primary, work = dirs
    project(primary)
    deploy(primary, work, opts)
    return primary, work


# -- the rule: what fires ---------------------------------------------------------------------
def test_emptied_working_copy_holds_every_deletion_and_saves_the_rest(deployed, opts):
    primary, work = deployed
    before = files_under(primary)
    for name in os.listdir(work):
        if name != ".spaceport":
            shutil.rmtree(os.path.join(work, name)) if os.path.isdir(os.path.join(work, name)) \
                else os.unlink(os.path.join(work, name))
    write(work, "new/after.txt", b"made after the volume was emptied")
    report = save(work, opts)  # not refused: held
    assert report.held["count"] == len(report.held_paths) and report.held["files"] == 17
    assert "none of the 17 files the index knows is left" in report.held["reason"]
    assert report.uploaded == 1 and report.deleted == 0
    assert files_under(primary) == {**before, "new/after.txt": b"made after the volume was "
                                                               b"emptied"}
    assert trashed(primary) == {}
    summary, paths = meta(work)
    assert summary["count"] == report.held["count"] and "project.conf" in paths
    assert summary["top_level"] == {"Runs": 25, "Logs": 2, "project.conf": 1}
    # A second save holds the same, says nothing new, and the journal is not rewritten.
    lines = len(journal(primary))
    again = save(work, opts)
    assert again.held["count"] == report.held["count"] and not again.held_new
    assert len(journal(primary)) == lines
    # The person's word: every held deletion goes to the trash, the record is gone.
    done = save(work, opts, allow_mass_delete=True)
    assert done.held is None and done.deleted == 17
    assert files_under(primary) == {"new/after.txt": b"made after the volume was emptied"}
    assert trashed(primary) == before
    assert meta(work) == (None, set())


def test_top_level_gone_is_held_on_the_command_line_then_confirmed(deployed):
    primary, work = deployed
    before = files_under(primary)
    shutil.rmtree(os.path.join(work, "Runs"))
    shutil.rmtree(os.path.join(work, "Logs"))
    write(work, "Runs2/000004_New/extra/new.mrc", b"new run")
    r = run_cli("save", work)
    assert r.code == 0, r.err
    assert "1 file uploaded" in r.out and "moved to the trash" not in r.out
    assert "warning:" in r.err and "27 deletions held (16 files and 11 folders stay on the primary)" in r.err
    assert "2 of the 3 top-level entries the index knows are gone (Logs, Runs)" in r.err
    assert f"spaceport save --allow-mass-delete {work}" in r.err
    assert files_under(primary) == {**before, "Runs2/000004_New/extra/new.mrc": b"new run"}
    status = run_cli("status", work)
    assert "held          27 deletions (16 files)" in status.out, status.out
    assert "Runs/000001_Import/extra/out0.mrc" in status.out
    assert "save --allow-mass-delete" in status.out
    facts = json.loads(run_cli("status", work, "--json").out)
    assert facts["held_deletions"]["count"] == 27
    assert facts["pending"]["entries_to_delete"] == 27  # still to do, by --allow-mass-delete
    # The dry run shows what would be held, changing nothing, exit 0.
    dry = run_cli("save", "--dry-run", work)
    assert dry.code == 0 and "hold:          27 deletions (the deletion guard:" in dry.out
    assert "move to trash" not in dry.out
    # Confirmed: the held files go to the trash, everything else stays.
    r = run_cli("save", work, "--allow-mass-delete")
    assert r.code == 0 and "16 files moved to the trash" in r.out and "warning" not in r.err
    assert files_under(primary) == {"project.conf": b"conf",
                                    "Runs2/000004_New/extra/new.mrc": b"new run"}
    assert set(trashed(primary)) == set(before) - {"project.conf"}
    assert "\nheld " not in run_cli("status", work).out


def test_an_emptied_volume_with_the_threshold_at_one_still_holds(deployed, opts):
    primary, work = deployed
    shutil.rmtree(os.path.join(work, "Runs"))
    shutil.rmtree(os.path.join(work, "Logs"))
    os.unlink(os.path.join(work, "project.conf"))
    opts.mass_delete_threshold = 1.0
    assert save(work, opts).held["files"] == 17
    assert len(files_under(primary)) == 17


# -- the rule: what does not fire -------------------------------------------------------------
def test_a_cleaned_tmp_of_thousands_of_files_is_deleted(dirs, opts):
    primary, work = dirs
    project(primary, tmp_files=3000)
    deploy(primary, work, opts)
    shutil.rmtree(os.path.join(work, "Runs/000002_Crop/tmp"))  # cleanTmp: 3000 of 3017
    write(work, "Runs/000004_New/extra/new.mrc", b"new")
    report = save(work, opts)
    assert report.held is None and report.deleted == 3000 and report.uploaded == 1
    assert len(trashed(primary)) == 3000
    assert not os.path.exists(os.path.join(primary, "Runs/000002_Crop/tmp"))
    assert files_under(primary) == files_under(work)
    assert meta(work) == (None, set())


def test_a_deleted_run_and_many_files_in_one_place_are_deleted(deployed, opts):
    primary, work = deployed
    shutil.rmtree(os.path.join(work, "Runs/000002_Crop"))
    for i in range(3):
        os.unlink(os.path.join(work, f"Runs/000001_Import/extra/out{i}.mrc"))
    report = save(work, opts)
    assert report.held is None and report.deleted == 8
    assert files_under(primary) == files_under(work)


def test_confirmed_paths_go_and_the_guard_judges_the_rest(deployed, opts):
    primary, work = deployed
    shutil.rmtree(os.path.join(work, "Runs"))
    shutil.rmtree(os.path.join(work, "Logs"))
    first = save(work, opts)
    assert first.held["files"] == 16
    os.unlink(os.path.join(work, "project.conf"))  # not confirmed: now nothing is left
    done = save(work, opts, confirmed=frozenset(first.held_paths))
    assert done.deleted == 16 and done.held_paths == ["project.conf"]
    assert "none of the 1 file the index knows is left" in done.held["reason"]
    assert files_under(primary) == {"project.conf": b"conf"}


# -- commands a person runs: undeploy and deploy --resume stop, keeping everything -----------
def test_undeploy_with_deletions_held_stops_with_exit_5_keeping_lock_and_work(deployed):
    primary, work = deployed
    before = files_under(primary)
    shutil.rmtree(os.path.join(work, "Runs"))
    shutil.rmtree(os.path.join(work, "Logs"))
    write(work, "late.txt", b"late")
    r = run_cli("undeploy", work)
    assert r.code == 5, r.err
    assert "the save held 27 deletions" in r.err and "--allow-mass-delete" in r.err
    assert files_under(primary) == {**before, "late.txt": b"late"}  # the rest was saved
    assert read_lock_file(primary) is not None and os.path.isdir(os.path.join(work, ".spaceport"))
    r = run_cli("undeploy", work, "--allow-mass-delete")
    assert r.code == 0, r.err
    assert read_lock_file(primary) is None
    assert files_under(primary) == {"project.conf": b"conf", "late.txt": b"late"}


def test_deploy_resume_with_deletions_held_stops_before_bringing_them_back(deployed, opts):
    primary, work = deployed
    shutil.rmtree(os.path.join(work, "Runs"))
    shutil.rmtree(os.path.join(work, "Logs"))
    os.unlink(os.path.join(work, "project.conf"))
    write(work, "kept.txt", b"unsaved")
    undeployed = os.path.join(work, ".spaceport")
    assert os.path.isdir(undeployed)
    # Make it a copy that needs --resume: the lock released by hand (a crashed host).
    assert run_cli("unlock", primary, "--force", "--yes").code == 0
    with pytest.raises(RefusedError, match="the save held 28 deletions"):
        deploy(primary, work, opts, resume=True)
    assert files_under(primary)["kept.txt"] == b"unsaved"
    assert not os.path.exists(os.path.join(work, "Runs"))  # not brought back unasked
    deploy(primary, work, opts, resume=True, allow_mass_delete=True)
    assert files_under(primary) == {"kept.txt": b"unsaved"}


# -- special files ----------------------------------------------------------------------------
def test_fifos_are_warned_once_per_deployment_and_listed_by_status(deployed):
    primary, work = deployed
    os.mkfifo(os.path.join(work, "Logs/pipe"))
    errs = []
    for i in range(4):
        write(work, f"new{i}.txt", b"x")
        r = run_cli("save", work)
        assert r.code == 0, r.err
        errs.append(r.err)
    assert ["Logs/pipe" in e for e in errs] == [True, False, False, False]
    os.mkfifo(os.path.join(work, "sock"))
    r = run_cli("save", work)
    assert "skipping sock" in r.err and "Logs/pipe" not in r.err
    assert "Logs/pipe" not in run_cli("save", work).err
    status = run_cli("status", work)
    assert "special       2 special files" in status.out and "Logs/pipe" in status.out
    assert json.loads(run_cli("status", work, "--json").out)["special"] == ["Logs/pipe", "sock"] \
        or sorted(json.loads(run_cli("status", work, "--json").out)["special"]) == \
        ["Logs/pipe", "sock"]
    assert not os.path.exists(os.path.join(primary, "Logs/pipe"))


# -- the daemon -------------------------------------------------------------------------------
def gut(work: str) -> None:
    shutil.rmtree(os.path.join(work, "Runs"))
    shutil.rmtree(os.path.join(work, "Logs"))


def test_daemon_keeps_saving_while_deletions_are_held_and_carries_them_out_on_confirm(
        tmp_path, daemons):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    project(primary)
    before = files_under(primary)
    d = daemons(primary, work, "--token", TOKEN)
    d.wait_phase("running")
    assert d.request("/confirm-deletions", "POST", AUTH)[0] == 409  # none held yet
    gut(work)
    s = d.wait_status(lambda s: s.get("held_deletions"), 20, "held deletions in /status")
    assert s["held_deletions"]["count"] == 27 and s["phase"] == "running"
    assert s["health"] == "ok" and s["saves"]["failed"] == 0
    # New runs still reach the primary, autosave after autosave.
    for i in range(3):
        write(work, f"Runs/00001{i}_Later/extra/out.mrc", b"later %d" % i)
        d.wait_for(lambda: os.path.exists(f"{primary}/Runs/00001{i}_Later/extra/out.mrc"), 20,
                   f"run {i} on the primary")
    assert files_under(primary).items() >= before.items()  # nothing deleted
    # Runs/ is back (new runs in it): its folder is no deletion any more, its files still are.
    held = d.status()["held_deletions"]
    assert held["count"] == 26 and held["files"] == 16
    _, page, _ = d.request("/")
    assert b"Deletions held" in page and b"26 deletions" in page and b"confirm-deletions" in page
    assert d.log().count("deletions held") == 1, d.log()  # said once, not at every autosave
    # Confirmation needs the token; then the next save moves them to the trash.
    assert d.request("/confirm-deletions", "POST")[0] == 401
    assert d.request("/confirm-deletions", "POST",
                     {"Authorization": "Bearer wrong"})[0] == 401
    assert files_under(primary).items() >= before.items()
    code, body, _ = d.request("/confirm-deletions", "POST", AUTH)
    assert code == 202, body
    s = d.wait_status(lambda s: s["last_save"] and s["last_save"]["deleted"] == 16
                      and not s["held_deletions"], 20, "the confirmed deletions")
    assert set(trashed(primary)) == set(before) - {"project.conf"}
    assert not os.path.exists(f"{primary}/Logs/project.log")
    assert d.request("/confirm-deletions", "POST", AUTH)[0] == 409
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


def test_sigterm_with_deletions_held_saves_the_rest_releases_the_lock_and_exits_0(
        tmp_path, daemons):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    project(primary)
    before = files_under(primary)
    d = daemons(primary, work, "--interval", "3600")  # only the final save sees the change
    d.wait_phase("running")
    gut(work)
    write(work, "Runs2/last.mrc", b"written just before the end")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    log = d.log()
    assert "the final save held 27 deletions" in log and "lock is released" in log
    assert read_lock_file(primary) is None
    assert files_under(primary) == {**before, "Runs2/last.mrc": b"written just before the end"}
    assert not os.path.exists(os.path.join(work, "Runs2"))  # removed: proven saved
    last = journal(primary)[-1]
    assert last["held_deletions"]["count"] == 27 and last["uploaded"] == 1
    r = run_cli("status", "--primary", primary)
    assert "27 deletions held (still on the primary)" in r.out, r.out
    assert "Runs/000001_Import/extra/out0.mrc" in r.out


def test_daemon_warns_about_a_fifo_once_across_many_autosaves(tmp_path, daemons):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    project(primary)
    d = daemons(primary, work)
    d.wait_phase("running")
    os.mkfifo(os.path.join(work, "Logs/pipe"))
    start = d.status()["saves"]["ok"]
    d.wait_status(lambda s: s["saves"]["ok"] >= start + 6, 30, "six autosaves")
    os.mkfifo(os.path.join(work, "Runs/sock"))
    start = d.status()["saves"]["ok"]
    s = d.wait_status(lambda s: s["saves"]["ok"] >= start + 6, 30, "six more autosaves")
    log = d.log()
    assert log.count("skipping Logs/pipe") == 1 and log.count("skipping Runs/sock") == 1, log
    assert sorted(s["special"]) == ["Logs/pipe", "Runs/sock"]
    _, page, _ = d.request("/")
    assert b"special file" in page and b"Runs/sock" in page
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()


# -- counted on the OneData-like FUSE mount ---------------------------------------------------
@pytest.mark.fuse
def test_held_deletions_cost_no_call_on_the_primary_and_a_cleaned_tmp_one_rename_per_file(
        tmp_path):

    from spaceport.commands.options import Options
    from spaceport.store.retry import RetryPolicy
    from spaceport.testing.onedatafs import OneDataFS, fuse_available, metadata_calls

    ok, why = fuse_available()
    if not ok:
        pytest.skip(why)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    opts = Options(jobs=4, retry=RetryPolicy(attempts=1))
    with OneDataFS(str(backing), str(mnt), attr_timeout=3600.0) as fs:
        primary, work = os.path.join(fs.mountpoint, "p"), str(tmp_path / "work")
        os.mkdir(primary)
        deploy(primary, work, opts)
        for i in range(2000):
            write(work, f"Runs/run{i % 10:03d}/tmp/f{i:05d}.mrc", b"x" * 100)
        for i in range(10):
            write(work, f"Runs/run{i:03d}/extra/out.mrc", b"out")
        write(work, "Logs/project.log", b"log")
        write(work, "project.conf", b"conf")
        save(work, opts)

        def counted(**kwargs) -> tuple[dict, object]:
            fs.settled_counts()  # the previous save's late releases are not this one's
            fs.reset_counts()
            report = save(work, opts, **kwargs)
            return fs.settled_counts(), report

        nothing, _ = counted()
        gut(work)  # 2011 of 2012 files, 2 of 3 top-level entries: held
        first, report = counted()
        assert report.held["files"] == 2011 and first.get("rename", 0) == nothing.get("rename", 0), (first, nothing)
        again, report = counted()
        assert report.held and not report.held_new
        assert metadata_calls(again) == metadata_calls(nothing), (again, nothing)
        print(f"\nno-change save: {metadata_calls(nothing)} metadata calls; first save holding "
              f"2011 deletions: {metadata_calls(first)} (the journal line); the next: "
              f"{metadata_calls(again)}")
        # Back as it was, then a cleaned tmp/ of 200 files: one rename each into the trash.
        save(work, opts, allow_mass_delete=True)
        for i in range(200):
            write(work, f"Runs/run000/tmp/g{i:05d}.mrc", b"y" * 100)
        write(work, "Runs/run000/extra/out.mrc", b"out")
        save(work, opts)
        shutil.rmtree(os.path.join(work, "Runs/run000/tmp"))
        cleaned, report = counted()
        assert report.held is None and report.deleted == 200
        assert cleaned["rename"] == 200 + nothing["rename"], cleaned  # + the heartbeat's
        print(f"cleaned tmp/ of 200 files: {metadata_calls(cleaned)} metadata calls, "
              f"{cleaned['rename'] - nothing['rename']} renames into the trash, {cleaned.get('rmdir', 0)} rmdir")


# -- links are project data (issue 18) ------------------------------------------------------
def with_links(work: str) -> None:
    """Every kind of link a Scipion project holds: relative (a run's input), to a folder,
    absolute into the tree, absolute outside it, dangling."""
    os.symlink("../../000001_Import/extra/out0.mrc",
               os.path.join(work, "Runs/000002_Crop/extra/input.mrc"))
    os.symlink("Runs/000003_Mics", os.path.join(work, "last_run"))
    os.symlink(os.path.join(work, "Logs/project.log"), os.path.join(work, "Runs/log_abs"))
    os.symlink("/mnt/vol-dataset/movies/m1.tif", os.path.join(work, "Runs/000003_Mics/m1.tif"))
    os.symlink("../gone/nowhere", os.path.join(work, "Logs/dangling"))


def manifest_links(primary: str) -> set:
    from spaceport.formats.links import parse_manifest
    with open(os.path.join(primary, S, "links.jsonl"), "rb") as f:
        return set(parse_manifest(f.read()).links)


def looks_unmounted(work: str, how: str) -> None:
    """``emptied``: ``rm -rf WORK/*`` (the hidden marker stays); ``unmounted``: the project's
    folders are there but empty, as sub-volumes that did not mount leave their mount
    points, and the top-level file and links are gone."""
    for name in os.listdir(work):
        path = os.path.join(work, name)
        if name == ".spaceport":
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            if how == "unmounted":
                os.mkdir(path)
        else:
            os.unlink(path)


@pytest.mark.parametrize("how", ["emptied", "unmounted"])
def test_a_working_copy_that_looks_unmounted_keeps_every_link_in_the_manifest(tmp_path, how):
    if not FUSE:
        pytest.skip("FUSE unavailable")
    m = Mount(tmp_path, meta_delay_ms=0.5)
    try:
        primary, work, elsewhere = m.path + "/p", str(tmp_path / "w"), str(tmp_path / "w2")
        os.mkdir(primary)
        assert run_cli("deploy", primary, work).code == 0
        project(work)
        with_links(work)
        assert run_cli("save", work).code == 0
        as_saved, links = snapshot(work), manifest_links(m.backing + "/p")
        assert len(links) == 5
        files = files_under(m.backing + "/p")
        looks_unmounted(work, how)
        for _ in range(2):  # held, and held again: the manifest is never emptied
            r = run_cli("save", work)
            assert r.code == 0, r.err
            assert "5 links stay in the link manifest" in r.err, r.err
            assert "no link was taken out of the manifest" in r.err
            assert manifest_links(m.backing + "/p") == links
            assert files_under(m.backing + "/p") == files
            assert not os.path.exists(os.path.join(m.backing, "p", S, "trash"))
        status = run_cli("status", work)
        assert ", 5 links) since" in status.out, status.out
        r = run_cli("undeploy", work)  # a person is there: it stops, keeping all
        assert r.code == 5 and "5 links stay in the link manifest" in r.err, r.err
        # The working copy is lost for good (the volume never comes back): another
        # deployment gets every link back from the manifest.
        assert run_cli("unlock", "--force", "--yes", primary).code == 0
        r = run_cli("deploy", primary, elsewhere)
        assert r.code == 0 and "5 links from links.jsonl" in r.out, r.out
        assert snapshot(elsewhere, mtimes=False) == {
            k: v[:3] + (None,) if v[0] == "file" else v for k, v in as_saved.items()}
    finally:
        m.stop()


def test_a_daemon_stopped_with_an_emptied_volume_leaves_every_link_for_the_next_deploy(
        tmp_path, daemons):
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    project(primary)
    d = daemons(primary, work, "--interval", "3600")
    d.wait_phase("running")
    with_links(work)
    d.signal(signal.SIGTERM)  # the final save writes them into the manifest
    assert d.wait_exit() == 0, d.log()
    links = manifest_links(primary)
    assert len(links) == 5
    d2 = daemons(primary, work, "--interval", "3600")  # restores them, then the volume goes
    d2.wait_phase("running")
    looks_unmounted(work, "emptied")
    d2.signal(signal.SIGTERM)
    assert d2.wait_exit() == 0, d2.log()
    assert "5 links stay in the link manifest" in d2.log(), d2.log()
    assert manifest_links(primary) == links and read_lock_file(primary) is None
    r = run_cli("deploy", primary, str(tmp_path / "again"))
    assert r.code == 0 and "5 links from links.jsonl" in r.out, r.out
