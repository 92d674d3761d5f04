"""Importing the old scripts' link lists and showing their locks."""

from spaceport.legacy import parse_linklist, parse_symlink_dump, relative_under
from spaceport.links import Link
from spaceport.lock import LegacyLock, parse_legacy

ROOT = "/mnt/vol-project"


def test_relative_under_tolerates_doubled_and_trailing_slashes():
    assert relative_under("/mnt/vol-project//sub/dir", ROOT) == "sub/dir"
    assert relative_under("/mnt/vol-project/", ROOT) == ""
    assert relative_under("/mnt/vol-project", ROOT) == ""
    assert relative_under("/mnt/other/x", ROOT) is None
    assert relative_under("/mnt/vol-projectX/x", ROOT) is None


def test_linklist_lines():
    text = ('"/mnt/vol-project//Runs/001/extra" "in.mrc" "../../000/extra/in.mrc"\n'
            '"/mnt/vol-project/" "top link" "/mnt/vol-project/Runs/001"\n'
            '"/mnt/vol-project//a b" "c d" "/data/outside path"\n'
            'not a valid line\n'
            '"/elsewhere/x" "n" "t"\n')
    skipped = []
    links = parse_linklist(text, ROOT, skipped)
    assert links == [Link("Runs/001/extra/in.mrc", "../../000/extra/in.mrc"),
                     Link("top link", "Runs/001", anchored=True),
                     Link("a b/c d", "/data/outside path")]
    assert len(skipped) == 2


def test_symlink_dump_lines():
    text = ("../000/extra/in.mrc /mnt/vol-project/Runs/001/extra/in.mrc\n"
            "/mnt/vol-project/Runs/002 /mnt/vol-project/latest\n"
            "/data/with space/x /mnt/vol-project/a b/link\n"
            "garbage\n")
    skipped = []
    links = parse_symlink_dump(text, ROOT, skipped)
    assert links == [Link("Runs/001/extra/in.mrc", "../000/extra/in.mrc"),
                     Link("latest", "Runs/002", anchored=True),
                     Link("a b/link", "/data/with space/x")]
    assert skipped == ["symlink-dump:4: 'garbage'"]


def test_old_lock_formats():
    lock = parse_legacy("status/lock", "HOST: node7\nDIR: /mnt/vol-project\nDATE: Mon Jan 1\n")
    assert isinstance(lock, LegacyLock) and lock.host == "node7" and lock.date == "Mon Jan 1"
    bare = parse_legacy("status/project.lock", "1700000000\n")
    assert bare is not None and bare.date == "1700000000"
    assert parse_legacy("status/lock", "random words\n") is None
