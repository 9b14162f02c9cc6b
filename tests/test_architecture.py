"""The shape of the code (issue 20), read from the source with `ast` (harness.testing.import_graph):

- the import graph of harness/ and targets/ has no cycle, counting imports inside functions too
  (where a cycle hides from Python's own circular-import errors); a failure prints each cycle
  with the file and line of every import in it;
- no module in harness/, targets/, scripts/ or benchmarks/ is over 400 lines unless a comment in
  its first 10 lines says why ("# Over 400 lines because ...");
- benchmarks/ and scripts/ use only public names of the installed package: they import nothing
  from tests/ and never touch sys.path (test hosts live in harness.testing).
"""
from __future__ import annotations

import ast
from pathlib import Path

from harness.testing.import_graph import MAX_LINES, PACKAGES, SIZED, Graph, oversized

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("benchmarks", "scripts")  # run from a checkout, importing the package as a user would


def test_the_import_graph_has_no_cycles():
    graph = Graph.scan(REPO_ROOT, PACKAGES)
    cycles = graph.cycles()
    report = "\n\n".join(f"{len(c)} modules: {', '.join(c)}\n{graph.describe_cycle(c)}" for c in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s) in {', '.join(PACKAGES)}:\n\n{report}"


def test_no_module_is_over_400_lines_without_saying_why():
    over = oversized(REPO_ROOT, SIZED, MAX_LINES)
    assert not over, (f"over {MAX_LINES} lines, with no '# Over {MAX_LINES} lines because ...' comment in the first 10 lines:\n"
                      + "\n".join(f"  {path}: {lines} lines" for path, lines in over))


def _tool_files():
    return [p for folder in TOOLS for p in sorted((REPO_ROOT / folder).rglob("*.py"))]


def test_benchmarks_and_scripts_import_nothing_from_tests():
    found = []
    for path in _tool_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert not found, "benchmarks/ and scripts/ import from tests/ (move what they need to harness.testing):\n" + "\n".join(found)


def test_benchmarks_and_scripts_leave_sys_path_alone():
    found = []
    for path in _tool_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not found, ("benchmarks/ and scripts/ touch sys.path (the package is installed; a script that runs outside "
                       "the venv gets PYTHONPATH from its launcher):\n" + "\n".join(found))
