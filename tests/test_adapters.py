"""The Snakemake adapters (scripts/*.py) hand their step every parameter it takes: a parameter left to
its default there is a config setting that silently never reaches the step (a raised max_record_bp
would be honoured by prepare and refused by summarize). Read from the adapters' code, not run."""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))
LEFT_TO_DEFAULT = {  # (step, parameter): why no rule sets it
    ("prepare", "out_fragments"): "the original tool's fragment file, written only from the CLI",
    ("train", "max_epochs"): "the original recipe, not a setting",
    ("train", "patience"): "the original recipe, not a setting",
}


def step_call(script):
    """(the step function, the names of the parameters the adapter's `run_step` call passes it)."""
    tree = ast.parse(script.read_text())
    imported = {a.asname or a.name: n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "run_step"]
    assert len(calls) == 1, f"{script.name}: one run_step call expected"
    (call,) = calls
    name = call.args[1].id
    step = getattr(importlib.import_module(imported[name]), name)
    positional = list(inspect.signature(step).parameters)[: len(call.args) - 2]
    return step, set(positional) | {k.arg for k in call.keywords}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_the_adapter_passes_every_parameter_of_its_step(script):
    step, passed = step_call(script)
    missing = [p for p in inspect.signature(step).parameters if p not in passed and (step.__name__, p) not in LEFT_TO_DEFAULT]
    assert missing == [], f"{script.name} leaves {missing} of {step.__name__} to their defaults"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_step_takes_at_most_ten_parameters(script):
    """More would be settings that belong together (as summarize's `Settings`)."""
    step, _ = step_call(script)
    assert len(inspect.signature(step).parameters) <= 10, step.__name__


def test_every_step_has_an_adapter_and_the_exceptions_exist():
    steps = {step_call(s)[0].__name__: inspect.signature(step_call(s)[0]).parameters for s in SCRIPTS}
    assert all(p in steps[s] for s, p in LEFT_TO_DEFAULT)
    assert {"prepare", "plan", "embed", "classify", "summarize", "overview"} <= set(steps)
