"""Migrating real spaces end to end, with real ``python -m spaceport`` processes (issue 13).

After each command the files are looked at: every link with its exact target, nothing
created outside the working copy (a sibling "other volume" is compared before and after),
the old tools' files on the primary byte for byte as they were.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli
from legacy_spaces import (CERIT_BASH_FILES, CERIT_BASH_LINKS, CERIT_LOCK_TIMESTAMP,
                           WESTLIFE_EARLY_LOCK, WESTLIFE_LINKS, WESTLIFE_LOCK, S, cerit_bash_dump,
                           cerit_expected, cerit_python_dump, cerit_space, dataset_volume, links_in,
                           mkdirs, put, tree_state, westlife_expected, westlife_linklist,
                           westlife_space)

from spaceport.formats.links import Link, encode_manifest

STATUS = S.decode()


def manifest_of(primary) -> tuple[dict, list[dict]]:
    lines = (primary / STATUS / "links.jsonl").read_bytes().split(b"\n")
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line]


def old_files(primary) -> dict:
    """The old tools' own files on the primary (lists, their folder, their locks)."""
    state = tree_state(str(primary))
    return {rel: what for rel, what in state.items()
            if rel.startswith((b"symlink-dump", b"scipion-docker", S + b"/linklist",
                               S + b"/lock.broken", S + b"/lock"))
            and not rel == S + b"/lock"}  # spaceport's own lock comes and goes


def project_files(work) -> list[bytes]:
    state = tree_state(str(work))
    return sorted(rel for rel, what in state.items()
                  if what[0] == "file" and not rel.startswith(b".spaceport"))


# -- westlife ----------------------------------------------------------------------------

def test_westlife_space_deploys_all_twelve_links_and_keeps_them(tmp_path):
    primary, work, work2 = tmp_path / "space", tmp_path / "work", tmp_path / "work2"
    westlife_space(primary)
    before = old_files(primary)
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 0, r.err
    assert "12 links from the old list" in r.out and "/data/ScipionUserData" in r.out
    assert links_in(str(work)) == westlife_expected(str(work))
    assert len(project_files(work)) == 5
    r = run_cli("verify", str(work))  # before any save: checked against the import
    assert r.code == 0 and "5 files and 12 links: identical" in r.out, r.out + r.err
    assert run_cli("save", str(work)).code == 0  # the first save writes links.jsonl
    header, entries = manifest_of(primary)
    assert header["links"] == len(entries) == 12
    assert header["imported_from"]["system"] == "westlife-cloudify-scipion"
    assert run_cli("undeploy", str(work)).code == 0
    r = run_cli("deploy", str(primary), str(work2))  # from the manifest now
    assert r.code == 0 and "12 links from links.jsonl" in r.out, r.err
    assert links_in(str(work2)) == westlife_expected(str(work2))
    assert old_files(primary) == before
    assert links_in(str(primary)) == {}


@pytest.mark.parametrize("lock, named", [(WESTLIFE_LOCK, "scipion-vm.cloud.example.org"),
                                         (WESTLIFE_EARLY_LOCK, "scipion-old.cloud.example.org")])
def test_westlife_lock_refuses_until_set_aside(tmp_path, lock, named):
    primary, work = tmp_path / "space", tmp_path / "work"
    westlife_space(primary, lock=lock)
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 3 and named in r.err, r.err
    assert project_files(work) == [] and links_in(str(work)) == {}
    status = run_cli("status", "--primary", str(primary))
    assert named in status.out and "westlife-cloudify-scipion" in status.out
    assert run_cli("unlock", str(primary), "--yes").code == 3  # not stale: needs --force
    assert run_cli("unlock", str(primary), "--force", "--yes").code == 0
    aside = [n for n in os.listdir(primary / STATUS) if n.startswith("lock.broken-")]
    assert len(aside) == 1 and (primary / STATUS / aside[0]).read_bytes() == lock
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 0, r.err
    assert links_in(str(work)) == westlife_expected(str(work))


