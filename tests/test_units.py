"""Unit tests for the small modules: retry, progress, plan, marker."""

import errno
import json
import os

import pytest

from spaceport.engine.index import Known
from spaceport.engine.plan import plan_deploy, plan_save
from spaceport.engine.progress import RichTracker, Tracker
from spaceport.engine.scan import Entry, Kind, ScanResult
from spaceport.errors import FormatError, RefusedError
from spaceport.formats.marker import new_marker, read_marker, require_marker, write_marker
from spaceport.store.retry import RetryPolicy, retry_call

FAST = RetryPolicy(attempts=3, initial_delay=0.001, max_delay=0.002)


def flaky(errors):
    calls = []

    def fn():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"
    return fn, calls


def test_transient_errors_are_retried():
    fn, calls = flaky([OSError(errno.EIO, "io"), OSError(errno.ENOTCONN, "gone")])
    assert retry_call(FAST, fn) == "ok" and len(calls) == 3


def test_permanent_errors_are_not_retried():
    fn, calls = flaky([OSError(errno.ENOSPC, "full")])
    with pytest.raises(OSError):
        retry_call(FAST, fn)
    assert len(calls) == 1


def test_retries_end_with_the_last_error():
    fn, calls = flaky([OSError(errno.EIO, "io")] * 5)
    with pytest.raises(OSError):
        retry_call(FAST, fn)
    assert len(calls) == 3


def test_tracker_counts_from_many_threads():
    import threading
    tracker = Tracker()
    tracker.start("t", files=800, nbytes=800 * 10)

    def work():
        for _ in range(100):
            tracker.advance("t", files=1, nbytes=10)
    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    tracker.finish("t")
    (task,) = tracker.snapshot()
    assert task["files_done"] == 800 and task["bytes_done"] == 8000 and task["finished"]
    assert task["eta"] is None and task["rate"] > 0


def test_rich_tracker_draws_and_closes(capsys):
    from rich.console import Console
    console = Console(record=True, width=120, force_terminal=False)
    tracker = RichTracker(console)
    tracker.start("deploy", files=2, nbytes=2048)
    tracker.advance("deploy", files=1, nbytes=1024)
    tracker.advance("deploy", files=1, nbytes=1024)
    tracker.finish("deploy")
    assert tracker.progress is None  # the live display stops when no task runs
    text = console.export_text()
    assert "deploy" in text and "2/2 files" in text


def known(entry):
    return Known(entry, entry.size, entry.mtime_ns)


def test_plan_save_sees_new_changed_deleted_and_unknown():
    idx = {p: known(e) for p, e in {
        "same": Entry("same", Kind.FILE, 1, 1, 0o644, 1),
        "changed": Entry("changed", Kind.FILE, 1, 1, 0o644, 2),
        "gone": Entry("gone", Kind.FILE, 1, 1, 0o644, 3),
        "dir": Entry("dir", Kind.DIR, mode=0o755),
        "dir/gone": Entry("dir/gone", Kind.FILE, 1, 1, 0o644, 4),
        "hidden/x": Entry("hidden/x", Kind.FILE, 1, 1, 0o644, 5),
        "link": Entry("link", Kind.LINK, target="a"),
    }.items()}
    scan = ScanResult(entries={
        "same": Entry("same", Kind.FILE, 1, 1, 0o644, 1),
        "changed": Entry("changed", Kind.FILE, 2, 5, 0o644, 2),
        "new": Entry("new", Kind.FILE, 7, 1, 0o600, 9),
        "newdir": Entry("newdir", Kind.DIR, mode=0o700),
        "link": Entry("link", Kind.LINK, target="b"),
    }, unreadable={"hidden": PermissionError()})
    plan = plan_save(scan, idx)
    assert sorted(e.path for e in plan.uploads) == ["changed", "new"]
    assert [e.path for e in plan.mkdirs] == ["newdir"]
    assert [k.entry.path for k in plan.deletes] == ["dir/gone", "dir", "gone"]  # children first
    assert plan.kept_unknown == ["hidden/x"]  # cannot tell it is gone: never deleted
    assert plan.links_changed and plan.unchanged == 1 and plan.deleted_files == 2


def test_plan_deploy_copies_only_what_changed_and_replaces_only_what_is_proven():
    primary = ScanResult(entries={
        "a": Entry("a", Kind.FILE, 1, 10, 0o644, 1),
        "b": Entry("b", Kind.FILE, 1, 99, 0o644, 2),
        "c": Entry("c", Kind.FILE, 1, 99, 0o644, 3),
        "d": Entry("d", Kind.DIR, mode=0o755)})
    work = ScanResult(entries={
        "a": Entry("a", Kind.FILE, 1, 10, 0o644, 11, None, 7),
        "b": Entry("b", Kind.FILE, 1, 10, 0o644, 12, None, 7),
        "c": Entry("c", Kind.FILE, 1, 10, 0o644, 14, None, 8),  # rewritten since saved
        "gone": Entry("gone", Kind.FILE, 1, 10, 0o644, 15, None, 7),
        "old": Entry("old", Kind.FILE, 1, 10, 0o644, 13, None, 7)})
    idx = {p: Known(work.entries[p], 1, 10) for p in ("a", "b", "gone")}
    idx["c"] = Known(Entry("c", Kind.FILE, 1, 10, 0o644, 14, None, 7), 1, 10)
    plan = plan_deploy(primary, work, idx)
    assert [e.path for e, _ in plan.current] == ["a"]
    assert [e.path for e in plan.downloads] == ["b"]  # changed on the primary meanwhile
    assert list(plan.replaces) == ["b"]  # proven: its version goes to the trash first
    assert sorted(e.path for e in plan.to_trash) == ["b", "gone"]
    assert [e.path for e in plan.mkdirs] == ["d"] and [e.path for e in plan.removals] == ["gone"]
    assert sorted(e.path for e in plan.kept) == ["c", "old"]  # not proven: the user's


def test_marker_round_trip_and_damage(tmp_path):
    assert read_marker(str(tmp_path)) is None
    with pytest.raises(RefusedError):
        require_marker(str(tmp_path))
    marker = new_marker("/p", ".status")
    write_marker(str(tmp_path), marker)
    assert read_marker(str(tmp_path)) == marker and len(marker.token) == 8
    path = tmp_path / ".spaceport" / "deployment.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": 7}))
    with pytest.raises(FormatError, match="newer"):
        read_marker(str(tmp_path))
    path.write_text("{")
    with pytest.raises(FormatError, match="damaged"):
        read_marker(str(tmp_path))
    assert not [n for n in os.listdir(tmp_path / ".spaceport") if "tmp" in n]
