"""An import-linter contract type for the start-up path: the modules that the pages and the CLI import when
they start must not reach torch or transformers through imports that run at import time.

import-linter's own `forbidden` contract cannot say this: grimp records every import, also those inside a
function, and cldash defers torch on purpose with function-level imports (a CLI command's handler imports the
engine when it runs). This contract keeps only the imports that run when a module is imported: statements in
the module body and in the blocks that run with it (if/try/with/for and class bodies), not those in a function
body or under `if TYPE_CHECKING:`, nor a lazy import. Importing `a.b.c` also runs the `__init__` of `a` and
`a.b`, so each module counts as importing its package.

pyproject.toml names this class in [tool.importlinter] contract_types as `tests.import_contracts.…`:
lint-imports puts the working directory on sys.path, so from the repository root (where .ci/run calls it)
`tests` is found as a namespace package without installing anything. tests/test_architecture.py imports the
same module by its own name (tests/ is on pytest's pythonpath) to test `import_time_lines`.
"""

from __future__ import annotations

import ast
import importlib.util
from collections import deque
from pathlib import Path

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck
from importlinter.domain.helpers import module_expressions_to_modules

PACKAGE = ()    # the line numbers of the implicit import of a module's own package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _collect(body: list[ast.AST], lines: set[int]) -> None:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue        # a function's body runs when it is called, not when its module is imported
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            _collect(node.orelse, lines)
        else:
            _collect([child for child in ast.iter_child_nodes(node)
                      if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case))], lines)


def import_time_lines(source: str) -> set[int]:
    """The line numbers covered by the import statements of `source` that run when it is imported."""
    lines: set[int] = set()
    _collect(ast.parse(source).body, lines)
    return lines


def module_file(module: str) -> Path:
    """The source file of an internal module, found from its root package's folder without importing it."""
    root, *rest = module.split(".")
    folder = Path(importlib.util.find_spec(root).submodule_search_locations[0]).joinpath(*rest)
    package = folder / "__init__.py"
    return package if package.is_file() else folder.with_suffix(".py")  # as Python's finder: package first


def import_time_edges(graph: ImportGraph, internal: set[str]) -> dict[str, dict[str, tuple[int, ...]]]:
    """importer -> imported -> line numbers, for the imports of internal modules that run at import time
    (PACKAGE for the implicit import of a module's own package)."""
    edges: dict[str, dict[str, tuple[int, ...]]] = {}
    for importer in sorted(internal):
        at_import = import_time_lines(module_file(importer).read_text(encoding="utf-8"))
        edges[importer] = {}
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            lines = tuple(sorted({detail["line_number"]
                                  for detail in graph.get_import_details(importer=importer, imported=imported)
                                  if detail["line_number"] in at_import and not detail.get("is_lazy")}))
            if lines:
                edges[importer][imported] = lines
        parent = importer.rpartition(".")[0]
        if parent in internal:
            edges[importer].setdefault(parent, PACKAGE)
    return edges


def shortest_chain(edges: dict[str, dict[str, tuple[int, ...]]], sources: set[str],
                   target: str) -> list[str] | None:
    """The shortest chain of modules from any of `sources` to `target` along `edges`, or None."""
    came_from: dict[str, str | None] = {source: None for source in sorted(sources)}
    queue = deque(sorted(sources))
    while queue:
        module = queue.popleft()
        if module == target:
            chain = [module]
            while came_from[chain[-1]] is not None:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for imported in edges.get(module, {}):
            if imported not in came_from:
                came_from[imported] = module
                queue.append(imported)
    return None


class ImportTimeForbiddenContract(Contract):
    """No chain of imports that run at import time leads from a source module to a forbidden module.

    Configuration options:
        - source_modules:    module expressions; each names a package with all its descendants.
        - forbidden_modules: external packages (the session needs include_external_packages = true).
        - broken_contract_guidance: text shown after the violations. (Optional.)
    """

    type_name = "import_time_forbidden"

    source_modules = fields.ListField(subfield=fields.ModuleExpressionField())
    forbidden_modules = fields.ListField(subfield=fields.ModuleExpressionField())
    broken_contract_guidance = fields.StringField(required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        if str(self.session_options.get("include_external_packages")).lower() != "true":
            raise ValueError(f"{self.type_name} needs include_external_packages = true in [tool.importlinter].")
        roots = tuple(self.session_options["root_packages"])
        internal = {module for module in graph.modules if module.split(".")[0] in roots}
        edges = import_time_edges(graph, internal)
        violations = []
        for expression in self.source_modules:
            matched = {module.name for module in module_expressions_to_modules(graph, [expression])}
            sources = matched.union(*(graph.find_descendants(module) for module in matched if module in internal))
            if not sources or not sources <= internal:
                raise ValueError(f"Module '{expression}' does not exist.")
            for forbidden in self.forbidden_modules:
                output.verbose_print(verbose, f"Searching for import-time chains from {expression} to {forbidden}...")
                chain = shortest_chain(edges, sources, forbidden.expression)
                if chain:
                    links = [(a, b, edges[a][b]) for a, b in zip(chain, chain[1:])]
                    violations.append({"source": str(expression), "forbidden": str(forbidden), "links": links})
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            output.print_error(f"{violation['source']} imports {violation['forbidden']} at import time:")
            output.new_line()
            for number, (importer, imported, lines) in enumerate(violation["links"]):
                where = f"l.{', '.join(map(str, lines))}" if lines else "its package"
                if number:
                    output.indent_cursor()
                    output.print_error(f"{importer} -> {imported} ({where})", bold=False)
                else:
                    output.print_error(f"-   {importer} -> {imported} ({where})", bold=False)
            output.new_line()
        if self.broken_contract_guidance:
            output.print(self.broken_contract_guidance)
            output.new_line()