def test_lines_left_out_exit_1_and_are_recorded_by_the_first_save(tmp_path):
    primary, work, work2 = tmp_path / "space", tmp_path / "work", tmp_path / "work2"
    hostile = (b'"/data/ScipionUserData/projects" "two" "words" "x"\n'   # line 13
               b'"/data/ScipionUserData/projects" "new\nline" "../x"\n')  # lines 14, 15
    westlife_space(primary, linklist=westlife_linklist() + hostile)
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 1, r.err
    assert "3 links were not restored" in r.err
    for number in (13, 14, 15):
        assert f"linklist:{number}:" in r.err
    assert links_in(str(work)) == westlife_expected(str(work))  # all the others are there
    assert "held by this working copy" in run_cli("status", str(work)).out
    assert run_cli("save", str(work)).code == 0
    header, _ = manifest_of(primary)
    assert [u["line"] for u in header["unrestored"]] == [13, 14, 15]
    assert header["unrestored"][1]["text"] == '"/data/ScipionUserData/projects" "new'
    status = run_cli("status", "--primary", str(primary))
    assert status.out.count("not restored  ") == 3 and "linklist:14" in status.out
    assert run_cli("undeploy", str(work)).code == 0
    r = run_cli("deploy", str(primary), str(work2))
    assert r.code == 0 and "not restored at an earlier deploy" in r.err, r.err
    os.symlink("new-target", work2 / "a new link")  # the manifest is rewritten...
    assert run_cli("save", str(work2)).code == 0
    header, entries = manifest_of(primary)
    assert len(entries) == 13 and [u["line"] for u in header["unrestored"]] == [13, 14, 15]
    assert (primary / STATUS / "linklist").read_bytes() == westlife_linklist() + hostile


def test_root_nobody_knows_refuses_before_copying_then_found_or_given(tmp_path):
    primary, work = tmp_path / "space", tmp_path / "work"
    put(primary, S + b"/linklist", westlife_linklist(root=b"/opt/old work"))
    put(primary, b"projects/Ribosome/project.sqlite", b"db")  # not the links' folders
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 5 and "--legacy-root" in r.err and "/opt/old work" in r.err, r.err
    assert project_files(work) == [] and not (primary / STATUS / "lock").exists()
    assert "REFUSED" in run_cli("status", "--primary", str(primary)).out
    r = run_cli("deploy", str(primary), str(work), "--legacy-root", "/opt/old work")
    assert r.code == 0, r.err
    alias = b"/home/scipion/ScipionUserData"  # targets under /data/... are outside this root
    assert links_in(str(work)) == {
        (folder + b"/" + name if folder else name):
            os.fsencode(work) + target[len(alias):] if target.startswith(alias) else target
        for folder, name, target in WESTLIFE_LINKS}
    # With the links' folders on the primary, the root is found without the option.
    primary2, work2 = tmp_path / "space2", tmp_path / "work2"
    westlife_space(primary2, linklist=westlife_linklist(root=b"/opt/old work"))
    r = run_cli("deploy", str(primary2), str(work2))
    assert r.code == 0 and "found from the list" in r.out, r.err
    assert len(links_in(str(work2))) == 12


# -- CERIT scipion-docker ----------------------------------------------------------------

