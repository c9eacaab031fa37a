"""One Runner contract, checked on every backend that can run here (the rest skip with the reason).

Each case builds the same residual convnet (dynamic batch, profile 1..4) with the backend's own
``build()``, loads it with its own ``load()`` and checks what serving code relies on: tensor
metadata, outputs that match the FP32 ONNX in ONNX Runtime, the shared feed errors (checked by
``Runner.infer`` before the backend runs), the profile bound, the base-class properties, and an
idempotent ``close()``. The PyTorch baseline runner is checked against its own ONNX export.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import make_residual_convnet
from trtopt.backends.base import Runner
from trtopt.backends.onnxruntime import OnnxRuntimeRunner
from trtopt.backends.registry import BACKEND_MODULES, BuildOptions, get_backend
from trtopt.errors import UsageError
from trtopt.settings import EngineSettings
from trtopt.shapes import derive_profile

MAX_BATCH = 4


def _registry_case(name: str, tmp_path: Path) -> tuple[Runner, Path]:
    backend = get_backend(name)
    usable, why = backend.availability()
    if not usable:
        pytest.skip(f"backend {name} cannot run here: {why}")
    model = make_residual_convnet(tmp_path / "model.onnx")
    with OnnxRuntimeRunner(model) as reference:
        profile = derive_profile(
            reference.inputs, min_shapes="input:1x3x16x16", max_shapes=f"input:{MAX_BATCH}x3x16x16"
        )
    folder = tmp_path / "engine"
    folder.mkdir()
    built = backend.build(model, folder, BuildOptions(profile=profile, engine=EngineSettings(tf32=False)))
    manifest = {"name": "conformance", "engine": {"file": built.engine_file}, "io": {"profile": profile.to_json()},
                **built.manifest_fields}
    return backend.load(folder, manifest), model


@pytest.fixture(params=[*sorted(BACKEND_MODULES), "torch"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Runner, Path]]:
    """(runner under test, FP32 ONNX it must agree with)."""
    if request.param == "torch":
        pytest.importorskip("torch", reason="the PyTorch baseline runner needs torch")
        from trtopt.backends.torch_eager import TorchRunner

        trained = request.getfixturevalue("trained_lenet")
        runner, model = TorchRunner(trained.checkpoint, threads=1), trained.onnx
    else:
        runner, model = _registry_case(request.param, tmp_path)
    yield runner, model
    runner.close()


def _feed(runner: Runner, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal((batch, *i.shape[1:])).astype(i.dtype) for i in runner.inputs}


def test_metadata_describes_one_dynamic_batch_input(case: tuple[Runner, Path]) -> None:
    runner, model = case
    with OnnxRuntimeRunner(model) as reference:
        assert [(i.name, i.dtype, i.shape[1:]) for i in runner.inputs] == [
            (i.name, i.dtype, i.shape[1:]) for i in reference.inputs
        ]
        assert [o.name for o in runner.outputs] == [o.name for o in reference.outputs]
    assert all(not isinstance(i.shape[0], int) or i.shape[0] < 0 for i in runner.inputs), "batch axis stays dynamic"
    assert isinstance(runner.thread_safe, bool) and runner.backend != "abstract"
    assert isinstance(runner.notes, list) and all(isinstance(n, str) for n in runner.notes)
    memory = runner.device_memory_bytes
    assert memory is None or (isinstance(memory, int) and memory > 0)


def test_outputs_match_fp32_onnx_across_batch_sizes(case: tuple[Runner, Path]) -> None:
    runner, model = case
    with OnnxRuntimeRunner(model) as reference:
        for batch in (1, 3, MAX_BATCH, 2):  # grows, then reuses larger buffers
            feed = _feed(runner, batch, seed=batch)
            got, want = runner.infer(feed), reference.infer(feed)
            assert set(got) == set(want)
            for name in want:
                assert got[name].shape == want[name].shape
                np.testing.assert_allclose(got[name], want[name], atol=1e-3, rtol=1e-3)


BAD_FEEDS: dict[str, tuple[Callable[[dict[str, np.ndarray]], dict[str, object]], str]] = {
    "missing": (lambda feed: {}, r"missing input\(s\) \['input'\]"),
    "unknown": (lambda feed: {**feed, "extra": feed["input"]}, r"unknown input\(s\) \['extra'\]"),
    "dtype": (
        lambda feed: {"input": feed["input"].astype(np.float64)},
        "input 'input': dtype float64 given, expected float32",
    ),
    "rank": (lambda feed: {"input": feed["input"][0]}, "input 'input': rank 3 .* expected rank 4"),
    "fixed dim": (
        lambda feed: {"input": np.pad(feed["input"], [(0, 0)] * 3 + [(0, 1)])},
        "input 'input': dimension 3 is 17, expected 16",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FEEDS))
def test_bad_feeds_fail_with_the_shared_message(case: tuple[Runner, Path], kind: str) -> None:
    runner, _ = case
    make, message = BAD_FEEDS[kind]
    with pytest.raises(UsageError, match=message):
        runner.infer(make(_feed(runner, 2)))


def test_profile_bound_is_enforced(case: tuple[Runner, Path]) -> None:
    runner, _ = case
    if not any(i.bounds for i in runner.inputs):
        pytest.skip(f"{runner.backend} runners are not built for a shape profile")
    with pytest.raises(
        UsageError, match=f"dimension 0 is {MAX_BATCH + 1}, outside the built profile \\[1, {MAX_BATCH}\\]"
    ):
        runner.infer(_feed(runner, MAX_BATCH + 1))


def test_close_is_idempotent_and_context_manager_closes(case: tuple[Runner, Path]) -> None:
    runner, _ = case
    with runner as entered:
        assert entered is runner
    runner.close()
    assert runner.closed
    memory = runner.device_memory_bytes  # still answers once closed: nothing held any more
    assert memory is None or memory == 0
    with pytest.raises(UsageError, match=f"this {runner.backend} runner is closed"):
        runner.infer(_feed(runner, 1))
