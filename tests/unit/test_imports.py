"""The module graph, read from the code's own imports: no import circle, and the runtime never imports the compiler.

Every `import` and `from ... import` counts, relative ones resolved and those under
`if TYPE_CHECKING:` included (a circle there is a circle in the design).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"infc": ROOT / "compiler" / "infc", "infc_runtime": ROOT / "runtime" / "infc_runtime"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for file in sorted(folder.rglob("*.py")):
            parts = [package, *file.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that importing `name` runs (its longest known prefix), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Each of our modules -> the modules of ours it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        package = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets |= {_owner(alias.name, modules) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
                source = ".".join(p for p in (base, node.module or "") if p)
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
                targets |= {_owner(f"{source}.{alias.name}", modules) if f"{source}.{alias.name}" in modules
                            else _owner(source, modules) for alias in node.names}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def test_the_graph_is_read_from_the_code() -> None:
    graph = import_graph()
    assert "infc.spec.loader" in graph["infc.spec"]
    assert "infc.kernels.graph" in graph["infc.spec.dataflow"]
    assert "infc.spec.model" in graph["infc.spec.dataflow"]  # an import under TYPE_CHECKING counts


def test_no_import_circle() -> None:
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as e:
        pytest.fail("import circle: " + " -> ".join(e.args[1]))


def test_the_runtime_never_imports_the_compiler() -> None:
    wrong = {m: sorted(t for t in deps if t == "infc" or t.startswith("infc."))
             for m, deps in import_graph().items() if m.split(".")[0] == "infc_runtime"}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_kernels_know_nothing_of_the_spec() -> None:
    wrong = {m: sorted(t for t in deps if t == "infc.spec" or t.startswith("infc.spec."))
             for m, deps in import_graph().items() if m.startswith("infc.kernels")}
    assert {m: t for m, t in wrong.items() if t} == {}
