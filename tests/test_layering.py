"""The package's layering and parameter-count rule, checked on the source with ast.

Layers, lowest first: core types <- data, shapes, quantization <- backends <- pipeline <- bench,
serve <- cli. A module may import its own layer and the layers below, never one above, whether the
import is at the top of the module or inside a function (a lazy import is still a dependency).
torch is imported only where a model is trained, exported or run as the PyTorch baseline.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trtopt"

# top-level part of trtopt (module or subpackage) -> layer; lower numbers may not import higher ones
LAYERS: dict[str, int] = {
    **dict.fromkeys(["", "errors", "fileio", "progress", "hostinfo", "tensors", "usercode", "signals", "latency"], 0),
    **dict.fromkeys(["data", "shapes", "quantization", "accuracy", "budget", "settings", "models", "cuda",
                     "ortsession"], 1),
    **dict.fromkeys(["train", "export"], 2),
    "backends": 3,
    "repository": 4,
    **dict.fromkeys(["plan", "pipeline", "int8_eval", "sensitivity", "mixed_precision"], 5),
    **dict.fromkeys(["bench", "serve", "demo"], 6),
    **dict.fromkeys(["cli", "__main__"], 7),
}
MAX_PARAMETERS = 10
TORCH_ALLOWED = ("train", "models", "export", "backends/torch_eager.py")


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), filename=str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py") if relative.parts[0] != "__init__.py" else ""


def _imported_modules(tree: ast.Module, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the module, lazy ones included."""
    package = ".".join(("trtopt", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {_part(path) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_module_imports_a_layer_above_it() -> None:
    problems = []
    for path, tree in _modules():
        own = LAYERS[_part(path)]
        for line, module in _imported_modules(tree, path):
            if module != "trtopt" and not module.startswith("trtopt."):
                continue
            target = module.split(".")[1] if "." in module else ""
            if LAYERS.get(target, 0) > own:
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} (layer {own}) imports {module} (layer {LAYERS[target]})"
                )
    assert not problems, "\n".join(problems)


def test_torch_only_where_models_are_trained_exported_or_run_as_baseline() -> None:
    problems = []
    for path, tree in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(TORCH_ALLOWED):
            continue
        problems.extend(f"trtopt/{relative}:{line} imports {module}" for line, module in _imported_modules(tree, path)
                        if module == "torch" or module.startswith("torch."))
    assert not problems, "\n".join(problems)




def _node(module: str, depth: int) -> str:
    """The package part a module belongs to, `depth` names below trtopt (trtopt.backends.tensorrt.runner, 2 ->
    trtopt.backends.tensorrt)."""
    return ".".join(module.split(".")[: depth + 1])


@pytest.mark.parametrize("depth", [1, 2])
def test_no_import_cycles(depth: int) -> None:
    """Between the package's parts (depth 1: shapes, backends, ...) and one level down (backends.select,
    backends.tensorrt, ...). Lazy imports count: a cycle hidden inside a function is still two parts that
    need each other."""
    graph: dict[str, set[str]] = {}
    for path, tree in _modules():
        source = _node(".".join(("trtopt", *path.relative_to(PACKAGE).with_suffix("").parts)), depth)
        for _, module in _imported_modules(tree, path):
            if module.startswith("trtopt."):
                target = _node(module, depth)
                if target != source and not source.startswith(target + "."):  # a package's own __init__
                    graph.setdefault(source, set()).add(target)
    cycles, state = [], dict.fromkeys(graph, 0)

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target, 0) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif state.get(target, 0) == 0:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_function_takes_more_than_ten_parameters() -> None:
    problems = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                names = [n for n in names if n not in ("self", "cls")]
                if len(names) > MAX_PARAMETERS:
                    problems.append(
                        f"trtopt/{path.relative_to(PACKAGE).as_posix()}:{node.lineno} {node.name}() takes {len(names)}"
                    )
    assert not problems, "settings dataclasses instead of long parameter lists:\n" + "\n".join(problems)
