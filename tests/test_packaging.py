"""Package metadata: pyproject.toml applies without a setuptools warning, and every extra that the
docs, profiles and build files tell users to install exists."""

import re
import tomllib
import warnings
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_metadata_applies_without_setuptools_warnings():
    import setuptools
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    backend = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    if Version(setuptools.__version__) not in backend.specifier:
        pytest.skip(f"installed setuptools {setuptools.__version__} is not the build backend ({backend})")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_configuration(Distribution(), REPO / "pyproject.toml")


def test_extras_named_in_docs_exist():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    files = [REPO / "README.md", REPO / "Makefile", *REPO.glob("config/*.md"), *REPO.glob("docs/**/*.md"),
             *REPO.glob("profiles/**/*.yaml"), *REPO.glob(".ci/*")]
    named = {}
    for path in files:
        for extra in re.findall(r"(?:\.|virnucpro)\[([\w,-]+)\]", path.read_text()):
            for name in extra.split(","):
                named.setdefault(name, path.relative_to(REPO))
    assert named, "no extra is named anywhere"
    for name, path in named.items():
        assert name in extras, f"{path} names the extra [{name}], which pyproject.toml does not define"
