"""What a component needs installed: the import closure of its function body through dmlops, mapped to
the pyproject extras that provide each third-party package.

Imports are read with ``ast``, at module level and inside functions alike (dmlops imports heavy
libraries lazily), so the closure is what a component can reach, not only what it imports at start.
A command list that runs ``python -m dmlops.x`` (a local worker or server process in the same pod)
counts as an import of ``dmlops.x``.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import inspect
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def module_file(module: str) -> Path | None:
    """The source file of a dmlops module (``dmlops.a.b``), or None if there is none."""
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute dotted names imported anywhere in ``tree`` (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base_parts = parts if is_package else parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, (ast.List, ast.Tuple)):
            names.update(_module_run_by(node))
    return names


def _module_run_by(command: ast.List | ast.Tuple) -> set[str]:
    """``[sys.executable, "-m", "dmlops.x", ...]``: a process that runs ``dmlops.x`` in the same image."""
    words = [e.value if isinstance(e, ast.Constant) else None for e in command.elts]
    return {
        module for flag, module in zip(words, words[1:])
        if flag == "-m" and isinstance(module, str) and module.startswith("dmlops.")
    }


@dataclass
class ImportClosure:
    """The dmlops modules reached and the top-level third-party packages they import."""

    modules: set[str] = field(default_factory=set)
    third_party: set[str] = field(default_factory=set)


def import_closure(start_modules: set[str], source_tree: ast.AST | None = None) -> ImportClosure:
    """Follow imports from ``start_modules`` (and from ``source_tree``, e.g. a component body) through
    dmlops; collect every third-party top-level package name on the way."""
    closure = ImportClosure()
    pending = list(start_modules)
    if source_tree is not None:
        pending.extend(_imported_names(source_tree, "__component__", False))
    while pending:
        name = pending.pop()
        top = name.split(".")[0]
        if top != "dmlops":
            if top and top not in sys.stdlib_module_names and top != "__future__":
                closure.third_party.add(top)
            continue
        path = module_file(name)
        if path is None or name in closure.modules:
            continue  # a name imported from a module (a function, a class), or already read
        closure.modules.add(name)
        # Importing dmlops.a.b runs dmlops/__init__.py and dmlops/a/__init__.py first.
        parents = name.split(".")
        pending.extend(".".join(parents[:i]) for i in range(1, len(parents)))
        pending.extend(_imported_names(_parsed(path), name, path.name == "__init__.py"))
    return closure


def component_closure(component) -> ImportClosure:
    """The import closure of a KFP Python component's function body."""
    source = textwrap.dedent(inspect.getsource(component.python_func))
    return import_closure(set(), ast.parse(source))


@functools.cache
def _parsed(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@functools.cache
def extras_by_distribution() -> tuple[frozenset[str], dict[str, set[str]], dict[str, frozenset[str]]]:
    """The core dependencies' distribution names; for each distribution the image extras that list it
    (``dev``, test tools, and ``all``, made of other extras, are left out); and the package extras asked
    for (``feast[redis]``)."""
    project = pyproject()["project"]
    core = frozenset(canonicalize_name(Requirement(r).name) for r in project["dependencies"])
    extras: dict[str, set[str]] = {}
    asked: dict[str, frozenset[str]] = {}
    for extra, requirements in project["optional-dependencies"].items():
        if extra == "dev":
            continue
        for requirement in map(Requirement, requirements):
            name = canonicalize_name(requirement.name)
            if name == "dmlops":
                continue
            extras.setdefault(name, set()).add(extra)
            asked[name] = asked.get(name, frozenset()) | frozenset(requirement.extras)
    return core, extras, asked


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(import_name: str) -> set[str]:
    """The installed distributions that provide a top-level import name (``yaml`` -> ``pyyaml``)."""
    return {canonicalize_name(d) for d in _packages_distributions().get(import_name, [])}


@functools.cache
def requirement_for(import_name: str) -> tuple[str, frozenset[str]] | None:
    """(distribution, extras) for a third-party import: no extras when a core dependency provides it
    (or one of its dependencies); None when nothing in pyproject.toml provides it."""
    core, extras, asked = extras_by_distribution()
    distributions = sorted(distributions_of(import_name) or {canonicalize_name(import_name)})
    for distribution in distributions:  # a core dependency is in every image, whichever extras also list it
        if any(distribution in _dependencies(name, frozenset()) for name in core):
            return distribution, frozenset()
    for distribution in distributions:
        if distribution in extras:
            return distribution, frozenset(extras[distribution])
    for distribution in distributions:
        needed_by = {extra for name, listed_in in extras.items() if distribution in _dependencies(name, asked[name])
                     for extra in listed_in}
        if needed_by:
            return distribution, frozenset(needed_by)
    return None


@functools.cache
def _dependencies(root: str, root_extras: frozenset[str]) -> frozenset[str]:
    """``root`` and every installed distribution it requires, transitively, with ``root_extras`` of root."""
    seen: set[str] = set()
    pending = [(root, root_extras)]
    while pending:
        name, wanted = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and "extra" in str(marker):
                if not any(marker.evaluate({"extra": extra}) for extra in wanted):
                    continue
            elif marker is not None and not marker.evaluate():
                continue
            pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return frozenset(seen)
