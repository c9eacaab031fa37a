"""Careless and hostile input: each is a usage error naming the file or flag, never an internal error."""

from __future__ import annotations

import json
import logging
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import run_cli, write_scale_table
from trtopt.backends.onnxruntime import OnnxRuntimeRunner
from trtopt.data.npz_dataset import load_npz_dataset
from trtopt.data.sources import open_source
from trtopt.errors import UsageError
from trtopt.fileio import atomic_write_text, sha256_file
from trtopt.quantization.calibrate import calibrate
from trtopt.quantization.table import ScaleTable
from trtopt.quantization.trt_cache import read_trt_cache

def _loader(folder: Path, name: str, body: str) -> str:
    path = folder / f"{name}.py"
    path.write_text("import sys\nimport numpy as np\n\n" + textwrap.dedent(body))
    return f"{path}:load_data"


def _inputs(model: Path) -> list:
    runner = OnnxRuntimeRunner(model)
    inputs = runner.inputs
    runner.close()
    return inputs


@pytest.mark.parametrize(
    "body, says",
    [
        ("def load_data():\n    raise RuntimeError('dataset offline')\n", "RuntimeError: dataset offline"),
        ("def load_data():\n    sys.exit(3)\n", "SystemExit: 3"),
        (
            "def load_data():\n    yield {'input': np.zeros((2, 3, 16, 16), np.float32)}\n"
            "    raise ValueError('row 2')\n",
            "ValueError: row 2",
        ),
        ("sys.exit(4)\n\ndef load_data():\n    return []\n", "failed to import: SystemExit: 4"),
    ],
)
def test_a_failing_loader_is_a_usage_error_naming_it(residual_convnet, tmp_path, body, says):
    spec = _loader(tmp_path, "bad_loader", body)
    with pytest.raises(UsageError, match=f"bad_loader.py.*{says}"):
        list(open_source(spec, _inputs(residual_convnet), batch_size=2))


def test_a_loader_that_changes_between_passes_is_detected(residual_convnet, tmp_path):
    spec = _loader(
        tmp_path,
        "drifting",
        """
        calls = [0]

        def load_data():
            calls[0] += 1
            rng = np.random.default_rng(calls[0])
            for _ in range(3):
                yield {"input": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    """,
    )
    # calibration reads the data once; anything that reads it again (a build's accuracy check) must notice
    source = open_source(spec, _inputs(residual_convnet), batch_size=4)
    assert sum(batch.size for batch in source) == 12
    with pytest.raises(UsageError, match="drifting.py:load_data yielded different data on pass 2 .item 0"):
        list(source)
    steady = _loader(
        tmp_path,
        "steady",
        """
        def load_data():
            rng = np.random.default_rng(0)
            for _ in range(3):
                yield {"input": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    """,
    )
    assert calibrate(residual_convnet, steady, batch_size=4).num_samples == 12


