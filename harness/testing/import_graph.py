"""quantbench's own import graph and module sizes, read from the source with `ast` (nothing is
imported): what tests/test_architecture.py checks and benchmarks/import_graph.py prints.

A node is a module file of the scanned packages (a package is its `__init__.py`); an edge is an
import of another node, wherever it is written: at module level, or inside a function, where an
import cycle hides best. `from pkg import name` is an edge to `pkg.name` when that is a module,
else to `pkg`. Imports under `if TYPE_CHECKING:` never run and are kept apart (`typing_only`).
Standard library only.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

PACKAGES = ("harness", "targets")  # the graph that must have no cycles
SIZED = ("harness", "targets", "scripts", "benchmarks")  # folders whose modules keep under MAX_LINES
MAX_LINES = 400
# A module over MAX_LINES says why in its first 10 lines, e.g. "# Over 400 lines because ...".
SIZE_REASON = re.compile(r"^\s*#\s*Over \d+ lines because\b")


@dataclass(frozen=True)
class Import:
    """One import statement's target, as written in a file."""

    module: str  # absolute dotted name, relative imports resolved
    names: Tuple[str, ...]  # what `from module import ...` takes; () for `import module`
    line: int
    at_module_level: bool  # False: inside a function or method (runs when it is called)
    typing_only: bool  # under `if TYPE_CHECKING:`


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(path: Path, name: str) -> List[Import]:
    """Every import in the file at `path` (module `name`), relative ones made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: List[Import] = []

    def visit(node: ast.AST, in_function: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(alias.name, (), child.lineno, not in_function, typing_only))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append(Import(target, tuple(a.name for a in child.names), child.lineno, not in_function, typing_only))
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, typing_only)
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      typing_only)

    visit(tree, False, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@dataclass
class Graph:
    """Modules of `packages` under `root`, and the imports between them."""

    root: Path
    modules: Dict[str, Path] = field(default_factory=dict)
    edges: Dict[Tuple[str, str], List[Import]] = field(default_factory=dict)  # (importer, imported) -> statements
    typing_only: Dict[Tuple[str, str], List[Import]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path, packages: Sequence[str] = PACKAGES) -> "Graph":
        graph = cls(Path(root))
        for package in packages:
            for path in sorted((graph.root / package).rglob("*.py")):
                graph.modules[module_name(graph.root, path)] = path
        for name, path in graph.modules.items():
            for imp in imports_in(path, name):
                for target in graph._targets(imp):
                    if target != name:
                        (graph.typing_only if imp.typing_only else graph.edges).setdefault((name, target), []).append(imp)
        return graph

    def _targets(self, imp: Import) -> List[str]:
        if imp.names:
            subs = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in self.modules]
            rest = [n for n in imp.names if f"{imp.module}.{n}" not in self.modules]
            return subs + ([imp.module] if rest and imp.module in self.modules else [])
        return [imp.module] if imp.module in self.modules else []

    def successors(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {name: [] for name in self.modules}
        for a, b in sorted(self.edges):
            out[a].append(b)
        return out

    def components(self) -> List[List[str]]:
        """Strongly connected components (Tarjan), each sorted; every module is in exactly one."""
        succ = self.successors()
        index: Dict[str, int] = {}
        low: Dict[str, int] = {}
        stack: List[str] = []
        on_stack: Set[str] = set()
        result: List[List[str]] = []
        counter = [0]

        def strong(v: str) -> None:  # iterative: deep graphs must not hit the recursion limit
            work = [(v, iter(succ[v]))]
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            while work:
                node, children = work[-1]
                for w in children:
                    if w not in index:
                        index[w] = low[w] = counter[0]
                        counter[0] += 1
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(succ[w])))
                        break
                    if w in on_stack:
                        low[node] = min(low[node], index[w])
                else:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node])
                    if low[node] == index[node]:
                        comp = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            comp.append(w)
                            if w == node:
                                break
                        result.append(sorted(comp))

        for v in sorted(self.modules):
            if v not in index:
                strong(v)
        return result

    def cycles(self) -> List[List[str]]:
        """The import cycles: components of more than one module, largest first."""
        return sorted((c for c in self.components() if len(c) > 1), key=lambda c: (-len(c), c))

    def cycle_path(self, component: Iterable[str]) -> List[str]:
        """One concrete cycle inside a component: a -> b -> ... -> a (the shortest back to its first module)."""
        members = set(component)
        start = min(members)
        succ = {a: [b for b in bs if b in members] for a, bs in self.successors().items() if a in members}
        parents: Dict[str, Optional[str]] = {start: None}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for nxt in succ[node]:
                if nxt == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return list(reversed(path)) + [start]
                if nxt not in parents:
                    parents[nxt] = node
                    queue.append(nxt)
        return [start]

    def describe_cycle(self, component: Iterable[str]) -> str:
        """The cycle as lines: each import that closes a step of it, with file and line."""
        path = self.cycle_path(component)
        lines = [" -> ".join(path)]
        for a, b in zip(path, path[1:]):
            imp = self.edges[(a, b)][0]
            where = "module level" if imp.at_module_level else "in a function"
            lines.append(f"  {self.modules[a].relative_to(self.root)}:{imp.line} imports {b} ({where})")
        return "\n".join(lines)

    def levels(self) -> Dict[str, int]:
        """Each module's level: 0 imports no other module of the graph; else 1 + the highest level
        it imports. A cycle's modules share one level (its component counts as one node)."""
        comps = self.components()
        comp_of = {m: i for i, c in enumerate(comps) for m in c}
        succ = self.successors()
        level: Dict[int, int] = {}
        for i, comp in enumerate(comps):  # Tarjan yields components dependencies-first
            deps = {comp_of[b] for a in comp for b in succ[a]} - {i}
            level[i] = 1 + max((level[d] for d in deps), default=-1)
        return {m: level[comp_of[m]] for m in self.modules}

    def module_level_only(self) -> "Graph":
        """The same graph with only the imports that run at import time (what Python's own
        circular-import errors see; function-level imports hide a cycle from them)."""
        kept = {k: [i for i in v if i.at_module_level] for k, v in self.edges.items()}
        return Graph(self.root, dict(self.modules), {k: v for k, v in kept.items() if v}, dict(self.typing_only))


def line_count(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def size_reason(path: Path) -> Optional[str]:
    """The module's own word on why it is over MAX_LINES (a comment in its first 10 lines), or None."""
    with open(path, errors="replace") as f:
        head = [next(f, "") for _ in range(10)]
    return next((line.strip() for line in head if SIZE_REASON.match(line)), None)


def module_sizes(root: Path, folders: Sequence[str] = SIZED) -> List[Tuple[Path, int]]:
    """(path relative to root, lines) of every .py file under `folders`, largest first."""
    sizes = [(p.relative_to(root), line_count(p)) for folder in folders for p in sorted((Path(root) / folder).rglob("*.py"))]
    return sorted(sizes, key=lambda item: (-item[1], str(item[0])))


def oversized(root: Path, folders: Sequence[str] = SIZED, limit: int = MAX_LINES) -> List[Tuple[Path, int]]:
    """Modules over `limit` lines that do not say why in their first 10 lines."""
    return [(p, n) for p, n in module_sizes(root, folders) if n > limit and size_reason(Path(root) / p) is None]
