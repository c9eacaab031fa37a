"""Every cuda-python runtime name trtopt calls exists in the installed bindings.

The CUDA layer cannot run without a GPU here, so a misspelled or removed binding would only show on
a GPU machine; this check catches it on the CPU by reading the names out of trtopt's source.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import trtopt

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed (it is in the dev extra)")

SOURCE = Path(trtopt.__file__).parent
CALLED = re.compile(r"""(?:\b(?:call|unpack)\(\s*|_call\s*=\s*)["'](cuda[A-Za-z]+)["']""")
ATTRIBUTE = re.compile(r"cudart\(\)\.(cuda[A-Za-z_]+)(?:\.(cuda[A-Za-z_]+))?")
MEMCPY_KIND = re.compile(r"""_kind\(\s*["'](cuda[A-Za-z]+)["']""")


def _used_names() -> set[tuple[str, ...]]:
    names: set[tuple[str, ...]] = set()
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        names |= {(m,) for m in CALLED.findall(text)}
        names |= {tuple(part for part in m if part) for m in ATTRIBUTE.findall(text)}
        names |= {("cudaMemcpyKind", m) for m in MEMCPY_KIND.findall(text)}
    return names


def test_the_scan_finds_the_cuda_layer_calls() -> None:
    used = {name[0] for name in _used_names()}
    assert {"cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamSynchronize", "cudaGraphLaunch"} <= used


@pytest.mark.parametrize("path", sorted(_used_names()), ids=lambda p: ".".join(p))
def test_runtime_binding_exists(path: tuple[str, ...]) -> None:
    obj = runtime
    for part in path:
        assert hasattr(obj, part), f"cuda.bindings.runtime has no {'.'.join(path)}"
        obj = getattr(obj, part)
