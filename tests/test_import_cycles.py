"""No import cycles inside backend/, shared/ or blender_addon/ (static analysis, nothing imported).

Every ``import`` statement of every module counts, module-level and function-level alike: a
function-level import is the usual way a cycle gets hidden, and it still ties the two modules
together (neither can be understood, tested or moved without the other). Imports under
``if TYPE_CHECKING:`` are left out: they never run. ``from package import name`` is an edge to the
module ``package.name`` where that is a module, else to ``package`` (its ``__init__``). The add-on
imports the project's ``shared/`` as its sub-package ``.shared`` (build_addon.py copies it in), so
``blender_addon.shared.x`` is ``shared.x``.

Strongly connected components of the import graph (scipy) are the cycles; each is reported with
the import statements that close it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "shared", "blender_addon")


def module_files(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _canonical(name: str) -> str:
    return "shared" + name[len("blender_addon.shared"):] if name.startswith("blender_addon.shared") else name


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def imports_of(module: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [f"{base}.{alias.name}" if _canonical(f"{base}.{alias.name}") in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            target = _canonical(target)
            while target and target not in modules:          # `import a.b.c` of a non-module attribute
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append((target, node.lineno))
    return found


def import_cycles(root: Path = ROOT, packages=PACKAGES) -> list[list[str]]:
    """Each cycle: the modules of one strongly connected component, with the imports inside it."""
    files = {_canonical(m): p for m, p in module_files(root, packages).items()}
    names = sorted(files)
    index = {m: i for i, m in enumerate(names)}
    edges = {m: imports_of(m, files[m], set(names)) for m in names}
    rows, cols = [], []
    for m, targets in edges.items():
        for target, _ in targets:
            rows.append(index[m]), cols.append(index[target])
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    n, labels = connected_components(graph, directed=True, connection="strong")
    cycles = []
    for label in range(n):
        members = {names[i] for i in np.flatnonzero(labels == label)}
        if len(members) > 1:
            cycles.append(sorted({f"{m} -> {t} ({files[m].relative_to(root)}:{line})"
                                  for m in members for t, line in edges[m] if t in members}))
    return cycles


def test_the_analysis_finds_hidden_cycles_and_ignores_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from . import b\n",                                    # module level, relative
        "b.py": "def f():\n    from pkg.sub import c\n",                # function level, absolute
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.a.thing\n",                              # an attribute of a module
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "e.py": "from .d import X\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    cycles = import_cycles(tmp_path, ("pkg",))
    assert cycles == [["pkg.a -> pkg.b (pkg/a.py:1)", "pkg.b -> pkg.sub.c (pkg/b.py:2)",
                       "pkg.sub.c -> pkg.a (pkg/sub/c.py:1)"]]
    (pkg / "b.py").write_text("def f():\n    pass\n")
    assert import_cycles(tmp_path, ("pkg",)) == []


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n\n".join("\n".join(c) for c in cycles)
