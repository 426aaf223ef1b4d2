"""Rule environments (envs/*.yaml) and the rules that use them, checked over every rule and env file:

- every `conda:`, `script:` and report caption path resolves from the file that names it (so the
  workflow works as a module), and no workflow file uses `workflow.basedir` (the deploying Snakefile's
  directory in a module);
- nothing in an env file points at a local path: Snakemake builds an env from a copy of its file under
  the conda prefix (snakemake/deployment/conda.py, `create_env`), and conda resolves relative paths from
  that copy (conda/env/installers/pip.py);
- the env files' pins are pyproject.toml's, and each rule's env provides what its script imports;
- every rule that runs a script declares `threads:` and its adapter passes `snakemake.threads` on;
- (slow, needs PyPI) every env's pip part builds in a fresh venv through Snakemake's own `--sdm conda`
  (conda played by tests/conda_shim.py), and the workflow, deployed as a module and run by a
  Snakemake-only installation, reaches its results with those envs alone.
"""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests import conda_shim
from tests.workflow_runs import assert_complete, deploy, run_deployed

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Imported by the package but installed with another distribution: torch's Linux wheels depend on the
# Triton they were built with (the ESM-2 kernels use it only on CUDA).
PROVIDED_BY = {"triton": "torch"}
OPTIONAL = {"flash_attn"}  # used only where it is installed (virnucpro.models.attention checks first)


def rules():
    """{name: (file, {directive: text})} for every rule and checkpoint of the workflow."""
    found = {}
    for path in WORKFLOW_FILES:
        text = path.read_text()
        for block in re.split(r"(?m)^(?=(?:rule|checkpoint) \w+:)", text)[1:]:
            header, _, body = block.partition("\n")
            name = re.match(r"(?:rule|checkpoint) (\w+):", header).group(1)
            body = re.split(r"(?m)^(?=\S)", body)[0]  # up to the next top-level statement
            directives, current = {}, None
            for line in body.splitlines():
                m = re.match(r"^    (\w+):(.*)$", line)
                if m:
                    current = m.group(1)
                    directives[current] = m.group(2)
                elif current and line.startswith("        "):
                    directives[current] += "\n" + line
            found[name] = (path, directives)
    assert found, "no rules found"
    return found


def literal(text):
    """The string literal of a one-value directive (`conda:`, `script:`)."""
    values = re.findall(r'"([^"]+)"', text)
    assert len(values) == 1, text
    return values[0]


def env_spec(path):
    spec = yaml.safe_load(path.read_text())
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip = [r for d in spec["dependencies"] if isinstance(d, dict) for r in d["pip"]]
    return conda, pip


def test_workflow_paths_resolve_from_the_file_that_names_them():
    used = set()
    for name, (path, d) in rules().items():
        for key in ("conda", "script"):
            if key in d:
                target = (path.parent / literal(d[key])).resolve()
                assert target.is_file(), f"rule {name}: {key} {literal(d[key])} is not there from {path}"
                if key == "conda":
                    used.add(target)
        if "script" in d:
            assert "conda" in d, f"rule {name} runs a script but names no conda environment"
        for caption in re.findall(r'caption="([^"]+)"', d.get("output", "")):
            assert (path.parent / caption).is_file(), f"rule {name}: caption {caption} is not there from {path}"
    assert used == {p.resolve() for p in ENV_FILES}, "every env file is used, and only those in envs/"
    for path in WORKFLOW_FILES:
        text = path.read_text()
        for report in re.findall(r'(?m)^report: "([^"]+)"', text):
            assert (path.parent / report).is_file(), report
        assert "workflow.basedir" not in text, f"{path}: workflow.basedir is the deploying Snakefile's directory"


def test_env_files_name_no_path_their_copy_cannot_reach(tmp_path):
    """Each env file is copied where Snakemake copies it (<conda-prefix>/<hash>.yaml); every local path
    in its pip part (`-e`, `-r`, a directory, a wheel, file:) must still name an installable thing."""
    prefix = tmp_path / ".snakemake" / "conda"
    prefix.mkdir(parents=True)
    for env in ENV_FILES:
        copy = prefix / f"{env.stem}-0123abcd.yaml"
        shutil.copy(env, copy)
        _, pip = env_spec(copy)
        for entry in pip:
            words = entry.split()
            target = words[-1].split(" @ ", 1)[-1].removeprefix("file://").removeprefix("file:")
            local = entry.startswith(("-", ".", "/", "~", "file:")) or " @ file:" in entry
            if not local:
                continue
            where = (copy.parent / target).expanduser()
            installable = where.is_file() or (where / "pyproject.toml").is_file() or (where / "setup.py").is_file()
            assert installable, f"{env.name}: '{entry}' resolves to {where} from the copy Snakemake builds from"


def test_env_pins_are_pyprojects():
    pins = {}
    for req in PYPROJECT["project"]["dependencies"]:
        r = Requirement(req)
        assert str(r.specifier).startswith("==") and len(r.specifier) == 1, f"pyproject.toml: {req} is not pinned"
        pins[canonicalize_name(r.name)] = str(r.specifier)
    requires_python = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for env in ENV_FILES:
        conda, pip = env_spec(env)
        for dep in conda:
            name, _, version = dep.partition("=")
            assert name in ("python", "pip"), (
                f"{env.name}: {dep}: Python packages come from PyPI (the pip part), with pyproject.toml's pins"
            )
            if name == "python":
                assert version and requires_python.contains(f"{version}.0"), f"{env.name}: {dep} vs {requires_python}"
        assert "python" in {d.partition("=")[0] for d in conda}, f"{env.name} pins no python"
        for entry in pip:
            try:
                r = Requirement(entry)
            except InvalidRequirement:
                pytest.fail(f"{env.name}: '{entry}' is not a requirement pinned in pyproject.toml")
            name = canonicalize_name(r.name)
            assert name in pins, f"{env.name}: {r.name} is not a dependency in pyproject.toml"
            assert str(r.specifier) == pins[name], f"{env.name}: {entry}, pyproject.toml pins {r.name}{pins[name]}"


def _imports(path):
    """Absolute imports of a module, skipping those guarded by `except ImportError` (optional ones)."""
    tree = ast.parse(path.read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers
        ):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def third_party_imports(script):
    """Top-level third-party modules reached from `script` through the virnucpro modules it imports
    (at module level or inside functions)."""
    seen, todo, found = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "virnucpro":
                module = REPO / Path(*name.split(".")).with_suffix(".py")
                if module.is_file():
                    todo.append(module)
            elif top not in sys.stdlib_module_names and top not in OPTIONAL and top != "snakemake":
                found.add(top)
    return found


def test_each_rule_env_provides_what_its_script_imports():
    distributions = importlib.metadata.packages_distributions()
    for name, (path, d) in rules().items():
        if "script" not in d:
            continue
        env = (path.parent / literal(d["conda"])).resolve()
        provided = {canonicalize_name(Requirement(r).name) for r in env_spec(env)[1] if not r.startswith("-")}
        for module in third_party_imports((path.parent / literal(d["script"])).resolve()):
            dists = [PROVIDED_BY[module]] if module in PROVIDED_BY else distributions.get(module, [module])
            assert {canonicalize_name(x) for x in dists} & provided, (
                f"rule {name}: its script imports {module} ({', '.join(dists)}), which {env.name} lacks"
            )


def _passes_threads(call):
    return any(
        k.arg == "threads" and ast.unparse(k.value) == "snakemake.threads" for k in call.keywords
    )


def test_rules_declare_threads_and_adapters_pass_them_on():
    for name, (path, d) in rules().items():
        if "script" not in d:
            continue
        assert "threads" in d, f"rule {name} runs a script but declares no threads:"
        script = (path.parent / literal(d["script"])).resolve()
        calls = [
            n for n in ast.walk(ast.parse(script.read_text()))
            if isinstance(n, ast.Call) and ast.unparse(n.func) == "run_step"
        ]
        assert calls and all(_passes_threads(c) for c in calls), (
            f"{script.name} (rule {name}): run_step(..., threads=snakemake.threads) is missing"
        )


# ------------------------------------------------------------------------------ built environments


@pytest.fixture(scope="session")
def snakemake_only(tmp_path_factory):
    """A venv with Snakemake alone (pyproject.toml's pin, report extra included), as a user of a deployed
    workflow has it."""
    root = tmp_path_factory.mktemp("snakemake_only")
    venv.create(root, with_pip=True)
    pin = next(r for r in PYPROJECT["project"]["optional-dependencies"]["workflow"] if Requirement(r).name == "snakemake")
    subprocess.run([root / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", pin], check=True)
    probe = subprocess.run([root / "bin" / "python", "-c", "import virnucpro"], cwd=root, capture_output=True)
    assert probe.returncode != 0, "the package must not be importable where Snakemake runs"
    return root / "bin" / "python"


@pytest.mark.workflow
@pytest.mark.slow
@pytest.mark.network
def test_envs_build_and_run_the_deployed_workflow(tmp_path, tiny_models, snakemake_only):
    base = tmp_path / "conda"
    shim_bin = conda_shim.install(base)
    env = {**os.environ, "PATH": f"{shim_bin}{os.pathsep}{os.environ['PATH']}"}
    dest = deploy(tmp_path / "analysis", tiny_models)
    args = ["--sdm", "conda", "--conda-prefix", str(tmp_path / "envs")]
    run_deployed(dest, "--cores", "2", *args, python=snakemake_only, env=env)
    assert_complete(dest, *args, python=snakemake_only, env=env)
    run_deployed(dest, "--report", "report.html", *args, python=snakemake_only, env=env)
    assert "sequence_summary.tsv" in (dest / "report.html").read_text(errors="replace")
    built = sorted(p for p in (tmp_path / "envs").iterdir() if p.is_dir())
    assert len(built) == len(ENV_FILES), built  # one per env file: each rule ran in its own env
    for prefix in built:
        copy = prefix.with_suffix(".yaml")
        assert copy.read_text() in {p.read_text() for p in ENV_FILES}
        proc = subprocess.run([prefix / "bin" / "python", "-c", "import virnucpro"], cwd=tmp_path, capture_output=True)
        assert proc.returncode != 0, f"{prefix.name}: the env holds the package; it must come from the workflow"
