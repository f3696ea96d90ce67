"""Static checks of the package layout (pure `ast`, nothing is imported).

* no import cycles between `mcmc_llm` modules, counting imports inside functions;
* only the CLI (`mcmc_llm/cli.py`, `mcmc_llm/commands/`) imports `mcmc_llm.commands`;
* no module over `MAX_LINES` lines.

The import graph: a module `m` imports module `t` when it says `import t`, `import t.x` (which
runs `t`), `from t import name`, or `from pkg import t` (`t` a submodule of `pkg`).  Importing
`a.b.c` also runs the `__init__` of the packages `a` and `a.b`, so `m` depends on those packages
too, except those that contain `m` (they are already initialised when `m` runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "mcmc_llm"
MAX_LINES = 400
CLI_MODULES = ("mcmc_llm.cli", "mcmc_llm.commands")  # the only modules allowed to import mcmc_llm.commands

BEING_SPLIT: set[str] = set()  # modules over MAX_LINES exempt while being split (none now)


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every `.py` file of `package` under `root`."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a module of the package (`a.b.func` -> `a.b`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


def imported_modules(name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules that module `name` imports anywhere in its file (see the module docstring)."""
    tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    direct: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known_prefix(alias.name, modules)
                if target is not None:
                    direct.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else _known_prefix(base, modules)
                if target is not None:
                    direct.add(target)
    edges = set(direct)
    for target in direct:  # importing a.b.c runs the __init__ of a and a.b
        edges.update(a for a in _ancestors(target) if a not in _ancestors(name) and a != name)
    edges.discard(name)
    return edges


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(root, package)
    return {name: imported_modules(name, modules) for name in modules}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle through the component's first module, for the error message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    return paths[node] + [start]
                if successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    following.append(successor)
        frontier = following
    return component


def _is_cli(name: str) -> bool:
    return any(name == cli or name.startswith(cli + ".") for cli in CLI_MODULES)


# ------------------------------------------------------------------------------------------ tests


def test_no_import_cycles():
    graph = import_graph()
    cycles = [" -> ".join(_cycle_path(graph, component)) for component in import_cycles(graph)]
    assert not cycles, "import cycles between mcmc_llm modules:\n  " + "\n  ".join(cycles)


def test_only_the_cli_imports_commands():
    graph = import_graph()
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items() if not _is_cli(name)
        for target in targets if target == "mcmc_llm.commands" or target.startswith("mcmc_llm.commands.")
    )
    assert not offenders, "library modules must not import the CLI (mcmc_llm.commands):\n  " + "\n  ".join(offenders)


def test_core_is_the_bottom_layer():
    """`mcmc_llm.core` (traces, protocols, random streams, trees) imports nothing of the package but
    itself, inside functions included: diagnostics, drivers and backends build on it, not it on them."""
    graph = import_graph()
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items() if name == "mcmc_llm.core" or name.startswith("mcmc_llm.core.")
        for target in targets if target not in ("mcmc_llm", "mcmc_llm.core") and not target.startswith("mcmc_llm.core.")
    )
    assert not offenders, "mcmc_llm.core must import only itself:\n  " + "\n  ".join(offenders)


def test_no_module_over_the_line_limit():
    too_long = []
    for path in module_files().values():
        relative = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and relative not in BEING_SPLIT:
            too_long.append(f"{relative}: {lines} lines")
    assert not too_long, f"modules over {MAX_LINES} lines (split them, one idea per module):\n  " + "\n  ".join(too_long)


def test_the_line_limit_exemptions_still_exist():
    missing = sorted(p for p in BEING_SPLIT if not (ROOT / p).exists())
    assert not missing, f"remove from BEING_SPLIT (file is gone): {missing}"


def _write_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """The graph builder on a synthetic package: function-level imports, `from pkg import submodule`,
    relative imports and the implicit import of a package's `__init__` all count."""
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.sub import b\n",
        "pkg/sub/__init__.py": "from pkg.sub.c import thing\n",
        "pkg/sub/b.py": "from . import c\n",
        "pkg/sub/c.py": "import pkg.a as a\nthing = 1\n",
        "pkg/d.py": "from pkg.sub.c import thing\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b", "pkg.sub"}
    assert graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg.sub.c", "pkg.sub"}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.c"]]
    _write_package(tmp_path, {"pkg/sub/c.py": "thing = 1\n"})
    assert import_cycles(import_graph(tmp_path, "pkg")) == []
