"""ONNX export: parity with torch for every zoo model, metadata, dynamic batch, and bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import run_cli

from trtopt.errors import TrtoptError, UsageError

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

SMALL = {"in_channels": 1, "num_classes": 10, "input_size": 16}
ZOO = [("lenet", {}), ("resnet18", {**SMALL, "width": 8}), ("resnet50", {**SMALL, "width": 4}),
       ("mobilenetv2", {**SMALL, "width_mult": 0.25}), ("resnet18", {"in_channels": 3, "num_classes": 5,
                                                                    "input_size": 32, "width": 4})]


def _checkpoint(path, name, config, seed=0):
    """An untrained model with randomized BatchNorm statistics, so eval-mode folding is exercised."""
    from trtopt.models import create_model, model_input_spec
    from trtopt.train import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(name, **config)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    save_checkpoint(path, {"model_name": name, "model_config": config, "state_dict": model.state_dict(),
                           "input_spec": model_input_spec(name, **config).to_json(), "dataset": "digits", "epoch": 0})
    return model.eval()


@pytest.mark.parametrize("name, config", ZOO, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ZOO)])
def test_parity_every_zoo_model(tmp_path, name, config):
    from trtopt.export import export_onnx

    model = _checkpoint(tmp_path / "m.pt", name, config)
    result = export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", verify_batch_sizes=(1, 8))
    assert result.batch_sizes == (1, 8) and result.max_abs_diff <= 1e-4
    assert result.samples == ("digits" if config.get("input_size", 16) == 16 else "random")
    # independent check at a third batch size through a default-optimized session: the batch axis is dynamic
    shape = (3, *(model_input_spec_shape(name, config)))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (got,) = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with torch.no_grad():
        assert np.max(np.abs(got - model(torch.from_numpy(x)).numpy())) <= 1e-4


def model_input_spec_shape(name, config):
    from trtopt.models import model_input_spec

    return model_input_spec(name, **config).shape


def test_graph_metadata_and_checker(trained_lenet):
    from trtopt.fileio import sha256_file

    model = onnx.load(trained_lenet.onnx)
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["trtopt.model"] == "lenet" and json.loads(meta["trtopt.model_config"]) == {}
    assert meta["trtopt.checkpoint_sha256"] == sha256_file(trained_lenet.checkpoint)
    assert meta["trtopt.dataset"] == "digits" and meta["trtopt.version"]
    norm = json.loads(meta["trtopt.input_normalization"])
    from trtopt.data.digits import DIGITS_MEAN, DIGITS_STD

    assert norm == {"mean": [DIGITS_MEAN], "std": [DIGITS_STD]}


def test_static_batch_and_opset(tmp_path):
    from trtopt.export import export_onnx

    _checkpoint(tmp_path / "m.pt", "lenet", {})
    result = export_onnx(
        tmp_path / "m.pt", tmp_path / "s.onnx", dynamic_batch=False, verify_batch_sizes=(4, 8), opset=18
    )
    dim = onnx.load(result.path).graph.input[0].type.tensor_type.shape.dim[0]
    assert result.batch_sizes == (4,) and dim.dim_value == 4 and result.opset == 18
    with pytest.raises(UsageError, match="opset must be between 17 and"):
        export_onnx(tmp_path / "m.pt", tmp_path / "o.onnx", opset=13)
    with pytest.raises(UsageError, match=r"opset must be between 17 and \d+ \(the newest this torch exports\), got 99"):
        export_onnx(tmp_path / "m.pt", tmp_path / "o.onnx", opset=99)


def test_dynamo_exporter(tmp_path):
    """The torch.export-based exporter, which "auto" falls back to once torch drops TorchScript export."""
    from trtopt.export import export_onnx

    _checkpoint(tmp_path / "m.pt", "lenet", {})
    result = export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", exporter="dynamo", verify_batch_sizes=(2, 5))
    assert result.exporter == "dynamo" and result.max_abs_diff <= 1e-4 and result.opset >= 17
    meta = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert meta["trtopt.model"] == "lenet"
    with pytest.raises(UsageError, match="--exporter must be one of"):
        export_onnx(tmp_path / "m.pt", tmp_path / "x.onnx", exporter="jit")


def test_parity_miss_writes_nothing(tmp_path):
    from trtopt.export import export_onnx

    _checkpoint(tmp_path / "m.pt", "resnet18", {**SMALL, "width": 8})
    with pytest.raises(TrtoptError, match="differs from torch") as info:
        export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", atol=1e-12)
    assert not isinstance(info.value, UsageError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def _cli(*args):
    return run_cli("export", *args)


def test_cli_exports_and_prints_diff(tmp_path, trained_lenet):
    proc = _cli(trained_lenet.checkpoint, "-o", tmp_path / "out" / "lenet.onnx", "--verify-batch", "2,5")
    assert proc.returncode == 0, proc.stderr
    assert "max abs diff" in proc.stdout and "batch 2, 5" in proc.stdout
    assert (tmp_path / "out" / "lenet.onnx").is_file()


def test_cli_bad_input_exit_2_nothing_written(tmp_path, trained_lenet):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(trained_lenet.checkpoint.read_bytes()[:2000])  # a truncated download
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    cases = [
        ((tmp_path / "missing.pt", "-o", tmp_path / "a.onnx"), "checkpoint not found"),
        ((corrupt, "-o", tmp_path / "b.onnx"), "corrupt.pt is not a readable trtopt checkpoint"),
        ((trained_lenet.checkpoint, "-o", blocker / "c.onnx"), "cannot create output folder"),
        ((trained_lenet.checkpoint, "-o", tmp_path / "d.onnx", "--verify-batch", "0"), "batch sizes must be positive"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "file"]


def test_pickled_object_is_refused(tmp_path):
    """weights_only loading: a checkpoint holding arbitrary Python objects is not unpickled."""
    from trtopt.train import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"model_name": "lenet", "model_config": {}, "state_dict": {}, "payload": object()}, path)
    with pytest.raises(UsageError, match=r"evil.pt is not a readable trtopt checkpoint: it holds a pickled Python "
                                          r"object \(object\)") as refused:
        load_checkpoint(path)
    # torch's advice (retry with weights_only=False, or allowlist the global) is unsafe for a hostile file
    assert "weights_only" not in str(refused.value) and "safe_globals" not in str(refused.value)
    for entry, value in (("model_config", 5), ("state_dict", [1]), ("epoch", "x"), ("input_spec", "x")):
        torch.save({"model_name": "lenet", "model_config": {}, "state_dict": {}, entry: value}, path)
        with pytest.raises(UsageError, match=f"evil.pt: checkpoint entry '{entry}' is .*, expected"):
            load_checkpoint(path)
