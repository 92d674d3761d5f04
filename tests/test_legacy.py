"""The old westlife and CERIT tools' files, read as they really are (issue 13).

The fixtures (legacy_spaces.py) are checked against what the old tools' own commands print
on real trees: GNU find for westlife's list and the bash cloner's dump, and a walk that goes
through links to folders, as the CERIT Python controller's does.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from legacy_spaces import (CERIT_BASH_FILES, CERIT_BASH_LINKS, CERIT_BASH_PHANTOMS, CERIT_FILES,
                           CERIT_LINKS, CERIT_PHANTOMS, CERIT_ROOT, DATASET_FILES, DATASET_LINKS,
                           WESTLIFE_EARLY_LOCK, WESTLIFE_FILES, WESTLIFE_LINKS, WESTLIFE_LOCK, S,
                           cerit_bash_dump, cerit_expected, cerit_python_dump, linklist_line, put,
                           westlife_expected, westlife_linklist)

from spaceport.formats.legacy import (CERIT_BASH, CERIT_PYTHON, NEIGHBOUR, WESTLIFE, LegacyLock,
                                      RootUnknown, parse_cerit_lock, parse_linklist,
                                      parse_symlink_dump, parse_westlife_lock, read_legacy_links)
from spaceport.formats.links import resolve_target
from spaceport.safety.lock import force_unlock, read_lock
from spaceport.store import PRIMARY_CAPABILITIES, PosixStore

STATUS = S.decode()
needs_find = pytest.mark.skipif(shutil.which("find") is None, reason="needs GNU find")


def restored(found, work: str = "/w") -> dict[bytes, bytes]:
    """The links an import re-creates under ``work``: path -> exact target, as bytes."""
    return {os.fsencode(link.path): os.fsencode(resolve_target(link, work))
            for link in found.links}


def make_links(root: str, links) -> None:
    base = os.fsencode(root)
    for *where, target in links:
        path = os.path.join(base, *[w for w in where if w])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)


# -- the fixtures are what the old tools write -----------------------------------------

@needs_find
def test_westlife_fixture_is_what_gnu_find_prints(tmp_path):
    root = tmp_path / "data" / "ScipionUserData"
    make_links(str(root), WESTLIFE_LINKS)
    for rel in WESTLIFE_FILES:
        put(root, rel)
    printed = subprocess.run(["find", f"{root}/", "-type", "l", "-printf", '"%h" "%f" "%l"\\n'],
                             capture_output=True, check=True).stdout
    prefix = b'"' + os.fsencode(tmp_path)
    lines = [b'"' + line[len(prefix):] if line.startswith(prefix) else line
             for line in printed.split(b"\n")[:-1]]
    assert sorted(lines) == sorted(westlife_linklist().split(b"\n")[:-1])


@needs_find
def test_bash_cloner_fixture_is_what_its_find_prints(tmp_path):
    root = tmp_path / "mnt" / "vol-project"
    make_links(str(root), CERIT_BASH_LINKS)
    for rel in CERIT_BASH_FILES:
        put(root, rel)
    dump = tmp_path / "dump"
    for _ in range(2):  # two saves, each appending to the dump it had restored
        subprocess.run(["sh", "-c", 'cd "$1" && for link in $(find -L "./" -xtype l); do '
                        'echo "$(readlink ${link}) ${link}" >> "$2"; done', "sh", str(root),
                        str(dump)], check=True)
    assert sorted(dump.read_bytes().split(b"\n")) == sorted(cerit_bash_dump().split(b"\n"))


def walk_through_folder_links(folder: bytes, shown: bytes) -> list[bytes]:
    """``TARGET LINKPATH`` lines as a walk that treats links to folders as folders writes
    them: the links of a folder (folders first), then each subfolder, links included."""
    names = sorted(os.listdir(folder))
    dirs = [n for n in names if os.path.isdir(os.path.join(folder, n))]
    files = [n for n in names if n not in dirs]
    out = [os.readlink(os.path.join(folder, n)) + b" " + shown + b"/" + n + b"\n"
           for n in dirs + files if os.path.islink(os.path.join(folder, n))]
    for d in dirs:
        out += walk_through_folder_links(os.path.join(folder, d), shown + b"/" + d)
    return out


def test_cerit_python_fixture_is_what_a_walk_through_folder_links_writes(tmp_path):
    project, dataset = tmp_path / "mnt" / "vol-project", tmp_path / "mnt" / "vol-dataset"
    own = os.fsencode(tmp_path)
    make_links(str(project), [(p, own + t if t == b"/mnt/vol-dataset" else t)
                              for p, t in CERIT_LINKS])
    for rel in CERIT_FILES:
        put(project, rel)
    for rel in DATASET_FILES:
        put(dataset, rel)
    make_links(str(dataset), DATASET_LINKS)
    lines = walk_through_folder_links(os.fsencode(project), CERIT_ROOT)
    assert b"".join(lines).replace(own + b"/mnt/", b"/mnt/") == cerit_python_dump()


# -- westlife's linklist ---------------------------------------------------------------

def test_westlife_list_imports_all_twelve_links_with_no_option():
    found = parse_linklist(westlife_linklist(), f"{STATUS}/linklist")
    assert (found.system, found.root) == (WESTLIFE, "/data/ScipionUserData")
    assert restored(found) == westlife_expected("/w")
    assert len(found.links) == 12 and not found.unrestored and not found.phantoms


def test_early_westlife_root_scratch_is_found():
    found = parse_linklist(westlife_linklist(root=b"/scratch"), "linklist")
    assert found.root == "/scratch" and len(found.links) == 12
    # Absolute targets under /data/ScipionUserData were written by a later version only;
    # here they stay verbatim, targets under /scratch and the alias are re-anchored.
    anchored = {link.path for link in found.links if link.anchored}
    assert anchored == {"projects/Ribosome/Runs/000064_ProtMotionCorr/logs/run.stdout"}


def test_a_custom_root_is_found_from_the_primary_folders(tmp_path):
    raw = westlife_linklist(root=b"/home/lab/cryo work")
    for folder, _, _ in WESTLIFE_LINKS:
        os.makedirs(os.path.join(os.fsencode(tmp_path), folder), exist_ok=True)
    found = parse_linklist(raw, "linklist", is_dir=lambda rel: (tmp_path / rel).is_dir())
    assert found.root == "/home/lab/cryo work" and len(found.links) == 12
    assert not found.unrestored
    with pytest.raises(RootUnknown, match="cannot tell the old working root"):
        parse_linklist(raw, "linklist", is_dir=lambda rel: False)
    given_root = parse_linklist(raw, "linklist", root="/home/lab/cryo work/")
    assert given_root.root == "/home/lab/cryo work" and len(given_root.links) == 12


def test_linklist_lines_that_cannot_be_read_are_reported_not_guessed():
    D = b"/data/ScipionUserData/Runs"
    good = {n: linklist_line(b"/data/ScipionUserData", b"Runs", n, b"t-" + n)
            for n in (b"A", b"B", b"C", b"D", b"E", b"F", b"G")}
    raw = (good[b"A"]                                     # 1
           + b'"' + D + b'" "two" "words" "x"\n'           # 2 a name holding " ": ambiguous
           + good[b"B"] + good[b"C"]                       # 3, 4 (4 is next to a fragment)
           + b'"' + D + b'" "new\nline" "t"\n'             # 5, 6 a name with a line break
           + good[b"D"] + good[b"E"]                       # 7 (next to 6), 8
           + b'"' + D + b'" "n2" "x"\ny"\n'                # 9 looks whole, 10 is its tail
           + good[b"F"] + good[b"G"])                      # 11 (next to 10), 12
    found = parse_linklist(raw, "linklist")
    assert sorted(link.path for link in found.links) == ["Runs/A", "Runs/B", "Runs/E", "Runs/G"]
    reasons = {u.line: u.reason for u in found.unrestored}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 9, 10, 11]
    assert '" "' in reasons[2] and reasons[4] == reasons[9] == NEIGHBOUR
    assert "line break" in reasons[5] and "line break" in reasons[10]
    assert str(found.unrestored[0]).startswith("linklist:2: ")
    assert not any(link.path in ("Runs/new", "Runs/n2") for link in found.links)


def test_non_utf8_names_stay_bytes():
    found = parse_linklist(westlife_linklist(), "linklist")
    paths = {os.fsencode(link.path) for link in found.links}
    assert b"projects/Ribosome/Runs/000128_ProtCTFFind/extra/caf\xe9.mrc" in paths


# Random bytes, and the pieces that break the old format: '" "', line breaks, quotes.
TRICKY = [b'two" "words', b"new\nline", b'q"', b'"', b" lead", b"trail\n", b'x"\ny', b"\n"]
names = st.one_of(st.binary(min_size=1, max_size=12), st.sampled_from(TRICKY)).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
targets = st.one_of(st.binary(min_size=1, max_size=20), st.sampled_from(TRICKY + [b'say "hi"']),
                    ).filter(lambda b: b"\0" not in b)


@needs_find
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([b"", b"Runs", b"Runs/x y"]), names, targets),
                min_size=1, max_size=6, unique_by=lambda t: (t[0], t[1])))
def test_any_names_find_prints_are_imported_exactly_or_reported(tmp_path, items):
    """Whatever the names: every link imported is exactly one of the tree's, every other
    line is reported; with no '"' and no line break in them, all are imported."""
    base = tmp_path / os.urandom(4).hex() / "data" / "ScipionUserData"
    make_links(str(base), items)
    printed = subprocess.run(["find", f"{base}/", "-type", "l", "-printf", '"%h" "%f" "%l"\\n'],
                             capture_output=True, check=True).stdout
    prefix = b'"' + os.fsencode(base.parent.parent)
    raw = b"\n".join(b'"' + line[len(prefix):] if line.startswith(prefix) else line
                     for line in printed.split(b"\n"))
    truth = {(folder + b"/" + name if folder else name): target for folder, name, target in items}
    found = parse_linklist(raw, "linklist")
    for link in found.links:
        assert truth[os.fsencode(link.path)] == os.fsencode(resolve_target(link, "/data/ScipionUserData"))
    if not any(b'"' in n + t or b"\n" in n + t for _, n, t in items):
        assert len(found.links) == len(items) and not found.unrestored
    else:  # all the others are reported, none silently dropped
        lines_used = {u.line for u in found.unrestored} | {l.origin[1] for l in found.links}
        assert lines_used == set(range(1, found.lines + 1))


# -- CERIT's symlink-dump --------------------------------------------------------------

DUMP_TRICKY = [b"new\nline", b"x /mnt/vol-project/y", b" /mnt/vol-project/", b"a b", b"\n"]
dump_names = st.one_of(names, st.sampled_from(DUMP_TRICKY)).filter(lambda b: b"/" not in b)
dump_targets = st.one_of(targets, st.sampled_from(DUMP_TRICKY + [b"/mnt/vol-project/Runs"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"", b"Runs", b"Runs/x y"]), dump_names, dump_targets),
                min_size=1, max_size=8, unique_by=lambda t: (t[0], t[1])),
       st.booleans())
@example(items=[(b"", b"p", b"x /mnt/vol-project/y")], relative=True)  # a tie of the forms
@example(items=[(b"Runs", b"new\nline", b"t"), (b"", b"ok", b"u")], relative=False)
def test_any_names_in_a_dump_are_imported_exactly_or_reported(items, relative):
    """The dump's own line format, ``TARGET LINKPATH``, absolute or ``./``: never a wrong
    link, every line accounted for, and all imported when no name breaks the format."""
    links = {(f + b"/" + n if f else n): t for f, n, t in items}
    links = {p: t for p, t in links.items()  # a link inside another link's path is a phantom
             if not any(p.startswith(q + b"/") for q in links)}
    lead = b"./" if relative else CERIT_ROOT + b"/"
    raw = b"".join(t + b" " + lead + p + b"\n" for p, t in links.items())
    try:
        found = parse_symlink_dump(raw, "symlink-dump")
    except RootUnknown:
        return  # no line shows the root, or the form is a tie: the deploy is refused
    for link in found.links:
        expected = links[os.fsencode(link.path)]
        if expected.startswith(b"/mnt/vol-project/"):
            expected = b"/w" + expected[len(b"/mnt/vol-project"):]
        assert os.fsencode(resolve_target(link, "/w")) == expected
    lines_used = {u.line for u in found.unrestored} | {l.origin[1] for l in found.links}
    assert not found.phantoms
    if not any(b"\n" in p + t or b" /mnt/vol-project/" in t + p or b" ./" in t + p
               for p, t in links.items()):
        assert len(found.links) == len(links) and not found.unrestored
    else:
        assert lines_used == set(range(1, found.lines + 1))


def test_python_dump_imports_the_project_links_and_skips_phantoms_once():
    found = parse_symlink_dump(cerit_python_dump(), "symlink-dump")
    assert (found.system, found.root) == (CERIT_PYTHON, "/mnt/vol-project")
    assert restored(found) == cerit_expected("/w")
    assert sorted(found.phantoms) == sorted(p.decode() for p, _ in CERIT_PHANTOMS)
    assert found.through == ["Ribosome/dataset", "Ribosome/latest"]
    assert not found.unrestored and len(found.links) == 8
    plan = "\n".join(found.describe())
    assert "5 entries found through links to folders (Ribosome/dataset, Ribosome/latest)" in plan


def test_bash_dump_imports_seven_links_once_each():
    found = parse_symlink_dump(cerit_bash_dump(), "symlink-dump")
    assert (found.system, found.root) == (CERIT_BASH, "/mnt/vol-project")
    assert restored(found) == cerit_expected("/w", CERIT_BASH_LINKS)
    assert len(found.links) == 7 and found.repeated == 10 and not found.unrestored
    assert sorted(found.phantoms) == sorted(p.decode() for p, _ in CERIT_BASH_PHANTOMS)


def test_dump_name_with_a_line_break_is_not_misplaced():
    raw = (b"../a /mnt/vol-project/Runs/ok1\n"             # 1
           b"../b /mnt/vol-project/Runs/ok2\n"             # 2
           b"../c /mnt/vol-project/Runs/new\nline\n"       # 3, 4: one link named "new\nline"
           b"../d /mnt/vol-project/Runs/after\n"           # 5: next to the fragment
           b"../e /mnt/vol-project/Runs/ok3\n")            # 6
    found = parse_symlink_dump(raw, "symlink-dump")
    assert sorted(link.path for link in found.links) == ["Runs/ok1", "Runs/ok2", "Runs/ok3"]
    assert [u.line for u in found.unrestored] == [3, 4, 5]
    assert found.unrestored[0].text == "../c /mnt/vol-project/Runs/new"


def test_dump_target_holding_the_root_is_reported_and_what_lies_under_it_too():
    raw = (b"/data/x /mnt/vol-project/y /mnt/vol-project/Ribosome/dataset\n"
           b"movies/gain-ref.mrc /mnt/vol-project/Ribosome/dataset/gain.mrc\n"
           b"../a /mnt/vol-project/Ribosome/ok\n")
    found = parse_symlink_dump(raw, "symlink-dump")
    assert [link.path for link in found.links] == ["Ribosome/ok"]
    reasons = {u.line: u.reason for u in found.unrestored}
    assert "occurs 2 times" in reasons[1]
    assert "Ribosome/dataset" in reasons[2] and "could not be read" in reasons[2]


def test_one_link_listed_with_two_targets_is_not_guessed():
    raw = (b"Runs/1 /mnt/vol-project/Ribosome/latest\n"
           b"Runs/2 /mnt/vol-project/Ribosome/latest\n"
           b"x /mnt/vol-project/Ribosome/latest/extra/in.mrc\n"
           b"../a /mnt/vol-project/Ribosome/ok\n")
    found = parse_symlink_dump(raw, "symlink-dump")
    assert [link.path for link in found.links] == ["Ribosome/ok"]
    assert [u.line for u in found.unrestored] == [1, 2, 3]
    assert "lines 1, 2" in found.unrestored[0].reason


def test_newest_list_is_imported_and_the_older_one_named(tmp_path):
    put(tmp_path, S + b"/linklist", westlife_linklist())
    put(tmp_path, b"symlink-dump", cerit_python_dump())
    os.utime(tmp_path / STATUS / "linklist", (1_600_000_000, 1_600_000_000))
    with PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000") as store:
        found = read_legacy_links(store, STATUS)
        assert found.system == CERIT_PYTHON and found.ignored == [f"{STATUS}/linklist"]
        os.utime(tmp_path / "symlink-dump", (1_500_000_000, 1_500_000_000))
        found = read_legacy_links(store, STATUS)
        assert found.system == WESTLIFE and found.ignored == ["symlink-dump"]


# -- the old locks ---------------------------------------------------------------------

def test_westlife_lock_fields_are_read_as_written():
    lock = parse_westlife_lock(f"{STATUS}/lock", WESTLIFE_LOCK.decode())
    assert (lock.form, lock.host, lock.mount, lock.directory, lock.user, lock.date) == (
        "westlife", "scipion-vm.cloud.example.org", "/mnt/onedata/scipion-space",
        "/data/ScipionUserData", "root", "2019-05-14 10:23:45+02:00")
    text = lock.describe()
    assert "scipion-vm.cloud.example.org" in text and "2019-05-14 10:23:45+02:00" in text
    early = parse_westlife_lock(f"{STATUS}/lock", WESTLIFE_EARLY_LOCK.decode())
    assert early.form == "westlife-early" and early.host == "scipion-old.cloud.example.org"
    assert parse_westlife_lock("lock", "some words\n") is None


def test_cerit_lock_is_held_empty_or_with_a_timestamp():
    empty = parse_cerit_lock("scipion-docker/project.lock", b"")
    assert empty.form == "cerit-empty" and "empty" in empty.describe()
    dated = parse_cerit_lock("scipion-docker/project.lock", b"1714557600")
    assert (dated.form, dated.timestamp, dated.date) == (
        "cerit-timestamp", 1714557600, "2024-05-01 10:00:00 UTC")
    assert "by this host's clock" in dated.describe()


@pytest.mark.parametrize("rel, content, form", [
    (S + b"/lock", WESTLIFE_LOCK, "westlife"),
    (S + b"/lock", WESTLIFE_EARLY_LOCK, "westlife-early"),
    (b"scipion-docker/project.lock", b"", "cerit-empty"),
    (b"scipion-docker/project.lock", b"1714557600", "cerit-timestamp"),
])
def test_read_lock_sees_each_old_lock_and_unlock_sets_it_aside(tmp_path, rel, content, form):
    put(tmp_path, rel, content)
    with PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000") as store:
        holder = read_lock(store, STATUS)
        assert isinstance(holder, LegacyLock) and holder.form == form
        assert force_unlock(store, STATUS).form == form
        assert read_lock(store, STATUS) is None
    aside = [n for n in os.listdir(os.path.dirname(tmp_path / os.fsdecode(rel)))
             if ".broken-" in n]
    assert len(aside) == 1
    assert (tmp_path / os.fsdecode(rel)).with_name(aside[0]).read_bytes() == content


def test_a_project_lock_inside_the_status_folder_is_not_a_lock(tmp_path):
    put(tmp_path, S + b"/project.lock", b"1714557600")  # no tool ever wrote it there
    with PosixStore(str(tmp_path), PRIMARY_CAPABILITIES, temp_token="00000000") as store:
        assert read_lock(store, STATUS) is None
