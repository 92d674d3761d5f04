"""The state index: rows round-trip any path; damage is a clear error."""

import os

import pytest

from spaceport.engine.index import Index, Known
from spaceport.engine.scan import Entry, Kind
from spaceport.errors import FormatError


def test_rows_round_trip_with_non_utf8_paths(tmp_path):
    index = Index(str(tmp_path / "i.sqlite"))
    odd = os.fsdecode(b"dir/caf\xe9\nx")
    rows = [Known(Entry(odd, Kind.FILE, 3, 10, 0o644, 7), 3, 11),
            Known(Entry("d", Kind.DIR, mode=0o755), None, None),
            Known(Entry("l", Kind.LINK, target=os.fsdecode(b"\xff")), None, None)]
    index.record(rows)
    loaded = index.load()
    assert loaded[odd].entry.sig() == rows[0].entry.sig() and loaded[odd].pmtime_ns == 11
    assert loaded["l"].entry.target == os.fsdecode(b"\xff")
    index.record([], forget=["d"])
    assert set(index.load()) == {odd, "l"}
    index.close()


def test_inflight_temporaries(tmp_path):
    index = Index(str(tmp_path / "i.sqlite"))
    index.add_inflight("primary", [("a/f", "a/.spaceport-tmp-1"), ("g", ".spaceport-tmp-2")])
    assert sorted(index.inflight("primary")) == [".spaceport-tmp-2", "a/.spaceport-tmp-1"]
    assert index.inflight("work") == []
    index.record([], finished_tmps=[("primary", "a/.spaceport-tmp-1")])
    assert index.inflight("primary") == [".spaceport-tmp-2"]


def test_damaged_index_is_a_format_error(tmp_path):
    path = tmp_path / "i.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FormatError, match="damaged"):
        Index(str(path))


FORMAT_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE entries (
    path BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL, ino INTEGER NOT NULL, target BLOB,
    psize INTEGER, pmtime_ns INTEGER, ctime_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE inflight (
    side TEXT NOT NULL, path BLOB NOT NULL, tmp BLOB NOT NULL, PRIMARY KEY (side, tmp)
) WITHOUT ROWID;
INSERT INTO meta VALUES ('index_format', '2');
INSERT INTO entries VALUES (X'6c6f67', 1, 5000000, 10, 420, 7, NULL, 5000000, 11, 12);
"""


def test_an_index_of_format_2_is_migrated_its_rows_without_a_digest(tmp_path):
    """Format 3 adds the digest (issue 12): old rows have none, so a file that grew is
    uploaded whole once (never appended on faith), and gets one then. Format 4 adds the
    primary's ctime (issue 18): unknown in old rows, size and mtime alone judge them."""
    import sqlite3

    from spaceport.engine.index import INDEX_FORMAT

    path = str(tmp_path / "i.sqlite")
    db = sqlite3.connect(path)
    db.executescript(FORMAT_2)
    db.close()
    index = Index(path)
    assert index.get_meta("index_format") == str(INDEX_FORMAT) == "4"
    old = index.get("log")
    assert (old.entry.size, old.entry.ctime_ns, old.psize, old.digest, old.pctime_ns) == (
        5000000, 12, 5000000, None, None)
    old.digest, old.pctime_ns = b"\x01" * 32, 13
    index.record([old])
    assert (index.get("log").digest, index.get("log").pctime_ns) == (b"\x01" * 32, 13)
    index.invalidate(["log"])  # a row that proves nothing carries no digest either
    assert index.get("log").digest is None
    index.close()


def test_appends_in_flight_end_with_their_row_in_one_step(tmp_path):
    index = Index(str(tmp_path / "i.sqlite"))
    row = Known(Entry("log", Kind.FILE, 3 << 20, 10, 0o644, 7, None, 12), 3 << 20, 11,
                b"\x02" * 32)
    index.start_append("log", 2 << 20)
    assert index.appending("log") == 2 << 20 and index.appends_in_flight() == {"log": 2 << 20}
    index.end_append("log", row)
    assert index.appending("log") is None and index.get("log").digest == b"\x02" * 32
    index.start_append("other", 5)
    index.clear()
    assert index.appends_in_flight() == {}
    index.close()
