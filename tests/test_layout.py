"""The package's layout by role: every module sits in a layer, and no module reaches for another's private names.

`make test` runs import-linter on the contract in pyproject.toml (higher layers import lower ones, never
the reverse); these tests keep that contract whole: a new module must be given a layer, and private
(underscore) names stay inside their module: make a name public, with a docstring, to share it.
"""
import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import attn_course

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attn_course"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
LAYERS = next(c for c in CONTRACTS if c["type"] == "layers")["layers"]
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if ".ipynb_checkpoints" not in p.parts)


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_has_a_layer():
    layered = {name.strip() for layer in LAYERS for name in layer.replace(":", "|").split("|")}
    orphans = []
    for path in SOURCES:
        name = module_name(path)
        if name == "attn_course":
            continue
        if not any(name == top or name.startswith(top + ".") for top in layered):
            orphans.append(name)
    assert not orphans, f"give these modules a layer in pyproject.toml's import-linter contract: {orphans}"


def _resolve(path, node):
    """The absolute module an ``ImportFrom`` in ``path`` names."""
    if node.level == 0:
        return node.module or ""
    base = module_name(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_modules_private_names(path):
    tree = ast.parse(path.read_text())
    here = module_name(path)
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(path, node)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if alias.name.startswith("_") and source.startswith("attn_course") and source != here:
                    if not (PACKAGE / Path(*target.split(".")[1:])).with_suffix(".py").exists():
                        found.append(f"line {node.lineno}: from {source} import {alias.name}")
                if source.startswith("attn_course"):
                    aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("attn_course"):
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "attn_course"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            target = aliases[node.value.id]
            try:
                is_module = hasattr(importlib.import_module(target), "__file__")
            except ImportError:
                is_module = False
            if is_module and target != here:
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not found, f"{here} uses private names of other modules: {found}"


def test_every_module_imports():
    """Every module imports on its own; ``grading.preload`` is left out: importing it arms the grading
    tripwire in this process, on purpose (the grading server imports it before any submission runs)."""
    names = [info.name for info in pkgutil.walk_packages(attn_course.__path__, "attn_course.")]
    assert len(names) > 40
    for name in names:
        if name != "attn_course.grading.preload":
            importlib.import_module(name)
    from attn_course.checks import tripwire
    assert not tripwire.enabled()      # importing every module leaves the state the test began with (off)
