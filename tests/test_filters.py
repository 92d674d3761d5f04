"""The exclude rules the README's table promises (``--exclude``, ``--exclude-from``), one row
each, for what they match and for what they must not: ``*`` within one name, ``**`` across
folders, a trailing ``/`` for folders only, a leading ``/`` anchoring at the top of the
working copy, a pattern with a ``/`` inside matched at any depth (rsync, rclone), and an
excluded folder leaving out all it holds.
"""

from __future__ import annotations

import os

import pytest
from conftest import run_cli, write

from spaceport.engine.filters import compile_excludes, read_exclude_file
from spaceport.errors import UsageError
from spaceport.safety.lock import DEFAULT_STATUS_DIR

F, D = False, True  # the path is a file, a folder

# (pattern, path relative to the working copy, is it a folder, excluded?)
RULES = [
    # `*.tmp`: a name, at any depth; `*` stays within one name.
    ("*.log", "a.log", F, True),
    ("*.log", "Runs/001/logs/run.log", F, True),
    ("*.log", "a.log.gz", F, False),
    ("*.log", "alog", F, False),
    ("*.log", "old.log/inside.txt", F, True),  # a folder of that name, and all it holds
    ("Runs/*.log", "Runs/a.log", F, True),
    ("Runs/*.log", "Runs/001/a.log", F, False),  # `*` does not cross a `/`
    ("Runs/*/tmp/", "Runs/001/tmp/scratch.dat", F, True),
    ("Runs/*/tmp/", "Runs/001/tmp", D, True),
    ("Runs/*/tmp/", "Runs/a/b/tmp/scratch.dat", F, False),  # `*` is one folder, not two
    ("Runs/*/tmp/", "Runs/tmp/scratch.dat", F, False),
    ("Runs/*/tmp/", "Runs/001/tmpx/scratch.dat", F, False),
    ("run?.dat", "Runs/001/run1.dat", F, True),  # `?`: one character (the module's rules)
    ("run?.dat", "run12.dat", F, False),
    ("run[12].dat", "run1.dat", F, True),  # `[abc]`: a class
    ("run[12].dat", "run3.dat", F, False),
    # `**` crosses folders.
    ("Runs/**/cache", "Runs/cache", F, True),
    ("Runs/**/cache", "Runs/001/cache", D, True),
    ("Runs/**/cache", "Runs/001/extra/deep/cache", F, True),
    ("Runs/**/cache", "Runs/001/cache/blob.bin", F, True),
    ("Runs/**/cache", "Runs/001/cachex", F, False),
    ("Runs/**/cache", "Other/001/cache", F, False),
    ("Runs/*/cache", "Runs/001/extra/cache", F, False),  # the same with `*`: one folder only
    # A trailing `/`: folders only, and all they hold.
    ("Tmp/", "Tmp", D, True),
    ("Tmp/", "Tmp/x", F, True),
    ("Tmp/", "Tmp/a/b/c.dat", F, True),
    ("Tmp/", "sub/Tmp/x", F, True),  # no `/` inside: any depth
    ("Tmp/", "Tmp", F, False),  # a file named Tmp
    ("Tmp/", "sub/Tmp", F, False),
    ("Tmp/", "Tmpx/x", F, False),
    ("Tmp/", "MyTmp/x", F, False),
    ("Tmp", "sub/Tmp", F, True),  # no trailing `/`: files and folders
    ("Tmp", "sub/Tmp", D, True),
    # A leading `/` anchors at the top of the working copy.
    ("/Tmp/", "Tmp", D, True),
    ("/Tmp/", "Tmp/x", F, True),
    ("/Tmp/", "Tmp/a/b", F, True),
    ("/Tmp/", "sub/Tmp/x", F, False),
    ("/Tmp/", "sub/Tmp", D, False),
    ("/Tmp/", "Tmp", F, False),
    ("/notes.txt", "notes.txt", F, True),
    ("/notes.txt", "Runs/notes.txt", F, False),
    ("/*.txt", "b.txt", F, True),
    ("/*.txt", "a/b.txt", F, False),
    ("/Runs/*/tmp/", "Runs/001/tmp/x", F, True),
    ("/Runs/*/tmp/", "old/Runs/001/tmp/x", F, False),
    # A `/` inside, no leading `/`: matched against the end of the path, at any depth.
    ("Runs/*/tmp/", "backup/Runs/001/tmp/x", F, True),
    ("Runs/**/cache", "backup/Runs/001/cache", F, True),
    # An excluded folder leaves out all it holds, whatever the pattern's last component.
    ("Runs/*", "Runs/001", D, True),
    ("Runs/*", "Runs/001/extra/a.mrc", F, True),
    ("Runs/*", "Runs", D, False),
    ("/*", "Runs/001/extra/a.mrc", F, True),
    ("Runs/0*", "Runs/001/extra/a.mrc", F, True),
    ("Runs/0*", "Runs/101/extra/a.mrc", F, False),
    # rsync's `- ` prefix (an exclude rule) is read as the pattern.
    ("- *.tmp", "a/b.tmp", F, True),
    ("- *.tmp", "a/b.tmpx", F, False),
]


