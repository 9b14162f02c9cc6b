"""The shape of quantbench's code: the import graph of harness/ and targets/ (files, levels,
imports, cycles) and the biggest modules, so a refactor's figures can be compared before and after.

Every import counts, at module level or inside a function (where a cycle hides from Python's own
circular-import errors); the figures with module-level imports only are printed beside them.
Imports under `if TYPE_CHECKING:` never run and are counted apart. A level is a step of the
dependency order: level 0 imports no other module of the graph; a cycle counts as one node.

    .venv/bin/python benchmarks/import_graph.py                 # this checkout
    git worktree add /tmp/orig df6104f && .venv/bin/python benchmarks/import_graph.py --root /tmp/orig

Prints; changes nothing. The graph is read from the source (`ast`), nothing is imported.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from harness.testing.import_graph import MAX_LINES, PACKAGES, SIZED, Graph, module_sizes, size_reason


def figures(graph: Graph) -> str:
    levels = graph.levels()
    cycles = graph.cycles()
    statements = sum(len(v) for v in graph.edges.values())
    in_cycles = sum(len(c) for c in cycles)
    return (f"{len(graph.modules)} files on {max(levels.values(), default=-1) + 1} levels, {len(graph.edges)} imports "
            f"({statements} import statements), {len(cycles)} cycle{'s' if len(cycles) != 1 else ''}"
            + (f" ({in_cycles} files in them)" if cycles else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                        help="the checkout to read (default: the one holding this script)")
    parser.add_argument("--top", type=int, default=12, help="how many of the biggest modules to list (default 12)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    graph = Graph.scan(root, PACKAGES)
    print(f"import graph of {', '.join(p + '/' for p in PACKAGES)} in {root}")
    print(f"  every import:       {figures(graph)}")
    print(f"  module level only:  {figures(graph.module_level_only())}")
    function_level = sum(1 for v in graph.edges.values() if not any(i.at_module_level for i in v))
    print(f"  {function_level} imports are only inside functions; {len(graph.typing_only)} are typing-only (not counted)")
    levels = graph.levels()
    per_level = Counter(levels.values())
    print("  files per level: " + ", ".join(f"{lvl}: {per_level[lvl]}" for lvl in sorted(per_level)))
    for i, cycle in enumerate(graph.cycles(), 1):
        print(f"\ncycle {i}: {len(cycle)} files: {', '.join(cycle)}")
        print("  " + graph.describe_cycle(cycle).replace("\n", "\n  "))
    fan_in = Counter(b for (_, b) in graph.edges)
    print("\nmost imported: " + ", ".join(f"{m} ({n})" for m, n in fan_in.most_common(6)))

    sizes = module_sizes(root, SIZED)
    over = [(p, n) for p, n in sizes if n > MAX_LINES]
    print(f"\nmodules in {', '.join(f + '/' for f in SIZED)}: {len(sizes)}, {sum(n for _, n in sizes)} lines; "
          f"{len(over)} over {MAX_LINES} lines"
          + (f" ({sum(1 for p, _ in over if size_reason(root / p))} of them say why)" if over else ""))
    for path, lines in sizes[:args.top]:
        reason = size_reason(root / path) if lines > MAX_LINES else None
        flag = "" if lines <= MAX_LINES else ("  (says why)" if reason else "  OVER, no reason given")
        print(f"  {lines:5d}  {path}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
