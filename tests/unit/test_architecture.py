"""The layout's rules, checked on the source: layers import only downwards, no import cycle, and
classes and functions stay small enough to read (a longer function says why in a comment)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("strategies", "ml_backend")
MAX_CLASS, MAX_FUNCTION, MAX_MODULE = 200, 60, 450
LONG_MODULES = {"strategies._tau_numba"}  # the compiled tau kernel: one numba function family
# layer -> the layers it may import (besides itself). Every module belongs to exactly one layer.
ALLOWED = {
    "strategies": set(),  # pure acquisition functions: torch, numpy, scipy; nothing of ml_backend
    "leaf": {"strategies"},  # ml_backend's root helpers: errors, atomic, image folders, Fashion-MNIST files
    "core": {"strategies", "leaf"},
    "service": {"strategies", "leaf", "core"},
    "top": {"strategies", "leaf", "core", "service"},  # the hooks (model.py), routes, entry points
    "simulation": {"strategies", "leaf", "core", "demo"},  # the live loop drives the real backend and LS
    "demo": {"strategies", "leaf", "core", "service"},
}
SUBPACKAGES = {"core", "service", "simulation", "demo"}
TOP = {"ml_backend.model", "ml_backend.app", "ml_backend.wsgi", "ml_backend.cli", "ml_backend.__main__"}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports, anywhere in the file (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "strategies":
        return "strategies"
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "top" if name in TOP else "leaf"


def test_every_module_has_a_layer():
    mods = modules()
    assert "ml_backend" in mods and "strategies" in mods and "ml_backend.model" in mods
    assert {layer(n) for n in mods} == set(ALLOWED), sorted({layer(n) for n in mods})


def test_layers_import_only_downwards():
    mods = modules()
    bad = []
    for name, path in mods.items():
        own = layer(name)
        for target in imports(name, path, set(mods)):
            other = layer(target)
            if other != own and other not in ALLOWED[own]:
                bad.append(f"{name} -> {target}")
    assert not bad, bad


def test_no_import_cycle():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    # a package's __init__ re-exports its modules: an edge from a module to its own package is not a cycle
    graph = {n: {t for t in targets if not n.startswith(t + ".")} for n, targets in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, trail + [nxt]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if state.get(node) is None and visit(node, [node]):
            break
    assert not cycle, " -> ".join(cycle)


def test_classes_and_functions_stay_small():
    """A class or function may exceed its size when a ``# long:`` comment on its first line says why
    (declaration tables, argument parsers); nothing else may."""
    too_long = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()

        def long(node) -> bool:
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            return any("# long:" in line for line in lines[first - 1 : node.lineno + 1])

        if len(lines) > MAX_MODULE and name not in LONG_MODULES:
            too_long.append(f"module {name}: {len(lines)} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS and not long(node):
                too_long.append(f"class {name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION and not long(node):
                    too_long.append(f"def {name}.{node.name}: {length} lines")
    assert not too_long, too_long


def test_every_benchmark_imports():
    """The benchmarks are not run in CI (they measure); they must at least import against the package."""
    import importlib

    root = ROOT / "benchmarks"
    names = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    assert {"bench_latency", "bench_predict", "bench_strategies", "bench_train", "container_test"} <= set(names)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        assert callable(module.main), name