@pytest.mark.parametrize("pattern, path, is_dir, excluded", RULES,
                         ids=[f"{p}|{q}{'/' if d else ''}" for p, q, d, _ in RULES])
def test_each_rule_matches_what_the_readme_says_and_nothing_else(pattern, path, is_dir,
                                                                excluded):
    assert compile_excludes([pattern]).excludes(path, is_dir) is excluded


def test_the_recommended_scipion_filter():
    """README: --exclude 'Runs/*/tmp/' --exclude '/Tmp/', together."""
    ex = compile_excludes(["Runs/*/tmp/", "/Tmp/"])
    assert ex.excludes("Runs/000041_ProtCTF/tmp/x.mrc")
    assert ex.excludes("Tmp/fifo")
    for kept in ("Runs/000041_ProtCTF/extra/x.mrc", "Runs/000041_ProtCTF/logs/run.log",
                 "project.sqlite", "Runs/000041_ProtCTF/tmp", "sub/Tmp/x"):
        assert not ex.excludes(kept), kept


def test_nothing_is_excluded_without_patterns():
    ex = compile_excludes([])
    assert not ex and not ex.excludes("Tmp/x") and not ex.excludes("Tmp", True)


@pytest.mark.parametrize("pattern", ["", "  ", "/", "!Tmp/", "+ Runs/", "+ *.mrc"])
def test_patterns_that_would_mean_something_else_are_refused(pattern):
    with pytest.raises(UsageError):
        compile_excludes([pattern])


def test_an_exclude_from_file_skips_comments_and_blank_lines(tmp_path):
    rules = tmp_path / "filters.txt"
    rules.write_text("# Scipion's scratch\n"
                     "Runs/*/tmp/\n"
                     "\n"
                     "   \n"
                     "; rsync's other comment\n"
                     "  # an indented comment\n"
                     "/Tmp/\n"
                     "- *.bak\n")
    patterns = read_exclude_file(str(rules))
    assert patterns == ["Runs/*/tmp/", "/Tmp/", "- *.bak"]
    ex = compile_excludes(patterns)
    assert ex.patterns == ("Runs/*/tmp/", "/Tmp/", "*.bak")
    assert ex.excludes("Runs/1/tmp/a") and ex.excludes("Tmp/a") and ex.excludes("x/y.bak")
    assert not ex.excludes("sub/Tmp/a") and not ex.excludes("# Scipion's scratch")
    with pytest.raises(UsageError):
        read_exclude_file(str(tmp_path / "missing.txt"))


def test_a_save_never_deletes_on_the_primary_what_an_excluded_folder_holds(tmp_path):
    """`Runs/*` excludes each run folder; the files inside them are excluded too. They used
    not to be (pathspec matched `Runs/001` but not `Runs/001/a.mrc`), and a save took the
    saved files inside for deleted and moved them to the primary's trash."""
    primary, work = str(tmp_path / "primary"), str(tmp_path / "work")
    for i in range(6):
        write(primary, f"keep/f{i}.txt", b"k")
    write(primary, "Runs/001/extra/a.mrc", b"a")
    assert run_cli("deploy", primary, work).code == 0
    r = run_cli("save", work, "--exclude", "Runs/*")
    assert r.code == 0, r.err
    assert "trash" not in r.out, r.out
    assert open(os.path.join(primary, "Runs/001/extra/a.mrc"), "rb").read() == b"a"
    assert not os.path.exists(os.path.join(primary, DEFAULT_STATUS_DIR, "trash"))
