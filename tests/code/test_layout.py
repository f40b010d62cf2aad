"""The code's shape, read from its syntax trees (no project module is imported).

- No import circles among the project's modules (steps/, custom_pyfunc/, dags/).
- Layers import only downward: custom_pyfunc < steps.core < steps.data < steps.evaluation <
  steps.training < steps.registry < steps.monitoring < steps.deployment < steps.orchestration <
  commands (``steps/*.py``) and DAGs.
- An import inside a function says why on the line above (``# lazy: <reason>``; one comment covers
  the imports right below it). Exempt: the tasks of a DAG (functions decorated with ``task``), whose
  imports Airflow's documented rule keeps out of parse time
  (``tests/integration/test_dags.py`` asserts parsing loads no heavy module).
- A library function over 60 lines says why in its docstring (``long because``).

Every failure names ``file:line`` so a violation is quick to find.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("steps", "custom_pyfunc", "dags")
LAYERS = (
    "custom_pyfunc",
    "steps.core",
    "steps.data",
    "steps.evaluation",
    "steps.training",
    "steps.registry",
    "steps.monitoring",
    "steps.deployment",
    "steps.orchestration",
)
COMMANDS_LAYER = len(LAYERS)  # steps/*.py and dags/*.py sit above every library package
LAZY_MARKER = "# lazy:"
LONG_MARKER = "long because"  # matched case-insensitively
MAX_FUNCTION_LINES = 60
IMPORTS = ("import ", "from ")


def _modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name belongs to (``a.b.c`` -> ``a.b`` if c is a symbol)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    """(statement, imported project module) for every import in ``tree``."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            # A bare package root (``import steps``, for its path) is no dependency on a layer.
            if target is not None and target != module and target not in PACKAGES:
                found.append((node, target))
    return found


def _layer(module: str) -> int:
    """Index of ``module``'s layer (commands and DAGs above all library packages)."""
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return COMMANDS_LAYER


def _where(module: str, node: ast.AST) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{node.lineno}"


TREES = {module: ast.parse(path.read_text(), str(path)) for module, path in MODULES.items()}
GRAPH = {module: _imports(module, tree) for module, tree in TREES.items()}


def test_no_import_circles():
    edges = {module: sorted({target for _, target in found}) for module, found in GRAPH.items()}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in edges[module]:
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in edges:
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_layers_import_only_downward():
    upward = [
        f"{_where(module, node)}: {module} imports {target} (a layer above it)"
        for module, found in GRAPH.items()
        for node, target in found
        if _layer(target) > _layer(module)
        or (_layer(module) == COMMANDS_LAYER and _layer(target) == COMMANDS_LAYER)
    ]
    assert not upward, "imports running back up the layers:\n" + "\n".join(upward)


def _is_task(function: ast.AST) -> bool:
    """Whether ``function`` is decorated as an Airflow task (``@task``, ``@task.branch`` ...)."""
    return any("task" in ast.unparse(decorator) for decorator in function.decorator_list)


def _function_imports(tree: ast.AST) -> set[ast.stmt]:
    """Import statements written inside a function body (not a DAG task's)."""
    found, in_tasks = set(), set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            imports = {
                node
                for node in ast.walk(function)
                if isinstance(node, (ast.Import, ast.ImportFrom))
            }
            (in_tasks if _is_task(function) else found).update(imports)
    return found - in_tasks


def _has_reason(lines: list[str], lineno: int) -> bool:
    """Whether a ``# lazy: <reason>`` comment heads the block of imports holding line ``lineno``."""
    index = lineno - 2
    while index >= 0 and (not lines[index].strip() or lines[index].strip().startswith(IMPORTS)):
        index -= 1
    above = lines[index].strip() if index >= 0 else ""
    return above.startswith(LAZY_MARKER) and bool(above[len(LAZY_MARKER) :].strip())


def test_function_level_imports_give_a_reason():
    silent = []
    for module, tree in TREES.items():
        lines = MODULES[module].read_text().splitlines()
        for node in _function_imports(tree):
            if not _has_reason(lines, node.lineno):
                silent.append(
                    f"{_where(module, node)}: import inside a function without "
                    f"'{LAZY_MARKER} <reason>' on the line above"
                )
    assert not silent, "\n".join(sorted(silent))


def test_long_library_functions_say_why():
    unexplained = []
    for module, tree in TREES.items():
        if _layer(module) == COMMANDS_LAYER:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                docstring = (ast.get_docstring(node) or "").lower()
                if length > MAX_FUNCTION_LINES and LONG_MARKER not in docstring:
                    unexplained.append(
                        f"{_where(module, node)}: {node.name} has {length} lines and no "
                        f"'{LONG_MARKER} <reason>' in its docstring"
                    )
    assert not unexplained, "\n".join(sorted(unexplained))