def test_object_arrays_are_refused_never_unpickled(residual_convnet, tmp_path):
    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "objects.npz", input=np.array([{"x": 1}], dtype=object))
    with pytest.raises(UsageError, match="objects.npz.*Object arrays cannot be loaded"):
        list(open_source(str(tmp_path / "objects.npz"), _inputs(residual_convnet)))
    np.savez(tmp_path / "train.npz", x=np.array([None] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(UsageError, match="train.npz.*Object arrays"):
        load_npz_dataset(tmp_path / "train.npz")
    assert not marker.exists()


def test_a_single_number_is_not_a_data_file(residual_convnet, tmp_path):
    np.save(tmp_path / "scalar.npy", np.float32(3))
    with pytest.raises(UsageError, match="scalar.npy: the array for input 'input' is a single number"):
        list(open_source(str(tmp_path / "scalar.npy"), _inputs(residual_convnet)))


def test_training_data_with_nan_is_refused(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 1, 16, 16)).astype(np.float32)
    x[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 10)
    with pytest.raises(UsageError, match=r"nan.npz: 'x' has 1 NaN/Inf values"):
        load_npz_dataset(tmp_path / "nan.npz")


@pytest.mark.parametrize(
    "tensors, says",
    [
        (["input", "c0"], '"tensors" must map tensor names'),
        ({"input": 2.0}, '"tensors" must map tensor names'),
        ({"input": {"amax": 1e-44}}, "amax 1e-44 gives the scale .* outside float32's normal range"),
        ({"input": {"amax": 1e300}}, "amax 1e\\+300 gives the scale .* outside float32's normal range"),
    ],
)
def test_malformed_scale_tables_are_refused(residual_convnet, tmp_path, tensors, says):
    with pytest.raises(UsageError, match=f"table.json: {says}"):
        ScaleTable.load(write_scale_table(tmp_path / "table.json", residual_convnet, tensors))


def test_tensorrt_cache_naming_unknown_tensors_warns(residual_convnet, tmp_path, caplog):
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-100900-EntropyCalibration2\ninput: 3c010204\nfrom_another_model: 3c010204\n")
    with caplog.at_level(logging.WARNING, logger="trtopt.calibrate"):
        table = read_trt_cache(cache, residual_convnet)
    assert set(table.tensors) == {"input", "from_another_model"}
    warned = [r.getMessage() for r in caplog.records if "does not have" in r.getMessage()]
    assert len(warned) == 1 and "1 tensor(s)" in warned[0] and "'from_another_model'" in warned[0], warned


def test_tensorrt_cache_with_a_subnormal_scale_names_the_line(residual_convnet, tmp_path):
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-100900-EntropyCalibration2\ninput: 00000001\n")  # the smallest float32, 1.4e-45
    with pytest.raises(UsageError, match=r"calib.cache line 2: tensor 'input': amax .* outside float32's normal range"):
        read_trt_cache(cache, residual_convnet)


def test_bad_thread_counts_are_refused(residual_convnet):
    for threads in (-1, 0):
        with pytest.raises(UsageError, match=f"--threads must be positive, got {threads}"):
            OnnxRuntimeRunner(residual_convnet, threads=threads)


def _model_without_nodes(path: Path) -> Path:
    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    onnx.save(helper.make_model(helper.make_graph([], "empty", [value], [value])), path)
    return path


def _custom_op_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["input"], ["out"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
        path,
    )
    return path


def test_calibration_errors_name_the_users_model_not_a_temp_file(tmp_path):
    with pytest.raises(UsageError, match="empty.onnx has an empty graph"):
        calibrate(_model_without_nodes(tmp_path / "empty.onnx"), "random")
    with pytest.raises(UsageError, match="custom-op.onnx") as refused:
        calibrate(_custom_op_model(tmp_path / "custom-op.onnx"), "random")
    assert "trtopt-calib-" not in str(refused.value) and "targets.onnx" not in str(refused.value)


def _history_with(path: Path, report: str) -> Path:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, label TEXT, "
            "git_revision TEXT, hostname TEXT, regressions INTEGER NOT NULL DEFAULT 0, report TEXT NOT NULL)"
        )
        db.execute("INSERT INTO runs (created_at, report) VALUES ('2026-01-01', ?)", (report,))
        db.execute("PRAGMA user_version = 1")
    return path


@pytest.mark.parametrize(
    "report, says", [("{not json", "holds no readable report"), ('{"targets": 3}', "is not a trtopt benchmark report")]
)
def test_corrupt_history_rows_are_usage_errors(tmp_path, report, says):
    from trtopt.bench.history import History

    with History(_history_with(tmp_path / "h.sqlite", report)) as history:
        with pytest.raises(UsageError, match=f"h.sqlite: run 1 {says}"):
            history.resolve("last")


def test_writing_a_file_over_a_folder_is_a_usage_error(tmp_path):
    from trtopt.bench.record import RecordOptions

    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="--json .*out is a folder; expected a file path"):
        RecordOptions(json_path=tmp_path / "out")
    with pytest.raises(UsageError, match="out is a folder"):
        atomic_write_text(tmp_path / "out", "x")


SUITE = """
[suite]
name = "s"
[[models]]
name = "m"
onnx = "residual_convnet.onnx"
data = "{loader}"
"""


def test_cli_usage_errors_exit_2_with_one_line(residual_convnet, tmp_path):
    """The CLI end of the cases above (plus flag checks), each one line, exit 2, no traceback."""
    loader = _loader(tmp_path, "loader", "def load_data():\n    raise RuntimeError('no')\n")
    (tmp_path / "suite.toml").write_text(SUITE.format(loader=loader))
    cases = [
        (("quantize", residual_convnet, "-o", tmp_path / "q.onnx"), "--calib-data SRC -o TABLE.json"),
        (
            ("build", residual_convnet, "--batch-size", "0", "--engines-dir", tmp_path / "e"),
            "--batch-size must be positive, got 0",
        ),
        (
            ("build", residual_convnet, "--threads", "-1", "--engines-dir", tmp_path / "e"),
            "--threads must be positive, got -1",
        ),
        (("bench", residual_convnet, "--threads", "-1", "--no-history"), "--threads must be positive, got -1"),
        (("demo", "--epochs", "0", "--out", tmp_path / "demo"), "--epochs must be at least 1, got 0"),
        (("bench", "--suite", tmp_path / "suite.toml", "--no-history"), "is a Python loader: it would import and run"),
    ]
    for args, message in cases:
        proc = run_cli(*args, cwd=tmp_path, timeout=180)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "e").exists()
    allowed = run_cli(
        "bench", "--suite", tmp_path / "suite.toml", "--no-history", "--allow-code", cwd=tmp_path, timeout=180
    )
    assert allowed.returncode == 2 and "loader.py:load_data failed: RuntimeError: no" in allowed.stderr, allowed.stderr


