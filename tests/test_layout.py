"""The package's shape: no import cycle anywhere (read from the source, function-level imports included), the
layers only import downwards, and the pure modules (``lpselect.core``: metrics, selection, tallies, cost
arithmetic) import neither torch nor pyarrow nor transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PURE = sorted(f"lpselect.core.{f.stem}" for f in (SRC / "lpselect" / "core").glob("*.py") if f.stem != "__init__")
# what each layer may import of lpselect, bottom up (the top-level modules config, errors, faults are for all)
LAYERS = {
    "core": {"core"},
    "runs": {"runs", "core"},
    "data": {"data", "runs", "core"},
    "engine": {"engine", "data", "runs", "core"},
    "steps": {"steps", "engine", "data", "runs", "core", "analysis"},  # the pipeline ends with the report
    "evaluate": {"evaluate", "engine", "data", "runs", "core"},
    "analysis": {"analysis", "data", "runs", "core"},
    "interop": {"interop", "data", "runs", "core"},
    "integrations": {"integrations", "steps", "engine", "data", "runs", "core"},
}
SHARED = {"lpselect", "lpselect.config", "lpselect.errors", "lpselect.faults"}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in (SRC / "lpselect").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the lpselect modules it imports (``from a import b`` counts a.b when b is a module)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert "lpselect.cli.app" in graph["lpselect.cli.pipeline"]  # the reader sees real edges
    assert cycles(graph) == []


def test_layers_import_downwards() -> None:
    graph = import_graph()
    wrong = []
    for module, imported in graph.items():
        layer = module.split(".")[1] if module.count(".") else ""
        for other in imported - SHARED:
            other_layer = other.split(".")[1]
            if other_layer == "cli" and layer != "cli" and module != "lpselect.__main__":
                wrong.append((module, other))  # nothing but the CLI imports the CLI
            elif layer in LAYERS and other_layer not in LAYERS[layer]:
                wrong.append((module, other))
    assert len(PURE) >= 6 and "lpselect.core.metrics" in PURE
    assert wrong == []


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_torch_nor_pyarrow(module: str) -> None:
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'pyarrow', 'transformers') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"{module} pulls in {done.stdout.strip()}"