@pytest.mark.parametrize("lock", [b"", CERIT_LOCK_TIMESTAMP])
def test_live_cerit_instance_refuses_and_its_files_are_never_project_data(tmp_path, lock):
    primary, work, volume = tmp_path / "space", tmp_path / "work", tmp_path / "vol-dataset"
    cerit_space(primary, dump=cerit_python_dump(), lock=lock)
    dataset_volume(volume)
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 3 and "scipion-docker/project.lock" in r.err, r.err
    assert project_files(work) == []
    facts = json.loads(run_cli("status", "--primary", str(primary), "--json").out)
    assert facts["lock"]["kind"] == "legacy" and facts["lock"]["file"] == "scipion-docker/project.lock"
    assert facts["lock"]["form"] == ("cerit-timestamp" if lock else "cerit-empty")
    assert facts["old_system"]["system"] == "CERIT-SC scipion-docker"
    assert run_cli("unlock", str(primary), "--force", "--yes").code == 0
    aside = [n for n in os.listdir(primary / "scipion-docker") if ".broken-" in n]
    assert len(aside) == 1 and (primary / "scipion-docker" / aside[0]).read_bytes() == lock
    before = old_files(primary)
    r = run_cli("deploy", str(primary), str(work), "--rebase", f"/mnt/vol-dataset={volume}")
    assert r.code == 0, r.err
    assert not (work / "scipion-docker").exists() and not (work / "symlink-dump").exists()
    # A user's file of those names is not saved over the old tool's ones.
    put(work, b"symlink-dump", b"mine")
    put(work, b"scipion-docker/project.lock", b"mine")
    os.unlink(work / "Ribosome" / "project.sqlite")  # and a save that deletes
    r = run_cli("save", str(work))
    assert r.code == 0 and "symlink-dump in the working copy is not saved" in r.err, r.err
    assert not (primary / "Ribosome" / "project.sqlite").exists()
    # A space CERIT's app used gets CERIT's files kept for that app while spaceport holds it
    # (docs/CERIT.md): its lock as spaceport's mirror, and symlink-dump written from the
    # working copy's links. Neither is the user's file of that name; the rest is untouched.
    after = old_files(primary)
    kept = (b"symlink-dump", b"scipion-docker/project.lock")
    assert {k: v for k, v in after.items() if k not in kept} == \
        {k: v for k, v in before.items() if k not in kept}
    mirror = (primary / "scipion-docker" / "project.lock").read_bytes()
    assert json.loads(mirror)["kind"] == "spaceport-cerit-lock"
    dump = (primary / "symlink-dump").read_bytes()
    assert dump != b"mine" and dump != before[b"symlink-dump"][1]
    assert all(line.split(b" ")[1].startswith(b"/mnt/vol-project/")
               for line in dump.splitlines())


def test_cerit_dump_through_folder_links_creates_nothing_outside_work(tmp_path):
    volume = tmp_path / "vol-dataset"
    dataset_volume(volume)
    outside = tree_state(str(volume))
    # Without --rebase "dataset" points to a /mnt/vol-dataset this host lacks (the deploy
    # once failed with "File exists"); with it, into the sibling volume, where the phantoms
    # would have been created.
    for n, rebase in enumerate(([], ["--rebase", f"/mnt/vol-dataset={volume}"])):
        primary, work = tmp_path / f"space{n}", tmp_path / f"work{n}"
        cerit_space(primary, dump=cerit_python_dump())
        r = run_cli("deploy", str(primary), str(work), *rebase)
        assert r.code == 0, r.err
        assert "8 links from the old list" in r.out
        assert ("5 entries found through links to folders (Ribosome/dataset, "
                "Ribosome/latest) skipped") in r.out
        mapping = {b"/mnt/vol-dataset": os.fsencode(volume)} if rebase else {}
        assert links_in(str(work)) == cerit_expected(str(work), rebase=mapping)
        assert tree_state(str(volume)) == outside
        assert run_cli("undeploy", str(work), "--keep-work").code == 0
        header, entries = manifest_of(primary)
        assert len(entries) == 8 and header["imported_from"]["phantoms_skipped"] == 5
    assert tree_state(str(volume)) == outside
    assert sorted(os.listdir(tmp_path)) == ["space0", "space1", "vol-dataset", "work0", "work1"]


