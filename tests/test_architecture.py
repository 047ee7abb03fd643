"""The architecture of shared/design.md as tests: the start-up path does not load torch, cldash's modules
import each other without circles, an import inside a function says why it is there, and no function is
longer than 60 lines. The layers themselves are
import-linter contracts in pyproject.toml, checked by `lint-imports` in .ci/run."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

from import_contracts import import_time_lines

ROOT = Path(__file__).resolve().parents[1]
# what the pages and the CLI import when they start; a command or a page that trains imports the engine later
STARTUP = ["cldash.cli", "cldash.dashboard.views", "cldash.dashboard.figures", "cldash.dashboard.tables",
           "cldash.config", "cldash.store"]
LONGEST = 60
GENERATED = "cldash/store/migrations/versions/"    # Alembic revisions: one upgrade each, written once


def test_startup_modules_do_not_load_torch():
    probe = textwrap.dedent(f"""
        import importlib, sys
        for name in {STARTUP!r}:
            importlib.import_module(name)
            heavy = [lib for lib in ("torch", "transformers") if lib in sys.modules]
            if heavy:
                print(name, "loads", *heavy)
                break
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout == ""


def import_circles(package="cldash"):
    """Each import circle among the modules of `package` (a strongly connected component of more than one
    module, imports inside functions included) as (its modules, one shortest cycle through the first)."""
    graph = grimp.build_graph(package, cache_dir=None)
    seen, circles = set(), []
    for module in sorted(graph.modules):
        if module in seen:
            continue
        component = {module} | (graph.find_upstream_modules(module) & graph.find_downstream_modules(module))
        seen |= component
        if len(component) > 1:
            cycles = [graph.find_shortest_chain(importer=step, imported=module)
                      for step in graph.find_modules_directly_imported_by(module) if step in component]
            circles.append((sorted(component), (module, *min(cycles, key=lambda c: (len(c), c)))))
    return circles


def test_no_import_circles():
    circles = import_circles()
    for modules, cycle in circles:
        print(f"{len(modules)} modules: {', '.join(modules)}\n    e.g. {' -> '.join(cycle)}")
    assert len(circles) == 0


def functions(folders=("cldash", "pages")):
    """(path relative to the root, its source lines, a function or method in it) for the code the checks cover:
    cldash/ and pages/, without the Alembic revisions."""
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(GENERATED):
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield relative, lines, node


def long_functions(longest=LONGEST):
    """(path, line, name, length) of each function or method longer than `longest` lines, counted from its
    `def` to its last line (decorators excluded)."""
    return [(path, fn.lineno, fn.name, fn.end_lineno - fn.lineno + 1) for path, _, fn in functions()
            if fn.end_lineno - fn.lineno + 1 > longest]


def test_no_function_longer_than_60_lines():
    found = long_functions()
    for path, line, name, length in found:
        print(f"{path}:{line} {name}: {length} lines")
    assert found == []


def unexplained_deferred_imports() -> list[tuple[str, int, str]]:
    """Imports inside a function (or method) with no comment on their lines: an import is deferred only to keep
    a heavy library off a fast path, and its comment says which (`# deferred: imports torch`)."""
    return sorted({(path, node.lineno, lines[node.lineno - 1].strip()) for path, lines, fn in functions()
                   for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))
                   and not any("#" in line for line in lines[node.lineno - 1:node.end_lineno])})


def test_every_deferred_import_says_why():
    found = unexplained_deferred_imports()
    for path, line, text in found:
        print(f"{path}:{line} {text}")
    assert found == []


def test_import_time_lines_keep_only_what_runs_on_import():
    # the start-up contract (tests/import_contracts.py) counts these imports and no others
    source = textwrap.dedent("""\
        import os
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import pandas
        else:
            import json
        try:
            import numpy
        except ImportError:
            import math
        from cldash.core import (
            errors,
        )

        def handler():
            import torch   # deferred: imports torch

        class Store:
            import re

            def frames(self):
                import pandas
    """)
    assert import_time_lines(source) == {1, 2, 6, 8, 10, 11, 12, 13, 19}
