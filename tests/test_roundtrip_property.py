"""Property: any tree (random names, files, folders, links) survives deploy, save, undeploy
and a deploy elsewhere exactly."""

import os
import shutil
import tempfile

from conftest import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spaceport.commands.deploy import deploy
from spaceport.commands.options import Options
from spaceport.commands.save import save
from spaceport.commands.undeploy import undeploy
from spaceport.store.retry import RetryPolicy

# Names: any bytes but "/" and NUL (and not "." or ".."), kept short; spaceport's own
# reserved names are excluded at the top level only, where they mean something.
names = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))

tree = st.recursive(
    st.one_of(st.binary(max_size=300).map(lambda d: ("file", d)),
              st.binary(min_size=1, max_size=30).filter(lambda b: b"\0" not in b)
              .map(lambda t: ("link", t))),
    lambda children: st.dictionaries(names, children, max_size=5).map(lambda d: ("dir", d)),
    max_leaves=25)


def build(root: bytes, node, links_allowed: bool):
    kind, value = node
    for name, child in value.items():
        path = os.path.join(root, name)
        if child[0] == "dir":
            os.mkdir(path)
            build(path, child, links_allowed)
        elif child[0] == "file":
            with open(path, "wb") as f:
                f.write(child[1])
        elif links_allowed:
            os.symlink(child[1], path)


top_level = st.dictionaries(names.filter(lambda b: b not in (b".spaceport",
                                                             b".deployment_status_do_not_delete")),
                            tree, max_size=6).map(lambda d: ("dir", d))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=top_level, second=top_level)
def test_random_trees_round_trip(first, second):
    opts = Options(jobs=3, retry=RetryPolicy(attempts=1))
    base = tempfile.mkdtemp(prefix="sp-prop-")
    try:
        primary, work1, work2 = (os.path.join(base, n) for n in ("p", "w1", "w2"))
        os.mkdir(primary)
        build(os.fsencode(primary), first, links_allowed=False)  # a primary holds no links
        deploy(primary, work1, opts)
        assert snapshot(work1) == snapshot(primary)
        # The application replaces the whole tree with another one, links included.
        for entry in os.listdir(work1):
            if entry != ".spaceport":
                path = os.path.join(work1, entry)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) \
                    else os.unlink(path)
        build(os.fsencode(work1), second, links_allowed=True)
        expected = snapshot(work1)
        save(work1, opts, allow_mass_delete=True)
        undeploy(work1, opts)
        deploy(primary, work2, opts)
        assert snapshot(work2) == expected
    finally:
        shutil.rmtree(base)
