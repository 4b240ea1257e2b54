"""The import picture of ``voiceconv/`` (docs/architecture.md): read off the source's AST.

Module-level imports form no cycle; an import inside a function carries a comment saying why;
the modules a project may import before Django's app registry is ready import without it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import voiceconv
from tests.conftest import run_without_django

PACKAGE = Path(voiceconv.__file__).parent

#: Imported by a project's settings, ASGI module or app config, or by the test kit, possibly
#: before the app registry is ready: none of them may load the models on import.
BEFORE_REGISTRY = [
    "voiceconv.routing",
    "voiceconv.apps",
    "voiceconv.conf",
    "voiceconv.checks",
    "voiceconv.checks_setup",
    "voiceconv.checks_tools",
    "voiceconv.testing",
    "voiceconv.testing.conversation",
    "voiceconv.testing.fixtures",
]


def _sources() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _module_level_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The voiceconv modules ``module`` imports when it is imported (not under TYPE_CHECKING)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in known)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        found.add(f"{base}.{alias.name}")
                    elif base in known:
                        found.add(base)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def _unexplained_function_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """Imports inside a function without a comment on the line before them (a run of imports,
    blank lines between them allowed, shares the comment above its first)."""
    lines = path.read_text().splitlines()
    found: list[str] = []

    def block(statements: list[ast.stmt]) -> None:
        explained: ast.stmt | None = None
        for node in statements:
            if not isinstance(node, ast.Import | ast.ImportFrom):
                explained = None
                continue
            ok = node.lineno > 1 and lines[node.lineno - 2].strip().startswith("#")
            if not ok and explained is not None and explained.end_lineno is not None:
                ok = not any(line.strip() for line in lines[explained.end_lineno:node.lineno - 1])
            if not ok:
                found.append(f"{path.relative_to(root)}:{node.lineno}: "
                             f"{lines[node.lineno - 1].strip()}")
            explained = node if ok else None

    for function in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                for name in ("body", "orelse", "finalbody"):
                    statements = getattr(node, name, None)
                    if isinstance(statements, list):
                        block(statements)
    return found


def test_module_level_imports_form_no_cycle() -> None:
    sources = dict(_sources())
    known = set(sources)
    graph = {module: _module_level_imports(module, path, known) for module, path in sources.items()}
    assert graph["voiceconv.models.tools"] >= {"voiceconv.tools.registry"}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_inside_a_function_says_why() -> None:
    found = [line for _, path in _sources() for line in _unexplained_function_imports(path)]
    assert found == [], "imports inside functions without a comment on the line before:\n" + (
        "\n".join(found))


def test_an_import_inside_a_function_without_a_reason_is_found(tmp_path: Path) -> None:
    source = tmp_path / "voiceconv_sample.py"
    source.write_text(
        "def explained():\n"
        "    # Imported here: a reason.\n"
        "    import json\n"
        "\n"
        "    import os\n"
        "    return json, os\n"
        "\n"
        "def hidden():\n"
        "    x = 1\n"
        "    import json\n"
        "    return json, x\n"
    )
    found = _unexplained_function_imports(source, tmp_path)
    assert found == ["voiceconv_sample.py:10: import json"]


def test_modules_imported_before_the_app_registry_is_ready_import_without_it() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {BEFORE_REGISTRY!r}:\n"
        "    importlib.import_module(name)\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "loaded = [m for m in sys.modules if m.startswith(('voiceconv.models', 'voiceconv.adm'))]\n"
        "assert not loaded, loaded\n"
    )
    done = run_without_django(code)
    assert done.returncode == 0, done.stderr
