"""The package's shape holds: no import circles, and the layers import one way.

docs/ARCHITECTURE.md draws the layers; this test keeps the tree honest. The import graph is
read from the source with :mod:`ast` (nothing is imported), module by module:

* **No circles**, counting every import: at the top of a module, inside a function (a lazy
  import that only hides a circle is still one), and under ``if TYPE_CHECKING:``.
* **Layers run one way**: a module imports only from its own layer or the layers below it.
  Imports under ``if TYPE_CHECKING:`` are exempt here: a type named in an annotation does not
  make a lower layer run code of a higher one.

Each check has a negative control: a small package written for the purpose, with a circle and
an upward import, that the same functions must catch.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A module belongs to the first entry its dotted name starts with; the package
# root's own modules (errors, wording, clock...) are the bottom layer every layer may use.
LAYERS = [
    ("basics", ("spaceport.errors", "spaceport.wording", "spaceport.clock",
                "spaceport.hostinfo", "spaceport.stopping", "spaceport")),
    ("store", ("spaceport.store",)),
    ("formats", ("spaceport.formats",)),
    ("engine", ("spaceport.engine",)),
    ("safety", ("spaceport.safety",)),
    ("commands", ("spaceport.commands",)),
    ("daemon", ("spaceport.daemon",)),
    ("cli", ("spaceport.cli", "spaceport.__main__")),
]
# The OneData-like test filesystem is a tool for tests, beside the layers, never imported by
# them.
OUTSIDE = ("spaceport.testing",)


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    package = parts[-1] == "__init__"
    if package:
        parts = parts[:-1]
    return ".".join(parts), package


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or
                (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for child in node.body:
                for sub in ast.walk(child):
                    inside.add(id(sub))
    return inside


def import_graph(root: Path, top: str) -> dict[str, dict[str, bool]]:
    """module -> {imported module: only under TYPE_CHECKING}, for the package ``top``."""
    files = {module_name(p, root): p for p in (root / top).rglob("*.py")}
    modules = {name for name, _ in files}
    graph: dict[str, dict[str, bool]] = {}
    for (name, package), path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = _type_checking_nodes(tree)
        edges: dict[str, bool] = {}

        def add(target: str, node: ast.AST) -> None:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                only_typing = id(node) in typing_only
                edges[target] = edges.get(target, True) and only_typing

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == top:
                        add(alias.name, node)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != top:
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    add(full if full in modules else source, node)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str, layers=LAYERS) -> int | None:
    best, rank = None, None
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best:
                    best, rank = len(prefix), i
    return rank


def upward_imports(graph: dict[str, dict[str, bool]], layers=LAYERS,
                   outside=OUTSIDE) -> list[str]:
    """Imports (not for typing only) from a lower layer into a higher one."""
    wrong = []
    for module, edges in sorted(graph.items()):
        if module.startswith(outside):
            continue
        here = layer_of(module, layers)
        for target, typing_only in sorted(edges.items()):
            if typing_only:
                continue
            if target.startswith(outside):
                wrong.append(f"{module} imports the test tool {target}")
                continue
            there = layer_of(target, layers)
            if here is not None and there is not None and there > here:
                wrong.append(f"{module} ({layers[here][0]}) imports {target} "
                             f"({layers[there][0]})")
    return wrong


def test_the_package_has_no_import_circle():
    graph = import_graph(SRC, "spaceport")
    assert len(graph) > 40  # the walk found the package, not an empty folder
    assert circles(graph) == []


def test_the_layers_import_one_way():
    graph = import_graph(SRC, "spaceport")
    assert upward_imports(graph) == []


def test_every_module_has_a_layer():
    graph = import_graph(SRC, "spaceport")
    assert [m for m in graph if layer_of(m) is None and not m.startswith(OUTSIDE)] == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_and_an_upward_import_are_caught(tmp_path):
    """Negative control: the checks fail on a package built to break them."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "from . import b\n",
        "pkg/low/b.py": "def f():\n    from .a import thing  # lazy, still a circle\n",
        "pkg/low/c.py": "from ..high.d import x\n",  # upward
        "pkg/low/e.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from ..high.d import y\n"),  # for typing only: allowed
        "pkg/high/__init__.py": "",
        "pkg/high/d.py": "from pkg.low import c\n",
        "pkg/high/f.py": "import pkg.low.e\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert ["pkg.low.a", "pkg.low.b"] in circles(graph)
    assert ["pkg.high.d", "pkg.low.c"] in circles(graph)  # c -> d -> c
    layers = [("low", ("pkg.low", "pkg")), ("high", ("pkg.high",))]
    wrong = upward_imports(graph, layers, outside=("pkg.testing",))
    assert wrong == ["pkg.low.c (low) imports pkg.high.d (high)"]


def test_a_typing_only_circle_is_a_circle(tmp_path):
    """The circle the daemon's heartbeat had: an import under TYPE_CHECKING back into the
    module that imports it still ties the two together."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/life.py": "from .beat import Beat\n",
        "pkg/beat.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from .life import Life\n"),
    })
    assert circles(import_graph(tmp_path, "pkg")) == [["pkg.beat", "pkg.life"]]


def missing_from_map(root: Path, doc: str) -> list[str]:
    """Modules and packages of the tree that docs/ARCHITECTURE.md does not name."""
    folders = set(re.findall(r"\b(\w+/)", doc))
    words = set(re.findall(r"\w+", doc))
    missing = []
    for path in sorted((root / "spaceport").rglob("*.py")):
        if path.name == "__init__.py":
            folder = path.parent.name + "/"
            if path.parent.name != "spaceport" and folder not in folders:
                missing.append(folder)
        elif path.stem not in words and path.stem != "__main__":
            missing.append(str(path.relative_to(root)))
    return missing


def test_the_architecture_map_names_every_module(tmp_path):
    doc = (SRC.parent / "docs" / "ARCHITECTURE.md").read_text()
    assert missing_from_map(SRC, doc) == []
    # Negative control: a module the map does not know is reported.
    _write(tmp_path, {"spaceport/__init__.py": "", "spaceport/engine/__init__.py": "",
                      "spaceport/engine/scan.py": "", "spaceport/engine/teleport.py": ""})
    assert missing_from_map(tmp_path, doc) == ["spaceport/engine/teleport.py"]
