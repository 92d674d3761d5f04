"""Scanning: links are never followed, special files are skipped, our temporaries found."""

import os
import socket

import pytest
from conftest import write

from spaceport.engine.scan import Kind, scan_tree
from spaceport.store import WORK_CAPABILITIES, PosixStore
from spaceport.store.base import temp_name


def test_scan_kinds_links_specials_and_temps(tmp_path, caplog):
    write(tmp_path, "d/f", b"abc", mode=0o640)
    os.makedirs(tmp_path / "empty")
    os.symlink("/etc", tmp_path / "d" / "to_etc")  # a link to a directory: not entered
    os.symlink("loop", tmp_path / "loop")  # a link to itself
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    ours = "d/" + temp_name("cafe0001")
    write(tmp_path, ours, b"leftover")
    write(tmp_path, "d/" + temp_name("ffff0002"), b"a user file that looks like ours")
    write(tmp_path, ".spaceport/index.sqlite", b"")
    with PosixStore(str(tmp_path), WORK_CAPABILITIES, temp_token="cafe0001") as store:
        for jobs in (1, 4):
            result = scan_tree(store, skip_top={".spaceport"}, temp_token="cafe0001", jobs=jobs)
            kinds = {p: e.kind for p, e in result.entries.items()}
            assert kinds["d/f"] is Kind.FILE and kinds["empty"] is Kind.DIR
            assert kinds["d/to_etc"] is Kind.LINK and result.entries["d/to_etc"].target == "/etc"
            assert kinds["loop"] is Kind.LINK
            assert not any(p.startswith("d/to_etc/") for p in kinds)
            assert sorted(result.special) == ["fifo", "sock"]
            assert result.temps == [ours]
            assert len([p for p in kinds if "spaceport-tmp" in p]) == 1  # the foreign one is data
            assert not any(p.startswith(".spaceport") for p in kinds)
            assert result.entries["d/f"].mode == 0o640 and result.entries["d/f"].size == 3
    sock.close()
    assert "special files" in caplog.text


def test_unreadable_directories_are_reported_not_treated_as_empty(tmp_path):
    write(tmp_path, "a/f")
    write(tmp_path, "b/g")

    class FailingStore(PosixStore):
        # Fake: as root every directory is readable; a listing failure is injected.
        def listdir(self, rel):
            if rel == "a":
                raise PermissionError(13, "Permission denied", rel)
            return super().listdir(rel)

    with FailingStore(str(tmp_path), WORK_CAPABILITIES, temp_token="00000000") as store:
        result = scan_tree(store)
    assert "a" in result.unreadable and result.under_unreadable("a/f")
    assert "b/g" in result.entries and "a/f" not in result.entries


class VanishingStore(PosixStore):
    """A writer removes a folder between the listing of its parent and its own (Scipion
    deleting a run while a save scans): the real folder is removed at that moment."""

    def __init__(self, root: str, victim: str):
        super().__init__(root, WORK_CAPABILITIES, temp_token="cafe0001")
        self.victim = victim

    def listdir(self, rel: str):
        if rel == self.victim:
            import shutil
            shutil.rmtree(os.path.join(self.root, rel))
        return super().listdir(rel)


@pytest.mark.parametrize("jobs", [1, 4])
def test_a_folder_removed_during_the_scan_is_empty_not_an_error(tmp_path, jobs):
    write(str(tmp_path), "Runs/run1/f.mrc", b"1")
    write(str(tmp_path), "Runs/run2/f.mrc", b"2")
    with VanishingStore(str(tmp_path), "Runs/run1") as store:
        result = scan_tree(store, jobs=jobs)
    assert not os.path.exists(tmp_path / "Runs" / "run1")
    assert "Runs/run2/f.mrc" in result.entries
    assert "Runs/run1/f.mrc" not in result.entries and not result.unreadable
