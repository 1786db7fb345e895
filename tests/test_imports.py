"""The package's import graph, read from the source (module- and function-level imports alike): one way, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import mlp_cli

PACKAGE = Path(mlp_cli.__file__).parent

# Every module's layer; a module imports only modules of a lower layer. The README's order, bottom to top:
# errors -> components, params, config -> model, data -> train, evaluate, checkpoint -> cli. Helpers sit where
# their imports put them; the data package is layered inside itself (readers -> rules -> prepare -> stream -> load).
LAYERS = {
    "mlp_cli": 0,  # the package itself holds only __version__
    "errors": 1, "host": 1,
    "files": 2, "tasks": 2, "device": 2, "signals": 2, "state": 2, "optim": 2,
    "params": 3, "components": 3,
    "config": 4,
    "callback": 5,
    "distributed": 5,
    "model": 6, "backprop": 6,
    "data.readers": 6, "data.groups": 6, "data.rules": 7, "data.prepare": 8, "data.synthetic": 8, "data.stream": 9, "data.load": 10,
    "data": 11,  # the façade re-exporting the public names
    "metrics": 12, "diagnostics": 12, "predictions": 12, "raster": 12, "sample": 13,
    "checkpoint": 13, "baselines": 13, "onnx_model": 13,
    "rundir": 14,
    "evaluate": 14,
    "train": 15, "plot": 15, "export": 15, "explain": 15, "raster_predict": 15,
    "render": 16, "sweep": 16,
    "reporter": 17, "tune": 17, "tracking": 16,
    "cli": 18,
    "__main__": 19,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "mlp_cli"


def imported(path: Path) -> set[str]:
    """mlp_cli modules named by any import statement in the file, at any depth, plus the lazy façade's table."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mlp_cli import checkpoint` imports the module checkpoint; `from mlp_cli.data import Frame` the façade.
            base = node.module
            targets = [base]
            if base == "mlp_cli":
                targets = [f"mlp_cli.{alias.name}" if (PACKAGE / f"{alias.name}.py").exists() else "mlp_cli" for alias in node.names]
        else:
            continue
        names.update(t for t in targets if t == "mlp_cli" or t.startswith("mlp_cli."))
    if path.name == "__init__.py" and path.parent.name == "data":
        # The façade imports its submodules by name at first use (PEP 562); those are edges too.
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
                names.update(f"mlp_cli.data.{ast.literal_eval(v)}" for v in node.value.values)
    return {n.removeprefix("mlp_cli.") if n != "mlp_cli" else "mlp_cli" for n in names}


def graph() -> dict[str, set[str]]:
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        edges[name] = imported(path) - {name}
    return edges


def test_every_module_has_a_layer():
    unplaced = sorted(set(graph()) - set(LAYERS))
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"


def test_imports_point_downward_only():
    upward = [
        f"{module} (layer {LAYERS[module]}) imports {target} (layer {LAYERS[target]})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if LAYERS[target] >= LAYERS[module]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path + [node, target]
            if target not in state:
                found = visit(target, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_function_level_imports(tmp_path):
    # A lazy import inside a function is an edge like any other (this is how data.py and stream.py once cycled).
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from mlp_cli.data.stream import load_streaming\n    import mlp_cli.train\n")
    assert imported(source) == {"data.stream", "train"}
