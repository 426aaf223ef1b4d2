"""A stand-in for `conda`, for building the rule environments where no conda channel is reachable.

It answers what Snakemake's `--sdm conda` asks (snakemake/deployment/conda.py): `conda --version`,
`conda info --json`, `conda config --get channel_priority --json`, `conda clean` and
`conda env create --file F --prefix P`. It builds only environments whose conda part is `python` (the
version this interpreter has) and `pip`: a venv at P, then the pip part installed the way conda installs
it (conda/env/installers/pip.py): `pip install -U -r <requirements file>` run in F's directory, so a
relative path there resolves exactly as under conda. Anything else fails loudly.

`install(base)` writes base/bin/conda and the base/bin/activate script that Snakemake sources.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ACTIVATE = '# sourced by Snakemake as `source <base>/bin/activate <env>`\n. "$1/bin/activate"\n'


def install(base):
    base = Path(base).resolve()
    (base / "bin").mkdir(parents=True, exist_ok=True)
    conda = base / "bin" / "conda"
    conda.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "{base}" "$@"\n')
    conda.chmod(0o755)
    (base / "bin" / "activate").write_text(ACTIVATE)
    return base / "bin"


def env_create(env_file, prefix):
    env_file = Path(env_file).resolve()
    spec = yaml.safe_load(env_file.read_text())
    pip = []
    for dep in spec.get("dependencies", []):
        if isinstance(dep, dict) and set(dep) == {"pip"}:
            pip += dep["pip"]
        elif dep == "pip":
            continue
        elif isinstance(dep, str) and dep.split("=")[0] == "python":
            wanted = dep.split("=")[-1]
            have = "{}.{}".format(*sys.version_info[:2])
            if wanted != have:
                sys.exit(f"conda shim: {env_file} asks for python {wanted}; this interpreter is {have}")
        else:
            sys.exit(f"conda shim: cannot stand in for conda package {dep!r} of {env_file}")
    subprocess.run([sys.executable, "-m", "venv", prefix], check=True)
    with tempfile.NamedTemporaryFile(
        "w", prefix="condaenv.", suffix=".requirements.txt", dir=env_file.parent, delete=False
    ) as req:
        req.write("\n".join(pip))
    try:
        subprocess.run(
            [str(Path(prefix) / "bin" / "python"), "-m", "pip", "install", "--quiet", "-U", "-r", req.name,
             "--exists-action=b", "--no-compile"],  # --no-compile: a test's env need not ship bytecode
            cwd=env_file.parent,
            check=True,
        )
    finally:
        os.remove(req.name)


def main(base, argv):
    if argv == ["--version"]:
        print("conda 24.7.1")
    elif argv == ["info", "--json"]:
        print(json.dumps({"conda_prefix": base, "platform": "linux-64"}))
    elif argv == ["config", "--get", "channel_priority", "--json"]:
        print(json.dumps({"get": {"channel_priority": "strict"}}))
    elif argv[:1] == ["clean"]:
        pass  # Snakemake cleans conda's package tarballs after a build; pip leaves none
    elif argv[:2] == ["env", "create"]:
        parser = argparse.ArgumentParser(prog="conda env create")
        parser.add_argument("--file", required=True)
        parser.add_argument("--prefix", required=True)
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--no-default-packages", action="store_true")
        args = parser.parse_args(argv[2:])
        env_create(args.file, args.prefix)
    else:
        sys.exit(f"conda shim: unsupported command: conda {' '.join(argv)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
