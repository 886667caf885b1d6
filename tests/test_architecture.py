"""docs/ARCHITECTURE.md is true to the code: every module of ``cinn`` and ``tasks`` belongs to a layer of its
picture, imports only the layers below its own, and no two modules import each other, directly or round a
circle (imports under ``TYPE_CHECKING`` and inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PICTURE_COLUMN = 18
"""Characters of the picture's left column, where the layers' names stand."""


def layers() -> list[set[str]]:
    """The layers of the picture in docs/ARCHITECTURE.md, top first, as dotted unit names (``cinn.engine``); a
    ``│`` alone in the left column separates two layers."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    picture = text.split("```\n", 2)[1]
    found: list[set[str]] = [set()]
    for line in picture.splitlines():
        left = line[:PICTURE_COLUMN].strip()
        if left == "│" and found[-1]:
            found.append(set())
        elif left.startswith(("cinn", "tasks")):
            found[-1].add(left.rstrip("/").replace("/", "."))
    return [layer for layer in found if layer]


def modules() -> dict[str, Path]:
    """Every module of the packages ``cinn`` and ``tasks`` by its dotted name."""
    found = {}
    for path in [*(ROOT / "cinn").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file ``path`` imports anywhere in it (``from cinn import cli`` is
    ``cinn.cli``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            names |= submodules | ({node.module} if len(submodules) < len(node.names) else set())
    return {name for name in names if name in known}


def unit_of(module: str, units: set[str]) -> str:
    """The layer unit a module belongs to: the longest unit that is the module or a package above it."""
    candidates = [unit for unit in units if module == unit or module.startswith(f"{unit}.")]
    assert candidates, f"{module} is in no layer of docs/ARCHITECTURE.md; add it to the picture"
    return max(candidates, key=len)


def test_every_module_imports_only_the_layers_below_its_own():
    found = layers()
    assert len(found) >= 5 and "cinn.engine" in set().union(*found), found
    level = {unit: index for index, layer in enumerate(found) for unit in layer}
    known = modules()
    wrong = []
    for module, path in known.items():
        own = unit_of(module, set(level))
        for target in imports(path, set(known)):
            other = unit_of(target, set(level))
            if other != own and level[other] <= level[own] and not (own == "cinn" and target == "cinn.version"):
                wrong.append(f"{module} imports {target} ({other} is not below {own})")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_a_task_or_the_engine_from_a_block():
    known = modules()
    for module, path in known.items():
        targets = imports(path, set(known))
        if module.startswith("cinn"):
            assert not any(target.startswith("tasks") for target in targets), module
        if module.startswith("cinn.blocks"):
            assert not any(target.startswith(("cinn.engine", "cinn.models")) for target in targets), module


def test_no_import_circle():
    known = modules()
    graph = {module: imports(path, set(known)) - {module} for module, path in known.items()}
    # a package imports what its __init__ re-exports: that edge is the package's face, not a circle
    graph = {module: {target for target in targets if not module.startswith(f"{target}.")}
             for module, targets in graph.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", "import circle: " + " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