def test_cerit_bash_cloner_space_restores_its_seven_links(tmp_path):
    primary, work = tmp_path / "space", tmp_path / "work"
    cerit_space(primary, dump=cerit_bash_dump(), files=CERIT_BASH_FILES, links=CERIT_BASH_LINKS)
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 0, r.err
    assert "7 links from the old list" in r.out and "bash cloner" in r.out
    assert links_in(str(work)) == cerit_expected(str(work), CERIT_BASH_LINKS)


def test_a_manifest_leading_out_of_work_creates_nothing_there(tmp_path):
    primary, work, volume = tmp_path / "space", tmp_path / "work", tmp_path / "vol-dataset"
    dataset_volume(volume)
    outside, around = tree_state(str(volume)), sorted(os.listdir(tmp_path))
    hostile = [Link("dataset", str(volume)), Link("dataset/movies/evil", "x"),
               Link("../evil", "x"), Link("/tmp/spaceport-evil", "x"),
               Link("Runs/../../evil", "x"), Link("Runs/ok", "../data")]
    mkdirs(primary, b"Runs")
    put(primary, S + b"/links.jsonl", encode_manifest(hostile, "/old/work"))
    r = run_cli("deploy", str(primary), str(work))
    assert r.code == 1, r.err
    assert "4 links were not restored" in r.err
    assert "dataset is a symbolic link" in r.err and "'..' component" in r.err
    assert links_in(str(work)) == {b"dataset": os.fsencode(volume), b"Runs/ok": b"../data"}
    assert tree_state(str(volume)) == outside
    assert sorted(os.listdir(tmp_path)) == sorted(around + ["space", "work"])
    assert not os.path.lexists("/tmp/spaceport-evil")


# -- saying what an import will do ------------------------------------------------------

def test_deploy_dry_run_shows_the_import_and_changes_nothing(tmp_path):
    primary, work = tmp_path / "space", tmp_path / "work"
    westlife_space(primary, linklist=westlife_linklist()
                   + b'"/data/ScipionUserData/projects" "two" "words" "x"\n')
    before = tree_state(str(primary))
    r = run_cli("deploy", "--dry-run", str(primary), str(work))
    assert r.code == 1, r.err  # what the deploy would end with: one line left out
    assert "old system    westlife-cloudify-scipion" in r.out
    assert "12 links from .deployment_status_do_not_delete/linklist" in r.out
    assert "old working root /data/ScipionUserData" in r.out and "5 files" in r.out
    assert "linklist:13:" in r.out
    assert not work.exists() and tree_state(str(primary)) == before
    put(primary, b"scipion-docker/project.lock", CERIT_LOCK_TIMESTAMP)
    before = tree_state(str(primary))
    r = run_cli("deploy", "-n", str(primary), str(work))
    assert r.code == 3 and "last refreshed 2024-05-01 10:00:00 UTC" in r.out, r.out
    assert not work.exists() and tree_state(str(primary)) == before


def test_status_primary_names_the_old_system_and_what_an_import_does(tmp_path):
    westlife, cerit = tmp_path / "w", tmp_path / "c"
    westlife_space(westlife)
    cerit_space(cerit, dump=cerit_python_dump())
    facts = json.loads(run_cli("status", "--primary", str(westlife), "--json").out)
    assert facts["old_system"]["system"] == "westlife-cloudify-scipion"
    assert (facts["legacy_import"]["links"], facts["legacy_import"]["root"]) == (
        12, "/data/ScipionUserData")
    text = run_cli("status", "--primary", str(cerit)).out
    assert "old system    CERIT-SC scipion-docker used this space last" in text
    assert "8 links from symlink-dump (CERIT-SC scipion-docker (Python controller)" in text
    assert "5 entries found through links to folders" in text
    assert run_cli("deploy", str(cerit), str(tmp_path / "work")).code == 0
    assert run_cli("save", str(tmp_path / "work")).code == 0
    text = run_cli("status", "--primary", str(cerit)).out
    assert "manifest      8 links" in text and "imported      8 links from symlink-dump" in text
    assert "kept, not read: links.jsonl is used" in text
