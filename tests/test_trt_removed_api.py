"""No module may use an API that TensorRT 11 removed, except inside a commented 10.x branch.

The scan is an AST walk over every module under trtopt/ and scripts/: attribute accesses,
imported names, bare names of removed TensorRT classes, and ``getattr(x, "NAME")`` strings. A
statement preceded by a comment starting ``# TensorRT 10.x compatibility:`` (with a reason after
the colon) is exempt, together with everything nested in it.

Generic names are qualified to avoid false hits in the rest of the project: precision flags count
only as ``BuilderFlag.<NAME>`` (``DataType.INT8`` is fine), ``dynamic_range`` only as an assignment
target (``tensor.dynamic_range = ...``; calibration code may well read its own ``dynamic_range``).
``ILayer.precision`` is not scanned: the name is too common (BuildOptions.precision); its setter
partner ``set_output_type`` is.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"#\s*TensorRT 10\.x compatibility:\s*\S")

# Removed in TensorRT 11 (tensorrt-11 notes and NVIDIA's "Removed Python APIs and Replacements").
REMOVED_BUILDER_FLAGS = {"FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                         "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"}
REMOVED_NAMES = {
    # implicit quantization
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator", "int8_calibrator", "CalibrationAlgoType", "QuantizationFlag",
    "set_calibration_profile", "get_calibration_profile", "set_quantization_flag", "get_quantization_flag",
    "clear_quantization_flag", "quantization_flags", "set_dynamic_range", "get_dynamic_range",
    # platform queries
    "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32",
    # memory size queries and contexts without memory (use the _v2 / USER_MANAGED replacements)
    "device_memory_size", "get_device_memory_size_for_profile", "device_memory_size_for_profile",
    "create_execution_context_without_device_memory",
    # per-layer precision (weak typing)
    "set_output_type", "get_output_type", "output_type_is_set", "reset_output_type",
    "precision_is_set", "reset_precision",
    # replaced by V2 interfaces
    "IStreamReader", "supports_model",
    # algorithm selection (use the editable timing cache)
    "IAlgorithmSelector", "algorithm_selector", "IAlgorithm", "IAlgorithmContext", "IAlgorithmVariant",
}
ASSIGN_ONLY = {"dynamic_range"}


def _exempt_lines(source: str, tree: ast.AST) -> set[int]:
    markers = [tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
               if tok.type == tokenize.COMMENT and MARKER.search(tok.string)]
    statements = sorted((node for node in ast.walk(tree) if isinstance(node, ast.stmt)), key=lambda n: n.lineno)
    exempt: set[int] = set()
    for line in markers:
        following = [s for s in statements if s.lineno > line]
        if following:
            first = following[0].lineno
            for stmt in following:
                if stmt.lineno == first:  # the outermost statement starting there
                    exempt.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
                    break
    return exempt


def _owner(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def scan_source(source: str, filename: str = "<source>") -> list[str]:
    """Violations in `source` as ``file:line: name`` strings."""
    tree = ast.parse(source, filename)
    exempt = _exempt_lines(source, tree)
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in REMOVED_NAMES:
                hits.append((node.lineno, node.attr))
            elif node.attr in REMOVED_BUILDER_FLAGS and _owner(node.value) == "BuilderFlag":
                hits.append((node.lineno, f"BuilderFlag.{node.attr}"))
            elif node.attr in ASSIGN_ONLY and isinstance(node.ctx, ast.Store):
                hits.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name) and node.id in REMOVED_NAMES and node.id[0].isupper():
            hits.append((node.lineno, node.id))
        elif isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] in REMOVED_NAMES:
            hits.append((node.lineno, node.name))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "setattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            name = node.args[1].value
            if name in REMOVED_NAMES or (name in REMOVED_BUILDER_FLAGS and _owner(node.args[0]) == "BuilderFlag"):
                hits.append((node.lineno, name))
    return sorted({f"{filename}:{line}: {name}" for line, name in hits if line not in exempt})


def _modules() -> list[Path]:
    return sorted([*(ROOT / "trtopt").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])


def test_no_removed_tensorrt_api_outside_compat_branches() -> None:
    violations = []
    for path in _modules():
        violations += scan_source(path.read_text(), str(path.relative_to(ROOT)))
    assert not violations, ("APIs removed in TensorRT 11 used outside a '# TensorRT 10.x compatibility: <why>' block:\n"
                            + "\n".join(violations))


def test_the_scan_covers_the_tensorrt_backend() -> None:
    scanned = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert "trtopt/backends/tensorrt/builder.py" in scanned and "trtopt/backends/tensorrt/runner.py" in scanned


PLANTED = '''
import tensorrt as trt
from tensorrt import IInt8EntropyCalibrator2

class Calibrator(trt.IInt8EntropyCalibrator2):
    pass

def build(config, engine, tensor):
    config.set_flag(trt.BuilderFlag.FP16)
    config.int8_calibrator = Calibrator()
    size = engine.device_memory_size
    tensor.dynamic_range = (-1.0, 1.0)
    flag = getattr(trt.BuilderFlag, "INT8")
    return trt.DataType.INT8, engine.device_memory_size_v2, size, flag
'''


def test_scanner_catches_planted_violations() -> None:
    found = [hit.split(": ", 1)[1] for hit in scan_source(PLANTED)]
    assert found.count("IInt8EntropyCalibrator2") >= 2
    for name in ("BuilderFlag.FP16", "int8_calibrator", "device_memory_size", "dynamic_range", "INT8"):
        assert name in found, (name, found)
    # the replacements and unrelated INT8 uses are not flagged
    assert "device_memory_size_v2" not in found
    assert sum(1 for hit in scan_source(PLANTED) if hit.endswith(": INT8")) == 1  # only the getattr on BuilderFlag


def test_marked_compat_branch_is_exempt_and_unmarked_is_not() -> None:
    marked = '''
def configure(trt, config, version):
    # TensorRT 10.x compatibility: weakly typed FP16 for users who cannot convert the ONNX
    if version < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.INT8)
'''
    hits = scan_source(marked)
    assert hits == ["<source>:6: BuilderFlag.INT8"]
    bare_comment = marked.replace(
        "# TensorRT 10.x compatibility: weakly typed FP16 for users who cannot convert the ONNX",
        "# TensorRT 10.x compatibility:",
    )
    assert len(scan_source(bare_comment)) == 2  # a marker without a reason exempts nothing


@pytest.mark.parametrize(
    "snippet", ["x = stats.dynamic_range\n", "options.precision = 'int8'\n", "t = trt.DataType.INT8\n"]
)
def test_generic_names_are_not_flagged(snippet: str) -> None:
    assert scan_source(snippet) == []
