"""Package metadata: pyproject.toml applies without a setuptools warning, every extra that the docs,
profiles and build files tell users to install exists, and the Snakemake workflow catalog finds what
its standardized usage needs."""

import re
import tomllib
import warnings
from pathlib import Path

import pytest
import yaml
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


def test_catalog_standardized_usage():
    """What the catalog's generate-catalog.py reads: workflow/Snakefile, config/README.md and the usage
    settings (mandatory flags, software deployment, report) of .snakemake-workflow-catalog.yml."""
    assert (REPO / "workflow" / "Snakefile").is_file() and (REPO / "config" / "README.md").is_file()
    readme = (REPO / "README.md").read_text().lower()
    assert "snakemake" in readme and "workflow" in readme
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage["mandatory-flags"]) == {"desc", "flags"} and usage["mandatory-flags"]["desc"]
    methods = usage["software-stack-deployment"]
    assert set(methods) <= {"conda", "singularity", "singularity+conda"} and any(methods.values())
    assert methods["conda"] is True  # tests/test_envs.py builds every env through --sdm conda
    assert usage["report"] is True
