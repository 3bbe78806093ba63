"""Preparation apart from serving: serving (``pneumo.inference``) never imports training, and
training imports nothing of the serving engine, only the exporter that writes the graph a
model ships. Imports inside functions count: they run just the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pneumo"
EXPORTER = "pneumo.inference.export"


def _imports(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports, wherever in the file."""
    found = {}
    for path in sorted((SRC / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(SRC))] = names
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("package", ["inference", "models"])
def test_serving_and_the_model_files_never_import_training(package):
    wrong = {
        f: sorted(n for n in names if _within(n, "pneumo.training"))
        for f, names in _imports(package).items()
    }
    assert not {f: n for f, n in wrong.items() if n}


def test_training_imports_no_serving_engine():
    wrong = {
        f: sorted(n for n in names if _within(n, "pneumo.inference") and not _within(n, EXPORTER))
        for f, names in _imports("training").items()
    }
    assert not {f: n for f, n in wrong.items() if n}


def test_the_model_files_import_no_serving_either():
    wrong = {
        f: sorted(n for n in names if _within(n, "pneumo.inference"))
        for f, names in _imports("models").items()
    }
    assert not {f: n for f, n in wrong.items() if n}


def test_the_walk_sees_imports_inside_functions():
    """The check above would pass vacuously if it missed function-level imports."""
    bundle = _imports("training")["training/bundle.py"]
    assert EXPORTER in bundle and "pneumo.training.finalize" in bundle
