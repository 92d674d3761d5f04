"""The link manifest: byte-exact names, anchored targets, rebase, damage detection."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spaceport.errors import FormatError, UsageError
from spaceport.formats.links import (Link, Unrestored, capture, decode_manifest, encode_manifest,
                                     parse_manifest, parse_rebase, resolve_target)

ODD = ['a "quoted" name', "new\nline", "tab\there", "back\\slash", " leading space",
       "trailing space ", "ünï", os.fsdecode(b"caf\xe9"), "\u2028sep", "{\"json\": 1}"]

# Any name a POSIX filesystem allows: bytes except "/" and NUL, not "." or "..".
name_bytes = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
rel_paths = st.lists(name_bytes, min_size=1, max_size=4).map(lambda parts: os.fsdecode(b"/".join(parts)))
targets = st.binary(min_size=1, max_size=80).filter(lambda b: b"\0" not in b).map(os.fsdecode)


@pytest.mark.parametrize("name", ODD)
def test_odd_names_round_trip(name):
    links = [Link(f"dir/{name}", f"../{name}"), Link(name, "x/" + name, anchored=True)]
    assert sorted(decode_manifest(encode_manifest(links, "/work"))) == sorted(links)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(rel_paths, targets, st.booleans()), max_size=20, unique_by=lambda t: t[0]))
def test_any_names_and_targets_round_trip_byte_for_byte(items):
    links = [Link(p, t, a) for p, t, a in items]
    decoded = decode_manifest(encode_manifest(links, "/w"))
    def as_bytes(ls):
        return sorted((os.fsencode(l.path), os.fsencode(l.target), l.anchored) for l in ls)

    assert as_bytes(decoded) == as_bytes(links)


def test_manifest_is_one_json_object_per_line_with_a_header():
    raw = encode_manifest([Link("a", "b"), Link("n\nl", "t")], "/root")
    lines = raw.decode().splitlines()
    assert len(lines) == 3
    header = json.loads(lines[0])
    assert header["type"] == "spaceport-links" and header["links"] == 2 and header["format"] == 1
    assert json.loads(lines[2]) == {"path": "n\nl", "target": "t"}


def test_non_utf8_names_are_stored_as_base64():
    raw = encode_manifest([Link(os.fsdecode(b"\xff\xfe"), "t")], "/r")
    obj = json.loads(raw.splitlines()[1])
    assert "path_b64" in obj and "path" not in obj


def test_capture_anchors_absolute_targets_inside_the_root():
    roots = ["/work/proj", "/real/proj"]
    assert capture("l", "/work/proj/data/x", roots) == Link("l", "data/x", anchored=True)
    assert capture("l", "/real/proj/data/x", roots) == Link("l", "data/x", anchored=True)
    assert capture("l", "/work/proj", roots) == Link("l", "", anchored=True)
    assert capture("l", "/work/projector/x", roots) == Link("l", "/work/projector/x")
    assert capture("l", "../x", roots) == Link("l", "../x")
    assert capture("l", "/etc/passwd", roots) == Link("l", "/etc/passwd")


def test_resolve_follows_the_tree_and_rebases_outside_targets():
    assert resolve_target(Link("l", "data/x", True), "/new/root") == "/new/root/data/x"
    assert resolve_target(Link("l", "", True), "/new/root") == "/new/root"
    rules = parse_rebase(["/mnt/old=/mnt/new"])
    assert resolve_target(Link("l", "/mnt/old/a"), "/r", rules) == "/mnt/new/a"
    assert resolve_target(Link("l", "/mnt/older/a"), "/r", rules) == "/mnt/older/a"
    assert resolve_target(Link("l", "rel/mnt/old"), "/r", rules) == "rel/mnt/old"


@pytest.mark.parametrize("spec", ["noequals", "rel=/abs", "/abs=rel"])
def test_bad_rebase_is_a_usage_error(spec):
    with pytest.raises(UsageError):
        parse_rebase([spec])


def test_truncated_manifest_is_detected():
    raw = encode_manifest([Link("a", "b"), Link("c", "d"), Link("e", "f")], "/r")
    truncated = b"\n".join(raw.split(b"\n")[:3]) + b"\n"
    with pytest.raises(FormatError, match="truncated"):
        decode_manifest(truncated)


def test_damaged_line_and_newer_format_are_clear_errors():
    raw = encode_manifest([Link("a", "b")], "/r")
    with pytest.raises(FormatError, match="line 2"):
        decode_manifest(raw.replace(b'"path"', b'"pth"'))
    newer = raw.replace(b'"format": 1', b'"format": 9')
    with pytest.raises(FormatError, match="newer"):
        decode_manifest(newer)
    with pytest.raises(FormatError):
        decode_manifest(b"")
    with pytest.raises(FormatError):
        decode_manifest(b"garbage\n")


def test_entries_leading_out_of_the_root_are_refused_with_their_line():
    links = [Link("ok", "t"), Link("/etc/evil", "x"), Link("../evil", "x"),
             Link("a/../../evil", "x"), Link("a//b", "x"), Link(".", "x")]
    manifest = parse_manifest(encode_manifest(links, "/w"), file="S/links.jsonl")
    assert manifest.links == [Link("ok", "t")]
    assert len(manifest.refused) == 5 and all(u.file == "S/links.jsonl" for u in manifest.refused)
    assert {u.line for u in manifest.refused} == {2, 3, 4, 5, 6}  # "ok" sorts last: line 7
    reasons = {json.loads(u.text)["path"]: u.reason for u in manifest.refused}
    assert "absolute" in reasons["/etc/evil"] and "'..'" in reasons["a/../../evil"]


def test_header_notes_of_what_was_not_restored_round_trip():
    odd = Unrestored("S/linklist", 14, os.fsdecode(b'"/data/x" "caf\xe9\nnew'), "a reason")
    notes = {"unrestored": [odd.to_json()], "imported_from": {"system": "westlife", "links": 3}}
    manifest = parse_manifest(encode_manifest([Link("a", "b")], "/w", notes))
    assert manifest.unrestored == [odd] and manifest.imported_from == notes["imported_from"]
    assert manifest.links == [Link("a", "b")]
    bare = parse_manifest(encode_manifest([Link("a", "b")], "/w", {"unrestored": []}))
    assert bare.unrestored == [] and bare.imported_from is None
