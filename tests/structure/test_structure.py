"""The shape of the code: imports go one way (downward through the layers), no cycles (importlib included),
small modules, and rules that take every path from the layout."""
import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "promptgrid"
#: the layers, bottom up; a module may import its own layer or a lower one, never a higher one
LAYERS = [("registry", "pearson", "protocols", "errors", "lazy"), ("config",), ("storage",), ("data",), ("models",), ("engine",),
          ("objectives",), ("methods", "similarity"), ("analysis", "figures"), ("pipeline",), ("cli",)]


def _modules() -> dict:
    mods = {}
    for f in SRC.rglob("*.py"):
        name = "promptgrid." + ".".join(f.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


def import_edges() -> dict:
    """module -> the promptgrid modules it imports: import statements anywhere in the file (function bodies
    too) and ``importlib.import_module("promptgrid....")`` with a literal name."""
    mods = _modules()
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        src = f.read_text()
        for node in ast.walk(ast.parse(src)):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                pkg = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
                base = node.module if node.level == 0 else ".".join(pkg[:len(pkg) - node.level + 1] + [node.module])
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                    "import_module" and node.args and isinstance(node.args[0], ast.Constant):
                targets = [node.args[0].value]
            edges[m].update(t for t in targets if t in mods and t != m and not m.startswith(t + "."))
    return edges


def find_cycle(edges: dict):
    state, stack = {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for w in sorted(edges[u]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                cycle = visit(w)
                if cycle:
                    return cycle
        state[u] = 2
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself sits on top: it holds only the version
        return len(LAYERS)
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS")


def test_no_import_cycle_inside_promptgrid():
    assert find_cycle(import_edges()) is None


def test_the_cycle_finder_sees_function_level_and_importlib_imports():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    tree_edges = import_edges()
    # a function-level import and an import_module(...) call both count as edges
    assert "promptgrid.engine.training" in tree_edges["promptgrid.pipeline.transfer"]
    assert "promptgrid.pipeline.context" in tree_edges["promptgrid.cli"]


def test_imports_only_go_down_the_layers():
    upward = [(m, t) for m, targets in import_edges().items() for t in targets if layer(t) > layer(m)]
    assert not upward, f"imports that go up a layer: {upward}"


def private_imports(src: str) -> list:
    """Underscored names a module imports from promptgrid (``from promptgrid.x import _name``)."""
    return [a.name for node in ast.walk(ast.parse(src)) if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("promptgrid") for a in node.names
            if a.name.startswith("_") and not a.name.endswith("__")]  # dunders (__version__) are public


def test_no_private_name_is_imported_from_another_module():
    found = {str(f.relative_to(SRC)): names for f in SRC.rglob("*.py") if (names := private_imports(f.read_text()))}
    assert found == {}
    assert private_imports("from promptgrid.models.loading import load, _load_hf") == ["_load_hf"]


def test_no_file_name_twice():
    """Two modules of one name (data/prepare.py and pipeline/prepare.py) would be confused by a reader; the one
    exception is a package's ``__init__.py``."""
    names = [f.name for f in SRC.rglob("*.py") if f.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_no_module_over_400_lines():
    long = {str(f.relative_to(SRC)): n for f in SRC.rglob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert not long


@pytest.mark.parametrize("smk", sorted((SRC.parents[1] / "workflow" / "rules").glob("*.smk")), ids=lambda p: p.name)
def test_rules_take_every_path_from_the_layout(smk):
    """No path literal in a rule file: R(...) wraps a layout call, never a string."""
    text = smk.read_text()
    literals = re.findall(r'\bR\(\s*f?["\']', text)
    assert not literals, f"{smk.name}: {len(literals)} path literal(s) in R(...)"


def test_tests_sit_beside_the_package_they_test():
    """tests/<package>/ for each package of src/promptgrid; three folders for what spans them; no flat test file."""
    tests = SRC.parents[1] / "tests"
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    spanning = {"workflow", "benchmarks", "structure", "scripts"}  # Snakemake itself, bench/, the shape of the code, scripts/
    folders = {p.parent.name for p in tests.rglob("test_*.py") if p.parent != tests}
    assert not list(tests.glob("test_*.py"))
    assert folders <= packages | spanning, folders - packages - spanning
    assert packages <= folders, packages - folders  # every package has its tests
