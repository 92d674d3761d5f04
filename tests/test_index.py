"""The state index: rows round-trip any path; damage is a clear error."""

import os

import pytest

from spaceport.errors import FormatError
from spaceport.index import Index, Known
from spaceport.scan import Entry, Kind


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
