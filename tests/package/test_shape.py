"""The package's shape (issue 10): one SQL folder, no import cycles, the library apart from dev/,
and cli.py at the top that no command imports back."""

import ast
from pathlib import Path

import docstatus

PACKAGE = Path(docstatus.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every docstatus module a module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("docstatus")}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {target for target in imports_of(path) if target in MODULES and target != name}
         for name, path in MODULES.items()}


def test_sql_lives_in_one_folder():
    assert {path.parent for path in PACKAGE.rglob("*.sql")} == {PACKAGE / "queries"}


def test_the_library_imports_nothing_from_dev():
    offenders = {name: targets for name, targets in GRAPH.items()
                 if not name.startswith("docstatus.dev")
                 and any(target.startswith("docstatus.dev") for target in targets)}
    assert offenders == {}


def test_no_module_imports_the_cli_but_the_entry_points():
    assert {name for name, targets in GRAPH.items() if "docstatus.cli" in targets} <= {"docstatus.__main__"}


def test_no_import_cycles():
    # Package __init__ files re-export their modules; a module importing its own package is not a cycle.
    def edges(name):
        return {target for target in GRAPH[name] if not name.startswith(target + ".")}

    seen, on_path, cycles = set(), [], []

    def visit(name):
        if name in on_path:
            cycles.append(on_path[on_path.index(name):] + [name])
            return
        if name in seen:
            return
        seen.add(name)
        on_path.append(name)
        for target in sorted(edges(name)):
            visit(target)
        on_path.pop()

    for name in sorted(GRAPH):
        visit(name)
    assert cycles == []
