"""Words for people: plurals, sizes, and names shown on one line."""

import os

from spaceport.engine.plan import unsaved_summary
from spaceport.wording import count, human_size, plural, quote, show_path


def test_counted_nouns_take_the_right_plural():
    assert count(0, "file") == "0 files" and count(1, "file") == "1 file"
    assert count(2, "entry") == "2 entries" and count(1, "entry") == "1 entry"
    assert count(3, "batch") == "3 batches" and count(1, "batch") == "1 batch"
    assert count(2, "deletion") == "2 deletions" and count(2, "day") == "2 days"
    assert count(2, "new folder") == "2 new folders" and count(5, "byte") == "5 bytes"
    assert plural("copy") == "copies" and plural("box") == "boxes"


def test_sizes():
    assert human_size(1) == "1 B" and human_size(5 * 1024 * 1024) == "5.0 MiB"


def test_names_are_shown_on_one_line_and_plain_ones_as_they_are():
    assert show_path("Runs/000041_ProtMotionCorr/run.db") == "Runs/000041_ProtMotionCorr/run.db"
    assert show_path("name with spaces.txt") == "name with spaces.txt"
    assert show_path("new\nline") == '"new\\nline"'
    assert show_path("tab\there") == '"tab\\there"'
    assert show_path(" leading space") == '" leading space"'
    assert show_path(os.fsdecode(b"caf\xe9")) == '"caf\\xe9"'
    assert show_path('a "quoted" name') == '"a \\"quoted\\" name"'
    assert "\n" not in quote("a\nb") and quote('"/d" "n" "t"') == "'\"/d\" \"n\" \"t\"'"


def test_unsaved_summary_reads_as_words():
    s = {"files_to_upload": 1, "bytes_to_upload": 5, "new_dirs": 0, "entries_to_delete": 2,
         "links_changed": True}
    text = unsaved_summary(s)
    assert text == "1 file to upload (5 B), 2 deletions, links changed"
    assert "True" not in text and "(s)" not in text
