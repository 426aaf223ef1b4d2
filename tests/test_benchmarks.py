"""The benchmark scripts and the .test/ model builder are not run by the suite, so what they import
from the package is checked here: a renamed or moved name fails this test, not the next benchmark run
on a lent GPU."""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / ".test").glob("*.py"), *(REPO / "scripts").glob("*.py")])


def package_imports(path):
    """(module, name or None) of every `virnucpro` import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("virnucpro"):
            yield from ((node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.startswith("virnucpro"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_what_the_script_imports_from_the_package_exists(path):
    missing = []
    for module, name in package_imports(path):
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError:
            missing.append(module)
            continue
        if name is not None and not hasattr(found, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert missing == [], f"{path.relative_to(REPO)} imports {missing}"