@pytest.mark.parametrize("flag", ["--calib-data", "--val-data"])
def test_help_says_loaders_run_code(flag):
    from trtopt.cli import build_parser

    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["build"].format_help().split())
    assert f"{flag} SRC" in help_text and "imports and runs that Python file" in help_text
    for verb in ("calibrate", "bench", "sensitivity"):
        text = " ".join(build_parser()._subparsers._group_actions[0].choices[verb].format_help().split())
        assert "imports and runs that Python file" in text, verb


def test_triton_export_copies_only_files_inside_the_engine_folder(residual_convnet, tmp_path):
    pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
    from trtopt.pipeline import build
    from trtopt.serve.settings import BatchingSettings
    from trtopt.serve.triton_export import export_model

    built = build(residual_convnet, name="net", engines_dir=tmp_path / "engines", accuracy_samples=8, threads=1)
    engine = built.engine_dir
    repository = tmp_path / "triton"
    export_model("net", engine, repository, BatchingSettings())
    assert (repository / "net").is_dir() and not (repository / "net").is_symlink()  # Triton's layout, plain folders
    export_model("net", engine, repository, BatchingSettings(), force=True)
    assert sorted(p.name for p in repository.iterdir() if not p.name.endswith(".lock")) == ["net"]  # no .old folder

    secret = tmp_path / "secret.onnx"
    secret.write_bytes(residual_convnet.read_bytes())
    manifest = json.loads((engine / "manifest.json").read_text())
    manifest["model"].update(file="../../secret.onnx", sha256=sha256_file(secret))  # the hash matches
    (engine / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="model file '../../secret.onnx' is not a file name inside the engine folder"):
        export_model("stolen", engine, repository, BatchingSettings())
    assert not (repository / "stolen").exists()


def test_resume_with_weights_of_another_shape_is_a_usage_error(trained_lenet, tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.train import TrainConfig, train

    checkpoint = torch.load(trained_lenet.checkpoint, weights_only=True)
    checkpoint["state_dict"] = {k: v[..., :1] if v.dim() else v for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, tmp_path / "mismatched.pt")
    config = TrainConfig(model="lenet", dataset="digits", out=str(tmp_path / "run"), epochs=checkpoint["epoch"] + 1,
                         threads=1, resume=str(tmp_path / "mismatched.pt"))
    with pytest.raises(UsageError, match=r"--resume .*mismatched.pt: its weights or optimizer state do not fit"):
        train(config)


def test_diverging_training_fails_instead_of_finishing(tmp_path):
    pytest.importorskip("torch")
    from trtopt.errors import TrtoptError
    from trtopt.train import TrainConfig, train

    config = TrainConfig(model="lenet", dataset="digits", out=str(tmp_path / "run"), epochs=2, threads=1, lr=1e30,
                         scheduler="none")
    with pytest.raises(TrtoptError, match="training diverged: the loss is nan in epoch 1"):
        train(config)
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("text, says", [
    ('[suite]\nthreshold = "x"\n', "suite.threshold must be a number, got 'x'"),
    ("[suite]\nengines_dir = 5\n", "suite.engines_dir must be a path string, got 5"),
    ("suite = 5\n", r"\[suite\] must be a table, got 5"),
    ('[bench]\nbatch_sizes = "18"\n', "bench.batch_sizes = '18' is not valid .expected a list of int values"),
    ("[suite]\ncompare_to = 3\n", 'suite.compare_to must be "last" or a run id'),
])
def test_suite_values_of_the_wrong_type_are_usage_errors(tmp_path, text, says):
    from trtopt.bench.suite import load_suite

    (tmp_path / "s.toml").write_text(text + '[[models]]\nname = "m"\nonnx = "m.onnx"\n')
    with pytest.raises(UsageError, match=f"suite .*s.toml: {says}"):
        load_suite(tmp_path / "s.toml")
    (tmp_path / "m.toml").write_text('[[models]]\nname = "m"\nonnx = 5\n')
    with pytest.raises(UsageError, match=r"models\[0\].onnx must be a path string, got 5"):
        load_suite(tmp_path / "m.toml")
