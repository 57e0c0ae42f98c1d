"""The package layering, checked on the source: no import circle, leaf packages stay leaves, and the CLI only
talks to :mod:`embedtrain.api`. Also: every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import embedtrain

ROOT = Path(embedtrain.__file__).resolve().parent
#: Packages that import no feature package.
LEAVES = {"errors", "schema", "io", "resources"}
#: What feature packages must never import.
TOP = {"train", "cli", "api"}
#: What the CLI may import besides itself.
CLI_MAY_IMPORT = {"api", "errors", "schema", "cli", ""}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str) -> set[str]:
    """embedtrain modules imported anywhere in ``tree`` (function-local imports too), except TYPE_CHECKING ones."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "embedtrain":
            for alias in node.names:  # `from embedtrain.x import y` may import the submodule x.y
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _exists(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "embedtrain")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        module = _module_name(path)
        graph[module] = _imports(ast.parse(path.read_text(encoding="utf-8")), module)
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_module_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 60  # the walk really found the package's modules
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"embedtrain.a": {"embedtrain.b"}, "embedtrain.b": {"embedtrain.a"}}) is not None


def test_layering_rule():
    problems = []
    for module, deps in import_graph().items():
        package = _package(module)
        for dep in deps:
            target = _package(dep)
            if target == package:
                continue
            if package in LEAVES and target not in LEAVES:
                problems.append(f"{module} (a leaf) imports {dep}")
            if package not in TOP and target in TOP and package not in ("__main__",):
                problems.append(f"{module} (a feature package) imports {dep}")
            if package == "cli" and target not in CLI_MAY_IMPORT:
                problems.append(f"{module} (the CLI) imports {dep}; it may only call embedtrain.api")
    assert not problems, "\n".join(sorted(problems))


SCRIPT = r"""
import importlib, pkgutil, sys
import embedtrain
names = sorted(m.name for m in pkgutil.walk_packages(embedtrain.__path__, "embedtrain."))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "embedtrain" or m.startswith("embedtrain.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report every module that fails
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) > 60
