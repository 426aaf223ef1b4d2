"""The package's modules import downwards only, and no two import each other (lazy imports inside
functions count): core (errors, defaults, layout, frames, device) <- io <- models, results <- steps <-
the entry points (cli, config at parse time, harness for the scripts). models and results do not
import each other."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "virnucpro"
CORE = {"virnucpro", "errors", "defaults", "layout", "frames", "device"}
ENTRY = {"cli", "config", "harness"}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports():
    """{module: set of package modules it imports}, modules named without `virnucpro.`."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "virnucpro":
                for alias in node.names:  # `from virnucpro.models import esm2` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "virnucpro"}
        graph[name] = found - {name}
    short = lambda m: m.removeprefix("virnucpro.") if m != "virnucpro" else m  # noqa: E731
    return {short(m): {short(d) for d in deps} for m, deps in graph.items()}


def layer(module):
    top = module.split(".")[0]
    if module in CORE:
        return 0
    if top == "io":
        return 1
    if top in ("models", "results"):
        return 2
    if top == "steps":
        return 3
    assert module in ENTRY, f"{module}: which layer is it in?"
    return 4


def test_every_import_goes_down_the_layers():
    upward = [f"{m} -> {d}" for m, deps in imports().items() for d in deps
              if layer(d) > layer(m) or {m.split(".")[0], d.split(".")[0]} == {"models", "results"}]
    assert upward == []


def test_no_import_circle():
    graph, state, circles = imports(), {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []
